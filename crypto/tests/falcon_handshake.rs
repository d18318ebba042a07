//! In-memory rustls handshakes with FALCON certificates: `falcon_server_config` /
//! `falcon_client_config`, failures with typed errors, and the size of the server's first
//! flight under QUIC.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{alpn, Pair, Side};
use stoq_core::{Identity, TlsMaterial};
use stoq_crypto::falcon::{
    falcon_client_config, falcon_provider, falcon_server_config, FalconAlgorithm, FalconCa,
    FalconLeaf, FalconLevel, FalconSecretKey, FalconSigningKey, FALCON_CA_VALIDITY,
    FALCON_LEAF_VALIDITY,
};
use stoq_crypto::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use stoq_crypto::rustls::client::WebPkiServerVerifier;
use stoq_crypto::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use stoq_crypto::rustls::sign::{CertifiedKey, SingleCertAndKey};
use stoq_crypto::rustls::{
    self, CertificateError, DigitallySignedStruct, NamedGroup, PeerIncompatible, SignatureScheme,
};
use stoq_crypto::{
    classical_client_config, ephemeral_material, provider, server_config, CryptoError,
};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn falcon_ca(level: FalconLevel) -> FalconCa {
    FalconCa::generate(level, "STOQ FALCON test CA", FALCON_CA_VALIDITY).unwrap()
}

fn server_material(leaf: &FalconLeaf) -> TlsMaterial {
    TlsMaterial {
        identity: Some(leaf.identity()),
        roots: vec![],
        require_client_auth: false,
        identity_source: None,
    }
}

fn client_material(roots: Vec<CertificateDer<'static>>) -> TlsMaterial {
    TlsMaterial {
        identity: None,
        roots,
        require_client_auth: false,
        identity_source: None,
    }
}

/// Wraps the client's verifier to record which TLS 1.3 signature scheme the server used.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    schemes: Mutex<Vec<SignatureScheme>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.schemes.lock().unwrap().push(dss.scheme);
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A FALCON client config whose verifier records the schemes it verified.
fn recording_client(roots: Vec<CertificateDer<'static>>) -> (rustls::ClientConfig, Arc<Recording>) {
    let mut config = falcon_client_config(&client_material(roots.clone()), &alpn()).unwrap();
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root).unwrap();
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(store), falcon_provider())
        .build()
        .unwrap();
    let recording = Arc::new(Recording {
        inner,
        schemes: Mutex::new(vec![]),
    });
    config
        .dangerous()
        .set_certificate_verifier(recording.clone());
    (config, recording)
}

#[test]
fn falcon_leaf_handshake_negotiates_the_falcon_scheme_and_x25519mlkem768() {
    for (ca_level, leaf_level) in [
        (FalconLevel::L512, FalconLevel::L512),
        (FalconLevel::L1024, FalconLevel::L1024),
        (FalconLevel::L1024, FalconLevel::L512),
    ] {
        let ca = falcon_ca(ca_level);
        let leaf = ca
            .issue_leaf(
                leaf_level,
                &["localhost", "127.0.0.1"],
                FALCON_LEAF_VALIDITY,
            )
            .unwrap();
        for name in ["localhost", "127.0.0.1"] {
            let (client, recording) = recording_client(vec![ca.cert().clone()]);
            let server = falcon_server_config(&server_material(&leaf), &alpn()).unwrap();
            let mut pair = Pair::new(client, server, name);
            pair.handshake()
                .unwrap_or_else(|e| panic!("{leaf_level:?} leaf, {name}: {e:?}"));
            let expected = leaf_level.default_algorithm().tls_scheme();
            assert_eq!(*recording.schemes.lock().unwrap(), [expected]);
            for conn in [&pair.client, &pair.server] {
                assert_eq!(
                    conn.negotiated_key_exchange_group().map(|g| g.name()),
                    Some(NamedGroup::X25519MLKEM768)
                );
                assert_eq!(conn.alpn_protocol(), Some(&b"stoq-test"[..]));
            }
            assert_eq!(
                pair.client.peer_certificates().unwrap(),
                std::slice::from_ref(&leaf.cert)
            );
        }
    }
}

