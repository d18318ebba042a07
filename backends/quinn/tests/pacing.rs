//! `stoq_quinn::pacing` beyond the conformance contract (which paces a client):
//! * a rate far too low to pace (1 byte per second) must not stall the connection: the
//!   pacer holds a transmit at most `MAX_HOLD` (50 ms), so ACKs, probes and the close still
//!   go out, and a 256 KiB transfer completes, verified, well inside the idle timeout;
//! * a server connection (its controller built in the accept path) is paced too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq_conformance::controllers::{FixedRate, FixedRateFactory};
use stoq_core::{Backend, CongestionConfig, EndpointSpec, TransportConfig};

const WINDOW: u64 = 16 << 20;
const LEN: usize = 256 * 1024;

fn config(rate: u64) -> TransportConfig {
    TransportConfig {
        congestion: CongestionConfig::custom(Arc::new(FixedRateFactory(FixedRate {
            window: WINDOW,
            rate,
        }))),
        ..TransportConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_too_low_to_pace_does_not_stall_the_connection() {
    let cfg = config(1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_connection_is_paced_too() {
    // 1 MB from server to client at 1 MB/s: at least 0.9 s; unpaced, milliseconds.
    const RATE: u64 = 1_000_000;
    const BYTES: usize = 1_000_000;
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
    let server = stoq_quinn::QuinnBackend
        .bind(EndpointSpec::server(
            "[::1]:0".parse().unwrap(),
            config(RATE),
            tls.clone(),
        ))
        .unwrap();
    let addr = server.local_addr().unwrap();
    // The client's own controller is the engine's: only the server's sends are paced.
    let client = stoq_quinn::QuinnBackend
        .bind(EndpointSpec::client(addr, TransportConfig::default(), tls))
        .unwrap();
    let data: Vec<u8> = (0..BYTES).map(|i| (i * 7 % 253) as u8).collect();
    let expected = data.clone();
    let sender = tokio::spawn(async move {
        let conn = server.accept().await.unwrap();
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(&data).await.unwrap();
        s.finish().await.unwrap();
        let _ = s.stopped().await;
        (conn, server)
    });
    let conn = client.connect(addr, "localhost").await.unwrap();
    let mut r = conn.accept_uni().await.unwrap();
    let started = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(30), r.read_to_end(BYTES + 1))
        .await
        .expect("the transfer completes")
        .unwrap()
        .expect("the stream");
    let took = started.elapsed();
    assert!(got == expected, "bytes differ");
    let floor = Duration::from_secs_f64(0.9 * BYTES as f64 / RATE as f64);
    assert!(
        took >= floor,
        "{BYTES} bytes from a server paced at {RATE} B/s arrived in {took:?}, under {floor:?}"
    );
    conn.close(0, b"done");
    drop(sender.await.unwrap());
}
