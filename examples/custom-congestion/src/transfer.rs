//! A bulk transfer over loopback with [`Vegas`](crate::Vegas) on the sending side.

use std::error::Error;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use stoq_core::{
    Backend, CongestionConfig, ConnectionStats, EndpointSpec, RecvStream, TransportConfig,
};
use stoq_quinn::QuinnBackend;

use crate::{VegasFactory, VegasSnapshot};

/// Bytes handed to the stream per write.
const WRITE_CHUNK: usize = 64 * 1024;

/// How long the whole transfer may take before it counts as stuck.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// The outcome of [`run_transfer`].
#[derive(Debug, Clone)]
pub struct Report {
    /// Bytes the sender wrote.
    pub bytes_sent: u64,
    /// Bytes the receiver read.
    pub bytes_received: u64,
    /// SHA-256 of what was sent.
    pub sent_sha256: [u8; 32],
    /// SHA-256 of what arrived.
    pub received_sha256: [u8; 32],
    /// Receiver time from accepting the stream to its clean end.
    pub elapsed: Duration,
    /// The congestion window the sending connection's engine reports
    /// (`ConnectionStats::congestion_window`) after the transfer.
    pub engine_window: u64,
    /// The Vegas controller's counters, read at the same moment as `engine_window`.
    pub controller: VegasSnapshot,
    /// The sending connection's statistics at that moment.
    pub connection: ConnectionStats,
}

impl Report {
    /// Whether every byte arrived unchanged (count and SHA-256 match).
    pub fn hash_verified(&self) -> bool {
        self.bytes_sent == self.bytes_received && self.sent_sha256 == self.received_sha256
    }

    /// Whether the engine sends with the controller's window.
    pub fn window_matches(&self) -> bool {
        self.engine_window == self.controller.window
    }

    /// Receiver goodput, Mbit/s (10^6 bits per second).
    pub fn goodput_mbit_s(&self) -> f64 {
        self.bytes_received as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    /// Every mismatch found, one line each; empty when the run is sound.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.bytes_sent != self.bytes_received {
            out.push(format!(
                "sent {} bytes but {} arrived",
                self.bytes_sent, self.bytes_received
            ));
        }
        if self.sent_sha256 != self.received_sha256 {
            out.push(format!(
                "SHA-256 mismatch: sent {} received {}",
                hex(&self.sent_sha256),
                hex(&self.received_sha256)
            ));
        }
        if !self.window_matches() {
            out.push(format!(
                "engine reports a window of {} bytes, the controller's is {}",
                self.engine_window, self.controller.window
            ));
        }
        if self.controller.bytes_acked < self.bytes_sent {
            out.push(format!(
                "controller saw {} bytes acknowledged, less than the {} sent",
                self.controller.bytes_acked, self.bytes_sent
            ));
        }
        out
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` reproducible pseudo-random bytes (SplitMix64), so the payload does not compress.
fn payload(len: usize) -> Bytes {
    let mut state: u64 = 0x5eed_0f7e_57da_7a00;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

/// Reads `recv` to its clean end: byte count, SHA-256 and the time it took.
async fn drain(
    mut recv: RecvStream,
) -> Result<(u64, [u8; 32], Duration), Box<dyn Error + Send + Sync>> {
    let start = Instant::now();
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((n, hasher.finalize().into(), start.elapsed()))
}

/// Sends `bytes` pseudo-random bytes over a quinn connection on `[::1]` whose client (the
/// sender) runs [`Vegas`](crate::Vegas) through
/// [`CongestionConfig::custom`]; the server receives on a unidirectional stream, hashes
/// and times it.
///
/// Errors are I/O, TLS and QUIC failures; a transfer that completes but delivers the
/// wrong bytes, or whose engine does not report the controller's window, returns `Ok` with
/// the evidence in the [`Report`] (see [`Report::problems`]).
pub async fn run_transfer(bytes: usize) -> Result<Report, Box<dyn Error>> {
    let factory = VegasFactory::new();
    let vegas = factory.stats();
    let tls = stoq_crypto::ephemeral_material(&["localhost"])?;
    let localhost = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));

    // The receiver runs the engine's default controller; only the sender's matters.
    let server_ep = QuinnBackend.bind(EndpointSpec::server(
        localhost,
        TransportConfig::default(),
        tls.clone(),
    ))?;
    let server_addr = server_ep.local_addr()?;
    let sender_cfg = TransportConfig {
        congestion: CongestionConfig::custom(Arc::new(factory)),
        ..Default::default()
    };
    let client_ep = QuinnBackend.bind(EndpointSpec::client(server_addr, sender_cfg, tls))?;

    let receiver = {
        let server_ep = server_ep.clone();
        tokio::spawn(async move {
            let conn = server_ep.accept().await?;
            let recv = conn.accept_uni().await?;
            let out = drain(recv).await?;
            Ok::<_, Box<dyn Error + Send + Sync>>((conn, out))
        })
    };
    let conn = client_ep.connect(server_addr, "localhost").await?;

    let data = payload(bytes);
    let sent_sha256: [u8; 32] = Sha256::digest(&data).into();
    let send = async {
        let mut s = conn.open_uni().await?;
        let mut off = 0;
        while off < data.len() {
            let end = (off + WRITE_CHUNK).min(data.len());
            s.write_chunk(data.slice(off..end)).await?;
            off = end;
        }
        s.finish().await?;
        // Until the receiver acknowledged everything.
        s.stopped().await?;
        Ok::<_, Box<dyn Error>>(())
    };
    let (sent, received) =
        tokio::time::timeout(TRANSFER_TIMEOUT, async { tokio::join!(send, receiver) })
            .await
            .map_err(|_| {
                format!("transfer of {bytes} bytes did not finish in {TRANSFER_TIMEOUT:?}")
            })?;
    sent?;
    let (server_conn, (bytes_received, received_sha256, elapsed)) =
        received?.map_err(|e| e as Box<dyn Error>)?;

    // The window and the engine's report must be read without an ACK landing in between;
    // once the stream is acknowledged the connection goes quiet, so a few tries suffice.
    let (mut connection, mut controller) = (conn.stats(), vegas.snapshot());
    for _ in 0..100 {
        let again = conn.stats();
        if again.congestion_window == connection.congestion_window
            && controller.window == connection.congestion_window
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        connection = conn.stats();
        controller = vegas.snapshot();
    }

    conn.close(0, b"done");
    server_conn.close(0, b"done");
    client_ep.close(0, b"done").await;
    server_ep.close(0, b"done").await;

    Ok(Report {
        bytes_sent: bytes as u64,
        bytes_received,
        sent_sha256,
        received_sha256,
        elapsed,
        engine_window: connection.congestion_window,
        controller,
        connection,
    })
}
