//! Goodput on an emulated bottleneck, per backend and congestion controller.
//!
//! The path: stoq-conformance's user-space emulator between client and server, 50 Mbit/s
//! bottleneck with a one-BDP queue (250 kB), 20 ms each way (40 ms RTT), 1 % random loss
//! on the data direction. One connection, one stream, client to server for `SECONDS`;
//! the receiver counts bytes, and goodput is taken over the last `SECONDS - WARMUP` s.
//!
//! `cargo run --release -p stoq-bench --example emulated_path [SECONDS]` (default 15).
//! A benchmark, not a test: it prints measured figures and asserts nothing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stoq_conformance::emulator::{Emulator, Impairments};
use stoq_core::{
    Backend, CongestionAlgorithm, CongestionConfig, CongestionImplementation, EndpointSpec,
    TransportConfig,
};

const RATE: u64 = 50_000_000;
const WARMUP: u64 = 5;

async fn run(
    backend: Arc<dyn Backend>,
    algorithm: CongestionAlgorithm,
    implementation: CongestionImplementation,
    seconds: u64,
) -> Result<f64, String> {
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).map_err(|e| e.to_string())?;
    let cfg = TransportConfig {
        congestion: CongestionConfig {
            algorithm,
            implementation,
            custom: None,
        },
        ..TransportConfig::default()
    };
    let server = backend
        .bind(EndpointSpec::server(
            "[::1]:0".parse().unwrap(),
            cfg.clone(),
            tls.clone(),
        ))
        .map_err(|e| e.to_string())?;
    let up = Impairments {
        delay: Duration::from_millis(20),
        loss: 0.01,
        rate: Some(RATE),
        queue_bytes: (RATE / 8 * 40 / 1000) as usize,
        ..Impairments::default()
    };
    let down = Impairments {
        delay: Duration::from_millis(20),
        ..Impairments::default()
    };
    let emu = Emulator::start(server.local_addr().map_err(|e| e.to_string())?, up, down, 7)
        .await
        .map_err(|e| e.to_string())?;
    let client = backend
        .bind(EndpointSpec::client(emu.addr(), cfg, tls))
        .map_err(|e| e.to_string())?;
    let received = Arc::new(AtomicU64::new(0));
    let receiver = tokio::spawn({
        let received = received.clone();
        async move {
            let conn = server.accept().await?;
            let mut recv = conn.accept_uni().await?;
            while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
                received.fetch_add(chunk.len() as u64, Relaxed);
            }
            Ok::<_, stoq_core::Error>(conn)
        }
    });
    let conn = client
        .connect(emu.addr(), "localhost")
        .await
        .map_err(|e| e.to_string())?;
    let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
    let chunk = Bytes::from(vec![0x42u8; 64 * 1024]);
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        while start.elapsed() < Duration::from_secs(seconds) {
            if send.write_chunk(chunk.clone()).await.is_err() {
                return;
            }
        }
        let _ = send.reset(0);
    });
    tokio::time::sleep(Duration::from_secs(WARMUP)).await;
    let at_warmup = received.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds - WARMUP)).await;
    let at_end = received.load(Relaxed);
    sender.abort();
    receiver.abort();
    conn.close(0, b"done");
    let goodput = (at_end - at_warmup) as f64 * 8.0 / (seconds - WARMUP) as f64;
    Ok(goodput)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
        .max(WARMUP + 1);
    println!(
        "50 Mbit/s bottleneck, 40 ms RTT, 1 % loss on the data direction, queue 1 BDP; \
         goodput over the last {} s of {seconds} s\n",
        seconds - WARMUP
    );
    println!("| backend | controller | goodput | share of the bottleneck |");
    println!("|---|---|---|---|");
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(stoq_quinn::QuinnBackend),
        Arc::new(stoq_s2n::S2nBackend),
        Arc::new(stoq_quiche::QuicheBackend),
    ];
    for backend in backends {
        for implementation in [
            CongestionImplementation::Engine,
            CongestionImplementation::Stoq,
        ] {
            for algorithm in [CongestionAlgorithm::Cubic, CongestionAlgorithm::Bbr] {
                let label = format!(
                    "{} {:?}",
                    if implementation == CongestionImplementation::Stoq {
                        "STOQ"
                    } else {
                        "engine"
                    },
                    algorithm
                );
                match run(backend.clone(), algorithm, implementation, seconds).await {
                    Ok(g) => println!(
                        "| {} | {label} | {:.1} Mbit/s | {:.1} % |",
                        backend.name(),
                        g / 1e6,
                        g / RATE as f64 * 100.0
                    ),
                    Err(e) => println!("| {} | {label} | not run: {e} | |", backend.name()),
                }
            }
        }
    }
}