#[test]
fn the_falcon_client_offers_the_falcon_schemes_after_the_classical_ones() {
    let config = falcon_client_config(
        &client_material(vec![falcon_ca(FalconLevel::L512).cert().clone()]),
        &alpn(),
    )
    .unwrap();
    let schemes = config
        .crypto_provider()
        .signature_verification_algorithms
        .supported_schemes();
    let classical = provider()
        .signature_verification_algorithms
        .supported_schemes();
    assert_eq!(&schemes[..classical.len()], classical.as_slice());
    assert_eq!(
        &schemes[classical.len()..],
        [0xfedc, 0xfedf, 0xfed7, 0xfeda].map(SignatureScheme::from)
    );
}

#[test]
fn the_server_sends_the_leaf_only() {
    let ca = falcon_ca(FalconLevel::L512);
    let leaf = ca
        .issue_leaf(FalconLevel::L512, &["localhost"], DAY)
        .unwrap();
    let mut material = server_material(&leaf);
    material
        .identity
        .as_mut()
        .unwrap()
        .cert_chain
        .push(ca.cert().clone());
    let client = falcon_client_config(&client_material(vec![ca.cert().clone()]), &alpn()).unwrap();
    let server = falcon_server_config(&material, &alpn()).unwrap();
    let mut pair = Pair::new(client, server, "localhost");
    pair.handshake().unwrap();
    assert_eq!(pair.client.peer_certificates().unwrap().len(), 1);
}

#[test]
fn one_trust_store_mixes_falcon_and_classical_roots() {
    let ca = falcon_ca(FalconLevel::L512);
    let leaf = ca
        .issue_leaf(FalconLevel::L512, &["localhost"], DAY)
        .unwrap();
    let classical = ephemeral_material(&["localhost"]).unwrap();
    let roots = vec![ca.cert().clone(), classical.roots[0].clone()];
    // FALCON server.
    let (client, recording) = recording_client(roots.clone());
    let server = falcon_server_config(&server_material(&leaf), &alpn()).unwrap();
    Pair::new(client, server, "localhost").handshake().unwrap();
    assert_eq!(
        *recording.schemes.lock().unwrap(),
        [FalconAlgorithm::FalconPadded512.tls_scheme()]
    );
    // Classical server, through both server helpers.
    for server in [
        server_config(&classical, &alpn()).unwrap(),
        falcon_server_config(&classical, &alpn()).unwrap(),
    ] {
        let (client, recording) = recording_client(roots.clone());
        Pair::new(client, server, "localhost").handshake().unwrap();
        assert_eq!(
            *recording.schemes.lock().unwrap(),
            [SignatureScheme::ECDSA_NISTP256_SHA256]
        );
    }
}

#[test]
fn mutual_authentication_with_falcon_client_certificates() {
    let ca = falcon_ca(FalconLevel::L512);
    let server_leaf = ca
        .issue_leaf(FalconLevel::L512, &["localhost"], DAY)
        .unwrap();
    let client_leaf = ca
        .issue_leaf(FalconLevel::L512, &["client.stoq.test"], DAY)
        .unwrap();
    let server_m = TlsMaterial {
        identity: Some(server_leaf.identity()),
        roots: vec![ca.cert().clone()],
        require_client_auth: true,
        identity_source: None,
    };
    let client_m = TlsMaterial {
        identity: Some(client_leaf.identity()),
        roots: vec![ca.cert().clone()],
        require_client_auth: false,
        identity_source: None,
    };
    let mut pair = Pair::new(
        falcon_client_config(&client_m, &alpn()).unwrap(),
        falcon_server_config(&server_m, &alpn()).unwrap(),
        "localhost",
    );
    pair.handshake().unwrap();
    assert_eq!(
        pair.server.peer_certificates().unwrap(),
        std::slice::from_ref(&client_leaf.cert)
    );
}

