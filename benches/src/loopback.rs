//! A bulk transfer on one connection through STOQ's traits, goodput measured at the
//! receiver: the protocol the first `stoq-loopback` tool used, kept for callers that want
//! one transfer without the matrix (the matrix's `bulk` scenario supersedes it).
//!
//! Protocol, on one bidirectional stream per run: the client sends `u64` run seed (8 bytes,
//! big-endian) then the pattern bytes, then FIN. The server verifies every byte as it
//! arrives, and answers with one JSON [`ReceiverReport`] and FIN.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use stoq_core::{Backend, ConnectionHandle, EndpointSpec, Error, TlsMaterial, TransportConfig};

use crate::pattern;
use crate::usage::cpu_time;

/// Bytes per `write_chunk` on the sending side.
const CHUNK: usize = 64 * 1024;

/// What the receiver measured for one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiverReport {
    /// Payload bytes received and verified.
    pub bytes: u64,
    /// Time from the first payload byte to the end of the stream.
    pub seconds: f64,
    /// `bytes * 8 / seconds`.
    pub goodput_bps: f64,
    /// Whether every byte matched the pattern (false: `error` says where it broke).
    pub verified: bool,
    /// The first failure, if any.
    pub error: Option<String>,
    /// The receiving process's CPU seconds during the run.
    pub cpu_seconds: f64,
}

/// One run as the client saw it, with the receiver's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The receiver's measurement.
    pub receiver: ReceiverReport,
    /// The sending process's CPU seconds during the run.
    pub sender_cpu_seconds: f64,
    /// Handshake time of this run's connection.
    pub handshake_seconds: f64,
    /// Smoothed RTT at the end of the run.
    pub rtt_micros: u128,
    /// Packets the sender's engine declared lost.
    pub packets_lost: u64,
}

/// Serves the benchmark protocol on `server` until the endpoint closes.
pub async fn serve(server: Arc<dyn stoq_core::Transport>) -> Result<(), Error> {
    loop {
        let conn = server.accept().await?;
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let report = receive_run(&mut recv).await;
                let json = serde_json::to_vec(&report).expect("report serialises");
                if send.write_all(&json).await.is_ok() {
                    let _ = send.finish().await;
                    let _ = send.stopped().await;
                }
            }
        });
    }
}

async fn receive_run(recv: &mut stoq_core::RecvStream) -> ReceiverReport {
    let mut seed_buf = [0u8; 8];
    let mut have = 0;
    let mut bytes = 0u64;
    let mut first: Option<(Instant, std::time::Duration)> = None;
    let mut error = None;
    loop {
        match recv.read_chunk(usize::MAX).await {
            Ok(Some(mut chunk)) => {
                let now = Instant::now();
                if first.is_none() {
                    first = Some((now, cpu_time()));
                }
                if have < 8 {
                    let n = (8 - have).min(chunk.len());
                    seed_buf[have..have + n].copy_from_slice(&chunk[..n]);
                    have += n;
                    let _ = chunk.split_to(n);
                }
                if error.is_none() {
                    if let Err(at) = pattern::verify(u64::from_be_bytes(seed_buf), bytes, &chunk) {
                        error = Some(format!("payload differs at offset {at}"));
                    }
                }
                bytes += chunk.len() as u64;
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(format!("stream failed after {bytes} bytes: {e}"));
                break;
            }
        }
    }
    let (start, cpu0) = first.unwrap_or((Instant::now(), cpu_time()));
    let seconds = start.elapsed().as_secs_f64();
    ReceiverReport {
        bytes,
        seconds,
        goodput_bps: if seconds > 0.0 {
            bytes as f64 * 8.0 / seconds
        } else {
            0.0
        },
        verified: error.is_none(),
        error,
        cpu_seconds: (cpu_time() - cpu0).as_secs_f64(),
    }
}

/// Runs one transfer of `bytes` on a fresh connection to `addr`.
pub async fn run_once(
    client: &Arc<dyn stoq_core::Transport>,
    addr: SocketAddr,
    bytes: u64,
    seed: u64,
) -> Result<RunReport, Error> {
    let t0 = Instant::now();
    let conn: ConnectionHandle = client.connect(addr, "localhost").await?;
    let handshake_seconds = t0.elapsed().as_secs_f64();
    let cpu0 = cpu_time();
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&seed.to_be_bytes()).await?;
    let mut off = 0u64;
    let mut buf = BytesMut::with_capacity(CHUNK);
    while off < bytes {
        let n = CHUNK.min((bytes - off) as usize);
        buf.resize(n, 0);
        pattern::fill(seed, off, &mut buf[..n]);
        let chunk: Bytes = buf.split().freeze();
        send.write_chunk(chunk).await?;
        off += n as u64;
    }
    send.finish().await?;
    let reply = recv
        .read_to_end(64 * 1024)
        .await?
        .ok_or_else(|| Error::config("bench", "receiver report larger than 64 KiB"))?;
    let sender_cpu_seconds = (cpu_time() - cpu0).as_secs_f64();
    let receiver: ReceiverReport = serde_json::from_slice(&reply)
        .map_err(|e| Error::config("bench", format!("bad receiver report: {e}")))?;
    let stats = conn.stats();
    conn.close(0, b"done");
    Ok(RunReport {
        receiver,
        sender_cpu_seconds,
        handshake_seconds,
        rtt_micros: stats.rtt.as_micros(),
        packets_lost: stats.packets_lost,
    })
}

/// The configuration the benchmark uses: [`crate::bench_config`].
pub fn bench_config() -> TransportConfig {
    crate::driver::bench_config()
}

/// Binds a server endpoint of `backend` on `bind`.
pub fn bind_server(
    backend: &Arc<dyn Backend>,
    bind: SocketAddr,
    tls: TlsMaterial,
) -> Result<Arc<dyn stoq_core::Transport>, Error> {
    backend.bind(EndpointSpec::server(bind, bench_config(), tls))
}

/// Binds a client endpoint of `backend` for dialling `peer`.
pub fn bind_client(
    backend: &Arc<dyn Backend>,
    peer: SocketAddr,
    tls: TlsMaterial,
) -> Result<Arc<dyn stoq_core::Transport>, Error> {
    backend.bind(EndpointSpec::client(peer, bench_config(), tls))
}

/// The median of `values` (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    crate::stats::median(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_process_run_is_verified_at_the_receiver() {
        let backend: Arc<dyn Backend> = Arc::new(stoq_quinn::QuinnBackend);
        let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
        let server = bind_server(&backend, "[::1]:0".parse().unwrap(), tls.clone()).unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(serve(server.clone()));
        let client = bind_client(&backend, addr, tls).unwrap();
        let r = run_once(&client, addr, 3 << 20, 99).await.unwrap();
        assert!(r.receiver.verified, "{:?}", r.receiver.error);
        assert_eq!(r.receiver.bytes, 3 << 20);
        assert!(r.receiver.goodput_bps > 0.0);
    }
}
