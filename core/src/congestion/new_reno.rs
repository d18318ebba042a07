//! NewReno, as specified by RFC 9002 section 7 and its appendix B pseudo-code.
//!
//! * Slow start: while `cwnd < ssthresh`, the window grows by the acknowledged bytes.
//! * Congestion avoidance: the window grows by `max_datagram_size * acked / cwnd` per
//!   acknowledgement. The fractional part is accumulated, so the window grows by exactly one
//!   `max_datagram_size` for every window's worth of acknowledged bytes.
//! * Recovery: a congestion event whose newest packet was sent after the current recovery
//!   period started halves the window (`kLossReductionFactor` = 0.5) and starts a new
//!   recovery period; acknowledgements of packets sent before that start do not grow it.
//! * Persistent congestion collapses the window to the minimum window.
//! * Application-limited acknowledgements do not grow the window (section 7.8).

use std::time::Instant;

use super::{
    rfc9002_initial_window, rfc9002_minimum_window, AckEvent, CongestionController,
    CongestionControllerFactory, CongestionEvent, CongestionMetrics,
};

/// RFC 9002 `kLossReductionFactor`.
const LOSS_REDUCTION_FACTOR: f64 = 0.5;

/// Builds [`NewReno`] controllers with the RFC 9002 parameters.
///
/// It has no settings yet: build it with `NewRenoFactory::default()`. The private field
/// keeps room for optional settings whose defaults will be the RFC values.
#[derive(Debug, Clone, Default)]
pub struct NewRenoFactory {
    _private: (),
}

impl CongestionControllerFactory for NewRenoFactory {
    fn name(&self) -> &str {
        "new_reno"
    }

    fn build(&self, _now: Instant, max_datagram_size: u16) -> Box<dyn CongestionController> {
        Box::new(NewReno::new(max_datagram_size))
    }
}

/// The NewReno congestion controller of RFC 9002 section 7.
#[derive(Debug, Clone)]
pub struct NewReno {
    /// The path's maximum UDP payload, bytes.
    max_datagram_size: u64,
    /// The window the controller started with.
    initial_window: u64,
    /// `congestion_window`, bytes.
    window: u64,
    /// `ssthresh`, bytes; `None` is infinite (before the first congestion event).
    ssthresh: Option<u64>,
    /// `congestion_recovery_start_time`; `None` before the first congestion event and
    /// after persistent congestion.
    recovery_start: Option<Instant>,
    /// Congestion avoidance: the window when the current round of one window's worth of
    /// acknowledged bytes started (0: no round in progress).
    round_base: u64,
    /// Congestion avoidance: bytes acknowledged in the current round (`< round_base`).
    round_acked: u64,
    /// Congestion avoidance: bytes already added to the window in the current round,
    /// `max_datagram_size * round_acked / round_base` rounded down.
    round_added: u64,
    /// Bytes in flight as tracked from the events.
    bytes_in_flight: u64,
}

impl NewReno {
    /// A controller for a path whose maximum UDP payload is `max_datagram_size`, starting
    /// in slow start with the RFC 9002 initial window.
    pub fn new(max_datagram_size: u16) -> Self {
        let max_datagram_size = u64::from(max_datagram_size);
        let initial_window = rfc9002_initial_window(max_datagram_size);
        NewReno {
            max_datagram_size,
            initial_window,
            window: initial_window,
            ssthresh: None,
            recovery_start: None,
            round_base: 0,
            round_acked: 0,
            round_added: 0,
            bytes_in_flight: 0,
        }
    }

    /// RFC 9002 `kMinimumWindow` for the current datagram size.
    fn minimum_window(&self) -> u64 {
        rfc9002_minimum_window(self.max_datagram_size)
    }

