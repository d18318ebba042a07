//! CUBIC, as specified by RFC 9438, on the QUIC recovery machinery of RFC 9002.
//!
//! * Slow start as in NewReno while `cwnd < ssthresh`.
//! * Congestion avoidance follows the cubic function (RFC 9438 section 4.2, eq. 1)
//!   `W_cubic(t) = C * (t - K)^3 + W_max` with `K = cbrt((W_max - cwnd_epoch) / C)` (eq. 2),
//!   where `t` is the time since the current congestion-avoidance stage (epoch) started and
//!   `cwnd_epoch` is the window at that moment. Window sizes in the formulas are in units of
//!   the maximum datagram size; internally they are kept in bytes.
//! * The Reno-friendly estimate `W_est` (section 4.3) takes over when it is above
//!   `W_cubic(t)`; otherwise the window moves towards `target = W_cubic(t + RTT)`, clamped to
//!   `[cwnd, 1.5 * cwnd]` (sections 4.4 and 4.5).
//! * A congestion event (loss or ECN-CE) sets `ssthresh = max(cwnd * beta_cubic, minimum
//!   window)` and `cwnd = ssthresh` once per recovery period (section 4.6, RFC 9002
//!   section 7.3.2), with fast convergence (section 4.7).
//! * Persistent congestion collapses the window to the minimum window; the next
//!   congestion-avoidance stage then starts with `K = 0` and `W_max = cwnd_epoch` (section
//!   4.8).
//! * Application-limited acknowledgements do not grow the window, and application-limited
//!   or idle time is excluded from `t` (section 5.8).

use std::time::{Duration, Instant};

use super::{
    rfc9002_initial_window, rfc9002_minimum_window, AckEvent, CongestionController,
    CongestionControllerFactory, CongestionEvent, CongestionMetrics,
};

/// RFC 9438 `C`, in datagrams per second cubed.
const C: f64 = 0.4;
/// RFC 9438 `beta_cubic`, the multiplicative decrease factor.
const BETA_CUBIC: f64 = 0.7;
/// RFC 9438 section 4.3 `alpha_cubic = 3 * (1 - beta_cubic) / (1 + beta_cubic)`.
const ALPHA_CUBIC: f64 = 3.0 * (1.0 - BETA_CUBIC) / (1.0 + BETA_CUBIC);

/// Builds [`Cubic`] controllers with the RFC 9438 parameters.
///
/// It has no settings yet: build it with `CubicFactory::default()`. The private field
/// keeps room for optional settings whose defaults will be the RFC values.
#[derive(Debug, Clone, Default)]
pub struct CubicFactory {
    _private: (),
}

impl CongestionControllerFactory for CubicFactory {
    fn name(&self) -> &str {
        "cubic"
    }

    fn build(&self, _now: Instant, max_datagram_size: u16) -> Box<dyn CongestionController> {
        Box::new(Cubic::new(max_datagram_size))
    }
}

/// The state of one congestion-avoidance stage.
#[derive(Debug, Clone, Copy)]
struct Epoch {
    /// `t_epoch`, shifted forward by application-limited and idle time.
    start: Instant,
    /// Up to when application-limited and idle time has been accounted for.
    mark: Instant,
    /// `K`, seconds.
    k: f64,
    /// `W_max`, bytes.
    w_max: f64,
    /// `W_est`, bytes.
    w_est: f64,
}

/// The CUBIC congestion controller of RFC 9438.
#[derive(Debug, Clone)]
pub struct Cubic {
    /// The path's maximum UDP payload (the RFC's segment size), bytes.
    max_datagram_size: u64,
    /// The window the controller started with.
    initial_window: u64,
    /// `cwnd`, bytes (fractional: growth is applied per acknowledged byte).
    cwnd: f64,
    /// `ssthresh`, bytes; `None` is infinite (before the first congestion event).
    ssthresh: Option<u64>,
    /// RFC 9002 `congestion_recovery_start_time`.
    recovery_start: Option<Instant>,
    /// `W_max`, bytes; `None` while undefined (before the first congestion event and after
    /// persistent congestion).
    w_max: Option<f64>,
    /// `cwnd_prior`: the window when `W_max` was last set, bytes. Once `W_est` reaches it,
    /// the Reno-friendly increase uses `alpha = 1` (section 4.3).
    cwnd_prior: f64,
    /// The current congestion-avoidance stage; `None` in slow start and recovery.
    epoch: Option<Epoch>,
    /// Bytes in flight as tracked from the events.
    bytes_in_flight: u64,
}

