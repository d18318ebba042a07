//! # A congestion controller from outside STOQ
//!
//! This crate proves the plug-in path: [`Vegas`] is a delay-based congestion controller
//! in the spirit of TCP Vegas (L. Brakmo, L. Peterson, "TCP Vegas: New Techniques for
//! Congestion Detection and Avoidance", SIGCOMM 1994), written against nothing but the
//! public [`stoq_core::congestion`] API and run inside the quinn backend through
//! [`CongestionConfig::custom`](stoq_core::CongestionConfig::custom).
//!
//! Unlike the loss-based built-ins (NewReno, CUBIC), Vegas reads the queue from the
//! round-trip time. Once per RTT round it compares the rate the window would achieve on an
//! empty path with the rate it actually achieves:
//!
//! * `expected = cwnd / min_rtt`, `actual = cwnd / rtt`,
//!   `diff = (expected - actual) * min_rtt` — the packets this connection keeps queued.
//!   `rtt` is the event's [`latest`](stoq_core::congestion::RttSample::latest) sample
//!   (quinn reports its smoothed RTT there), `min_rtt` the engine's minimum.
//! * `diff < alpha` (2 packets): the path has room, grow by one MSS.
//! * `diff > beta` (4 packets): a queue is building, shrink by one MSS.
//! * otherwise leave the window alone.
//!
//! It starts in slow start (the window grows by the acknowledged bytes) and leaves it at the
//! first loss or as soon as `diff > gamma` (1 packet). A loss halves the window, once per
//! recovery period. The window never falls below two datagrams.
//!
//! [`VegasFactory::stats`] hands out a [`VegasStats`] handle whose atomic counters the
//! application can read while the controller runs inside the engine; [`run_transfer`]
//! uses it to check that the engine really sends with this controller's window.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq_core::congestion::{
    rfc9002_initial_window, rfc9002_minimum_window, AckEvent, CongestionController,
    CongestionControllerFactory, CongestionEvent, CongestionMetrics,
};

mod transfer;

pub use transfer::{run_transfer, Report};

/// The controller's name, as reported to traces and by the factory.
pub const NAME: &str = "vegas";

/// Vegas thresholds, in packets (multiples of the maximum datagram size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VegasParams {
    /// Grow the window by one datagram per RTT while fewer than `alpha` packets are queued.
    pub alpha: u64,
    /// Shrink the window by one datagram per RTT while more than `beta` packets are queued.
    pub beta: u64,
    /// Leave slow start once more than `gamma` packets are queued.
    pub gamma: u64,
}

impl Default for VegasParams {
    /// The values of the Vegas paper: alpha = 2, beta = 4, gamma = 1.
    fn default() -> Self {
        VegasParams {
            alpha: 2,
            beta: 4,
            gamma: 1,
        }
    }
}

/// Counters shared by every controller one factory builds.
#[derive(Debug, Default)]
struct Counters {
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_acked: AtomicU64,
    bytes_lost: AtomicU64,
    congestion_events: AtomicU64,
    loss_reductions: AtomicU64,
    rounds: AtomicU64,
    increases: AtomicU64,
    decreases: AtomicU64,
    slow_start_exits: AtomicU64,
    window_changes: AtomicU64,
    window: AtomicU64,
}

/// A read-only view of the counters of the controllers a [`VegasFactory`] built.
///
/// Cheap to clone (one `Arc`); safe to read from any thread while the engine runs the
/// controller. Counters add up over every controller the factory built (one per path);
/// [`window`](Self::window) is the window most recently set by any of them.
#[derive(Debug, Clone, Default)]
pub struct VegasStats {
    inner: Arc<Counters>,
}

/// A copy of a [`VegasStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VegasSnapshot {
    /// `on_packet_sent` calls: congestion-controlled packets sent. Engines that send with
    /// segmentation offload (quinn with GSO) report one batch of datagrams as one send.
    pub packets_sent: u64,
    /// Bytes of congestion-controlled packets sent.
    pub bytes_sent: u64,
    /// Bytes acknowledged.
    pub bytes_acked: u64,
    /// Bytes declared lost.
    pub bytes_lost: u64,
    /// Congestion events (losses and ECN-CE marks) reported by the engine.
    pub congestion_events: u64,
    /// Congestion events that halved the window (at most one per recovery period).
    pub loss_reductions: u64,
    /// RTT rounds evaluated.
    pub rounds: u64,
    /// Rounds that grew the window by one datagram (congestion avoidance).
    pub increases: u64,
    /// Rounds that shrank the window by one datagram (congestion avoidance).
    pub decreases: u64,
    /// Times slow start ended because the RTT showed a queue.
    pub slow_start_exits: u64,
    /// Times the window changed for any reason.
    pub window_changes: u64,
    /// The current congestion window, bytes.
    pub window: u64,
}

