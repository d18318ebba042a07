//! The self-managing certificate store.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{alpn, Pair};
use stoq_crypto::{
    client_config, load_identity, server_config, CertStore, CryptoError, CA_COMMON_NAME,
    CA_VALIDITY, LEAF_VALIDITY,
};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::Certificate;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn parse(der: &[u8]) -> Certificate {
    Certificate::from_der(der).unwrap()
}

fn ext<'a, T: Decode<'a>>(cert: &'a Certificate, oid: &str) -> T {
    let oid = ObjectIdentifier::new_unwrap(oid);
    let ext = cert
        .tbs_certificate
        .extensions
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.extn_id == oid)
        .unwrap_or_else(|| panic!("extension {oid} missing"));
    T::from_der(ext.extn_value.as_bytes()).unwrap()
}

fn lifetime(cert: &Certificate) -> Duration {
    let v = &cert.tbs_certificate.validity;
    v.not_after
        .to_system_time()
        .duration_since(v.not_before.to_system_time())
        .unwrap()
}

fn remaining(der: &[u8]) -> Duration {
    parse(der)
        .tbs_certificate
        .validity
        .not_after
        .to_system_time()
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}

#[test]
fn store_creates_private_files_and_reuses_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("home").join("certs");
    let store = CertStore::open(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700, "store directory mode");

    let material = store.material(&["localhost", "127.0.0.1"]).unwrap();
    let (ca_cert, ca_key) = store.ca_paths();
    let (leaf_cert, leaf_key) = store.leaf_paths(&["localhost", "127.0.0.1"]).unwrap();
    for key in [&ca_key, &leaf_key] {
        assert_eq!(mode(key), 0o600, "{}", key.display());
    }
    for cert in [&ca_cert, &leaf_cert] {
        assert!(cert.is_file(), "{}", cert.display());
        assert_eq!(
            mode(cert) & 0o022,
            0,
            "{} writable by others",
            cert.display()
        );
    }
    assert!(leaf_cert
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("leaf-"));
    assert!(leaf_key.to_str().unwrap().ends_with("-key.pem"));
    // No temporary files are left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".lock")
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with(".tmp")), "{names:?}");

    // The files hold what the material holds.
    let on_disk = load_identity(&leaf_cert, &leaf_key).unwrap();
    assert_eq!(
        on_disk.cert_chain,
        material.identity.as_ref().unwrap().cert_chain
    );
    assert_eq!(stoq_crypto::load_roots(&ca_cert).unwrap(), material.roots);

    // A second open reuses the CA and the leaf, byte for byte.
    let ca_bytes = std::fs::read(&ca_cert).unwrap();
    let ca_key_bytes = std::fs::read(&ca_key).unwrap();
    let again = CertStore::open(&dir).unwrap();
    assert_eq!(again.local_ca().unwrap().cert(), &material.roots[0]);
    let material2 = again.material(&["127.0.0.1", "localhost"]).unwrap();
    assert_eq!(material2.roots, material.roots);
    assert_eq!(
        material2.identity.unwrap().cert_chain,
        material.identity.as_ref().unwrap().cert_chain
    );
    assert_eq!(std::fs::read(&ca_cert).unwrap(), ca_bytes);
    assert_eq!(std::fs::read(&ca_key).unwrap(), ca_key_bytes);
}

#[test]
fn stored_material_completes_a_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let store = CertStore::open(tmp.path().join("certs")).unwrap();
    let material = store.material(&["localhost", "::1"]).unwrap();
    for name in ["localhost", "::1"] {
        let mut pair = Pair::new(
            client_config(&material, &alpn()).unwrap(),
            server_config(&material, &alpn()).unwrap(),
            name,
        );
        pair.handshake().unwrap();
    }
}

