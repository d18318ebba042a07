//! Ed25519 certificates work with the quiche backend as with the rustls-based ones.
//!
//! Two gaps found by the handshakes benchmark: BoringSSL refused rcgen's Ed25519 keys
//! (PKCS#8 v2, `DECODE_ERROR`), and its default signature-verification list leaves Ed25519
//! out, so a quiche client failed every handshake with an Ed25519 server
//! (`handshake_failure`). Both directions are checked here, quiche to quiche and across
//! engines with quinn.

use std::sync::Arc;

use stoq_core::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use stoq_core::{Backend, EndpointSpec, Identity, TlsMaterial, TransportConfig};

/// A CA and an Ed25519 leaf for "localhost" issued by it, with the key as rcgen writes it.
fn ed25519_material() -> (TlsMaterial, TlsMaterial) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Distinct subjects: with rcgen's default name on both, BoringSSL takes the leaf for
    // a self-signed certificate.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Ed25519 test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let root: CertificateDer<'static> = ca.der().clone();
    let server = TlsMaterial {
        identity: Some(Identity {
            cert_chain: vec![leaf.der().clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                leaf_key.serialize_der(),
            ))),
        }),
        roots: vec![root.clone()],
        require_client_auth: false,
        identity_source: None,
    };
    let client = TlsMaterial {
        identity: None,
        roots: vec![root],
        require_client_auth: false,
        identity_source: None,
    };
    (server, client)
}

async fn round_trip(server_backend: &dyn Backend, client_backend: &dyn Backend) {
    let (server_tls, client_tls) = ed25519_material();
    let server = server_backend
        .bind(EndpointSpec::server(
            "[::1]:0".parse().unwrap(),
            TransportConfig::default(),
            server_tls,
        ))
        .expect("an Ed25519 identity is accepted");
    let addr = server.local_addr().unwrap();
    let client = client_backend
        .bind(EndpointSpec::client(
            addr,
            TransportConfig::default(),
            client_tls,
        ))
        .unwrap();
    let accept = tokio::spawn(async move {
        let conn = server.accept().await.expect("server side of the handshake");
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let got = recv.read_to_end(64).await.unwrap().unwrap();
        send.write_all(&got).await.unwrap();
        send.finish().await.unwrap();
        conn.closed().await;
    });
    let conn = client
        .connect(addr, "localhost")
        .await
        .expect("an Ed25519 server certificate is verified");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"ed25519").await.unwrap();
    send.finish().await.unwrap();
    assert_eq!(recv.read_to_end(64).await.unwrap().unwrap(), b"ed25519");
    conn.close(0, b"done");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), accept).await;
}

#[tokio::test]
async fn quiche_to_quiche_with_an_ed25519_certificate() {
    round_trip(&stoq_quiche::QuicheBackend, &stoq_quiche::QuicheBackend).await;
}

#[tokio::test]
async fn quinn_client_and_quiche_server_with_an_ed25519_certificate() {
    round_trip(&stoq_quiche::QuicheBackend, &stoq_quinn::QuinnBackend).await;
}

#[tokio::test]
async fn quiche_client_and_quinn_server_with_an_ed25519_certificate() {
    round_trip(&stoq_quinn::QuinnBackend, &stoq_quiche::QuicheBackend).await;
}
