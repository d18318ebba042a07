//! Statistics: Phoenix's own counters per connection and in total, with the transport's.
//!
//! Every report is `serde::Serialize` so a CLI can print it with `--json`.
//!
//! * **SDK counters** ([`SdkStats`]) count what went through Phoenix's framing: messages,
//!   multiplexed transfers, requests and responses, as payload bytes.
//! * **Goodput** is those payload bytes (sent plus received) divided by the *active
//!   period*: the time during which at least one Phoenix operation (a send, a receive, a
//!   request) was in progress. Idle gaps do not dilute it.
//! * **Transport figures** come from the engine's [`ConnectionStats`]: RTT, congestion
//!   window, lost packets, UDP bytes. Totals sum the counters of open connections and of
//!   those already dropped; RTT is averaged and the congestion window summed over the open
//!   ones.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use stoq_core::{ConnectionStats, Side};

use crate::pool::PoolStats;
use crate::tier::TierReport;

#[derive(Debug, Default)]
struct ActiveClock {
    inflight: u64,
    since: Option<Instant>,
    busy: Duration,
}

/// Phoenix's counters for one connection or for a whole [`Phoenix`](crate::Phoenix).
#[derive(Debug, Default)]
pub(crate) struct SdkCounters {
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    transfers_sent: AtomicU64,
    transfers_received: AtomicU64,
    requests_sent: AtomicU64,
    requests_served: AtomicU64,
    receive_errors: AtomicU64,
    last_activity: Mutex<Option<Instant>>,
    clock: Mutex<ActiveClock>,
}

impl SdkCounters {
    fn begin(&self) {
        let mut c = self.clock.lock().expect("clock lock");
        if c.inflight == 0 {
            c.since = Some(Instant::now());
        }
        c.inflight += 1;
    }

    fn end(&self) {
        let now = Instant::now();
        {
            let mut c = self.clock.lock().expect("clock lock");
            c.inflight -= 1;
            if c.inflight == 0 {
                if let Some(since) = c.since.take() {
                    c.busy += now - since;
                }
            }
        }
        *self.last_activity.lock().expect("activity lock") = Some(now);
    }

    /// When the last operation ended (or `None` if none ran), and whether one is running.
    pub(crate) fn idle_since(&self) -> (Option<Instant>, bool) {
        let busy = self.clock.lock().expect("clock lock").inflight > 0;
        (*self.last_activity.lock().expect("activity lock"), busy)
    }

    fn active(&self) -> Duration {
        let c = self.clock.lock().expect("clock lock");
        c.busy + c.since.map(|s| s.elapsed()).unwrap_or_default()
    }

    pub(crate) fn snapshot(&self) -> SdkStats {
        let active = self.active();
        let bytes_sent = self.bytes_sent.load(Relaxed);
        let bytes_received = self.bytes_received.load(Relaxed);
        let secs = active.as_secs_f64();
        SdkStats {
            messages_sent: self.messages_sent.load(Relaxed),
            messages_received: self.messages_received.load(Relaxed),
            bytes_sent,
            bytes_received,
            transfers_sent: self.transfers_sent.load(Relaxed),
            transfers_received: self.transfers_received.load(Relaxed),
            requests_sent: self.requests_sent.load(Relaxed),
            requests_served: self.requests_served.load(Relaxed),
            receive_errors: self.receive_errors.load(Relaxed),
            active_secs: secs,
            goodput_bps: if secs > 0.0 {
                (bytes_sent + bytes_received) as f64 * 8.0 / secs
            } else {
                0.0
            },
        }
    }
}

/// What an operation counts when it completes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    MessageSent(u64),
    MessageReceived(u64),
    TransferSent(u64),
    TransferReceived(u64),
    Request {
        sent: u64,
        received: u64,
    },
    Served {
        received: u64,
        sent: u64,
    },
    ReceiveError,
    /// Probe bytes count towards goodput but not as messages.
    ProbeSent(u64),
    ProbeReceived(u64),
}

/// A connection's counters and its Phoenix's, updated together.
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    pub(crate) conn: Arc<SdkCounters>,
    pub(crate) total: Arc<SdkCounters>,
}

impl Meter {
    /// Starts an operation; the active period runs until the guard is dropped.
    pub(crate) fn activity(&self) -> Activity {
        self.conn.begin();
        self.total.begin();
        Activity(self.clone())
    }

