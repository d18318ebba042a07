//! Sans-IO congestion control.
//!
//! A [`CongestionController`] sees the events of one path — packets sent, acknowledged,
//! lost — and answers how many bytes may be in flight ([`window`](CongestionController::window))
//! and, optionally, how fast to pace ([`pacing_rate`](CongestionController::pacing_rate)).
//! It does no I/O and reads no clock: every event carries the time. Backends adapt it to
//! their engine (quinn-proto's `Controller`, s2n-quic's `CongestionController`, the io_uring
//! engine's own loop); the event set is the union of what those engines report, so the same
//! controller runs on each.
//!
//! The controller tracks bytes in flight itself from `on_packet_sent`, `on_ack`,
//! `on_congestion_event` and `on_packet_discarded` (s2n-quic's model); engines that track
//! in-flight bytes themselves (quinn) also report it in `on_ack_batch_end`.
//!
//! What controllers must tolerate, because engines differ:
//! * `on_congestion_event` may arrive once per lost packet (s2n-quic) or once per batch
//!   (quinn); the recovery-period check on `sent_time` makes both react once.
//! * `on_ack_batch_end` may carry no in-flight count (`None`: s2n-quic has no batch-end
//!   event; its adapter calls it after each aggregated ACK) and may never be called by a
//!   user's own backend.
//! * `on_packet_sent` may cover several packets sent in one batch (quinn reports per
//!   GSO batch).
//! * Pacing: when `pacing_rate` is `None` the backend paces from window and RTT itself —
//!   the engine does (quinn), or the adapter does where the engine leaves pacing to the
//!   controller (s2n-quic's `earliest_departure_time`).
//!
//! Built-ins: [`NewReno`] (RFC 9002 section 7), [`Cubic`] (RFC 9438) and [`Bbr`] (BBRv3,
//! draft-ietf-ccwg-bbr-06).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{CongestionAlgorithm, Error};

mod bbr;
mod cubic;
mod new_reno;
mod trace;

pub use bbr::{Bbr, BbrFactory};
pub use cubic::{Cubic, CubicFactory};
pub use new_reno::{NewReno, NewRenoFactory};
pub use trace::TracingFactory;

/// The RTT estimate at the time of an event (RFC 9002 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttSample {
    /// The most recent RTT sample.
    pub latest: Duration,
    /// The smoothed RTT.
    pub smoothed: Duration,
    /// The minimum RTT seen.
    pub min: Duration,
    /// The RTT variation.
    pub variance: Duration,
}

impl RttSample {
    /// An estimate where every field is `rtt` (useful in tests and before any sample).
    pub fn constant(rtt: Duration) -> Self {
        RttSample {
            latest: rtt,
            smoothed: rtt,
            min: rtt,
            variance: rtt / 2,
        }
    }
}

/// Packets were acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct AckEvent {
    /// When the ACK was processed.
    pub now: Instant,
    /// When the newest acknowledged packet was sent (recovery-period checks use it).
    pub sent_time: Instant,
    /// Bytes newly acknowledged.
    pub bytes: u64,
    /// Whether the sender was application-limited (not filling the window) when the
    /// acknowledged packets were sent; controllers should not grow the window then.
    pub app_limited: bool,
    /// The RTT estimate after this ACK.
    pub rtt: RttSample,
}

/// Packets were declared lost, or an ECN-CE mark arrived.
#[derive(Debug, Clone, Copy)]
pub struct CongestionEvent {
    /// When the loss was detected.
    pub now: Instant,
    /// When the newest lost (or CE-marked) packet was sent. A controller reacts only once
    /// per recovery period: when `sent_time` is after the period's start.
    pub sent_time: Instant,
    /// Bytes declared lost (0 for an ECN signal).
    pub lost_bytes: u64,
    /// Whether RFC 9002 section 7.6 persistent congestion was established.
    pub persistent: bool,
    /// Whether this is an ECN-CE signal rather than a loss.
    pub ecn: bool,
}

/// Controller state for traces and stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CongestionMetrics {
    /// Congestion window, bytes.
    pub window: u64,
    /// Slow-start threshold, bytes (`None` while still in the first slow start).
    pub ssthresh: Option<u64>,
    /// Pacing rate, bytes per second, if the controller paces.
    pub pacing_rate: Option<u64>,
    /// Bytes in flight as the controller tracks them.
    pub bytes_in_flight: u64,
}

