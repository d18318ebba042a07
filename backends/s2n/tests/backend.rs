//! s2n-specific behaviour beyond the shared conformance contracts: the engine's congestion
//! controllers, pacing from a STOQ controller's rate, socket switches, the path MTU,
//! endpoint statistics and input checks that s2n-quic itself would panic on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq_conformance::controllers::{FixedRate, FixedRateFactory};
use stoq_conformance::util::{
    drain_and_hash, payload, send_all, sha256, LOCALHOST_V4, LOCALHOST_V6,
};
use stoq_conformance::Harness;
use stoq_core::{
    Backend, CongestionAlgorithm, CongestionConfig, CongestionImplementation, EndpointSpec, Error,
    TransportConfig,
};

fn harness() -> Harness {
    Harness::new(Arc::new(stoq_s2n::S2nBackend))
}

/// Sends `len` bytes client to server on a fresh pair and returns how long it took.
async fn transfer(h: &Harness, cfg: TransportConfig, len: usize) -> Duration {
    let p = h
        .connect_with(cfg.clone(), cfg, LOCALHOST_V6)
        .await
        .expect("connect");
    let data = payload(9, len);
    let server = p.server.clone();
    let receiver = tokio::spawn(async move {
        let mut r = server.accept_uni().await.unwrap();
        drain_and_hash(&mut r).await.unwrap()
    });
    let start = Instant::now();
    let mut s = p.client.open_uni().await.unwrap();
    send_all(&mut s, &data, 64 * 1024).await.unwrap();
    let (n, hash) = receiver.await.unwrap();
    let took = start.elapsed();
    assert_eq!(n, len as u64);
    assert_eq!(hash, sha256(&data));
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_congestion_controllers_move_data() {
    let h = harness();
    for (algorithm, implementation) in [
        (CongestionAlgorithm::Cubic, CongestionImplementation::Engine),
        (CongestionAlgorithm::Bbr, CongestionImplementation::Engine),
        // No s2n-quic NewReno: STOQ's runs through the adapter.
        (
            CongestionAlgorithm::NewReno,
            CongestionImplementation::Engine,
        ),
        (CongestionAlgorithm::Cubic, CongestionImplementation::Stoq),
        // STOQ's BBRv3 through the adapter (s2n-quic paces at its pacing rate).
        (CongestionAlgorithm::Bbr, CongestionImplementation::Stoq),
    ] {
        let mut cfg = h.config.clone();
        cfg.congestion = CongestionConfig {
            algorithm,
            implementation,
            custom: None,
        };
        transfer(&h, cfg, 4 << 20).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_rate_of_a_stoq_controller_is_honoured() {
    let h = harness();
    // 4 MB/s: 2 MiB take about 0.52 s however fast loopback is, even though the window
    // (64 MiB) never limits.
    let mut cfg = h.config.clone();
    cfg.congestion = CongestionConfig::custom(Arc::new(FixedRateFactory(FixedRate {
        window: 64 << 20,
        rate: 4_000_000,
    })));
    let took = transfer(&h, cfg, 2 << 20).await;
    assert!(
        took >= Duration::from_millis(400),
        "2 MiB at 4 MB/s took only {took:?}: the pacing rate was not honoured"
    );
    assert!(
        took < Duration::from_secs(5),
        "paced transfer took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gso_and_gro_switch_off_and_the_payload_is_pinned() {
    let h = harness();
    let mut cfg = h.config.clone();
    cfg.gso = false;
    cfg.gro = false;
    for bind in [LOCALHOST_V6, LOCALHOST_V4] {
        let p = h
            .connect_with(cfg.clone(), cfg.clone(), bind)
            .await
            .expect("connect");
        // 1452 bytes of UDP payload on either family (s2n-quic's MTUs are IP sizes).
        assert_eq!(p.client.stats().path_mtu, 1452, "{bind}");
        assert_eq!(p.client.max_datagram_size(), Some(1408), "{bind}");
    }
    transfer(&h, cfg, 1 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_server_accepts_ipv4_clients() {
    let h = harness();
    let server = h
        .server_endpoint("[::]:0".parse().unwrap(), h.config.clone())
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let client = h.client_endpoint(addr, h.config.clone()).unwrap();
    let accept = tokio::spawn({
        let server = server.clone();
        async move { server.accept().await }
    });
    let c = client.connect(addr, "localhost").await.unwrap();
    let s = accept.await.unwrap().unwrap();
    assert!(s.remote_addr().is_ipv4(), "{}", s.remote_addr());
    assert_eq!(c.stats().path_mtu, 1452);
    let mut st = c.open_uni().await.unwrap();
    st.write_all(b"v4 over v6").await.unwrap();
    st.finish().await.unwrap();
    let got = s.accept_uni().await.unwrap().read_to_end(64).await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"v4 over v6"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_server_name_is_a_typed_error_not_a_panic() {
    let h = harness();
    let p = h.connect().await.unwrap();
    let addr = p.server_ep.local_addr().unwrap();
    let r = p.client_ep.connect(addr, "not a host name!").await;
    assert!(matches!(r, Err(Error::InvalidAddress(_))), "{:?}", r.err());
    // The endpoint still works afterwards.
    let accept = tokio::spawn({
        let ep = p.server_ep.clone();
        async move { ep.accept().await }
    });
    // Keep the connection until the server has it: dropping the handle closes it, and a
    // close before the server processed the client's Finished leaves nothing to accept.
    let _conn = p.client_ep.connect(addr, "localhost").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), accept)
        .await
        .expect("the server accepts the second connection")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_stats_count_connections_and_failures() {
    let h = harness();
    let p = h.connect().await.unwrap();
    assert_eq!(p.client_ep.stats().connected, 1);
    assert_eq!(p.server_ep.stats().accepted, 1);
    assert_eq!(p.server_ep.stats().open_connections, 1);
    // A client with other ALPNs fails the handshake: a failure on the server.
    let mut cfg = h.config.clone();
    cfg.alpn = vec!["other".into()];
    let addr = p.server_ep.local_addr().unwrap();
    let bad = h.client_endpoint(addr, cfg).unwrap();
    assert!(bad.connect(addr, "localhost").await.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(p.server_ep.stats().handshake_failures, 1);
    p.client.close(3, b"");
    let _ = tokio::time::timeout(Duration::from_secs(5), p.server.closed()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(p.server_ep.stats().open_connections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_priority_is_unsupported_and_limits_are_checked() {
    let h = harness();
    let p = h.connect().await.unwrap();
    let mut s = p.client.open_uni().await.unwrap();
    assert!(matches!(
        s.set_priority(1),
        Err(stoq_core::StreamError::Unsupported(
            stoq_core::Capability::StreamPriority
        ))
    ));
    // s2n-quic stores windows as u32: larger ones are refused, naming the field.
    let mut cfg = h.config.clone();
    cfg.send_window = 1 << 33;
    let r = stoq_s2n::S2nBackend.bind(EndpointSpec::server(LOCALHOST_V6, cfg, h.tls.clone()));
    assert!(
        matches!(&r, Err(Error::Config { field, .. }) if field == "send_window"),
        "{:?}",
        r.err()
    );
}