    pub(crate) fn count(&self, c: Count) {
        for s in [&self.conn, &self.total] {
            match c {
                Count::MessageSent(n) => {
                    s.messages_sent.fetch_add(1, Relaxed);
                    s.bytes_sent.fetch_add(n, Relaxed);
                }
                Count::MessageReceived(n) => {
                    s.messages_received.fetch_add(1, Relaxed);
                    s.bytes_received.fetch_add(n, Relaxed);
                }
                Count::TransferSent(n) => {
                    s.transfers_sent.fetch_add(1, Relaxed);
                    s.messages_sent.fetch_add(1, Relaxed);
                    s.bytes_sent.fetch_add(n, Relaxed);
                }
                Count::TransferReceived(n) => {
                    s.transfers_received.fetch_add(1, Relaxed);
                    s.messages_received.fetch_add(1, Relaxed);
                    s.bytes_received.fetch_add(n, Relaxed);
                }
                Count::Request { sent, received } => {
                    s.requests_sent.fetch_add(1, Relaxed);
                    s.bytes_sent.fetch_add(sent, Relaxed);
                    s.bytes_received.fetch_add(received, Relaxed);
                }
                Count::Served { received, sent } => {
                    s.requests_served.fetch_add(1, Relaxed);
                    s.bytes_sent.fetch_add(sent, Relaxed);
                    s.bytes_received.fetch_add(received, Relaxed);
                }
                Count::ReceiveError => {
                    s.receive_errors.fetch_add(1, Relaxed);
                }
                Count::ProbeSent(n) => {
                    s.bytes_sent.fetch_add(n, Relaxed);
                }
                Count::ProbeReceived(n) => {
                    s.bytes_received.fetch_add(n, Relaxed);
                }
            }
        }
    }
}

/// Ends an operation's active period when dropped.
#[derive(Debug)]
pub(crate) struct Activity(Meter);

impl Drop for Activity {
    fn drop(&mut self) {
        self.0.conn.end();
        self.0.total.end();
    }
}

/// Phoenix's own counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SdkStats {
    /// Messages sent whole (`send_data`, and each multiplexed transfer).
    pub messages_sent: u64,
    /// Messages received whole (including reassembled transfers).
    pub messages_received: u64,
    /// Payload bytes sent through Phoenix's framing (messages, transfers, requests,
    /// responses, probes); stream bytes of `open_stream` are in the transport figures.
    pub bytes_sent: u64,
    /// Payload bytes received through Phoenix's framing.
    pub bytes_received: u64,
    /// Multiplexed transfers sent.
    pub transfers_sent: u64,
    /// Multiplexed transfers received and verified.
    pub transfers_received: u64,
    /// Requests sent through the tower adapter.
    pub requests_sent: u64,
    /// Requests answered by `serve_requests`.
    pub requests_served: u64,
    /// Incoming messages or transfers that failed (reset, truncated, too large, corrupted).
    pub receive_errors: u64,
    /// Seconds during which at least one operation was in progress.
    pub active_secs: f64,
    /// `(bytes_sent + bytes_received) * 8 / active_secs`, bits per second.
    pub goodput_bps: f64,
}

/// One connection's statistics.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ConnectionReport {
    /// Phoenix's id for the connection (unique within one [`Phoenix`](crate::Phoenix)).
    pub id: u64,
    /// The engine's stable id.
    pub stable_id: u64,
    /// The peer's address.
    pub remote: SocketAddr,
    /// Whether this side dialled or accepted.
    pub side: Side,
    /// Why the connection ended, or `None` while open.
    pub close_reason: Option<String>,
    /// Smoothed RTT in milliseconds.
    pub rtt_ms: f64,
    /// Congestion window in bytes.
    pub congestion_window: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Phoenix's counters for this connection.
    pub sdk: SdkStats,
    /// The engine's full statistics.
    pub transport: ConnectionStats,
}