impl CongestionMetrics {
    /// Metrics with a window and bytes in flight; no ssthresh, no pacing.
    /// (The struct is `#[non_exhaustive]` so fields can be added; this constructor and the
    /// `with_*` methods are how controllers outside this crate build it.)
    pub fn new(window: u64, bytes_in_flight: u64) -> Self {
        CongestionMetrics {
            window,
            ssthresh: None,
            pacing_rate: None,
            bytes_in_flight,
        }
    }

    /// Sets the slow-start threshold.
    #[must_use]
    pub fn with_ssthresh(mut self, ssthresh: Option<u64>) -> Self {
        self.ssthresh = ssthresh;
        self
    }

    /// Sets the pacing rate (bytes per second).
    #[must_use]
    pub fn with_pacing_rate(mut self, pacing_rate: Option<u64>) -> Self {
        self.pacing_rate = pacing_rate;
        self
    }
}

/// A congestion controller for one path. Sans-IO: every input carries its time.
pub trait CongestionController: Send + Sync + fmt::Debug {
    /// The algorithm's name, for traces and reports.
    fn name(&self) -> &str;

    /// A packet carrying `bytes` of congestion-controlled data was sent at `now`.
    /// `app_limited` says whether the application had too little data to fill the window.
    fn on_packet_sent(&mut self, now: Instant, bytes: u64, app_limited: bool);

    /// Packets were acknowledged.
    fn on_ack(&mut self, ack: &AckEvent);

    /// The engine finished processing one ACK frame. `bytes_in_flight` is the engine's own
    /// count where it keeps one. Default: nothing.
    fn on_ack_batch_end(&mut self, _now: Instant, _bytes_in_flight: Option<u64>) {}

    /// Packets were lost or marked with ECN-CE.
    fn on_congestion_event(&mut self, event: &CongestionEvent);

    /// Packets of `bytes` were discarded without being acknowledged or lost (their packet
    /// number space was dropped); they leave the in-flight count.
    fn on_packet_discarded(&mut self, bytes: u64);

    /// The path's maximum UDP payload changed.
    fn on_mtu_update(&mut self, max_datagram_size: u16);

    /// Bytes that may be in flight now.
    fn window(&self) -> u64;

    /// The window the controller starts with.
    fn initial_window(&self) -> u64;

    /// Bytes per second to pace at, or `None` to let the engine pace from window and RTT.
    fn pacing_rate(&self) -> Option<u64> {
        None
    }

    /// A snapshot of the controller's state.
    fn metrics(&self) -> CongestionMetrics;

    /// A copy of the controller with the same state.
    fn clone_box(&self) -> Box<dyn CongestionController>;
}

/// Builds one controller per path.
pub trait CongestionControllerFactory: Send + Sync {
    /// The algorithm's name.
    fn name(&self) -> &str;

    /// A fresh controller for a path whose maximum UDP payload is `max_datagram_size`.
    fn build(&self, now: Instant, max_datagram_size: u16) -> Box<dyn CongestionController>;
}

/// The factory for STOQ's own implementation of `algorithm`.
pub fn builtin_factory(
    algorithm: CongestionAlgorithm,
) -> Result<Arc<dyn CongestionControllerFactory>, Error> {
    match algorithm {
        CongestionAlgorithm::NewReno => Ok(Arc::new(NewRenoFactory::default())),
        CongestionAlgorithm::Cubic => Ok(Arc::new(CubicFactory::default())),
        CongestionAlgorithm::Bbr => Ok(Arc::new(BbrFactory::default())),
    }
}

/// RFC 9002 section 7.2: initial window = min(10 * max_datagram_size,
/// max(14720, 2 * max_datagram_size)).
pub fn rfc9002_initial_window(max_datagram_size: u64) -> u64 {
    (10 * max_datagram_size).min(14720.max(2 * max_datagram_size))
}

/// RFC 9002 section 7.2: minimum window = 2 * max_datagram_size.
pub fn rfc9002_minimum_window(max_datagram_size: u64) -> u64 {
    2 * max_datagram_size
}
