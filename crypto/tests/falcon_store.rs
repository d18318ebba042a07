//! The certificate store's FALCON CA and leaves, the mixed trust store, and rotation.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{alpn, Pair};
use stoq_core::TlsMaterial;
use stoq_crypto::falcon::{certificate_public_key, FalconAlgorithm, FalconLevel};
use stoq_crypto::rustls::pki_types::CertificateDer;
use stoq_crypto::{
    client_config, server_config, CertStore, CryptoError, LeafKind, FALCON_CA_COMMON_NAME,
};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn store() -> (tempfile::TempDir, CertStore) {
    let tmp = tempfile::tempdir().unwrap();
    let store = CertStore::open(tmp.path().join("certs")).unwrap();
    (tmp, store)
}

fn client_trusting(material: &TlsMaterial) -> TlsMaterial {
    TlsMaterial {
        identity: None,
        roots: material.roots.clone(),
        require_client_auth: false,
        identity_source: None,
    }
}

/// The leaf the server presented to the client of `pair`.
fn server_leaf(pair: &Pair) -> CertificateDer<'static> {
    pair.client.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// One more application message each way on an established pair.
fn exchange(pair: &mut Pair, msg: &[u8]) {
    pair.client.writer().write_all(msg).unwrap();
    let mut buf = Vec::new();
    while pair.client.wants_write() {
        pair.client.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        pair.server.read_tls(&mut rd).unwrap();
        pair.server.process_new_packets().unwrap();
    }
    let mut got = vec![0u8; msg.len()];
    pair.server.reader().read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

#[test]
fn the_falcon_ca_and_leaf_are_private_files_reused_while_valid() {
    let (_tmp, store) = store();
    let names = ["localhost", "127.0.0.1"];
    let first = store.falcon_leaf(&names).unwrap();
    let (ca_cert, ca_key) = store.falcon_ca_paths();
    let (leaf_cert, leaf_key) = store.falcon_leaf_paths(&names).unwrap();
    assert!(leaf_cert
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("falcon-leaf-"));
    for key in [&ca_key, &leaf_key] {
        assert_eq!(mode(key), 0o600, "{}", key.display());
    }
    for cert in [&ca_cert, &leaf_cert] {
        assert_eq!(mode(cert) & 0o022, 0, "{}", cert.display());
    }
    assert_eq!(mode(store.dir()), 0o700);
    // Default level 512, padded; the CA's name carries the instance.
    let public = certificate_public_key(&first.cert_chain[0]).unwrap();
    assert_eq!(public.algorithm(), FalconAlgorithm::FalconPadded512);
    let ca = store.falcon_ca().unwrap();
    assert_eq!(ca.key().algorithm(), FalconAlgorithm::FalconPadded512);
    let parsed = <x509_cert::Certificate as x509_cert::der::Decode>::from_der(ca.cert()).unwrap();
    assert!(
        parsed
            .tbs_certificate
            .subject
            .to_string()
            .contains(FALCON_CA_COMMON_NAME),
        "{}",
        parsed.tbs_certificate.subject
    );
    // Reused: same leaf in any name order, from a fresh handle on the same directory.
    let again = CertStore::open(store.dir()).unwrap();
    let second = again.falcon_leaf(&["127.0.0.1", "LOCALHOST"]).unwrap();
    assert_eq!(first.cert_chain, second.cert_chain);
    // The classical files are independent of the FALCON ones.
    let classical = store.leaf(&names).unwrap();
    assert_ne!(classical.cert_chain[0], first.cert_chain[0]);
    assert_eq!(
        store.falcon_leaf(&names).unwrap().cert_chain,
        first.cert_chain
    );
}

#[test]
fn falcon_1024_is_selectable_and_replaces_a_512_ca_and_leaf() {
    let (_tmp, store) = store();
    let old = store.falcon_leaf(&["localhost"]).unwrap();
    let store = store.with_falcon_level(FalconLevel::L1024);
    let leaf = store.falcon_leaf(&["localhost"]).unwrap();
    assert_ne!(old.cert_chain, leaf.cert_chain);
    let public = certificate_public_key(&leaf.cert_chain[0]).unwrap();
    assert_eq!(public.algorithm(), FalconAlgorithm::FalconPadded1024);
    assert_eq!(
        store.falcon_ca().unwrap().key().algorithm(),
        FalconAlgorithm::FalconPadded1024
    );
    // And the 1024 leaf completes a handshake.
    let material = store.falcon_material(&["localhost"]).unwrap();
    let mut pair = Pair::new(
        client_config(&client_trusting(&material), &alpn()).unwrap(),
        server_config(&material, &alpn()).unwrap(),
        "localhost",
    );
    pair.handshake().unwrap();
}

#[test]
fn falcon_leaves_are_reissued_when_expiring_or_mismatched() {
    let (_tmp, store) = store();
    // Near expiry: a leaf valid for less than the renewal window is replaced every time.
    let short = store.clone().with_leaf_validity(Duration::from_secs(3600));
    let a = short.falcon_leaf(&["localhost"]).unwrap();
    let b = short.falcon_leaf(&["localhost"]).unwrap();
    assert_ne!(a.cert_chain, b.cert_chain);
    let c = store.falcon_leaf(&["localhost"]).unwrap();
    assert_ne!(b.cert_chain, c.cert_chain);
    assert_eq!(
        store.falcon_leaf(&["localhost"]).unwrap().cert_chain,
        c.cert_chain
    );

    // Names mismatch: another set's leaf copied over this set's files is replaced.
    let other = store.falcon_leaf(&["example.test"]).unwrap();
    let (cert, key) = store.falcon_leaf_paths(&["localhost"]).unwrap();
    let (ocert, okey) = store.falcon_leaf_paths(&["example.test"]).unwrap();
    std::fs::copy(&ocert, &cert).unwrap();
    std::fs::copy(&okey, &key).unwrap();
    let d = store.falcon_leaf(&["localhost"]).unwrap();
    assert_ne!(d.cert_chain, other.cert_chain);

    // Key mismatch: a key that is not the leaf's is replaced.
    std::fs::copy(&okey, &key).unwrap();
    let e = store.falcon_leaf(&["localhost"]).unwrap();
    assert_ne!(e.cert_chain, d.cert_chain);
    assert_eq!(mode(&key), 0o600);

    // CA replaced: the leaf of the old CA is reissued.
    let (ca_cert, ca_key) = store.falcon_ca_paths();
    std::fs::remove_file(&ca_cert).unwrap();
    std::fs::remove_file(&ca_key).unwrap();
    let f = store.falcon_leaf(&["localhost"]).unwrap();
    assert_ne!(f.cert_chain, e.cert_chain);
}

#[test]
fn falcon_ca_problems_are_errors_naming_the_file() {
    let (_tmp, store) = store();
    store.falcon_ca().unwrap();
    let (ca_cert, ca_key) = store.falcon_ca_paths();
    let key_bytes = std::fs::read(&ca_key).unwrap();
    std::fs::remove_file(&ca_key).unwrap();
    let err = store.falcon_leaf(&["localhost"]).unwrap_err();
    assert!(matches!(err, CryptoError::File { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&ca_key.display().to_string()),
        "{err}"
    );

    std::fs::write(&ca_key, &key_bytes).unwrap();
    std::fs::write(&ca_cert, "garbage\n").unwrap();
    let err = store.falcon_ca().unwrap_err();
    assert!(
        err.to_string().contains(&ca_cert.display().to_string()),
        "{err}"
    );

    // A key of another CA: KeyMismatch naming both files.
    let (_tmp2, other) = self::store();
    other.falcon_ca().unwrap();
    std::fs::copy(other.falcon_ca_paths().0, &ca_cert).unwrap();
    let err = store.falcon_ca().unwrap_err();
    match &err {
        CryptoError::KeyMismatch { cert, key } => {
            assert_eq!(cert, &ca_cert.display().to_string());
            assert_eq!(key, &ca_key.display().to_string());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_trusting_the_mixed_store_accepts_classical_and_falcon_servers() {
    let (_tmp, store) = store();
    let falcon = store.falcon_material(&["localhost"]).unwrap();
    assert_eq!(falcon.roots.len(), 2, "classical CA and FALCON CA");
    assert_eq!(&falcon.roots[0], store.local_ca().unwrap().cert());
    assert_eq!(&falcon.roots[1], store.falcon_ca().unwrap().cert());
    let classical = store.material(&["localhost"]).unwrap();
    let client = client_trusting(&falcon);
    for (label, server) in [("classical", &classical), ("FALCON", &falcon)] {
        let mut pair = Pair::new(
            client_config(&client, &alpn()).unwrap(),
            server_config(server, &alpn()).unwrap(),
            "localhost",
        );
        pair.handshake()
            .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        assert_eq!(
            server_leaf(&pair),
            server.identity.as_ref().unwrap().cert_chain[0],
            "{label}"
        );
    }
    // And a FALCON client certificate from the store verifies at a classical server
    // trusting the mixed store.
    let server = TlsMaterial {
        require_client_auth: true,
        roots: falcon.roots.clone(),
        ..classical.clone()
    };
    let mut pair = Pair::new(
        client_config(&falcon, &alpn()).unwrap(),
        server_config(&server, &alpn()).unwrap(),
        "localhost",
    );
    pair.handshake().unwrap();
}

/// A store whose leaves live 8 s and are renewed in their last 5 s: a rotating identity
/// keeps its leaf for 2 to 3 s (X.509 times have whole seconds).
fn short_lived_store() -> (tempfile::TempDir, CertStore) {
    let (tmp, store) = store();
    let store = store
        .with_leaf_validity(Duration::from_secs(8))
        .with_renew_before(Duration::from_secs(5));
    (tmp, store)
}

fn rotation(kind: LeafKind) {
    let (_tmp, store) = short_lived_store();
    let material = store.rotating_material(&["localhost"], kind).unwrap();
    assert!(material.identity.is_some());
    let server = server_config(&material, &alpn()).unwrap();
    let server = std::sync::Arc::new(server);
    // A new client configuration per connection: a shared one would resume the first
    // session, and a resumed TLS 1.3 handshake carries no certificate.
    let client = || client_config(&client_trusting(&material), &alpn()).unwrap();
    let mut first = Pair::new(client(), (*server).clone(), "localhost");
    first.handshake().unwrap();
    let first_leaf = server_leaf(&first);
    assert_eq!(
        first_leaf,
        material.identity.as_ref().unwrap().cert_chain[0]
    );

    // Still inside the leaf's comfortable period: the same leaf.
    let mut again = Pair::new(client(), (*server).clone(), "localhost");
    again.handshake().unwrap();
    assert_eq!(server_leaf(&again), first_leaf);

    // In the renewal window: the next handshake gets a new leaf, issued and stored.
    // (The store checks validity in whole seconds, as X.509 and webpki do: 4.5 s puts the
    // window's end a full second past the first leaf's notAfter.)
    std::thread::sleep(Duration::from_millis(4500));
    let mut second = Pair::new(client(), (*server).clone(), "localhost");
    second.handshake().unwrap();
    let second_leaf = server_leaf(&second);
    assert_ne!(second_leaf, first_leaf, "rotated");
    let stored = match kind {
        LeafKind::Classical => store.leaf(&["localhost"]),
        LeafKind::Falcon => store.falcon_leaf(&["localhost"]),
    }
    .unwrap();
    assert_eq!(
        stored.cert_chain[0], second_leaf,
        "the store holds the new leaf"
    );

    // The connection made with the old leaf still works.
    exchange(&mut first, b"still here");
    exchange(&mut second, b"new one");
}

#[test]
fn a_rotating_falcon_identity_serves_a_new_leaf_and_keeps_old_connections() {
    rotation(LeafKind::Falcon);
}

#[test]
fn a_rotating_classical_identity_serves_a_new_leaf_and_keeps_old_connections() {
    rotation(LeafKind::Classical);
}

#[test]
fn a_rotating_client_identity_is_presented_for_mutual_authentication() {
    let (_tmp, store) = short_lived_store();
    let client = store
        .rotating_material(&["client.test"], LeafKind::Falcon)
        .unwrap();
    let server = TlsMaterial {
        require_client_auth: true,
        ..store.falcon_material(&["localhost"]).unwrap()
    };
    let mut pair = Pair::new(
        client_config(&client, &alpn()).unwrap(),
        server_config(&server, &alpn()).unwrap(),
        "localhost",
    );
    pair.handshake().unwrap();
    let presented = pair.server.peer_certificates().unwrap()[0].clone();
    assert_eq!(
        presented.as_ref(),
        client.identity.as_ref().unwrap().cert_chain[0].as_ref()
    );
}
