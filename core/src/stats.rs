//! Connection and endpoint statistics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A snapshot of one connection's statistics.
///
/// Counters only grow over a connection's life. `app_bytes_*` count exactly the stream
/// payload the application moved through STOQ's handles; `udp_bytes_*` count UDP payload
/// including QUIC headers, ACKs, retransmissions and encryption overhead, so
/// `udp_bytes_sent >= app_bytes_sent` once the data has been sent.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Smoothed round-trip time (RFC 9002 section 5.3).
    pub rtt: Duration,
    /// Minimum round-trip time observed, where the engine reports it.
    pub min_rtt: Option<Duration>,
    /// Current congestion window in bytes.
    pub congestion_window: u64,
    /// Bytes in flight (sent, not yet acknowledged or declared lost), where the engine
    /// reports it.
    pub bytes_in_flight: Option<u64>,
    /// UDP datagrams sent.
    pub udp_datagrams_sent: u64,
    /// UDP datagrams received.
    pub udp_datagrams_received: u64,
    /// UDP payload bytes sent.
    pub udp_bytes_sent: u64,
    /// UDP payload bytes received.
    pub udp_bytes_received: u64,
    /// QUIC packets declared lost.
    pub packets_lost: u64,
    /// Bytes in packets declared lost.
    pub bytes_lost: u64,
    /// Congestion events (loss or ECN reductions of the window), where the engine counts
    /// them.
    pub congestion_events: Option<u64>,
    /// Current maximum UDP payload size on the path.
    pub path_mtu: u16,
    /// Stream payload bytes the application wrote.
    pub app_bytes_sent: u64,
    /// Stream payload bytes the application read.
    pub app_bytes_received: u64,
    /// Datagram payload bytes the application sent.
    pub datagram_bytes_sent: u64,
    /// Datagram payload bytes the application received.
    pub datagram_bytes_received: u64,
    /// Streams this side opened or accepted (send halves).
    pub streams: u64,
}

/// Application-level counters shared by a connection's handles.
///
/// Backends create one per connection, pass it to every [`SendStream`](crate::SendStream)
/// and [`RecvStream`](crate::RecvStream) they hand out, count datagrams on it, and copy it
/// into [`ConnectionStats`] with [`fill`](Self::fill).
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    app_sent: AtomicU64,
    app_received: AtomicU64,
    dgram_sent: AtomicU64,
    dgram_received: AtomicU64,
    streams: AtomicU64,
}

impl ConnectionCounters {
    /// Adds stream bytes written by the application.
    pub fn add_app_sent(&self, n: u64) {
        self.app_sent.fetch_add(n, Relaxed);
    }
    /// Adds stream bytes read by the application.
    pub fn add_app_received(&self, n: u64) {
        self.app_received.fetch_add(n, Relaxed);
    }
    /// Adds datagram payload bytes sent.
    pub fn add_datagram_sent(&self, n: u64) {
        self.dgram_sent.fetch_add(n, Relaxed);
    }
    /// Adds datagram payload bytes received.
    pub fn add_datagram_received(&self, n: u64) {
        self.dgram_received.fetch_add(n, Relaxed);
    }
    /// Counts one more stream send half.
    pub fn stream_opened(&self) {
        self.streams.fetch_add(1, Relaxed);
    }
    /// Copies the counters into `stats`.
    pub fn fill(&self, stats: &mut ConnectionStats) {
        stats.app_bytes_sent = self.app_sent.load(Relaxed);
        stats.app_bytes_received = self.app_received.load(Relaxed);
        stats.datagram_bytes_sent = self.dgram_sent.load(Relaxed);
        stats.datagram_bytes_received = self.dgram_received.load(Relaxed);
        stats.streams = self.streams.load(Relaxed);
    }
}

/// A snapshot of one endpoint's statistics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Connections accepted (handshake completed).
    pub accepted: u64,
    /// Incoming handshakes that failed (bad certificate, no common ALPN, timeout, ...).
    pub handshake_failures: u64,
    /// Connections dialled successfully.
    pub connected: u64,
    /// Connections currently open.
    pub open_connections: u64,
}