    /// RFC 9002 `InCongestionRecovery(sent_time)`.
    fn in_recovery(&self, sent_time: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent_time <= start)
    }

    /// Forgets the congestion-avoidance round (after the window changed other than by it).
    fn reset_round(&mut self) {
        self.round_base = 0;
        self.round_acked = 0;
        self.round_added = 0;
    }

    /// Congestion avoidance: `cwnd += max_datagram_size * acked / cwnd`, with `cwnd` taken
    /// at the start of each round so that acknowledging one full window adds exactly one
    /// `max_datagram_size`; the fractional part carries over between acknowledgements.
    fn congestion_avoidance(&mut self, acked: u64) {
        let mss = self.max_datagram_size;
        if self.round_base == 0 {
            self.round_base = self.window.max(1);
            self.round_acked = 0;
            self.round_added = 0;
        }
        self.round_acked = self.round_acked.saturating_add(acked);
        while self.round_acked >= self.round_base {
            // A full window acknowledged: the round's increase is exactly one datagram.
            self.window += mss - self.round_added;
            self.round_acked -= self.round_base;
            self.round_base = self.window;
            self.round_added = 0;
        }
        let due =
            (u128::from(mss) * u128::from(self.round_acked) / u128::from(self.round_base)) as u64;
        self.window += due - self.round_added;
        self.round_added = due;
    }
}

impl CongestionController for NewReno {
    fn name(&self) -> &str {
        "new_reno"
    }