impl Cubic {
    /// A controller for a path whose maximum UDP payload is `max_datagram_size`, starting
    /// in slow start with the RFC 9002 initial window.
    pub fn new(max_datagram_size: u16) -> Self {
        let max_datagram_size = u64::from(max_datagram_size);
        let initial_window = rfc9002_initial_window(max_datagram_size);
        Cubic {
            max_datagram_size,
            initial_window,
            cwnd: initial_window as f64,
            ssthresh: None,
            recovery_start: None,
            w_max: None,
            cwnd_prior: initial_window as f64,
            epoch: None,
            bytes_in_flight: 0,
        }
    }

    /// RFC 9002 `kMinimumWindow` for the current datagram size.
    fn minimum_window(&self) -> u64 {
        rfc9002_minimum_window(self.max_datagram_size)
    }

    /// The window in whole bytes.
    fn window_bytes(&self) -> u64 {
        self.cwnd as u64
    }

    /// RFC 9002 `InCongestionRecovery(sent_time)`.
    fn in_recovery(&self, sent_time: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent_time <= start)
    }

    /// Whether the controller is in slow start.
    fn in_slow_start(&self) -> bool {
        self.ssthresh
            .is_none_or(|ssthresh| self.cwnd < ssthresh as f64)
    }

    /// `K = cbrt((W_max - cwnd_epoch) / C)` (eq. 2), seconds, with the windows in bytes.
    fn k(&self, w_max: f64, cwnd_epoch: f64) -> f64 {
        ((w_max - cwnd_epoch).max(0.0) / (C * self.max_datagram_size as f64)).cbrt()
    }

    /// `W_cubic(t) = C * (t - K)^3 + W_max` (eq. 1), bytes.
    fn w_cubic(&self, epoch: &Epoch, t: f64) -> f64 {
        C * (t - epoch.k).powi(3) * self.max_datagram_size as f64 + epoch.w_max
    }

    /// Starts a congestion-avoidance stage at `now` with the current window as `cwnd_epoch`.
    fn start_epoch(&mut self, now: Instant) -> Epoch {
        let cwnd_epoch = self.cwnd;
        let (w_max, k) = match self.w_max {
            Some(w_max) if w_max > cwnd_epoch => (w_max, self.k(w_max, cwnd_epoch)),
            // W_max undefined (section 4.8 after a timeout, section 4.10 after a slow start
            // that ended without loss), or already reached: K = 0, W_max = cwnd_epoch.
            _ => {
                self.w_max = Some(cwnd_epoch);
                self.cwnd_prior = cwnd_epoch;
                (cwnd_epoch, 0.0)
            }
        };
        let epoch = Epoch {
            start: now,
            mark: now,
            k,
            w_max,
            w_est: cwnd_epoch,
        };
        self.epoch = Some(epoch);
        epoch
    }

    /// Congestion-avoidance growth for `acked` bytes acknowledged at `now`.
    fn congestion_avoidance(&mut self, now: Instant, acked: u64, rtt: Duration) {
        let mut epoch = match self.epoch {
            Some(mut epoch) => {
                epoch.mark = epoch.mark.max(now);
                epoch
            }
            None => self.start_epoch(now),
        };
        let mss = self.max_datagram_size as f64;
        let acked = acked as f64;
        let cwnd = self.cwnd;
        let t = now.saturating_duration_since(epoch.start).as_secs_f64();

        // Section 4.3: W_est += alpha_cubic * segments_acked / cwnd, alpha_cubic = 1 once
        // W_est has reached cwnd_prior.
        let alpha = if epoch.w_est >= self.cwnd_prior {
            1.0
        } else {
            ALPHA_CUBIC
        };
        epoch.w_est += alpha * mss * acked / cwnd;

        if self.w_cubic(&epoch, t) < epoch.w_est {
            // Reno-friendly region: cwnd = W_est (never shrinking on an ACK).
            self.cwnd = cwnd.max(epoch.w_est);
        } else {
            // Sections 4.4/4.5: concave or convex region.
            let target = self
                .w_cubic(&epoch, t + rtt.as_secs_f64())
                .clamp(cwnd, 1.5 * cwnd);
            // cwnd += (target - cwnd) / cwnd for each acknowledged segment.
            self.cwnd = cwnd + (target - cwnd) * acked / cwnd;
        }
        self.epoch = Some(epoch);
    }

    /// Excludes the time since the last accounted moment from the epoch (section 5.8):
    /// application-limited or idle time must not count towards `t`.
    fn exclude_from_epoch(&mut self, now: Instant) {
        if let Some(epoch) = &mut self.epoch {
            let excluded = now.saturating_duration_since(epoch.mark);
            epoch.start += excluded;
            epoch.mark = epoch.mark.max(now);
        }
    }
}

impl CongestionController for Cubic {
    fn name(&self) -> &str {
        "cubic"
    }

