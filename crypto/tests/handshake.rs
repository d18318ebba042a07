//! The provider's preferences and in-memory rustls handshakes between `client_config` and
//! `server_config`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{alpn, Pair, Side};
use stoq_core::TlsMaterial;
use stoq_crypto::rustls::crypto::aws_lc_rs::cipher_suite;
use stoq_crypto::rustls::{self, CertificateError, CipherSuite, NamedGroup, ProtocolVersion};
use stoq_crypto::{
    client_config, ephemeral_material, provider, server_config, CryptoError, LocalCa, LEAF_VALIDITY,
};

#[test]
fn provider_prefers_hybrid_pq_kx_and_aes128_gcm() {
    let p = provider();
    let groups: Vec<NamedGroup> = p.kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(
        groups,
        [
            NamedGroup::X25519MLKEM768,
            NamedGroup::X25519,
            NamedGroup::secp256r1,
            NamedGroup::secp384r1
        ]
    );
    let suites: Vec<CipherSuite> = p.cipher_suites.iter().map(|s| s.suite()).collect();
    assert_eq!(
        suites,
        [
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        ]
    );
    assert!(p
        .cipher_suites
        .iter()
        .all(|s| s.version() == &rustls::version::TLS13));
    // One shared instance.
    assert!(Arc::ptr_eq(&p, &provider()));
}

