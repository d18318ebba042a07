//! `stoq_quinn::pacing` at a rate far too low to pace: a controller asking for 1 byte per
//! second must not stall the connection. The pacer holds a transmit at most
//! `MAX_HOLD` (50 ms), so ACKs, probes and the close still go out, and a 256 KiB transfer
//! completes, verified, well inside the idle timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq_core::congestion::{
    AckEvent, CongestionController, CongestionControllerFactory, CongestionEvent, CongestionMetrics,
};
use stoq_core::{Backend, CongestionConfig, EndpointSpec, TransportConfig};

const WINDOW: u64 = 16 << 20;
const LEN: usize = 256 * 1024;

#[derive(Debug, Clone)]
struct OneBytePerSecond;

impl CongestionController for OneBytePerSecond {
    fn name(&self) -> &str {
        "one-byte-per-second"
    }
    fn on_packet_sent(&mut self, _now: Instant, _bytes: u64, _app_limited: bool) {}
    fn on_ack(&mut self, _ack: &AckEvent) {}
    fn on_congestion_event(&mut self, _e: &CongestionEvent) {}
    fn on_packet_discarded(&mut self, _bytes: u64) {}
    fn on_mtu_update(&mut self, _max_datagram_size: u16) {}
    fn window(&self) -> u64 {
        WINDOW
    }
    fn initial_window(&self) -> u64 {
        WINDOW
    }
    fn pacing_rate(&self) -> Option<u64> {
        Some(1)
    }
    fn metrics(&self) -> CongestionMetrics {
        CongestionMetrics::new(WINDOW, 0).with_pacing_rate(Some(1))
    }
    fn clone_box(&self) -> Box<dyn CongestionController> {
        Box::new(self.clone())
    }
}

struct Factory;

impl CongestionControllerFactory for Factory {
    fn name(&self) -> &str {
        "one-byte-per-second"
    }
    fn build(&self, _now: Instant, _mtu: u16) -> Box<dyn CongestionController> {
        Box::new(OneBytePerSecond)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_too_low_to_pace_does_not_stall_the_connection() {
    let cfg = TransportConfig {
        congestion: CongestionConfig::custom(Arc::new(Factory)),
        ..TransportConfig::default()
    };
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
    let server = stoq_quinn::QuinnBackend
        .bind(EndpointSpec::server(
            "[::1]:0".parse().unwrap(),
            cfg.clone(),
            tls.clone(),
        ))
        .unwrap();
    let addr = server.local_addr().unwrap();
    let client = stoq_quinn::QuinnBackend
        .bind(EndpointSpec::client(addr, cfg, tls))
        .unwrap();
    let data: Vec<u8> = (0..LEN).map(|i| (i * 31 % 251) as u8).collect();
    let expected = data.clone();
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap();
        let mut r = conn.accept_uni().await.unwrap();
        let got = r.read_to_end(LEN + 1).await.unwrap().expect("the stream");
        (got, conn, server)
    });
    let run = async {
        let conn = client.connect(addr, "localhost").await.unwrap();
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(&data).await.unwrap();
        s.finish().await.unwrap();
        let (got, _conn, _server) = receiver.await.unwrap();
        (got, conn)
    };
    // Unbounded, 1 B/s would take three days; the hold cap gives about 0.3 MB/s.
    let (got, conn) = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the transfer completes");
    assert!(got == expected, "bytes differ");
    conn.close(0, b"done");
}