impl ConnectionReport {
    pub(crate) fn new(
        id: u64,
        conn: &stoq_core::ConnectionHandle,
        sdk: SdkStats,
    ) -> ConnectionReport {
        let transport = conn.stats();
        ConnectionReport {
            id,
            stable_id: conn.stable_id(),
            remote: conn.remote_addr(),
            side: conn.side(),
            close_reason: conn.close_reason().map(|r| r.to_string()),
            rtt_ms: ms(transport.rtt),
            congestion_window: transport.congestion_window,
            packets_lost: transport.packets_lost,
            sdk,
            transport,
        }
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Transport figures summed over connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TransportTotals {
    /// Connections open now.
    pub open_connections: u64,
    /// Connections that were dropped (their counters are still in the sums).
    pub retired_connections: u64,
    /// Mean smoothed RTT of the open connections, milliseconds (0 if none).
    pub mean_rtt_ms: f64,
    /// Smallest minimum RTT of the open connections, milliseconds, where reported.
    pub min_rtt_ms: Option<f64>,
    /// Sum of the open connections' congestion windows, bytes.
    pub congestion_window: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Bytes in packets declared lost.
    pub bytes_lost: u64,
    /// UDP payload bytes sent.
    pub udp_bytes_sent: u64,
    /// UDP payload bytes received.
    pub udp_bytes_received: u64,
    /// UDP datagrams sent.
    pub udp_datagrams_sent: u64,
    /// UDP datagrams received.
    pub udp_datagrams_received: u64,
    /// Stream bytes the application (including Phoenix's framing) wrote.
    pub app_bytes_sent: u64,
    /// Stream bytes the application (including Phoenix's framing) read.
    pub app_bytes_received: u64,
}

impl TransportTotals {
    /// Adds one connection's counters (not the gauges: RTT and window).
    pub(crate) fn add_counters(&mut self, s: &ConnectionStats) {
        self.packets_lost += s.packets_lost;
        self.bytes_lost += s.bytes_lost;
        self.udp_bytes_sent += s.udp_bytes_sent;
        self.udp_bytes_received += s.udp_bytes_received;
        self.udp_datagrams_sent += s.udp_datagrams_sent;
        self.udp_datagrams_received += s.udp_datagrams_received;
        self.app_bytes_sent += s.app_bytes_sent;
        self.app_bytes_received += s.app_bytes_received;
    }

    /// Sums `retired` with the live connections' stats (`true` for open ones, whose
    /// RTT and window count too).
    pub(crate) fn aggregate<'a>(
        retired: &TransportTotals,
        live: impl Iterator<Item = (&'a ConnectionStats, bool)>,
    ) -> TransportTotals {
        let mut t = retired.clone();
        let mut rtt_sum = 0.0;
        for (s, open) in live {
            t.add_counters(s);
            if !open {
                continue;
            }
            t.open_connections += 1;
            rtt_sum += ms(s.rtt);
            t.congestion_window += s.congestion_window;
            if let Some(m) = s.min_rtt {
                let m = ms(m);
                t.min_rtt_ms = Some(t.min_rtt_ms.map_or(m, |x| x.min(m)));
            }
        }
        if t.open_connections > 0 {
            t.mean_rtt_ms = rtt_sum / t.open_connections as f64;
        }
        t
    }
}

/// Totals over every connection of a [`Phoenix`](crate::Phoenix).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TotalStats {
    /// Phoenix's counters over all connections, dropped ones included.
    pub sdk: SdkStats,
    /// The engine's figures summed.
    pub transport: TransportTotals,
}

/// A snapshot of a [`Phoenix`](crate::Phoenix): totals, each live connection, the pool
/// and the network tier.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PhoenixStats {
    /// The application name.
    pub app: String,
    /// The backend's name.
    pub backend: String,
    /// The network tier in force, if one was set or probed.
    pub tier: Option<TierReport>,
    /// Totals.
    pub total: TotalStats,
    /// Each live connection (dialled or accepted by this Phoenix's listeners).
    pub connections: Vec<ConnectionReport>,
    /// The connection pool.
    pub pool: PoolStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_period_excludes_idle_gaps() {
        let m = Meter {
            conn: Arc::default(),
            total: Arc::default(),
        };
        {
            let _a = m.activity();
            let _b = m.activity();
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50));
        m.count(Count::MessageSent(1000));
        let s = m.conn.snapshot();
        assert!(s.active_secs >= 0.02 && s.active_secs < 0.06, "{s:?}");
        assert!(s.goodput_bps > 0.0);
        assert_eq!(m.total.snapshot().messages_sent, 1);
    }
}