#[test]
fn a_tampered_certificate_signature_fails_with_bad_signature() {
    let ca = falcon_ca(FalconLevel::L512);
    let leaf = ca
        .issue_leaf(FalconLevel::L512, &["localhost"], DAY)
        .unwrap();
    let mut der = leaf.cert.to_vec();
    let i = der.len() - 20;
    der[i] ^= 0x10;
    let mut material = server_material(&leaf);
    material.identity.as_mut().unwrap().cert_chain = vec![CertificateDer::from(der)];
    let client = falcon_client_config(&client_material(vec![ca.cert().clone()]), &alpn()).unwrap();
    let server = falcon_server_config(&material, &alpn()).unwrap();
    let (side, err) = Pair::new(client, server, "localhost")
        .handshake()
        .unwrap_err();
    assert_eq!(side, Side::Client);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
        ),
        "{err:?}"
    );
}

#[test]
fn a_certificate_verify_by_another_key_fails_with_bad_signature() {
    let ca = falcon_ca(FalconLevel::L512);
    let leaf = ca
        .issue_leaf(FalconLevel::L512, &["localhost"], DAY)
        .unwrap();
    let impostor = FalconSecretKey::generate(FalconLevel::L512);
    // The helpers refuse the mismatch up front...
    let mut material = server_material(&leaf);
    material.identity.as_mut().unwrap().key = Arc::new(impostor.to_private_key_der());
    let err = falcon_server_config(&material, &alpn()).unwrap_err();
    assert!(matches!(err, CryptoError::KeyMismatch { .. }), "{err:?}");
    // ...so build a server that signs CertificateVerify with the wrong key anyway.
    let certified = CertifiedKey::new(
        vec![leaf.cert.clone()],
        Arc::new(FalconSigningKey::new(impostor)),
    );
    let mut server = rustls::ServerConfig::builder_with_provider(falcon_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    server.alpn_protocols = vec![b"stoq-test".to_vec()];
    let client = falcon_client_config(&client_material(vec![ca.cert().clone()]), &alpn()).unwrap();
    let (side, err) = Pair::new(client, server, "localhost")
        .handshake()
        .unwrap_err();
    assert_eq!(side, Side::Client);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
        ),
        "{err:?}"
    );
}

#[test]
fn the_wrong_server_name_fails() {
    let ca = falcon_ca(FalconLevel::L512);
    let leaf = ca
        .issue_leaf(FalconLevel::L512, &["localhost"], DAY)
        .unwrap();
    let client = falcon_client_config(&client_material(vec![ca.cert().clone()]), &alpn()).unwrap();
    let server = falcon_server_config(&server_material(&leaf), &alpn()).unwrap();
    let (side, err) = Pair::new(client, server, "example.com")
        .handshake()
        .unwrap_err();
    assert_eq!(side, Side::Client);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err:?}"
    );
}

#[test]
fn an_expired_certificate_fails() {
    let ca = falcon_ca(FalconLevel::L512);
    let key = FalconSecretKey::generate(FalconLevel::L512);
    let now = SystemTime::now();
    let cert = ca
        .issue_for(key.public_key(), &["localhost"], now - 30 * DAY, now - DAY)
        .unwrap();
    let material = TlsMaterial {
        identity: Some(Identity {
            cert_chain: vec![cert],
            key: Arc::new(key.to_private_key_der()),
        }),
        roots: vec![],
        require_client_auth: false,
        identity_source: None,
    };
    let client = falcon_client_config(&client_material(vec![ca.cert().clone()]), &alpn()).unwrap();
    let server = falcon_server_config(&material, &alpn()).unwrap();
    let (side, err) = Pair::new(client, server, "localhost")
        .handshake()
        .unwrap_err();
    assert_eq!(side, Side::Client);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{err:?}"
    );
}

