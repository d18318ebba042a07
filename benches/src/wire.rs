//! The benchmark protocol between the client (the matrix runner) and the server process.
//!
//! Every stream (for TCP drivers: every TCP or TLS connection) starts with a 32-byte
//! header: `b"SQB1"`, the operation (1 byte), 3 zero bytes, then three big-endian `u64`s
//! `seed`, `a`, `b` whose meaning depends on the operation:
//!
//! | op | `a` / `b` | client sends | server answers |
//! |---|---|---|---|
//! | `Begin` | - | nothing | 8 bytes (zero), FIN; a new measurement window starts |
//! | `End` | datagrams sent / drain ms | nothing | one JSON [`ServerRunReport`], FIN |
//! | `Upload` | bytes / - | pattern bytes (`seed`), FIN | 16 bytes: verified count, status; FIN |
//! | `Rpc` | request / response size | requests of `a` bytes (pattern `seed`) | a response of `b` bytes (pattern `!seed`) after each request; FIN after the client's FIN |
//!
//! Datagrams carry an 8-byte big-endian sequence number `n`, then the pattern of seed
//! `begin_seed ^ n` from offset 8. The server verifies every byte it receives.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Header length in bytes.
pub(crate) const HEADER_LEN: usize = 32;
const MAGIC: &[u8; 4] = b"SQB1";

/// What a stream asks of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    Begin = 1,
    End = 2,
    Upload = 3,
    Rpc = 4,
}

/// A stream's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub op: Op,
    pub seed: u64,
    pub a: u64,
    pub b: u64,
}

impl Header {
    pub fn new(op: Op, seed: u64, a: u64, b: u64) -> Self {
        Header { op, seed, a, b }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(MAGIC);
        out[4] = self.op as u8;
        out[8..16].copy_from_slice(&self.seed.to_be_bytes());
        out[16..24].copy_from_slice(&self.a.to_be_bytes());
        out[24..32].copy_from_slice(&self.b.to_be_bytes());
        out
    }

    pub fn decode(buf: &[u8; HEADER_LEN]) -> Result<Header, String> {
        if &buf[..4] != MAGIC {
            return Err(format!("bad magic {:02x?}", &buf[..4]));
        }
        let op = match buf[4] {
            1 => Op::Begin,
            2 => Op::End,
            3 => Op::Upload,
            4 => Op::Rpc,
            other => return Err(format!("unknown operation {other}")),
        };
        let word = |i: usize| u64::from_be_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
        Ok(Header {
            op,
            seed: word(8),
            a: word(16),
            b: word(24),
        })
    }
}

/// How a read of a fixed-size message ended.
pub(crate) enum ReadOutcome {
    /// The buffer is full.
    Full,
    /// The stream ended cleanly before the first byte of the message.
    Eof,
}

/// Fills `buf` completely, or reports a clean end of stream before its first byte; an end
/// of stream inside the message is an error.
pub(crate) async fn read_message<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
) -> std::io::Result<ReadOutcome> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(ReadOutcome::Eof);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "stream ended {filled} bytes into a {}-byte message",
                    buf.len()
                ),
            ));
        }
        filled += n;
    }
    Ok(ReadOutcome::Full)
}

/// What the server measured between a `Begin` and an `End`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerRunReport {
    /// Stream payload bytes received and verified (uploads and requests).
    pub bytes_verified: u64,
    /// Upload streams received completely and verified.
    pub streams_completed: u64,
    /// Requests received, verified and answered.
    pub requests_served: u64,
    /// Connections accepted (handshakes completed), control connections excluded.
    pub connections_accepted: u64,
    /// Streams or datagrams that failed verification or broke off.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Seconds from the first payload byte to the last, over all upload streams.
    pub transfer_seconds: f64,
    /// Datagrams received whose every byte matched.
    pub datagrams_received: u64,
    /// Payload bytes of those datagrams.
    pub datagram_bytes: u64,
    /// Datagrams received that did not match (counted in `errors` too).
    pub datagrams_bad: u64,
    /// Datagrams received more than once (by sequence number).
    pub datagrams_duplicate: u64,
    /// Seconds from the first datagram to the last.
    pub datagram_seconds: f64,
    /// The server process's CPU seconds (user + system) from `Begin` to `End`.
    pub cpu_seconds: f64,
    /// Wall-clock seconds from `Begin` to `End`.
    pub wall_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let h = Header::new(Op::Rpc, u64::MAX - 3, 1024, 7);
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(Header::decode(&bad).is_err());
        let mut bad = h.encode();
        bad[4] = 99;
        assert!(Header::decode(&bad).unwrap_err().contains("99"));
    }

    #[tokio::test]
    async fn read_message_distinguishes_clean_end_from_truncation() {
        let mut buf = [0u8; 4];
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_message(&mut empty, &mut buf).await.unwrap(),
            ReadOutcome::Eof
        ));
        let mut short: &[u8] = &[1, 2];
        assert!(read_message(&mut short, &mut buf).await.is_err());
        let mut full: &[u8] = &[1, 2, 3, 4, 5];
        assert!(matches!(
            read_message(&mut full, &mut buf).await.unwrap(),
            ReadOutcome::Full
        ));
        assert_eq!(buf, [1, 2, 3, 4]);
    }
}