impl VegasStats {
    /// `on_packet_sent` calls (see [`VegasSnapshot::packets_sent`]).
    pub fn packets_sent(&self) -> u64 {
        self.inner.packets_sent.load(Relaxed)
    }

    /// Bytes of congestion-controlled packets sent.
    pub fn bytes_sent(&self) -> u64 {
        self.inner.bytes_sent.load(Relaxed)
    }

    /// Bytes acknowledged.
    pub fn bytes_acked(&self) -> u64 {
        self.inner.bytes_acked.load(Relaxed)
    }

    /// Congestion events (losses and ECN-CE marks) reported by the engine.
    pub fn congestion_events(&self) -> u64 {
        self.inner.congestion_events.load(Relaxed)
    }

    /// Times the window changed for any reason.
    pub fn window_changes(&self) -> u64 {
        self.inner.window_changes.load(Relaxed)
    }

    /// The current congestion window, bytes.
    pub fn window(&self) -> u64 {
        self.inner.window.load(Relaxed)
    }

    /// Every counter at once.
    pub fn snapshot(&self) -> VegasSnapshot {
        let c = &self.inner;
        VegasSnapshot {
            packets_sent: c.packets_sent.load(Relaxed),
            bytes_sent: c.bytes_sent.load(Relaxed),
            bytes_acked: c.bytes_acked.load(Relaxed),
            bytes_lost: c.bytes_lost.load(Relaxed),
            congestion_events: c.congestion_events.load(Relaxed),
            loss_reductions: c.loss_reductions.load(Relaxed),
            rounds: c.rounds.load(Relaxed),
            increases: c.increases.load(Relaxed),
            decreases: c.decreases.load(Relaxed),
            slow_start_exits: c.slow_start_exits.load(Relaxed),
            window_changes: c.window_changes.load(Relaxed),
            window: c.window.load(Relaxed),
        }
    }
}

/// Builds [`Vegas`] controllers that all report into one [`VegasStats`].
#[derive(Debug, Clone, Default)]
pub struct VegasFactory {
    params: VegasParams,
    stats: VegasStats,
}

impl VegasFactory {
    /// A factory with the paper's thresholds ([`VegasParams::default`]).
    pub fn new() -> Self {
        VegasFactory::default()
    }

    /// A factory with other thresholds.
    ///
    /// # Panics
    /// If `params.alpha > params.beta` (the window would grow and shrink at once).
    pub fn with_params(params: VegasParams) -> Self {
        assert!(
            params.alpha <= params.beta,
            "Vegas needs alpha <= beta (got alpha = {}, beta = {})",
            params.alpha,
            params.beta
        );
        VegasFactory {
            params,
            stats: VegasStats::default(),
        }
    }

    /// The handle to the counters of every controller this factory builds.
    pub fn stats(&self) -> VegasStats {
        self.stats.clone()
    }
}

impl CongestionControllerFactory for VegasFactory {
    fn name(&self) -> &str {
        NAME
    }

    fn build(&self, _now: Instant, max_datagram_size: u16) -> Box<dyn CongestionController> {
        Box::new(Vegas::new(
            max_datagram_size,
            self.params,
            self.stats.clone(),
        ))
    }
}

/// The Vegas congestion controller for one path. See the [crate documentation](crate).
#[derive(Debug, Clone)]
pub struct Vegas {
    params: VegasParams,
    /// The path's maximum UDP payload ("MSS"), bytes.
    max_datagram_size: u64,
    /// The window the controller started with (RFC 9002 initial window).
    initial_window: u64,
    /// Congestion window, bytes.
    window: u64,
    /// Whether the first slow start is still running.
    slow_start: bool,
    /// The window when slow start ended (reported as ssthresh in the metrics).
    ssthresh: Option<u64>,
    /// When the current recovery period started; losses of packets sent before it and
    /// acknowledgements of such packets are ignored.
    recovery_start: Option<Instant>,
    /// When the current RTT round started: the round ends with the first acknowledgement
    /// of a packet sent after it. `None` until the first acknowledgement.
    round_start: Option<Instant>,
    /// Bytes in flight as tracked from the events.
    bytes_in_flight: u64,
    stats: VegasStats,
}