    fn on_packet_sent(&mut self, _now: Instant, bytes: u64, _app_limited: bool) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_add(bytes);
    }

    fn on_ack(&mut self, ack: &AckEvent) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(ack.bytes);
        // RFC 9002 section 7.8: do not grow the window while it is not being used.
        if ack.app_limited {
            return;
        }
        // Section 7.3.2: no growth for packets sent before the recovery period started.
        if self.in_recovery(ack.sent_time) {
            return;
        }
        match self.ssthresh {
            Some(ssthresh) if self.window >= ssthresh => self.congestion_avoidance(ack.bytes),
            // Slow start (section 7.3.1).
            _ => self.window = self.window.saturating_add(ack.bytes),
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
        // OnCongestionEvent: react once per recovery period.
        if !self.in_recovery(event.sent_time) {
            self.recovery_start = Some(event.now);
            let ssthresh = (self.window as f64 * LOSS_REDUCTION_FACTOR) as u64;
            self.ssthresh = Some(ssthresh);
            self.window = ssthresh.max(self.minimum_window());
            self.reset_round();
        }
        // OnPacketsLost: persistent congestion (section 7.6.2).
        if event.persistent {
            self.window = self.minimum_window();
            self.recovery_start = None;
            self.reset_round();
        }
    }

    fn on_packet_discarded(&mut self, bytes: u64) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(bytes);
    }

    fn on_mtu_update(&mut self, max_datagram_size: u16) {
        self.max_datagram_size = u64::from(max_datagram_size);
        self.window = self.window.max(self.minimum_window());
        self.reset_round();
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn initial_window(&self) -> u64 {
        self.initial_window
    }

    fn metrics(&self) -> CongestionMetrics {
        CongestionMetrics {
            window: self.window,
            ssthresh: self.ssthresh,
            pacing_rate: None,
            bytes_in_flight: self.bytes_in_flight,
        }
    }

    fn clone_box(&self) -> Box<dyn CongestionController> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::congestion::RttSample;

    const MSS: u16 = 1200;
    const RTT: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ack(now: Instant, sent_time: Instant, bytes: u64) -> AckEvent {
        AckEvent {
            now,
            sent_time,
            bytes,
            app_limited: false,
            rtt: RttSample::constant(RTT),
        }
    }

    fn loss(now: Instant, sent_time: Instant, lost_bytes: u64) -> CongestionEvent {
        CongestionEvent {
            now,
            sent_time,
            lost_bytes,
            persistent: false,
            ecn: false,
        }
    }

    /// Slow start from the initial window, then a loss: window 12000, ssthresh 12000,
    /// recovery started at `t0 + 200ms`.
    fn after_first_loss(t0: Instant) -> NewReno {
        let mut cc = NewReno::new(MSS);
        cc.on_ack(&ack(t0 + ms(100), t0, 12_000));
        assert_eq!(cc.window(), 24_000);
        cc.on_congestion_event(&loss(t0 + ms(200), t0 + ms(150), 0));
        cc
    }

    #[test]
    fn initial_and_minimum_window() {
        let cc = NewReno::new(1200);
        assert_eq!(cc.initial_window(), 12_000);
        assert_eq!(cc.window(), 12_000);
        assert_eq!(cc.minimum_window(), 2_400);
        // min(10 * 1500, max(14720, 3000)) = 14720.
        assert_eq!(NewReno::new(1500).initial_window(), 14_720);
        let m = cc.metrics();
        assert_eq!(m.window, 12_000);
        assert_eq!(m.ssthresh, None);
        assert_eq!(m.pacing_rate, None);
        assert_eq!(m.bytes_in_flight, 0);
        assert_eq!(cc.name(), "new_reno");
        assert_eq!(NewRenoFactory::default().name(), "new_reno");
        let built = NewRenoFactory::default().build(Instant::now(), 1200);
        assert_eq!(built.name(), "new_reno");
        assert_eq!(built.window(), 12_000);
        assert_eq!(built.initial_window(), 12_000);
    }

    #[test]
    fn slow_start_adds_acked_bytes() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(MSS);
        for i in 0..10 {
            cc.on_ack(&ack(t0 + RTT + ms(i), t0 + ms(i), 1200));
        }
        assert_eq!(cc.window(), 24_000);
        cc.on_ack(&ack(t0 + ms(200), t0 + ms(100), 24_000));
        assert_eq!(cc.window(), 48_000);
        assert_eq!(cc.metrics().ssthresh, None);
    }

    #[test]
    fn loss_halves_window_and_sets_ssthresh() {
        let t0 = Instant::now();
        let cc = after_first_loss(t0);
        assert_eq!(cc.window(), 12_000);
        assert_eq!(cc.metrics().ssthresh, Some(12_000));
        assert_eq!(cc.recovery_start, Some(t0 + ms(200)));
    }

    #[test]
    fn loss_never_goes_below_minimum_window() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(MSS);
        cc.on_congestion_event(&loss(t0 + ms(100), t0, 0)); // 12000 -> 6000
        assert_eq!(cc.window(), 6_000);
        cc.on_congestion_event(&loss(t0 + ms(300), t0 + ms(200), 0)); // -> 3000
        assert_eq!(cc.window(), 3_000);
        cc.on_congestion_event(&loss(t0 + ms(500), t0 + ms(400), 0)); // 1500 -> 2400
        assert_eq!(cc.metrics().ssthresh, Some(1_500));
        assert_eq!(cc.window(), 2_400);
    }

    #[test]
    fn congestion_avoidance_adds_one_datagram_per_window() {
        let t0 = Instant::now();
        let mut cc = after_first_loss(t0);
        let sent = t0 + ms(250); // after the recovery start: growth allowed
        for i in 1..=10u64 {
            cc.on_ack(&ack(t0 + ms(350) + ms(i), sent, 1200));
            // 1200 * (1200 * i) / 12000, rounded down, accumulated exactly.
            assert_eq!(cc.window(), 12_000 + 120 * i, "after {i} acks");
        }
        assert_eq!(cc.window(), 13_200);
        // The next round is measured against 13200: 13200 bytes add exactly 1200.
        cc.on_ack(&ack(t0 + ms(450), sent, 6_600));
        assert_eq!(cc.window(), 13_800);
        cc.on_ack(&ack(t0 + ms(451), sent, 6_600));
        assert_eq!(cc.window(), 14_400);
        // Odd-sized acks: fractional bytes carry over. 14400 = 7 * 2057 + 1.
        for _ in 0..7 {
            cc.on_ack(&ack(t0 + ms(460), sent, 2_057));
        }
        assert_eq!(cc.window(), 14_400 + 1_199);
        cc.on_ack(&ack(t0 + ms(461), sent, 1));
        assert_eq!(cc.window(), 15_600);
        assert_eq!(cc.metrics().ssthresh, Some(12_000));
    }

    #[test]
    fn congestion_avoidance_large_ack_spans_rounds() {
        let t0 = Instant::now();
        let mut cc = after_first_loss(t0);
        // 12000 (round 1, +1200) + 13200 (round 2, +1200) + 7200 of 14400 (+600).
        cc.on_ack(&ack(t0 + ms(400), t0 + ms(250), 12_000 + 13_200 + 7_200));
        assert_eq!(cc.window(), 15_000);
    }

    #[test]
    fn acks_in_recovery_do_not_grow() {
        let t0 = Instant::now();
        let mut cc = after_first_loss(t0);
        // Sent before the recovery start (t0+200ms), and exactly at it.
        cc.on_ack(&ack(t0 + ms(300), t0 + ms(150), 12_000));
        cc.on_ack(&ack(t0 + ms(300), t0 + ms(200), 12_000));
        assert_eq!(cc.window(), 12_000);
        // A packet sent after the recovery start ends the recovery period.
        cc.on_ack(&ack(t0 + ms(310), t0 + ms(201), 12_000));
        assert_eq!(cc.window(), 13_200);
    }

    #[test]
    fn one_reduction_per_recovery_period() {
        let t0 = Instant::now();
        let mut cc = after_first_loss(t0);
        // Newest lost packet sent before the recovery start: no second reduction.
        cc.on_congestion_event(&loss(t0 + ms(250), t0 + ms(190), 1200));
        assert_eq!(cc.window(), 12_000);
        assert_eq!(cc.metrics().ssthresh, Some(12_000));
        assert_eq!(cc.recovery_start, Some(t0 + ms(200)));
        // ECN-CE for a packet sent after the recovery start: reduces again.
        cc.on_congestion_event(&CongestionEvent {
            ecn: true,
            ..loss(t0 + ms(400), t0 + ms(250), 0)
        });
        assert_eq!(cc.window(), 6_000);
        assert_eq!(cc.metrics().ssthresh, Some(6_000));
        assert_eq!(cc.recovery_start, Some(t0 + ms(400)));
    }

    #[test]
    fn persistent_congestion_collapses_to_minimum() {
        let t0 = Instant::now();
        let mut cc = after_first_loss(t0);
        cc.on_congestion_event(&CongestionEvent {
            persistent: true,
            ..loss(t0 + ms(2_000), t0 + ms(300), 0)
        });
        // ssthresh = 12000 * 0.5, then the window collapses to 2 * 1200.
        assert_eq!(cc.window(), 2_400);
        assert_eq!(cc.metrics().ssthresh, Some(6_000));
        assert_eq!(cc.recovery_start, None);
        // Slow start again until ssthresh.
        cc.on_ack(&ack(t0 + ms(2_100), t0 + ms(2_050), 2_400));
        assert_eq!(cc.window(), 4_800);
        cc.on_ack(&ack(t0 + ms(2_200), t0 + ms(2_150), 4_800));
        assert_eq!(cc.window(), 9_600);
        // Now in congestion avoidance: 9600 acked bytes add 1200.
        cc.on_ack(&ack(t0 + ms(2_300), t0 + ms(2_250), 9_600));
        assert_eq!(cc.window(), 10_800);
    }

    #[test]
    fn persistent_congestion_inside_recovery_still_collapses() {
        let t0 = Instant::now();
        let mut cc = after_first_loss(t0);
        cc.on_congestion_event(&CongestionEvent {
            persistent: true,
            ..loss(t0 + ms(2_000), t0 + ms(100), 0)
        });
        assert_eq!(cc.window(), 2_400);
        assert_eq!(cc.metrics().ssthresh, Some(12_000));
    }

    #[test]
    fn app_limited_acks_do_not_grow() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(MSS);
        cc.on_packet_sent(t0, 24_000, true);
        cc.on_ack(&AckEvent {
            app_limited: true,
            ..ack(t0 + RTT, t0, 12_000)
        });
        assert_eq!(cc.window(), 12_000);
        assert_eq!(cc.metrics().bytes_in_flight, 12_000);
        let mut cc = after_first_loss(t0);
        cc.on_ack(&AckEvent {
            app_limited: true,
            ..ack(t0 + ms(400), t0 + ms(300), 12_000)
        });
        assert_eq!(cc.window(), 12_000);
        // An app-limited ack does not count towards the congestion-avoidance round either.
        cc.on_ack(&ack(t0 + ms(400), t0 + ms(300), 6_000));
        assert_eq!(cc.window(), 12_600);
    }

    #[test]
    fn mtu_update_respects_minimum_window() {
        let t0 = Instant::now();
        let mut cc = after_first_loss(t0);
        cc.on_congestion_event(&CongestionEvent {
            persistent: true,
            ..loss(t0 + ms(2_000), t0 + ms(300), 0)
        });
        assert_eq!(cc.window(), 2_400);
        cc.on_mtu_update(1500);
        assert_eq!(cc.window(), 3_000);
        // A larger window is left alone.
        let mut cc = after_first_loss(t0);
        cc.on_mtu_update(1500);
        assert_eq!(cc.window(), 12_000);
        // Congestion avoidance now adds the new datagram size per window.
        cc.on_ack(&ack(t0 + ms(400), t0 + ms(300), 12_000));
        assert_eq!(cc.window(), 13_500);
        // Loss floors at the new minimum window: 3000.
        let mut cc = NewReno::new(MSS);
        cc.on_mtu_update(1500);
        for i in 0..3 {
            cc.on_congestion_event(&loss(t0 + ms(100 * (2 * i + 1)), t0 + ms(200 * i), 0));
        }
        assert_eq!(cc.window(), 3_000);
        assert_eq!(cc.initial_window(), 12_000);
    }

    #[test]
    fn bytes_in_flight_bookkeeping() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(MSS);
        for i in 0..10 {
            cc.on_packet_sent(t0 + ms(i), 1200, false);
        }
        assert_eq!(cc.metrics().bytes_in_flight, 12_000);
        cc.on_ack(&ack(t0 + ms(100), t0 + ms(3), 3_600));
        assert_eq!(cc.metrics().bytes_in_flight, 8_400);
        cc.on_congestion_event(&loss(t0 + ms(110), t0 + ms(4), 1_200));
        assert_eq!(cc.metrics().bytes_in_flight, 7_200);
        // A loss inside the recovery period still leaves the in-flight count.
        cc.on_congestion_event(&loss(t0 + ms(111), t0 + ms(5), 1_200));
        assert_eq!(cc.metrics().bytes_in_flight, 6_000);
        cc.on_packet_discarded(2_400);
        assert_eq!(cc.metrics().bytes_in_flight, 3_600);
        cc.on_packet_discarded(10_000);
        assert_eq!(cc.metrics().bytes_in_flight, 0);
        cc.on_ack(&ack(t0 + ms(120), t0 + ms(9), 1_200));
        assert_eq!(cc.metrics().bytes_in_flight, 0);
        // The engine's own count wins at the end of an ACK frame.
        cc.on_packet_sent(t0 + ms(130), 1_200, false);
        cc.on_ack_batch_end(t0 + ms(140), Some(4_800));
        assert_eq!(cc.metrics().bytes_in_flight, 4_800);
        cc.on_ack_batch_end(t0 + ms(150), None);
        assert_eq!(cc.metrics().bytes_in_flight, 4_800);
    }

    #[test]
    fn clone_box_keeps_state() {
        let t0 = Instant::now();
        let mut cc = after_first_loss(t0);
        cc.on_packet_sent(t0 + ms(300), 5_000, false);
        let boxed = cc.clone_box();
        assert_eq!(boxed.metrics(), cc.metrics());
        assert_eq!(boxed.window(), 12_000);
        assert_eq!(boxed.metrics().ssthresh, Some(12_000));
        assert_eq!(boxed.metrics().bytes_in_flight, 5_000);
    }
}