#[test]
fn ca_and_leaf_carry_the_promised_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let store = CertStore::open(tmp.path().join("certs")).unwrap();
    let material = store.material(&["localhost", "10.0.0.1"]).unwrap();

    let ca = parse(&material.roots[0]);
    assert!(ca
        .tbs_certificate
        .subject
        .to_string()
        .contains(&format!("CN={CA_COMMON_NAME}")));
    let bc: BasicConstraints = ext(&ca, "2.5.29.19");
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku: KeyUsage = ext(&ca, "2.5.29.15");
    assert!(ku.0.contains(KeyUsages::KeyCertSign) && ku.0.contains(KeyUsages::CRLSign));
    let ca_life = lifetime(&ca);
    assert!(ca_life >= CA_VALIDITY && ca_life < CA_VALIDITY + Duration::from_secs(3600));
    assert_eq!(
        ca.signature_algorithm.oid,
        ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
        "ecdsa-with-SHA256"
    );
    assert_eq!(
        ca.tbs_certificate
            .subject_public_key_info
            .algorithm
            .parameters
            .as_ref()
            .unwrap()
            .decode_as::<ObjectIdentifier>()
            .unwrap(),
        ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7"),
        "P-256"
    );

    let leaf = parse(&material.identity.as_ref().unwrap().cert_chain[0]);
    assert_eq!(leaf.tbs_certificate.issuer, ca.tbs_certificate.subject);
    let eku: ExtendedKeyUsage = ext(&leaf, "2.5.29.37");
    assert!(eku
        .0
        .contains(&ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1")));
    assert!(eku
        .0
        .contains(&ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2")));
    let san: SubjectAltName = ext(&leaf, "2.5.29.17");
    assert!(san
        .0
        .iter()
        .any(|n| matches!(n, GeneralName::DnsName(d) if d.as_str() == "localhost")));
    assert!(san
        .0
        .iter()
        .any(|n| matches!(n, GeneralName::IpAddress(ip) if ip.as_bytes() == [10, 0, 0, 1])));
    let leaf_life = lifetime(&leaf);
    assert!(leaf_life >= LEAF_VALIDITY && leaf_life < LEAF_VALIDITY + Duration::from_secs(3600));
}

#[test]
fn a_leaf_near_expiry_is_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let short = CertStore::open(&dir)
        .unwrap()
        .with_leaf_validity(Duration::from_secs(24 * 3600));
    let old = short.leaf(&["localhost"]).unwrap();
    assert!(remaining(&old.cert_chain[0]) <= Duration::from_secs(24 * 3600));
    let (cert_path, key_path) = short.leaf_paths(&["localhost"]).unwrap();
    let old_key_file = std::fs::read(&key_path).unwrap();

    let store = CertStore::open(&dir).unwrap();
    let new = store.leaf(&["localhost"]).unwrap();
    assert_ne!(
        new.cert_chain, old.cert_chain,
        "the expiring leaf was reused"
    );
    assert!(remaining(&new.cert_chain[0]) > LEAF_VALIDITY - Duration::from_secs(3600));
    // The files were replaced too (new key, still 0600), and the next call reuses them.
    assert_ne!(std::fs::read(&key_path).unwrap(), old_key_file);
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(
        load_identity(&cert_path, &key_path).unwrap().cert_chain,
        new.cert_chain
    );
    assert_eq!(
        store.leaf(&["localhost"]).unwrap().cert_chain,
        new.cert_chain
    );
}

#[test]
fn a_leaf_from_a_replaced_ca_is_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    let store = CertStore::open(tmp.path().join("certs")).unwrap();
    let first = store.material(&["localhost"]).unwrap();
    let (ca_cert, ca_key) = store.ca_paths();
    std::fs::remove_file(&ca_cert).unwrap();
    std::fs::remove_file(&ca_key).unwrap();
    let second = store.material(&["localhost"]).unwrap();
    assert_ne!(second.roots, first.roots, "a new CA was generated");
    assert_ne!(
        second.identity.as_ref().unwrap().cert_chain,
        first.identity.as_ref().unwrap().cert_chain
    );
    let mut pair = Pair::new(
        client_config(&second, &alpn()).unwrap(),
        server_config(&second, &alpn()).unwrap(),
        "localhost",
    );
    pair.handshake().unwrap();
}

#[test]
fn a_leaf_with_a_mismatched_key_file_is_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    let store = CertStore::open(tmp.path().join("certs")).unwrap();
    let a = store.leaf(&["a.test"]).unwrap();
    store.leaf(&["b.test"]).unwrap();
    let (_, a_key) = store.leaf_paths(&["a.test"]).unwrap();
    let (_, b_key) = store.leaf_paths(&["b.test"]).unwrap();
    std::fs::copy(&b_key, &a_key).unwrap();
    let again = store.leaf(&["a.test"]).unwrap();
    assert_ne!(again.cert_chain, a.cert_chain);
}

#[test]
fn leaf_files_depend_on_the_set_of_names_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = CertStore::open(tmp.path().join("certs")).unwrap();
    let a = store.leaf_paths(&["localhost", "127.0.0.1"]).unwrap();
    let b = store
        .leaf_paths(&["127.0.0.1", "LOCALHOST", "localhost"])
        .unwrap();
    let c = store.leaf_paths(&["localhost"]).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn a_missing_ca_key_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = CertStore::open(tmp.path().join("certs")).unwrap();
    store.local_ca().unwrap();
    let (_, ca_key) = store.ca_paths();
    std::fs::remove_file(&ca_key).unwrap();
    let err = store.leaf(&["localhost"]).unwrap_err();
    assert!(matches!(err, CryptoError::File { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&ca_key.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_corrupt_ca_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = CertStore::open(tmp.path().join("certs")).unwrap();
    store.local_ca().unwrap();
    let (ca_cert, _) = store.ca_paths();
    std::fs::write(&ca_cert, "garbage\n").unwrap();
    let err = store.local_ca().unwrap_err();
    assert!(
        err.to_string().contains(&ca_cert.display().to_string()),
        "{err}"
    );
}

#[test]
fn invalid_names_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = CertStore::open(tmp.path().join("certs")).unwrap();
    for bad in [&[][..], &["not a name"][..], &["bad_label!.test"][..]] {
        let err = store.leaf(bad).unwrap_err();
        assert!(
            matches!(err, CryptoError::InvalidName { .. }),
            "{bad:?}: {err:?}"
        );
    }
    assert!(stoq_crypto::ephemeral_material(&[]).is_err());
}

#[test]
fn open_default_honours_stoq_home() {
    // The only test that touches the environment.
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("STOQ_HOME", tmp.path());
    let store = CertStore::open_default().unwrap();
    std::env::remove_var("STOQ_HOME");
    assert_eq!(store.dir(), tmp.path().join("certs"));
    assert_eq!(mode(store.dir()), 0o700);
}