impl Vegas {
    /// A controller for a path whose maximum UDP payload is `max_datagram_size`, starting
    /// in slow start with the RFC 9002 initial window and reporting into `stats`.
    ///
    /// # Panics
    /// If `params.alpha > params.beta`.
    pub fn new(max_datagram_size: u16, params: VegasParams, stats: VegasStats) -> Self {
        assert!(params.alpha <= params.beta, "Vegas needs alpha <= beta");
        let max_datagram_size = u64::from(max_datagram_size);
        let initial_window = rfc9002_initial_window(max_datagram_size);
        stats.inner.window.store(initial_window, Relaxed);
        Vegas {
            params,
            max_datagram_size,
            initial_window,
            window: initial_window,
            slow_start: true,
            ssthresh: None,
            recovery_start: None,
            round_start: None,
            bytes_in_flight: 0,
            stats,
        }
    }

    /// Whether the controller is still in its first slow start.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// Bytes in flight as the controller tracks them.
    pub fn bytes_in_flight(&self) -> u64 {
        self.bytes_in_flight
    }

    /// The smallest window: two datagrams (RFC 9002 `kMinimumWindow`).
    fn minimum_window(&self) -> u64 {
        rfc9002_minimum_window(self.max_datagram_size)
    }

    /// Whether a packet sent at `sent_time` was sent before the current recovery period.
    fn sent_before_recovery(&self, sent_time: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent_time <= start)
    }

    /// Sets the window (never below the minimum) and publishes it.
    fn set_window(&mut self, window: u64) {
        let window = window.max(self.minimum_window());
        if window != self.window {
            self.window = window;
            self.stats.inner.window_changes.fetch_add(1, Relaxed);
        }
        self.stats.inner.window.store(self.window, Relaxed);
    }

    /// The end of an RTT round: the Vegas comparison of expected and actual rate.
    ///
    /// `diff = (cwnd/min_rtt - cwnd/rtt) * min_rtt = cwnd * (rtt - min_rtt) / rtt` bytes,
    /// compared with the thresholds in bytes (`alpha * max_datagram_size`, ...).
    fn end_round(&mut self, ack: &AckEvent) {
        let (min_rtt, rtt) = (ack.rtt.min, ack.rtt.latest);
        if min_rtt.is_zero() || rtt.is_zero() {
            // No usable estimate yet; slow start carries on without a decision.
            if self.slow_start && !ack.app_limited {
                self.set_window(self.window.saturating_add(ack.bytes));
            }
            return;
        }
        let c = &self.stats.inner;
        c.rounds.fetch_add(1, Relaxed);
        let mss = self.max_datagram_size;
        let diff = queued_bytes(self.window, min_rtt, rtt);
        if self.slow_start {
            if diff > self.params.gamma.saturating_mul(mss) {
                // A queue is forming: switch to the linear mode, first trimming the
                // window to what the path carries without a queue plus one datagram
                // (the slow-start overshoot of the round), as Linux's tcp_vegas does.
                c.slow_start_exits.fetch_add(1, Relaxed);
                self.slow_start = false;
                let target = expected_window(self.window, min_rtt, rtt);
                self.set_window(self.window.min(target.saturating_add(mss)));
                self.ssthresh = Some(self.window);
            } else if !ack.app_limited {
                self.set_window(self.window.saturating_add(ack.bytes));
            }
        } else if diff < self.params.alpha.saturating_mul(mss) {
            // Do not grow a window the application is not filling.
            if !ack.app_limited {
                c.increases.fetch_add(1, Relaxed);
                self.set_window(self.window.saturating_add(mss));
            }
        } else if diff > self.params.beta.saturating_mul(mss) && self.window > self.minimum_window()
        {
            c.decreases.fetch_add(1, Relaxed);
            self.set_window(self.window - mss);
        }
    }
}

