//! Behaviour of the io_uring backend's engines beyond the shared conformance suite: the
//! edges where the direct engine (it drives quinn-proto itself) must do what quinn's
//! glue does.

use std::sync::Arc;
use std::time::Duration;

use stoq_conformance::emulator::{Emulator, Impairments};
use stoq_core::{EndpointSpec, Transport, TransportConfig};
use stoq_uring::{UringEngine, UringOptions};

fn options(engine: UringEngine) -> UringOptions {
    UringOptions::default().with_engine(engine)
}

fn pair(engine: UringEngine) -> (Arc<dyn Transport>, Arc<dyn Transport>) {
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
    let server = stoq_uring::bind(
        EndpointSpec::server(
            "[::1]:0".parse().unwrap(),
            TransportConfig::default(),
            tls.clone(),
        ),
        &options(engine),
    )
    .expect("binding a server");
    let client = stoq_uring::bind(
        EndpointSpec::client(
            server.local_addr().unwrap(),
            TransportConfig::default(),
            tls,
        ),
        &options(engine),
    )
    .expect("binding a client");
    (server, client)
}

/// `finish()` after the peer's STOP_SENDING is not an error (the application learns of
/// the stop from `stopped()`), as in quinn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_after_stop_sending_succeeds_on_both_engines() {
    for engine in [UringEngine::Direct, UringEngine::QuinnGlue] {
        let (server, client) = pair(engine);
        let addr = server.local_addr().unwrap();
        let conn = client.connect(addr, "localhost").await.unwrap();
        let mut send = conn.open_uni().await.unwrap();
        send.write_all(b"hello").await.unwrap();
        let peer = server.accept().await.unwrap();
        let mut recv = peer.accept_uni().await.unwrap();
        recv.stop(43).unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(10), send.stopped())
            .await
            .expect("STOP_SENDING arrives");
        assert_eq!(stopped, Ok(Some(43)), "{engine:?}");
        assert_eq!(send.finish().await, Ok(()), "{engine:?}");
        // Still stopped (not "all data acknowledged") well after any reset the finish
        // could have sent would be acknowledged: loopback round trips take microseconds.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(send.stopped().await, Ok(Some(43)), "{engine:?}");
        conn.close(0, b"done");
    }
}

/// A server endpoint dropped while a client's handshake is under way must not keep that
/// connection (and itself) alive once the handshake completes: nobody can accept it.
/// The path's 300 ms one-way delay puts the drop (at 450 ms) between the server's first
/// flight (300 ms) and the client's last one reaching it (900 ms), with 150 ms and more of
/// margin either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_completing_after_the_server_is_dropped_is_closed() {
    let (server, client) = pair(UringEngine::Direct);
    let delayed = Impairments {
        delay: Duration::from_millis(300),
        ..Impairments::default()
    };
    let relay = Emulator::start(server.local_addr().unwrap(), delayed.clone(), delayed, 1)
        .await
        .unwrap();
    let relay_addr = relay.addr();
    let connecting = tokio::spawn(async move {
        let r = client.connect(relay_addr, "localhost").await;
        (r, client)
    });
    tokio::time::sleep(Duration::from_millis(450)).await;
    drop(server);
    let (conn, _client) = connecting.await.unwrap();
    // The server answered the first flight before it was dropped, so the client's side
    // completes; then the server must close the connection soon, well within the 30 s
    // idle timeout that would end a connection it kept and ignored.
    let conn = conn.expect("the handshake completes on the client's side");
    let err = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the server closes the connection nobody can accept");
    assert!(
        matches!(
            err,
            stoq_core::ConnectionError::ApplicationClosed { code: 0, .. }
        ),
        "{err:?}"
    );
}
