//! Helpers shared by the contracts (and useful to backend authors' own tests).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use stoq_core::{ConnectionHandle, RecvStream, SendStream, StreamError};

/// `[::1]:0`.
pub const LOCALHOST_V6: SocketAddr = SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::LOCALHOST), 0);
/// `127.0.0.1:0`.
pub const LOCALHOST_V4: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// `len` pseudo-random bytes from `seed` (reproducible).
pub fn payload(seed: u64, len: usize) -> Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v.into()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Reads a stream to its clean end, returning the byte count and SHA-256 of what arrived.
/// A reset is an error, never a clean end.
pub async fn drain_and_hash(recv: &mut RecvStream) -> Result<(u64, [u8; 32]), StreamError> {
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((n, hasher.finalize().into()))
}

/// Sends `data` in chunks of at most `chunk` bytes and finishes the stream.
pub async fn send_all(
    send: &mut SendStream,
    data: &Bytes,
    chunk: usize,
) -> Result<(), StreamError> {
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        send.write_chunk(data.slice(off..end)).await?;
        off = end;
    }
    send.finish().await
}

/// Serves bidirectional streams on `conn` until it closes: each stream's bytes are
/// echoed back, then the echo is finished.
pub fn spawn_echo(conn: ConnectionHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                loop {
                    match recv.read_chunk(usize::MAX).await {
                        Ok(Some(chunk)) => {
                            if send.write_chunk(chunk).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            let _ = send.finish().await;
                            let _ = send.stopped().await;
                            return;
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    })
}
