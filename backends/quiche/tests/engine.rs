//! quiche-specific settings: each engine congestion controller, GSO and GRO off, and
//! stream behaviour the conformance suite does not pin down.

use std::time::Duration;

use stoq_conformance::util::{drain_and_hash, payload, send_all, sha256, LOCALHOST_V6};
use stoq_core::{
    Backend, CongestionAlgorithm, CongestionConfig, ConnectionError, EndpointSpec, StreamError,
    TransportConfig,
};
use stoq_quiche::QuicheBackend;

/// Binds a server and a client with `cfg` and returns both connections.
async fn pair(
    cfg: TransportConfig,
) -> (
    std::sync::Arc<dyn stoq_core::Transport>,
    std::sync::Arc<dyn stoq_core::Transport>,
    stoq_core::ConnectionHandle,
    stoq_core::ConnectionHandle,
) {
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
    let server = QuicheBackend
        .bind(EndpointSpec::server(LOCALHOST_V6, cfg.clone(), tls.clone()))
        .unwrap();
    let addr = server.local_addr().unwrap();
    let client = QuicheBackend
        .bind(EndpointSpec::client(addr, cfg, tls))
        .unwrap();
    let accept = {
        let server = server.clone();
        tokio::spawn(async move { server.accept().await })
    };
    let c = client.connect(addr, "localhost").await.unwrap();
    let s = accept.await.unwrap().unwrap();
    (server, client, c, s)
}

async fn transfer(cfg: TransportConfig, len: usize) {
    let (_server, _client, c, s) = pair(cfg).await;
    let data = payload(9, len);
    let receiver = tokio::spawn(async move {
        let mut r = s.accept_uni().await.unwrap();
        drain_and_hash(&mut r).await.unwrap()
    });
    let mut send = c.open_uni().await.unwrap();
    send_all(&mut send, &data, 64 * 1024).await.unwrap();
    let (n, hash) = receiver.await.unwrap();
    assert_eq!(n, len as u64);
    assert_eq!(hash, sha256(&data));
    let done = tokio::time::timeout(Duration::from_secs(10), send.stopped()).await;
    assert_eq!(done.unwrap(), Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_engine_congestion_controller_moves_data() {
    for algorithm in [
        CongestionAlgorithm::NewReno,
        CongestionAlgorithm::Cubic,
        CongestionAlgorithm::Bbr,
    ] {
        let cfg = TransportConfig {
            congestion: CongestionConfig {
                algorithm,
                ..CongestionConfig::default()
            },
            ..TransportConfig::default()
        };
        transfer(cfg, 16 << 20).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_gso_and_gro() {
    let cfg = TransportConfig {
        gso: false,
        gro: false,
        ..TransportConfig::default()
    };
    transfer(cfg, 8 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_mtu_discovery_on() {
    let cfg = TransportConfig {
        mtu_discovery: true,
        max_udp_payload: 9000,
        ..TransportConfig::default()
    };
    transfer(cfg, 8 << 20).await;
}

/// Bidirectional streams: `stopped()` resolves once the data is acknowledged and the
/// receive half is finished too (quiche only collects a bidirectional stream then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_stopped_after_both_halves_finish() {
    let (_server, _client, c, s) = pair(TransportConfig::default()).await;
    let (mut send, mut recv) = c.open_bi().await.unwrap();
    send.write_all(b"ping").await.unwrap();
    send.finish().await.unwrap();
    let (mut s_send, mut s_recv) = s.accept_bi().await.unwrap();
    assert_eq!(s_recv.read_to_end(64).await.unwrap().unwrap(), b"ping");
    s_send.write_all(b"pong").await.unwrap();
    s_send.finish().await.unwrap();
    assert_eq!(recv.read_to_end(64).await.unwrap().unwrap(), b"pong");
    let done = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    assert_eq!(done.unwrap(), Ok(None));
    let done = tokio::time::timeout(Duration::from_secs(5), s_send.stopped()).await;
    assert_eq!(done.unwrap(), Ok(None));
}

/// A STOP_SENDING that arrives while a write waits for flow-control credit fails the
/// write (or, had the FIN been queued, `stopped()`) with the code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_blocked_write_reports_the_code() {
    let cfg = TransportConfig {
        stream_receive_window: 64 * 1024,
        ..TransportConfig::default()
    };
    let (_server, _client, c, s) = pair(cfg).await;
    let mut send = c.open_uni().await.unwrap();
    // More than the receive window: the write waits for credit that never comes.
    let writer = tokio::spawn(async move {
        let r = send.write_chunk(payload(1, 1 << 20)).await;
        let fin = match r {
            Ok(()) => send.finish().await,
            Err(e) => Err(e),
        };
        (fin, send.stopped().await)
    });
    let mut recv = s.accept_uni().await.unwrap();
    let _ = recv.read_chunk(1024).await.unwrap();
    recv.stop(77).unwrap();
    let (fin, stopped) = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .unwrap()
        .unwrap();
    match fin {
        Ok(()) => assert_eq!(stopped, Ok(Some(77))),
        Err(e) => assert_eq!(e, StreamError::Stopped(77)),
    }
}

/// Dropping every handle closes the connection with code 0; the peer sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_all_handles_closes() {
    let (_server, _client, c, s) = pair(TransportConfig::default()).await;
    drop(c);
    let e = tokio::time::timeout(Duration::from_secs(5), s.closed())
        .await
        .unwrap();
    assert_eq!(
        e,
        ConnectionError::ApplicationClosed {
            code: 0,
            reason: bytes::Bytes::new()
        }
    );
}

/// Connecting to an IPv6 peer from an IPv4 socket is refused with a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_family_is_invalid_address() {
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
    let client = QuicheBackend
        .bind(EndpointSpec::client(
            "127.0.0.1:9".parse().unwrap(),
            TransportConfig::default(),
            tls,
        ))
        .unwrap();
    let r = client
        .connect("[::1]:4433".parse().unwrap(), "localhost")
        .await;
    assert!(
        matches!(r, Err(stoq_core::Error::InvalidAddress(_))),
        "{r:?}"
    );
    let r = client
        .connect("127.0.0.1:4433".parse().unwrap(), "not a name")
        .await;
    assert!(
        matches!(r, Err(stoq_core::Error::InvalidAddress(_))),
        "{r:?}"
    );
}

/// IP-address server names are verified against the certificate's IP addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_server_names() {
    let tls = stoq_crypto::ephemeral_material(&["localhost", "::1"]).unwrap();
    let cfg = TransportConfig::default();
    let server = QuicheBackend
        .bind(EndpointSpec::server(LOCALHOST_V6, cfg.clone(), tls.clone()))
        .unwrap();
    let addr = server.local_addr().unwrap();
    let client = QuicheBackend
        .bind(EndpointSpec::client(addr, cfg, tls))
        .unwrap();
    let accept = {
        let server = server.clone();
        tokio::spawn(async move { server.accept().await })
    };
    let _conn = client
        .connect(addr, "::1")
        .await
        .expect("::1 is in the certificate");
    let _accepted = accept.await.unwrap().unwrap();
    let r = client.connect(addr, "::2").await;
    match r {
        Err(stoq_core::Error::Connection(e)) => assert!(e.is_certificate_error(), "{e}"),
        other => panic!(
            "expected a certificate error, got {:?}",
            other.map(|c| c.stable_id())
        ),
    }
}
