//! `falcon_identity()`: the store's FALCON identity on every backend (in the handshake on
//! quinn, post-handshake on quiche), and certificate rotation under live connections.

mod common;

use std::time::Duration;

use common::{within, APP};
use phoenix::{FalconLevel, FalconMode, Phoenix, PhoenixError, TlsMaterial};
use stoq_crypto::falcon::{certificate_public_key, FalconAlgorithm};
use stoq_crypto::{CertStore, LeafKind};

async fn falcon_phoenix(backend: &str, dir: &std::path::Path) -> Phoenix {
    Phoenix::builder()
        .app_name(APP)
        .backend(backend)
        .cert_store(dir)
        .falcon_identity()
        .build()
        .await
        .unwrap()
}

async fn falcon_end_to_end(backend: &str, mode: FalconMode) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let server = falcon_phoenix(backend, &dir).await;
    let client = falcon_phoenix(backend, &dir).await;
    assert_eq!(server.falcon_mode(), Some(mode));
    assert!(dir.join("falcon-ca.pem").exists());
    let store = CertStore::open(&dir).unwrap();
    let falcon_leaf = store.falcon_leaf(&phoenix::DEFAULT_CERT_NAMES).unwrap();

    let listener = server.listen("[::]:0").await.unwrap();
    let target = format!("localhost:{}", listener.local_addr().port());
    let conn = within(30, client.connect(&target)).await.unwrap();
    let chain = conn.connection().peer_identity().expect("a verified peer");
    let public = certificate_public_key(&chain[0]).expect("the peer's leaf is FALCON");
    assert_eq!(public.algorithm(), FalconAlgorithm::FalconPadded512);
    assert_eq!(chain[0], falcon_leaf.cert_chain[0]);

    conn.send_data(b"post-quantum hello").await.unwrap();
    let msg = within(10, listener.next_message()).await.unwrap();
    assert_eq!(&msg.bytes[..], b"post-quantum hello");
    client.close().await;
    listener.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falcon_identity_goes_into_the_handshake_on_quinn() {
    falcon_end_to_end("quinn", FalconMode::InHandshake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falcon_identity_is_post_handshake_on_quiche() {
    falcon_end_to_end("quiche", FalconMode::PostHandshake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falcon_1024_is_one_call_too() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Phoenix::builder()
        .app_name(APP)
        .cert_store(tmp.path())
        .post_quantum_identity(FalconLevel::L1024)
        .build()
        .await
        .unwrap();
    let leaf = &p.tls().identity.as_ref().unwrap().cert_chain[0];
    assert_eq!(
        certificate_public_key(leaf).unwrap().algorithm(),
        FalconAlgorithm::FalconPadded1024
    );
    assert_eq!(p.tls().roots.len(), 2, "classical and FALCON CAs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falcon_identity_needs_the_store() {
    let material = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
    let err = Phoenix::builder()
        .app_name(APP)
        .tls(material)
        .falcon_identity()
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, PhoenixError::InvalidOptions(_)), "{err:?}");
}

/// A Phoenix on quinn whose TLS material rotates from a store with 8-second leaves renewed
/// in their last 5 seconds.
async fn rotating(material: TlsMaterial) -> Phoenix {
    Phoenix::builder()
        .app_name(APP)
        .backend("quinn")
        .tls(material)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_leaf_serves_new_handshakes_and_old_connections_keep_working() {
    let tmp = tempfile::tempdir().unwrap();
    let store = CertStore::open(tmp.path().join("certs"))
        .unwrap()
        .with_leaf_validity(Duration::from_secs(8))
        .with_renew_before(Duration::from_secs(5));
    let material = store
        .rotating_material(&["localhost"], LeafKind::Falcon)
        .unwrap();
    let client_material = TlsMaterial {
        identity: None,
        identity_source: None,
        ..material.clone()
    };
    let server = rotating(material).await;
    let listener = server.listen("[::]:0").await.unwrap();
    let target = format!("localhost:{}", listener.local_addr().port());

    let first_client = rotating(client_material.clone()).await;
    let first = within(30, first_client.connect(&target)).await.unwrap();
    let first_leaf = first.connection().peer_identity().unwrap()[0].clone();

    // Past the renewal point (X.509 validity has whole seconds; see the crypto tests).
    tokio::time::sleep(Duration::from_millis(4500)).await;
    // A new client endpoint: no session to resume, so a full handshake.
    let second_client = rotating(client_material).await;
    let second = within(30, second_client.connect(&target)).await.unwrap();
    let second_leaf = second.connection().peer_identity().unwrap()[0].clone();
    assert_ne!(first_leaf, second_leaf, "the server rotated its leaf");
    assert_eq!(
        second_leaf,
        store.falcon_leaf(&["localhost"]).unwrap().cert_chain[0]
    );

    // The connection authenticated with the old leaf still carries data.
    first.send_data(b"old connection").await.unwrap();
    second.send_data(b"new connection").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            within(10, listener.next_message())
                .await
                .unwrap()
                .bytes
                .to_vec(),
        );
    }
    got.sort();
    assert_eq!(
        got,
        [b"new connection".to_vec(), b"old connection".to_vec()]
    );
}
