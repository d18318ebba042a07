//! Interoperability between two backends: the checks run for every ordered
//! (client backend, server backend) pair.

use std::time::{Duration, Instant};

use bytes::Bytes;
use stoq_core::{Capability, ConnectionError};

use crate::util::{drain_and_hash, payload, send_all, sha256, spawn_echo};
use crate::{ensure, Failure, Harness};

/// Bytes of the interop bulk transfer: 64 MiB unless `STOQ_INTEROP_MIB` says otherwise.
fn transfer_size() -> usize {
    std::env::var("STOQ_INTEROP_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(64)
        << 20
}

/// What one pair achieved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InteropReport {
    /// Client backend.
    pub client: String,
    /// Server backend.
    pub server: String,
    /// Handshake time.
    pub handshake_ms: f64,
    /// Bytes moved client to server with a matching SHA-256 at the receiver.
    pub transfer_bytes: u64,
    /// Goodput of that transfer at the receiver (a plausibility figure, not a benchmark:
    /// both ends share the test process).
    pub transfer_mbps: f64,
    /// Whether the close reason was carried (both sides must have
    /// [`Capability::CloseReason`] for it to be checked).
    pub close_reason_checked: bool,
}

/// Handshake, bidirectional echo, a large transfer with a hash check at the receiver, and
/// a close with code and reason observed by the server.
pub async fn interop(h: Harness) -> Result<InteropReport, Failure> {
    let start = Instant::now();
    let p = h.connect().await?;
    let handshake_ms = start.elapsed().as_secs_f64() * 1e3;
    ensure!(
        p.client.alpn() == Some(crate::TEST_ALPN.as_bytes().to_vec()),
        "client sees ALPN {:?}",
        p.client.alpn()
    );

    // Bidirectional echo, server echoing.
    let echo = spawn_echo(p.server.clone());
    let msg = payload(50, 100_000);
    let (mut s, mut r) = p.client.open_bi().await?;
    let writer = {
        let msg = msg.clone();
        tokio::spawn(async move { send_all(&mut s, &msg, 8192).await })
    };
    let back = r.read_to_end(1 << 20).await?;
    writer.await??;
    ensure!(
        back.as_deref() == Some(&msg[..]),
        "echo returned different bytes"
    );
    echo.abort();

    // Bulk transfer, client to server, verified at the receiver.
    let len = transfer_size();
    let data = payload(51, len);
    let want = sha256(&data);
    let receiver = {
        let server = p.server.clone();
        tokio::spawn(async move {
            let mut recv = server.accept_uni().await?;
            let t = Instant::now();
            let (n, hash) = drain_and_hash(&mut recv).await?;
            Ok::<_, Failure>((n, hash, t.elapsed()))
        })
    };
    let mut send = p.client.open_uni().await?;
    send_all(&mut send, &data, 64 * 1024).await?;
    let (n, hash, took) = tokio::time::timeout(Duration::from_secs(120), receiver).await???;
    ensure!(n == len as u64, "receiver got {n} of {len} bytes");
    ensure!(
        hash == want,
        "SHA-256 at the receiver differs from the sender's"
    );

    // Close with code and reason; the other side observes them (the reason when the
    // client's engine sends it and the server's reports it).
    let with_reason = h.capabilities().contains(Capability::CloseReason);
    p.client.close(77, b"interop done");
    let saw = tokio::time::timeout(Duration::from_secs(10), p.server.closed()).await?;
    let want_reason = if with_reason {
        Bytes::from_static(b"interop done")
    } else {
        Bytes::new()
    };
    ensure!(
        saw == ConnectionError::ApplicationClosed {
            code: 77,
            reason: want_reason
        },
        "server saw {saw}"
    );
    Ok(InteropReport {
        client: h.client.name().to_string(),
        server: h.server.name().to_string(),
        handshake_ms,
        transfer_bytes: n,
        transfer_mbps: n as f64 * 8.0 / took.as_secs_f64().max(1e-9) / 1e6,
        close_reason_checked: with_reason,
    })
}