/// Vegas `diff` in bytes: `window * (rtt - min_rtt) / rtt`, rounded down (0 if the RTT is
/// below the minimum).
fn queued_bytes(window: u64, min_rtt: Duration, rtt: Duration) -> u64 {
    let rtt_ns = rtt.as_nanos();
    let queue_ns = rtt_ns.saturating_sub(min_rtt.as_nanos());
    (u128::from(window) * queue_ns / rtt_ns) as u64
}

/// The window that fills the path without a queue at the measured rate:
/// `window * min_rtt / rtt`, rounded down.
fn expected_window(window: u64, min_rtt: Duration, rtt: Duration) -> u64 {
    let ratio = u128::from(window) * min_rtt.as_nanos().min(rtt.as_nanos()) / rtt.as_nanos();
    ratio as u64
}

impl CongestionController for Vegas {
    fn name(&self) -> &str {
        NAME
    }

    fn on_packet_sent(&mut self, _now: Instant, bytes: u64, _app_limited: bool) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_add(bytes);
        let c = &self.stats.inner;
        c.packets_sent.fetch_add(1, Relaxed);
        c.bytes_sent.fetch_add(bytes, Relaxed);
    }

    fn on_ack(&mut self, ack: &AckEvent) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(ack.bytes);
        self.stats.inner.bytes_acked.fetch_add(ack.bytes, Relaxed);
        // Packets sent before the recovery period carry the state that caused the loss.
        if self.sent_before_recovery(ack.sent_time) {
            return;
        }
        match self.round_start {
            Some(start) if ack.sent_time > start => {
                self.end_round(ack);
                self.round_start = Some(ack.now);
            }
            Some(_) => {
                if self.slow_start && !ack.app_limited {
                    self.set_window(self.window.saturating_add(ack.bytes));
                }
            }
            None => {
                self.round_start = Some(ack.now);
                if self.slow_start && !ack.app_limited {
                    self.set_window(self.window.saturating_add(ack.bytes));
                }
            }
        }
    }

    fn on_ack_batch_end(&mut self, _now: Instant, bytes_in_flight: Option<u64>) {
        // An engine that counts in-flight bytes itself is authoritative.
        if let Some(bytes_in_flight) = bytes_in_flight {
            self.bytes_in_flight = bytes_in_flight;
        }
    }

    fn on_congestion_event(&mut self, event: &CongestionEvent) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(event.lost_bytes);
        let c = &self.stats.inner;
        c.congestion_events.fetch_add(1, Relaxed);
        c.bytes_lost.fetch_add(event.lost_bytes, Relaxed);
        if !self.sent_before_recovery(event.sent_time) {
            c.loss_reductions.fetch_add(1, Relaxed);
            self.recovery_start = Some(event.now);
            self.slow_start = false;
            self.set_window(self.window / 2);
            self.ssthresh = Some(self.window);
            // The next round measures packets sent with the reduced window.
            self.round_start = Some(event.now);
        }
        if event.persistent {
            // RFC 9002 section 7.6.2: collapse to the minimum window.
            self.set_window(self.minimum_window());
        }
    }

    fn on_packet_discarded(&mut self, bytes: u64) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(bytes);
    }

    fn on_mtu_update(&mut self, max_datagram_size: u16) {
        self.max_datagram_size = u64::from(max_datagram_size);
        self.set_window(self.window);
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn initial_window(&self) -> u64 {
        self.initial_window
    }

    fn metrics(&self) -> CongestionMetrics {
        CongestionMetrics::new(self.window, self.bytes_in_flight).with_ssthresh(self.ssthresh)
    }

    fn clone_box(&self) -> Box<dyn CongestionController> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoq_core::congestion::RttSample;

    const MSS: u16 = 1200;
    const MS: Duration = Duration::from_millis(1);

    /// Drives one controller with synthetic events on a private clock.
    struct Driver {
        t0: Instant,
        vegas: Vegas,
        stats: VegasStats,
    }

    impl Driver {
        fn new() -> Self {
            let factory = VegasFactory::new();
            let stats = factory.stats();
            Driver {
                t0: Instant::now(),
                vegas: Vegas::new(MSS, VegasParams::default(), stats.clone()),
                stats,
            }
        }

        /// A driver already out of slow start with `window` bytes.
        fn avoidance(window: u64) -> Self {
            let mut d = Driver::new();
            d.vegas.slow_start = false;
            d.vegas.window = window;
            d
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn send(&mut self, ms: u64, bytes: u64) {
            let now = self.at(ms);
            self.vegas.on_packet_sent(now, bytes, false);
        }

        /// An ACK at `now_ms` of `bytes` sent at `sent_ms`, with RTT `rtt` and min `min`.
        fn ack(&mut self, now_ms: u64, sent_ms: u64, bytes: u64, min: Duration, rtt: Duration) {
            self.ack_full(now_ms, sent_ms, bytes, min, rtt, false);
        }

        fn ack_full(
            &mut self,
            now_ms: u64,
            sent_ms: u64,
            bytes: u64,
            min: Duration,
            rtt: Duration,
            app_limited: bool,
        ) {
            let ack = AckEvent {
                now: self.at(now_ms),
                sent_time: self.at(sent_ms),
                bytes,
                app_limited,
                rtt: RttSample {
                    latest: rtt,
                    smoothed: rtt,
                    min,
                    variance: rtt / 2,
                },
            };
            self.vegas.on_ack(&ack);
        }

        fn loss(&mut self, now_ms: u64, sent_ms: u64, bytes: u64, persistent: bool) {
            let event = CongestionEvent {
                now: self.at(now_ms),
                sent_time: self.at(sent_ms),
                lost_bytes: bytes,
                persistent,
                ecn: false,
            };
            self.vegas.on_congestion_event(&event);
        }

        /// Opens a round at t = 100 ms and closes it with an ACK of a packet sent at
        /// t = 101 ms, measured at `rtt` against a 10 ms minimum.
        fn one_round(&mut self, rtt: Duration) {
            self.ack(100, 90, 0, 10 * MS, rtt);
            self.ack(112, 101, 0, 10 * MS, rtt);
        }
    }

    #[test]
    fn starts_with_the_rfc9002_initial_window() {
        let d = Driver::new();
        // min(10 * 1200, max(14720, 2 * 1200)) = 12000.
        assert_eq!(d.vegas.window(), 12_000);
        assert_eq!(d.vegas.initial_window(), 12_000);
        assert_eq!(d.stats.window(), 12_000);
        assert!(d.vegas.in_slow_start());
        assert_eq!(d.vegas.metrics(), CongestionMetrics::new(12_000, 0));
    }

    #[test]
    fn queued_bytes_is_the_vegas_diff() {
        // 24000 * (12 - 10) / 12 = 4000 bytes = 3.33 packets of 1200.
        assert_eq!(queued_bytes(24_000, 10 * MS, 12 * MS), 4_000);
        // 24000 * 0.5 / 10.5 = 1142.86, rounded down.
        assert_eq!(queued_bytes(24_000, 10 * MS, MS * 21 / 2), 1_142);
        assert_eq!(queued_bytes(24_000, 10 * MS, 10 * MS), 0);
        // An RTT below the minimum (a stale minimum) means no queue, not an underflow.
        assert_eq!(queued_bytes(24_000, 10 * MS, 8 * MS), 0);
        assert_eq!(expected_window(12_000, 10 * MS, 12 * MS), 10_000);
    }

    #[test]
    fn slow_start_grows_by_acknowledged_bytes() {
        let mut d = Driver::new();
        d.ack(10, 0, 1_200, 10 * MS, 10 * MS);
        assert_eq!(d.vegas.window(), 13_200);
        // Still the first round (packet sent before the round started at t = 10).
        d.ack(11, 1, 2_400, 10 * MS, 10 * MS);
        assert_eq!(d.vegas.window(), 15_600);
        assert_eq!(d.stats.snapshot().rounds, 0);
        assert_eq!(d.stats.window(), 15_600);
        assert_eq!(d.stats.window_changes(), 2);
    }

    #[test]
    fn slow_start_continues_while_diff_is_at_most_gamma() {
        let mut d = Driver::new();
        // diff = 12000 * 0.5 / 10.5 = 571 bytes < 1 packet: keep doubling.
        d.one_round(MS * 21 / 2);
        assert!(d.vegas.in_slow_start());
        assert_eq!(d.vegas.window(), 12_000); // zero-byte ACKs
        d.ack(125, 113, 1_200, 10 * MS, MS * 21 / 2);
        assert_eq!(d.vegas.window(), 13_200);
        assert_eq!(d.stats.snapshot().rounds, 2);
    }

    #[test]
    fn slow_start_ends_when_diff_exceeds_gamma() {
        let mut d = Driver::new();
        // diff = 12000 * 2 / 12 = 2000 bytes = 1.67 packets > gamma (1). The window is
        // trimmed to expected + 1 MSS = 12000 * 10 / 12 + 1200 = 11200.
        d.one_round(12 * MS);
        assert!(!d.vegas.in_slow_start());
        assert_eq!(d.vegas.window(), 11_200);
        assert_eq!(d.vegas.metrics().ssthresh, Some(11_200));
        let s = d.stats.snapshot();
        assert_eq!((s.rounds, s.slow_start_exits, s.window), (1, 1, 11_200));
        // Linear mode now: ACKs inside a round no longer grow the window.
        d.ack(113, 101, 1_200, 10 * MS, 12 * MS);
        assert_eq!(d.vegas.window(), 11_200);
    }

    #[test]
    fn grows_one_mss_per_round_below_alpha() {
        let mut d = Driver::avoidance(24_000);
        // diff = 1142 bytes < 2 packets (2400).
        d.one_round(MS * 21 / 2);
        assert_eq!(d.vegas.window(), 25_200);
        // More ACKs within the same round change nothing.
        d.ack(113, 100, 1_200, 10 * MS, MS * 21 / 2);
        d.ack(113, 105, 1_200, 10 * MS, MS * 21 / 2);
        assert_eq!(d.vegas.window(), 25_200);
        // The next round (packet sent after t = 112) adds another MSS.
        d.ack(124, 113, 1_200, 10 * MS, MS * 21 / 2);
        assert_eq!(d.vegas.window(), 26_400);
        let s = d.stats.snapshot();
        assert_eq!((s.rounds, s.increases, s.decreases), (2, 2, 0));
    }

    #[test]
    fn holds_between_alpha_and_beta() {
        let mut d = Driver::avoidance(24_000);
        // diff = 4000 bytes = 3.33 packets: inside [2, 4].
        d.one_round(12 * MS);
        assert_eq!(d.vegas.window(), 24_000);
        assert_eq!(d.stats.window_changes(), 0);
        assert_eq!(d.stats.snapshot().rounds, 1);
    }

    #[test]
    fn shrinks_one_mss_per_round_above_beta() {
        let mut d = Driver::avoidance(24_000);
        // diff = 24000 * 10 / 20 = 12000 bytes = 10 packets > 4.
        d.one_round(20 * MS);
        assert_eq!(d.vegas.window(), 22_800);
        d.ack(125, 113, 1_200, 10 * MS, 20 * MS);
        assert_eq!(d.vegas.window(), 21_600);
        let s = d.stats.snapshot();
        assert_eq!((s.increases, s.decreases, s.window), (0, 2, 21_600));
    }

    #[test]
    fn never_shrinks_below_two_datagrams() {
        // With beta = 4 packets a window of 4 packets can never show a 4-packet queue, so
        // the floor only matters for small thresholds (and losses, tested below).
        let params = VegasParams {
            alpha: 1,
            beta: 1,
            gamma: 1,
        };
        let mut d = Driver::avoidance(3_600);
        d.vegas.params = params;
        // diff = 3600 * 99 / 100 = 3564 bytes > 1200: one MSS off.
        d.ack(100, 90, 0, MS, 100 * MS);
        d.ack(200, 101, 0, MS, 100 * MS);
        assert_eq!(d.vegas.window(), 2_400);
        // diff = 2376 > 1200 again, but the window is at the floor.
        d.ack(300, 201, 0, MS, 100 * MS);
        assert_eq!(d.vegas.window(), 2_400);
        let s = d.stats.snapshot();
        assert_eq!((s.rounds, s.decreases), (2, 1));
    }

    #[test]
    fn app_limited_acks_do_not_grow_the_window() {
        let mut d = Driver::new();
        d.ack_full(10, 0, 1_200, 10 * MS, 10 * MS, true);
        assert_eq!(d.vegas.window(), 12_000);
        let mut d = Driver::avoidance(24_000);
        d.ack(100, 90, 0, 10 * MS, 10 * MS);
        d.ack_full(112, 101, 0, 10 * MS, 10 * MS, true);
        assert_eq!(d.vegas.window(), 24_000);
        // ...but a queue still shrinks it.
        d.ack_full(125, 113, 0, 10 * MS, 20 * MS, true);
        assert_eq!(d.vegas.window(), 22_800);
    }

    #[test]
    fn loss_halves_once_per_recovery_period() {
        let mut d = Driver::new();
        d.loss(50, 40, 1_200, false);
        assert_eq!(d.vegas.window(), 6_000);
        assert!(!d.vegas.in_slow_start());
        assert_eq!(d.vegas.metrics().ssthresh, Some(6_000));
        // Another loss of a packet sent before the period began (t = 50): ignored.
        d.loss(55, 45, 1_200, false);
        d.loss(56, 50, 1_200, false);
        assert_eq!(d.vegas.window(), 6_000);
        // A packet sent after it: a new period.
        d.loss(70, 51, 1_200, false);
        assert_eq!(d.vegas.window(), 3_000);
        d.loss(90, 71, 1_200, false);
        assert_eq!(d.vegas.window(), 2_400); // 1500 is below the minimum
        let s = d.stats.snapshot();
        assert_eq!((s.congestion_events, s.loss_reductions), (5, 3));
        assert_eq!(s.bytes_lost, 6_000);
    }

    #[test]
    fn acks_from_before_recovery_neither_grow_nor_end_rounds() {
        let mut d = Driver::avoidance(24_000);
        d.loss(50, 40, 1_200, false);
        assert_eq!(d.vegas.window(), 12_000);
        d.ack(60, 45, 1_200, 10 * MS, 10 * MS);
        assert_eq!(d.vegas.window(), 12_000);
        assert_eq!(d.stats.snapshot().rounds, 0);
        // The first packet sent after the loss closes the round begun at it.
        d.ack(62, 51, 1_200, 10 * MS, 10 * MS);
        assert_eq!(d.vegas.window(), 13_200);
        assert_eq!(d.stats.snapshot().rounds, 1);
    }

    #[test]
    fn persistent_congestion_collapses_to_the_minimum() {
        let mut d = Driver::avoidance(24_000);
        d.loss(50, 40, 12_000, true);
        assert_eq!(d.vegas.window(), 2_400);
        assert_eq!(d.stats.window(), 2_400);
    }

    #[test]
    fn tracks_bytes_in_flight() {
        let mut d = Driver::new();
        for i in 0..5 {
            d.send(i, 1_200);
        }
        assert_eq!(d.vegas.bytes_in_flight(), 6_000);
        d.ack(10, 0, 1_200, 10 * MS, 10 * MS);
        d.loss(11, 1, 1_200, false);
        d.vegas.on_packet_discarded(1_200);
        assert_eq!(d.vegas.bytes_in_flight(), 2_400);
        assert_eq!(d.vegas.metrics().bytes_in_flight, 2_400);
        // The engine's own count wins.
        d.vegas.on_ack_batch_end(d.at(12), Some(1_000));
        assert_eq!(d.vegas.bytes_in_flight(), 1_000);
        let s = d.stats.snapshot();
        assert_eq!(
            (s.packets_sent, s.bytes_sent, s.bytes_acked),
            (5, 6_000, 1_200)
        );
    }

    #[test]
    fn mtu_update_raises_the_floor() {
        let mut d = Driver::avoidance(2_400);
        d.vegas.on_mtu_update(1_452);
        assert_eq!(d.vegas.window(), 2_904);
        d.loss(50, 40, 1_452, false); // 1452 is below the new floor of 2 * 1452
        assert_eq!(d.vegas.window(), 2_904);
    }

    #[test]
    fn clones_share_the_counters() {
        let factory = VegasFactory::new();
        let stats = factory.stats();
        let mut a = factory.build(Instant::now(), MSS);
        let mut b = a.clone_box();
        a.on_packet_sent(Instant::now(), 100, false);
        b.on_packet_sent(Instant::now(), 50, false);
        assert_eq!(stats.packets_sent(), 2);
        assert_eq!(stats.bytes_sent(), 150);
        assert_eq!(a.name(), "vegas");
        assert_eq!(factory.name(), "vegas");
    }

    #[test]
    #[should_panic(expected = "alpha <= beta")]
    fn rejects_alpha_above_beta() {
        let _ = VegasFactory::with_params(VegasParams {
            alpha: 5,
            beta: 4,
            gamma: 1,
        });
    }
}