#[test]
fn an_untrusted_falcon_ca_fails() {
    let ca = falcon_ca(FalconLevel::L512);
    let leaf = ca
        .issue_leaf(FalconLevel::L512, &["localhost"], DAY)
        .unwrap();
    // Another CA: unknown issuer.
    let stranger = FalconCa::generate(FalconLevel::L512, "Someone else", DAY).unwrap();
    let client =
        falcon_client_config(&client_material(vec![stranger.cert().clone()]), &alpn()).unwrap();
    let server = falcon_server_config(&server_material(&leaf), &alpn()).unwrap();
    let (side, err) = Pair::new(client, server, "localhost")
        .handshake()
        .unwrap_err();
    assert_eq!(side, Side::Client);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
    // A CA with the same name but another key: the issuer's signature does not verify.
    let impostor = falcon_ca(FalconLevel::L512);
    let client =
        falcon_client_config(&client_material(vec![impostor.cert().clone()]), &alpn()).unwrap();
    let server = falcon_server_config(&server_material(&leaf), &alpn()).unwrap();
    let (side, err) = Pair::new(client, server, "localhost")
        .handshake()
        .unwrap_err();
    assert_eq!(side, Side::Client);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
        ),
        "{err:?}"
    );
}

#[test]
fn a_client_that_does_not_offer_falcon_is_refused_by_the_server() {
    let ca = falcon_ca(FalconLevel::L512);
    let leaf = ca
        .issue_leaf(FalconLevel::L512, &["localhost"], DAY)
        .unwrap();
    // The classical client, even trusting the FALCON CA, offers no FALCON scheme.
    let client =
        classical_client_config(&client_material(vec![ca.cert().clone()]), &alpn()).unwrap();
    let server = falcon_server_config(&server_material(&leaf), &alpn()).unwrap();
    let (side, err) = Pair::new(client, server, "localhost")
        .handshake()
        .unwrap_err();
    assert_eq!(side, Side::Server);
    assert!(
        matches!(
            err,
            rustls::Error::PeerIncompatible(PeerIncompatible::NoSignatureSchemesInCommon)
        ),
        "{err:?}"
    );
}

/// Runs a QUIC handshake (rustls's QUIC API: the TLS messages QUIC CRYPTO frames carry, no
/// record layer) and returns (client's first flight, server's first flight) in bytes.
fn quic_first_flights(
    client: rustls::ClientConfig,
    server: rustls::ServerConfig,
) -> (usize, usize) {
    use rustls::quic::{ClientConnection, ServerConnection, Version};
    let mut client = ClientConnection::new(
        Arc::new(client),
        Version::V1,
        ServerName::try_from("localhost").unwrap(),
        vec![0u8; 60], // transport parameters, a typical size
    )
    .unwrap();
    let mut server = ServerConnection::new(Arc::new(server), Version::V1, vec![0u8; 60]).unwrap();
    let mut first = Vec::new();
    loop {
        let before = first.len();
        let key_change = client.write_hs(&mut first);
        if first.len() == before && key_change.is_none() {
            break;
        }
    }
    server.read_hs(&first).unwrap();
    // One chunk per encryption level (Initial: ServerHello; Handshake: the rest).
    let mut reply = 0;
    loop {
        let mut chunk = Vec::new();
        let key_change = server.write_hs(&mut chunk);
        if chunk.is_empty() && key_change.is_none() {
            break;
        }
        reply += chunk.len();
        if !chunk.is_empty() {
            client.read_hs(&chunk).unwrap();
        }
    }
    // The client accepted the server's flight: it can answer with its Finished.
    let mut finished = Vec::new();
    client.write_hs(&mut finished);
    assert!(!finished.is_empty());
    (first.len(), reply)
}