#[test]
fn handshake_negotiates_x25519mlkem768_tls13_aes128_and_alpn() {
    let material = ephemeral_material(&["localhost"]).unwrap();
    let client = client_config(&material, &alpn()).unwrap();
    let server = server_config(&material, &alpn()).unwrap();
    let mut pair = Pair::new(client, server, "localhost");
    pair.handshake().expect("handshake succeeds");
    for conn in [&pair.client, &pair.server] {
        assert_eq!(
            conn.negotiated_key_exchange_group().map(|g| g.name()),
            Some(NamedGroup::X25519MLKEM768)
        );
        assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(
            conn.negotiated_cipher_suite().map(|s| s.suite()),
            Some(CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        assert_eq!(conn.alpn_protocol(), Some(&b"stoq-test"[..]));
    }
    // No client certificate was requested.
    assert!(pair.server.peer_certificates().is_none());
}

#[test]
fn server_picks_aes128_even_when_the_client_prefers_aes256() {
    let material = ephemeral_material(&["localhost"]).unwrap();
    let mut client = client_config(&material, &alpn()).unwrap();
    // A client built elsewhere with a different preference order.
    let mut other = (*provider()).clone();
    other.cipher_suites = vec![
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS13_AES_128_GCM_SHA256,
    ];
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        r.add(material.roots[0].clone()).unwrap();
        r
    };
    client = rustls::ClientConfig::builder_with_provider(Arc::new(other))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
        .tap_alpn(client.alpn_protocols.clone());
    let server = server_config(&material, &alpn()).unwrap();
    let mut pair = Pair::new(client, server, "localhost");
    pair.handshake().unwrap();
    assert_eq!(
        pair.client.negotiated_cipher_suite().map(|s| s.suite()),
        Some(CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
}

trait TapAlpn {
    fn tap_alpn(self, alpn: Vec<Vec<u8>>) -> Self;
}
impl TapAlpn for rustls::ClientConfig {
    fn tap_alpn(mut self, alpn: Vec<Vec<u8>>) -> Self {
        self.alpn_protocols = alpn;
        self
    }
}

#[test]
fn handshake_with_an_untrusted_root_fails_with_invalid_certificate() {
    let server_material = ephemeral_material(&["localhost"]).unwrap();
    // Another CA: the client trusts it, not the server's.
    let client_material = TlsMaterial {
        identity: None,
        roots: ephemeral_material(&["localhost"]).unwrap().roots,
        require_client_auth: false,
        identity_source: None,
    };
    let client = client_config(&client_material, &alpn()).unwrap();
    let server = server_config(&server_material, &alpn()).unwrap();
    let mut pair = Pair::new(client, server, "localhost");
    let (side, err) = pair.handshake().expect_err("must fail");
    assert_eq!(side, Side::Client);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}

#[test]
fn handshake_with_the_wrong_server_name_fails() {
    let material = ephemeral_material(&["localhost"]).unwrap();
    let client = client_config(&material, &alpn()).unwrap();
    let server = server_config(&material, &alpn()).unwrap();
    let mut pair = Pair::new(client, server, "example.com");
    let (side, err) = pair.handshake().expect_err("must fail");
    assert_eq!(side, Side::Client);
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}

#[test]
fn ip_address_names_become_ip_sans() {
    let material = ephemeral_material(&["127.0.0.1", "::1", "localhost"]).unwrap();
    for name in ["127.0.0.1", "::1", "localhost"] {
        let client = client_config(&material, &alpn()).unwrap();
        let server = server_config(&material, &alpn()).unwrap();
        let mut pair = Pair::new(client, server, name);
        pair.handshake()
            .unwrap_or_else(|e| panic!("handshake to {name}: {e:?}"));
    }
}

/// A server requiring client certificates, and a client identity from the same CA.
fn mutual(ca: &LocalCa) -> (TlsMaterial, TlsMaterial) {
    let server = TlsMaterial {
        identity: Some(ca.issue_leaf(&["localhost"], LEAF_VALIDITY).unwrap()),
        roots: vec![ca.cert().clone()],
        require_client_auth: true,
        identity_source: None,
    };
    let client = TlsMaterial {
        identity: Some(ca.issue_leaf(&["client.stoq.test"], LEAF_VALIDITY).unwrap()),
        roots: vec![ca.cert().clone()],
        require_client_auth: false,
        identity_source: None,
    };
    (server, client)
}

#[test]
fn mutual_auth_succeeds_with_a_client_certificate() {
    let ca = LocalCa::generate().unwrap();
    let (server_m, client_m) = mutual(&ca);
    let mut pair = Pair::new(
        client_config(&client_m, &alpn()).unwrap(),
        server_config(&server_m, &alpn()).unwrap(),
        "localhost",
    );
    pair.handshake().expect("mutual handshake succeeds");
    let presented = pair.server.peer_certificates().expect("client certificate");
    assert_eq!(
        presented[0],
        client_m.identity.as_ref().unwrap().cert_chain[0]
    );
    assert_eq!(
        pair.server
            .negotiated_key_exchange_group()
            .map(|g| g.name()),
        Some(NamedGroup::X25519MLKEM768)
    );
}

#[test]
fn mutual_auth_rejects_a_client_without_certificate() {
    let ca = LocalCa::generate().unwrap();
    let (server_m, mut client_m) = mutual(&ca);
    client_m.identity = None;
    let mut pair = Pair::new(
        client_config(&client_m, &alpn()).unwrap(),
        server_config(&server_m, &alpn()).unwrap(),
        "localhost",
    );
    let (side, err) = pair.handshake().expect_err("must fail");
    assert_eq!(side, Side::Server);
    assert!(
        matches!(err, rustls::Error::NoCertificatesPresented),
        "{err:?}"
    );
}

#[test]
fn mutual_auth_rejects_a_client_certificate_from_another_ca() {
    let ca = LocalCa::generate().unwrap();
    let (server_m, mut client_m) = mutual(&ca);
    let stranger = LocalCa::generate().unwrap();
    client_m.identity = Some(stranger.issue_leaf(&["client"], LEAF_VALIDITY).unwrap());
    let mut pair = Pair::new(
        client_config(&client_m, &alpn()).unwrap(),
        server_config(&server_m, &alpn()).unwrap(),
        "localhost",
    );
    let (side, err) = pair.handshake().expect_err("must fail");
    assert_eq!(side, Side::Server);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}

#[test]
fn server_config_requires_an_identity() {
    let mut material = ephemeral_material(&["localhost"]).unwrap();
    material.identity = None;
    let err = server_config(&material, &alpn()).unwrap_err();
    assert!(matches!(err, CryptoError::NoIdentity), "{err:?}");
}

#[test]
fn client_config_requires_roots() {
    let mut material = ephemeral_material(&["localhost"]).unwrap();
    material.roots.clear();
    let err = client_config(&material, &alpn()).unwrap_err();
    assert!(matches!(err, CryptoError::NoRoots), "{err:?}");
    assert!(err.to_string().contains("no trust roots"), "{err}");
    // Requiring client auth without roots is the same mistake on the server side.
    material.require_client_auth = true;
    let err = server_config(&material, &alpn()).unwrap_err();
    assert!(matches!(err, CryptoError::NoRoots), "{err:?}");
}

#[test]
fn configs_reject_a_key_that_does_not_match_the_leaf() {
    let mut material = ephemeral_material(&["localhost"]).unwrap();
    let other = ephemeral_material(&["localhost"]).unwrap();
    material.identity.as_mut().unwrap().key = other.identity.unwrap().key;
    let err = server_config(&material, &alpn()).unwrap_err();
    assert!(matches!(err, CryptoError::KeyMismatch { .. }), "{err:?}");
    let err = client_config(&material, &alpn()).unwrap_err();
    assert!(matches!(err, CryptoError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn configs_are_tls13_only_without_early_data() {
    let material = ephemeral_material(&["localhost"]).unwrap();
    let server = server_config(&material, &alpn()).unwrap();
    assert_eq!(server.max_early_data_size, 0);
    assert!(server.ignore_client_order);
    assert_eq!(server.alpn_protocols, vec![b"stoq-test".to_vec()]);
    let client = client_config(&material, &alpn()).unwrap();
    assert!(!client.enable_early_data);
    assert_eq!(client.alpn_protocols, vec![b"stoq-test".to_vec()]);
}

#[test]
fn crypto_error_converts_to_core_tls_error() {
    let e: stoq_core::Error = CryptoError::NoRoots.into();
    match e {
        stoq_core::Error::Tls(msg) => assert!(msg.contains("no trust roots"), "{msg}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn ephemeral_leaf_is_valid_about_ninety_days() {
    let material = ephemeral_material(&["localhost"]).unwrap();
    let leaf = &material.identity.unwrap().cert_chain[0];
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf).unwrap();
    let v = &cert.tbs_certificate.validity;
    let life = v
        .not_after
        .to_system_time()
        .duration_since(v.not_before.to_system_time())
        .unwrap();
    let expected = LEAF_VALIDITY + Duration::from_secs(300);
    assert!(life.abs_diff(expected) < Duration::from_secs(5), "{life:?}");
}