    fn on_packet_sent(&mut self, now: Instant, bytes: u64, _app_limited: bool) {
        if self.bytes_in_flight == 0 {
            // Nothing was in flight: the sender was idle since the last event.
            self.exclude_from_epoch(now);
        }
        self.bytes_in_flight = self.bytes_in_flight.saturating_add(bytes);
    }

    fn on_ack(&mut self, ack: &AckEvent) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(ack.bytes);
        // Section 5.8: no growth while application-limited, and that time does not count.
        if ack.app_limited {
            self.exclude_from_epoch(ack.now);
            return;
        }
        if self.in_recovery(ack.sent_time) {
            return;
        }
        if self.in_slow_start() {
            self.cwnd += ack.bytes as f64;
            return;
        }
        self.congestion_avoidance(ack.now, ack.bytes, ack.rtt.smoothed);
    }

    fn on_ack_batch_end(&mut self, _now: Instant, bytes_in_flight: Option<u64>) {
        // An engine that counts in-flight bytes itself is authoritative.
        if let Some(bytes_in_flight) = bytes_in_flight {
            self.bytes_in_flight = bytes_in_flight;
        }
    }

    fn on_congestion_event(&mut self, event: &CongestionEvent) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(event.lost_bytes);
        if !self.in_recovery(event.sent_time) {
            self.recovery_start = Some(event.now);
            let cwnd = self.window_bytes() as f64;
            // Section 4.7: fast convergence.
            self.w_max = Some(match self.w_max {
                Some(w_max) if cwnd < w_max => cwnd * (1.0 + BETA_CUBIC) / 2.0,
                _ => cwnd,
            });
            self.cwnd_prior = cwnd;
            // Section 4.6: multiplicative decrease.
            let ssthresh = ((cwnd * BETA_CUBIC).round() as u64).max(self.minimum_window());
            self.ssthresh = Some(ssthresh);
            self.cwnd = ssthresh as f64;
            self.epoch = None;
        }
        // RFC 9002 section 7.6.2 / RFC 9438 section 4.8.
        if event.persistent {
            self.cwnd = self.minimum_window() as f64;
            self.recovery_start = None;
            self.w_max = None;
            self.epoch = None;
        }
    }

    fn on_packet_discarded(&mut self, bytes: u64) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(bytes);
    }

    fn on_mtu_update(&mut self, max_datagram_size: u16) {
        self.max_datagram_size = u64::from(max_datagram_size);
        self.cwnd = self.cwnd.max(self.minimum_window() as f64);
        // K depends on the datagram size: start a new stage from the current window.
        self.epoch = None;
    }

    fn window(&self) -> u64 {
        self.window_bytes()
    }

    fn initial_window(&self) -> u64 {
        self.initial_window
    }

    fn metrics(&self) -> CongestionMetrics {
        CongestionMetrics {
            window: self.window_bytes(),
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
    use super::*;
    use crate::congestion::RttSample;

    const MSS: u16 = 1200;
    const MSS_F: f64 = 1200.0;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ack(now: Instant, sent_time: Instant, bytes: u64, rtt: Duration) -> AckEvent {
        AckEvent {
            now,
            sent_time,
            bytes,
            app_limited: false,
            rtt: RttSample::constant(rtt),
        }
    }

    fn loss(now: Instant, sent_time: Instant) -> CongestionEvent {
        CongestionEvent {
            now,
            sent_time,
            lost_bytes: 0,
            persistent: false,
            ecn: false,
        }
    }

    /// Slow start to 100 datagrams (120000 bytes), then a loss at `t0 + 1s`:
    /// cwnd = 84000, W_max = 120000.
    fn after_loss_at_100_mss(t0: Instant) -> Cubic {
        after_loss_at(t0, 100)
    }

    /// Slow start to `datagrams` datagrams, then a loss at `t0 + 1s`:
    /// cwnd = 0.7 * W_max, W_max = `datagrams` * 1200.
    fn after_loss_at(t0: Instant, datagrams: u64) -> Cubic {
        let mut cc = Cubic::new(MSS);
        cc.on_ack(&ack(t0 + ms(100), t0, datagrams * 1_200 - 12_000, ms(100)));
        assert_eq!(cc.window(), datagrams * 1_200);
        cc.on_congestion_event(&loss(t0 + ms(1_000), t0 + ms(900)));
        cc
    }

    /// One round per `rtt` for `rounds` rounds, starting at `start`: a window's worth of
    /// one-datagram ACKs spread evenly over the round, each for a packet sent one RTT
    /// earlier. Returns the window at the start of each round and at the end.
    fn run_rounds(cc: &mut Cubic, start: Instant, rtt: Duration, rounds: u32) -> Vec<u64> {
        let mut windows = Vec::new();
        for round in 0..rounds {
            let round_start = start + rtt * round;
            let window = cc.window();
            windows.push(window);
            let n = (window / u64::from(MSS)).max(1) as u32;
            for i in 0..n {
                let now = round_start + rtt * i / n;
                cc.on_ack(&ack(now, now - rtt, u64::from(MSS), rtt));
            }
        }
        windows.push(cc.window());
        windows
    }

    #[test]
    fn constants_match_rfc() {
        assert_eq!(C, 0.4);
        assert_eq!(BETA_CUBIC, 0.7);
        assert!((ALPHA_CUBIC - 0.9 / 1.7).abs() < 1e-15);
        assert!((ALPHA_CUBIC - 0.529_411_764_705_882_4).abs() < 1e-12);
    }

    #[test]
    fn initial_window_and_slow_start() {
        let t0 = Instant::now();
        let mut cc = Cubic::new(MSS);
        assert_eq!(cc.name(), "cubic");
        assert_eq!(cc.initial_window(), 12_000);
        assert_eq!(cc.window(), 12_000);
        assert_eq!(Cubic::new(1500).initial_window(), 14_720);
        for i in 0..10 {
            cc.on_ack(&ack(t0 + ms(100 + i), t0 + ms(i), 1_200, ms(100)));
        }
        assert_eq!(cc.window(), 24_000);
        let m = cc.metrics();
        assert_eq!(m.window, 24_000);
        assert_eq!(m.ssthresh, None);
        assert_eq!(m.pacing_rate, None);
        let factory = CubicFactory::default();
        assert_eq!(factory.name(), "cubic");
        let built = factory.build(t0, MSS);
        assert_eq!(built.name(), "cubic");
        assert_eq!(built.window(), 12_000);
    }

    #[test]
    fn loss_reduces_to_beta() {
        let t0 = Instant::now();
        let mut cc = Cubic::new(MSS);
        cc.on_ack(&ack(t0 + ms(100), t0, 12_000, ms(100)));
        assert_eq!(cc.window(), 24_000);
        cc.on_congestion_event(&loss(t0 + ms(200), t0 + ms(150)));
        // 0.7 * 24000.
        assert_eq!(cc.window(), 16_800);
        assert_eq!(cc.metrics().ssthresh, Some(16_800));
        assert_eq!(cc.w_max, Some(24_000.0));

        let cc = after_loss_at_100_mss(t0);
        assert_eq!(cc.window(), 84_000);
        assert_eq!(cc.metrics().ssthresh, Some(84_000));
        assert_eq!(cc.w_max, Some(120_000.0));
    }

    #[test]
    fn loss_reduction_floors_at_minimum_window() {
        let t0 = Instant::now();
        let mut cc = Cubic::new(MSS);
        let mut expected = 12_000u64;
        for i in 0..8u64 {
            cc.on_congestion_event(&loss(t0 + ms(100 * (2 * i + 1)), t0 + ms(200 * i)));
            expected = ((expected as f64 * 0.7).round() as u64).max(2_400);
            assert_eq!(cc.window(), expected, "after loss {i}");
        }
        // 12000 -> 8400 -> 5880 -> 4116 -> 2881 -> 2400 (2017 floored) -> 2400 ...
        assert_eq!(cc.window(), 2_400);
        assert_eq!(cc.metrics().ssthresh, Some(2_400));
    }

    #[test]
    fn k_for_w_max_of_100_datagrams() {
        let t0 = Instant::now();
        let mut cc = after_loss_at_100_mss(t0);
        // The first ACK of a packet sent after the recovery start begins the epoch.
        cc.on_ack(&ack(t0 + ms(1_100), t0 + ms(1_001), 1_200, ms(100)));
        let epoch = cc.epoch.expect("congestion avoidance started");
        // K = cbrt(W_max * (1 - beta) / C) = cbrt(100 * 0.3 / 0.4) = cbrt(75).
        assert!((epoch.k - 75f64.cbrt()).abs() < 1e-12, "K = {}", epoch.k);
        assert!(
            (epoch.k - 4.217_163_326_508_746).abs() < 1e-9,
            "K = {}",
            epoch.k
        );
        assert_eq!(epoch.w_max, 120_000.0);
        // W_cubic(0) = cwnd_epoch, W_cubic(K) = W_max.
        assert!((cc.w_cubic(&epoch, 0.0) - 84_000.0).abs() < 1e-6);
        assert!((cc.w_cubic(&epoch, epoch.k) - 120_000.0).abs() < 1e-9);
        // W_cubic(K + 1s) = W_max + 0.4 datagrams.
        assert!((cc.w_cubic(&epoch, epoch.k + 1.0) - 120_480.0).abs() < 1e-6);
    }

    #[test]
    fn window_reaches_w_max_at_k() {
        let t0 = Instant::now();
        let mut cc = after_loss_at_100_mss(t0);
        let rtt = ms(100);
        let start = t0 + ms(1_101);
        // 42 rounds of 100 ms: 4.2 s, just under K = 4.217 s.
        let windows = run_rounds(&mut cc, start, rtt, 42);
        let k = cc.epoch.unwrap().k;
        let t = (start + rtt * 42 - cc.epoch.unwrap().start).as_secs_f64();
        assert!((t - 4.2).abs() < 1e-3 && t < k, "t = {t}");
        let window = *windows.last().unwrap();
        assert!(
            window.abs_diff(120_000) <= 1_200,
            "window {window} should be W_max = 120000 +- one datagram at t = K"
        );
        // And it has not overshot W_max meaningfully before K.
        assert!(windows.iter().all(|&w| w <= 120_000 + 1_200));
    }

    #[test]
    fn concave_below_w_max_convex_above() {
        // W_max = 1000 datagrams, RTT 100 ms: K = cbrt(1000 * 0.3 / 0.4) = cbrt(750) = 9.086 s,
        // and the Reno-friendly estimate (0.53 datagrams per RTT) stays below the curve.
        let t0 = Instant::now();
        let w_max = 1_200_000u64;
        let mut cc = after_loss_at(t0, 1_000);
        assert_eq!(cc.window(), 840_000);
        let windows = run_rounds(&mut cc, t0 + ms(1_101), ms(100), 160);
        let epoch = cc.epoch.unwrap();
        assert!((epoch.k - 750f64.cbrt()).abs() < 1e-12, "K = {}", epoch.k);
        assert!(epoch.w_est < cc.cwnd);
        let increments: Vec<i64> = windows
            .windows(2)
            .map(|w| w[1] as i64 - w[0] as i64)
            .collect();
        // Never shrinks.
        assert!(increments.iter().all(|&d| d >= 0), "{windows:?}");
        // Concave: while below W_max the per-round increase shrinks.
        let below: Vec<i64> = windows
            .windows(2)
            .zip(&increments)
            .filter(|(w, _)| w[1] < w_max - 1_200)
            .map(|(_, &d)| d)
            .collect();
        assert!(below.len() >= 70, "{windows:?}");
        assert!(
            below.windows(2).all(|d| d[1] <= d[0] + 1),
            "concave: {below:?}"
        );
        assert!(below[0] > 20 * below[below.len() - 1], "concave: {below:?}");
        // Plateau around t = K: within one datagram of W_max at the round nearest K.
        let at_k = windows[91];
        assert!(at_k.abs_diff(w_max) <= 1_200, "{at_k}");
        // Convex: once above W_max the per-round increase grows.
        let above: Vec<i64> = windows
            .windows(2)
            .zip(&increments)
            .filter(|(w, _)| w[0] > w_max + 1_200)
            .map(|(_, &d)| d)
            .collect();
        assert!(above.len() >= 50, "{windows:?}");
        assert!(
            above.windows(2).all(|d| d[1] + 1 >= d[0]),
            "convex: {above:?}"
        );
        assert!(above[above.len() - 1] > 20 * above[0], "convex: {above:?}");
        // Aiming at W_cubic(t + RTT) each RTT makes the window follow W_cubic(t): after 16 s
        // it is within one datagram of W_max + 0.4 * (16 - K)^3 datagrams (about 1.3586 MB).
        let expected = cc.w_cubic(&epoch, 16.0);
        let expected_closed_form = 1_200_000.0 + 0.4 * (16.0 - 750f64.cbrt()).powi(3) * 1_200.0;
        assert!((expected - expected_closed_form).abs() < 1e-6);
        assert!((expected - 1_358_640.0).abs() < 100.0, "{expected}");
        let window = *windows.last().unwrap() as f64;
        assert!(
            (window - expected).abs() < MSS_F,
            "window {window} expected about {expected}"
        );
    }

    #[test]
    fn reno_friendly_alpha_becomes_one_after_cwnd_prior() {
        // W_max = 100 datagrams at RTT 100 ms: W_est grows by alpha_cubic = 0.53 datagrams
        // per RTT until it reaches cwnd_prior (120000) after about 57 RTTs, then by one
        // datagram per RTT, which outpaces the start of the convex region.
        let t0 = Instant::now();
        let mut cc = after_loss_at_100_mss(t0);
        let windows = run_rounds(&mut cc, t0 + ms(1_101), ms(100), 80);
        let epoch = cc.epoch.unwrap();
        assert!(epoch.w_est >= cc.cwnd_prior);
        // Reno-friendly region: cwnd follows W_est.
        assert_eq!(cc.cwnd, epoch.w_est);
        // Each of the last rounds acknowledged floor(cwnd / 1200) datagrams and added just
        // under one datagram (alpha_cubic = 0.53 would add about 630 bytes).
        for w in windows[70..].windows(2) {
            // W_est += 1 * 1200 * 1200 / cwnd per one-datagram ACK, cwnd = W_est.
            let mut x = w[0] as f64;
            for _ in 0..w[0] / 1_200 {
                x += 1_200.0 * 1_200.0 / x;
            }
            let expected = x - w[0] as f64;
            let increment = (w[1] - w[0]) as f64;
            assert!(
                (increment - expected).abs() <= 2.0,
                "{w:?}: {increment} vs {expected}"
            );
        }
    }

    #[test]
    fn reno_friendly_region_dominates_at_short_rtt() {
        let t0 = Instant::now();
        let mut cc = after_loss_at_100_mss(t0);
        let rtt = ms(1);
        let now = t0 + ms(1_100);
        cc.on_ack(&ack(now, now - rtt, 1_200, rtt));
        // t = 0: W_cubic(0) = 84000 < W_est = 84000 + alpha * 1200 * 1200 / 84000.
        let w_est = 84_000.0 + (0.9 / 1.7) * 1_200.0 * 1_200.0 / 84_000.0;
        assert!((cc.cwnd - w_est).abs() < 1e-9, "{} vs {w_est}", cc.cwnd);
        assert_eq!(cc.window(), 84_009);
        assert!((cc.epoch.unwrap().w_est - w_est).abs() < 1e-9);

        // Ten rounds of 1 ms: Reno-friendly growth is alpha datagrams per round (about
        // 635 bytes); the cubic curve alone would reach only W_cubic(0.011 + RTT), about
        // 307 bytes above 84000.
        let windows = run_rounds(&mut cc, now + rtt, rtt, 10);
        let epoch = cc.epoch.unwrap();
        let cubic_only = cc.w_cubic(&epoch, 0.012) - 84_000.0;
        assert!((cubic_only - 307.0).abs() < 1.0, "{cubic_only}");
        assert_eq!(cc.cwnd, epoch.w_est);
        // Replay the Reno-friendly recurrence independently. (For the first ACK of the
        // first round the curve's initial slope, 21 datagrams/s, is briefly ahead, so
        // that one ACK grows cwnd by less than W_est: a sub-byte difference.)
        let mut reno = w_est;
        for &w in &windows[..10] {
            for _ in 0..w / 1_200 {
                reno += (0.9 / 1.7) * 1_200.0 * 1_200.0 / reno;
            }
        }
        assert!((cc.cwnd - reno).abs() < 0.01, "{} vs {reno}", cc.cwnd);
        let growth = cc.cwnd - 84_000.0;
        assert!((growth - 6_307.08).abs() < 0.01, "{growth}");
        assert!(growth > 20.0 * cubic_only, "{growth}");
    }

    #[test]
    fn target_clamped_to_one_and_a_half_cwnd() {
        let t0 = Instant::now();
        let mut cc = after_loss_at_100_mss(t0);
        let rtt = ms(100);
        let start = t0 + ms(1_101);
        cc.on_ack(&ack(start, start - rtt, 1_200, rtt));
        let before = cc.cwnd;
        // 20 s later W_cubic(t + RTT) is about 2.4 million datagrams: clamped to 1.5 * cwnd,
        // so each acknowledged byte adds half a byte.
        let now = start + Duration::from_secs(20);
        cc.on_ack(&ack(now, now - rtt, 1_200, rtt));
        assert!(
            (cc.cwnd - before - 600.0).abs() < 1e-9,
            "{} -> {}",
            before,
            cc.cwnd
        );
        // A full window in one ACK: cwnd * 1.5.
        let before = cc.cwnd;
        cc.on_ack(&ack(now + ms(1), now, before as u64, rtt));
        let expected = before + 0.5 * (before as u64) as f64;
        assert!(
            (cc.cwnd - expected).abs() < 1e-6,
            "{} vs {expected}",
            cc.cwnd
        );
    }

    #[test]
    fn target_never_below_cwnd() {
        let t0 = Instant::now();
        let mut cc = after_loss_at_100_mss(t0);
        let start = t0 + ms(1_101);
        cc.on_ack(&ack(start, start - ms(100), 1_200, ms(100)));
        // A window above W_cubic(t + RTT) (about 84000 here) with W_est out of the way:
        // target = max(W_cubic(t + RTT), cwnd) = cwnd, so the ACK neither grows nor shrinks
        // the window.
        let mut epoch = cc.epoch.unwrap();
        epoch.w_est = 0.0;
        cc.epoch = Some(epoch);
        cc.cwnd = 110_000.0;
        cc.on_ack(&ack(start + ms(1), start, 1_200, ms(1)));
        assert_eq!(cc.cwnd, 110_000.0);
    }

    #[test]
    fn fast_convergence_lowers_w_max() {
        let t0 = Instant::now();
        let mut cc = after_loss_at_100_mss(t0);
        // A second loss in a new recovery period while cwnd (84000) < W_max (120000).
        cc.on_congestion_event(&loss(t0 + ms(2_000), t0 + ms(1_500)));
        // W_max = 84000 * (1 + 0.7) / 2 = 71400; cwnd = 0.7 * 84000 = 58800.
        assert_eq!(cc.w_max, Some(71_400.0));
        assert_eq!(cc.window(), 58_800);
        assert_eq!(cc.metrics().ssthresh, Some(58_800));
        // K = cbrt((W_max - cwnd_epoch) / C) = cbrt(10.5 / 0.4) = cbrt(26.25).
        cc.on_ack(&ack(t0 + ms(2_100), t0 + ms(2_001), 1_200, ms(100)));
        let epoch = cc.epoch.unwrap();
        assert!((epoch.k - 26.25f64.cbrt()).abs() < 1e-12, "K = {}", epoch.k);
        assert!(
            (epoch.k - 2.971_960_976_381_565).abs() < 1e-9,
            "K = {}",
            epoch.k
        );
        // A loss at or above W_max sets W_max = cwnd.
        let mut cc = after_loss_at_100_mss(t0);
        cc.cwnd = 130_000.0;
        cc.on_congestion_event(&loss(t0 + ms(2_000), t0 + ms(1_500)));
        assert_eq!(cc.w_max, Some(130_000.0));
        assert_eq!(cc.window(), 91_000);
    }

    #[test]
    fn one_reduction_per_recovery_period() {
        let t0 = Instant::now();
        let mut cc = after_loss_at_100_mss(t0);
        // Recovery started at t0 + 1s: losses of packets sent up to then are ignored.
        cc.on_congestion_event(&loss(t0 + ms(1_050), t0 + ms(950)));
        cc.on_congestion_event(&loss(t0 + ms(1_060), t0 + ms(1_000)));
        assert_eq!(cc.window(), 84_000);
        assert_eq!(cc.w_max, Some(120_000.0));
        // ACKs of packets sent before the recovery start do not grow the window.
        cc.on_ack(&ack(t0 + ms(1_070), t0 + ms(990), 12_000, ms(100)));
        assert_eq!(cc.window(), 84_000);
        assert!(cc.epoch.is_none());
        // An ECN-CE for a packet sent after the recovery start reduces again.
        cc.on_congestion_event(&CongestionEvent {
            ecn: true,
            ..loss(t0 + ms(1_200), t0 + ms(1_001))
        });
        assert_eq!(cc.window(), 58_800);
    }

    #[test]
    fn persistent_congestion_resets() {
        let t0 = Instant::now();
        let mut cc = after_loss_at_100_mss(t0);
        cc.on_ack(&ack(t0 + ms(1_100), t0 + ms(1_001), 1_200, ms(100)));
        assert!(cc.epoch.is_some());
        cc.on_congestion_event(&CongestionEvent {
            persistent: true,
            ..loss(t0 + ms(3_000), t0 + ms(1_500))
        });
        assert_eq!(cc.window(), 2_400);
        assert!(cc.epoch.is_none());
        assert_eq!(cc.w_max, None);
        assert_eq!(cc.recovery_start, None);
        // ssthresh = 0.7 * floor(cwnd before the event).
        let ssthresh = cc.metrics().ssthresh.unwrap();
        assert_eq!(ssthresh, 58_806);
        // Slow start back to ssthresh: 2400 -> ... -> 76800 (>= 58806).
        let mut now = t0 + ms(3_100);
        while cc.window() < ssthresh {
            let w = cc.window();
            cc.on_ack(&ack(now, now - ms(100), w, ms(100)));
            now += ms(100);
        }
        assert_eq!(cc.window(), 76_800);
        // Section 4.8: the first stage after a timeout uses K = 0, W_max = cwnd_epoch.
        cc.on_ack(&ack(now, now - ms(100), 1_200, ms(100)));
        let epoch = cc.epoch.unwrap();
        assert_eq!(epoch.k, 0.0);
        assert_eq!(epoch.w_max, 76_800.0);
        assert_eq!(cc.w_max, Some(76_800.0));
    }

    #[test]
    fn app_limited_acks_do_not_grow_or_advance_the_epoch() {
        let t0 = Instant::now();
        let rtt = ms(100);
        let mut limited = after_loss_at_100_mss(t0);
        let start = t0 + ms(1_101);
        limited.on_ack(&ack(start, start - rtt, 1_200, rtt));
        let mut reference = limited.clone();
        let cwnd = limited.cwnd;
        let w_est = limited.epoch.unwrap().w_est;

        // Ten seconds of application-limited ACKs.
        for i in 1..=100u64 {
            let now = start + ms(100 * i);
            limited.on_ack(&AckEvent {
                app_limited: true,
                ..ack(now, now - rtt, 1_200, rtt)
            });
        }
        assert_eq!(limited.cwnd, cwnd);
        assert_eq!(limited.epoch.unwrap().w_est, w_est);
        assert_eq!(limited.epoch.unwrap().start, start + ms(10_000));

        // Then a normal ACK 100 ms later grows exactly as it would 100 ms into the epoch.
        let now = start + ms(10_100);
        limited.on_ack(&ack(now, now - rtt, 1_200, rtt));
        let now = start + ms(100);
        reference.on_ack(&ack(now, now - rtt, 1_200, rtt));
        assert_eq!(limited.cwnd, reference.cwnd);
        assert!(limited.cwnd > cwnd);
        // Without the exclusion, t = 10.1 s would have clamped the target to 1.5 * cwnd.
        assert!(limited.cwnd - cwnd < 100.0, "{} -> {}", cwnd, limited.cwnd);

        // App-limited ACKs do not grow slow start either.
        let mut cc = Cubic::new(MSS);
        cc.on_ack(&AckEvent {
            app_limited: true,
            ..ack(t0 + rtt, t0, 12_000, rtt)
        });
        assert_eq!(cc.window(), 12_000);
    }

    #[test]
    fn idle_time_is_excluded_from_the_epoch() {
        let t0 = Instant::now();
        let rtt = ms(100);
        let mut cc = after_loss_at_100_mss(t0);
        let start = t0 + ms(1_101);
        cc.on_packet_sent(start - rtt, 1_200, false);
        cc.on_ack(&ack(start, start - rtt, 1_200, rtt));
        assert_eq!(cc.metrics().bytes_in_flight, 0);
        // Idle for 5 s, then sending again.
        cc.on_packet_sent(start + ms(5_000), 1_200, false);
        assert_eq!(cc.epoch.unwrap().start, start + ms(5_000));
        // Sending with data in flight does not shift.
        cc.on_packet_sent(start + ms(5_050), 1_200, false);
        assert_eq!(cc.epoch.unwrap().start, start + ms(5_000));
    }

    #[test]
    fn mtu_update_respects_minimum_window() {
        let t0 = Instant::now();
        let mut cc = after_loss_at_100_mss(t0);
        cc.on_congestion_event(&CongestionEvent {
            persistent: true,
            ..loss(t0 + ms(3_000), t0 + ms(1_500))
        });
        assert_eq!(cc.window(), 2_400);
        cc.on_mtu_update(1500);
        assert_eq!(cc.window(), 3_000);
        assert_eq!(cc.minimum_window(), 3_000);
        // A larger window is left alone; the loss floor follows the new size.
        let mut cc = Cubic::new(MSS);
        cc.on_mtu_update(1500);
        assert_eq!(cc.window(), 12_000);
        for i in 0..8u64 {
            cc.on_congestion_event(&loss(t0 + ms(100 * (2 * i + 1)), t0 + ms(200 * i)));
        }
        assert_eq!(cc.window(), 3_000);
    }

    #[test]
    fn bytes_in_flight_bookkeeping() {
        let t0 = Instant::now();
        let mut cc = Cubic::new(MSS);
        for i in 0..10 {
            cc.on_packet_sent(t0 + ms(i), 1_200, false);
        }
        assert_eq!(cc.metrics().bytes_in_flight, 12_000);
        cc.on_ack(&ack(t0 + ms(100), t0 + ms(3), 3_600, ms(100)));
        assert_eq!(cc.metrics().bytes_in_flight, 8_400);
        cc.on_congestion_event(&CongestionEvent {
            lost_bytes: 1_200,
            ..loss(t0 + ms(110), t0 + ms(4))
        });
        assert_eq!(cc.metrics().bytes_in_flight, 7_200);
        cc.on_congestion_event(&CongestionEvent {
            lost_bytes: 1_200,
            ..loss(t0 + ms(111), t0 + ms(5))
        });
        assert_eq!(cc.metrics().bytes_in_flight, 6_000);
        cc.on_packet_discarded(2_400);
        assert_eq!(cc.metrics().bytes_in_flight, 3_600);
        cc.on_packet_discarded(10_000);
        assert_eq!(cc.metrics().bytes_in_flight, 0);
        cc.on_ack_batch_end(t0 + ms(140), Some(4_800));
        assert_eq!(cc.metrics().bytes_in_flight, 4_800);
        let boxed = cc.clone_box();
        assert_eq!(boxed.metrics(), cc.metrics());
        // Slow start reached 15600 before the loss: ssthresh = 0.7 * 15600.
        assert_eq!(boxed.metrics().ssthresh, Some(10_920));
    }
}