#[test]
fn first_flight_size_with_a_falcon_512_leaf() {
    let ca = falcon_ca(FalconLevel::L512);
    let leaf = ca
        .issue_leaf(FalconLevel::L512, &["localhost"], FALCON_LEAF_VALIDITY)
        .unwrap();
    let client_m = client_material(vec![ca.cert().clone()]);
    let server_m = server_material(&leaf);
    let (hybrid_c, hybrid_s) = quic_first_flights(
        falcon_client_config(&client_m, &alpn()).unwrap(),
        falcon_server_config(&server_m, &alpn()).unwrap(),
    );
    // The same with a client offering X25519 only (no ML-KEM share in either hello).
    let mut classical_kx = (*falcon_provider()).clone();
    classical_kx.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let mut x25519_client = rustls::ClientConfig::builder_with_provider(Arc::new(classical_kx))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates({
            let mut r = rustls::RootCertStore::empty();
            r.add(ca.cert().clone()).unwrap();
            r
        })
        .with_no_client_auth();
    x25519_client.alpn_protocols = vec![b"stoq-test".to_vec()];
    let (x_c, x_s) = quic_first_flights(
        x25519_client,
        falcon_server_config(&server_m, &alpn()).unwrap(),
    );

    // QUIC pads every client Initial datagram to at least 1,200 bytes; the server may send
    // three times what it received before validating the address (RFC 9000, 8.1). About 50
    // bytes per packet go to QUIC headers, frames and the AEAD tag.
    let datagrams = |tls: usize| tls.div_ceil(1200 - 50);
    let budget = |tls: usize| 3 * 1200 * datagrams(tls);
    println!(
        "FALCON-512 leaf: certificate {} B; QUIC TLS handshake bytes: X25519MLKEM768 client {} B \
         ({} Initial datagrams, amplification budget {} B), server first flight {} B; \
         X25519-only client {} B (budget {} B), server first flight {} B",
        leaf.cert.len(),
        hybrid_c,
        datagrams(hybrid_c),
        budget(hybrid_c),
        hybrid_s,
        x_c,
        budget(x_c),
        x_s
    );
    // The FALCON-512 leaf (and its 666-byte CertificateVerify) fits in the first flight.
    let overhead = 4 * 60; // generous QUIC packet overhead for the server's flight
    assert!(
        hybrid_s + overhead <= budget(hybrid_c),
        "{hybrid_s} vs {}",
        budget(hybrid_c)
    );
    assert!(x_s + overhead <= budget(x_c), "{x_s} vs {}", budget(x_c));
}

#[test]
fn falcon_identities_and_roots_load_from_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = falcon_ca(FalconLevel::L512);
    let leaf = ca
        .issue_leaf(FalconLevel::L512, &["localhost"], DAY)
        .unwrap();
    let (cert_path, key_path, ca_path) = (
        dir.path().join("leaf.pem"),
        dir.path().join("leaf.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert_path, leaf.cert_pem()).unwrap();
    leaf.key.write_pkcs8_pem(&key_path).unwrap();
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();

    let identity = stoq_crypto::load_identity(&cert_path, &key_path).unwrap();
    let roots = stoq_crypto::load_roots(&ca_path).unwrap();
    let server_m = TlsMaterial {
        identity: Some(identity),
        roots: vec![],
        require_client_auth: false,
        identity_source: None,
    };
    let client = falcon_client_config(&client_material(roots), &alpn()).unwrap();
    let server = falcon_server_config(&server_m, &alpn()).unwrap();
    Pair::new(client, server, "localhost").handshake().unwrap();

    // Another FALCON key with that leaf: a mismatch naming the files.
    let other = dir.path().join("other.key");
    FalconSecretKey::generate(FalconLevel::L512)
        .write_pkcs8_pem(&other)
        .unwrap();
    let err = stoq_crypto::load_identity(&cert_path, &other).unwrap_err();
    assert!(matches!(err, CryptoError::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("other.key"), "{err}");
}
