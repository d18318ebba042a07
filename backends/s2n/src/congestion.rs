//! Runs a STOQ [`CongestionController`] inside s2n-quic.
//!
//! s2n-quic calls its (unstable) `CongestionController` trait from the recovery manager;
//! [`StoqCongestionController`] forwards each call to the STOQ controller:
//!
//! | s2n-quic | STOQ |
//! |---|---|
//! | `on_packet_sent(time_sent, bytes, app_limited)` | `on_packet_sent` (pure-ACK packets of 0 bytes are not reported; `app_limited` is `false` for Initial/Handshake packets, where s2n-quic passes `None`) |
//! | `on_rtt_update(time_sent, ..)` | remembered: the newest acknowledged packet's send time, for ECN |
//! | `on_ack(newest_time_sent, bytes, info, rtt, now)` | `on_ack` with the acknowledged packet's app-limited flag and the full RTT estimate (latest, smoothed, min, variance), then `on_ack_batch_end(now, None)`: s2n-quic reports one aggregated `on_ack` per ACK frame |
//! | `on_packet_lost(bytes, info, persistent, ..)` (per packet) | `on_congestion_event` with the lost packet's send time; the controller's recovery-period check makes it react once per round trip |
//! | `on_explicit_congestion(ce_count, now)` | `on_congestion_event` with `ecn: true`, 0 lost bytes and the send time remembered from `on_rtt_update` (s2n-quic processes ECN counts after the RTT update of the same ACK frame) |
//! | `on_packet_discarded(bytes)` | `on_packet_discarded` |
//! | `on_mtu_update(size)` | `on_mtu_update` |
//! | `congestion_window()` | `window()` (saturated to `u32`) |
//! | `bytes_in_flight()` | the adapter's own count from the same events (s2n-quic leaves in-flight tracking to the controller) |
//! | `earliest_departure_time()` | the adapter's pacer, see below |
//!
//! **Time.** s2n-quic's `Timestamp` is opaque (time since its clock started); the adapter
//! pairs the first timestamp it sees with `Instant::now()` and converts every later one
//! relative to that pair, so STOQ controllers see consistent `Instant`s.
//!
//! **Pacing.** s2n-quic paces only through the controller's `earliest_departure_time`
//! (`s2n-quic-transport/src/connection/connection_impl.rs` arms its pacing timer from it).
//! The adapter releases bursts of 10 datagrams (s2n-quic's `MAX_BURST_PACKETS`) spaced so
//! that the average rate is:
//! * the controller's [`pacing_rate`](CongestionController::pacing_rate) when it returns
//!   one, at any RTT (this is what [`Capability::PacingHonored`](stoq_core::Capability)
//!   promises), or otherwise
//! * the window over the smoothed RTT times 2 in slow start and 1.25 afterwards, with no
//!   pacing below 2 ms of smoothed RTT: the same rule as s2n-quic's own CUBIC pacer
//!   (`s2n-quic-core/src/recovery/pacing.rs`), which is private to s2n-quic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use s2n_quic::provider::congestion_controller::{
    CongestionController as S2nController, Endpoint, PathInfo, Publisher, RandomGenerator,
    RttEstimator, Timestamp,
};
use stoq_core::congestion::{
    AckEvent, CongestionController, CongestionControllerFactory, CongestionEvent, RttSample,
};

/// Datagrams released together by the pacer (s2n-quic's `MAX_BURST_PACKETS`).
const BURST_PACKETS: u64 = 10;

/// Below this smoothed RTT, window-derived pacing is off (s2n-quic's
/// `MINIMUM_PACING_RTT`): a timer wake-up would cost more than the burst it spaces.
const MINIMUM_PACING_RTT: Duration = Duration::from_millis(2);

/// An s2n-quic congestion-controller endpoint that builds STOQ controllers.
#[derive(Clone)]
pub struct StoqCongestionEndpoint {
    factory: Arc<dyn CongestionControllerFactory>,
}

impl StoqCongestionEndpoint {
    /// An endpoint building one controller per path from `factory`.
    pub fn new(factory: Arc<dyn CongestionControllerFactory>) -> Self {
        StoqCongestionEndpoint { factory }
    }
}

impl std::fmt::Debug for StoqCongestionEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoqCongestionEndpoint")
            .field("factory", &self.factory.name())
            .finish()
    }
}

impl Endpoint for StoqCongestionEndpoint {
    type CongestionController = StoqCongestionController;

    fn new_congestion_controller(&mut self, path_info: PathInfo) -> StoqCongestionController {
        let mds = path_info.max_datagram_size;
        StoqCongestionController::new(self.factory.build(Instant::now(), mds), mds)
    }
}

/// What the adapter remembers about each sent packet until it is acknowledged or lost.
#[derive(Debug, Clone, Copy)]
pub struct SentPacketInfo {
    time_sent: Timestamp,
    app_limited: bool,
}

/// A STOQ controller wearing s2n-quic's `CongestionController` trait.
#[derive(Debug)]
pub struct StoqCongestionController {
    inner: Box<dyn CongestionController>,
    /// The first s2n timestamp seen and the `Instant` it corresponds to.
    anchor: Option<(Timestamp, Instant)>,
    bytes_in_flight: u64,
    max_datagram_size: u16,
    /// Send time of the newest packet whose acknowledgement updated the RTT.
    newest_acked_sent: Option<Timestamp>,
    pacer: Pacer,
}

impl Clone for StoqCongestionController {
    fn clone(&self) -> Self {
        StoqCongestionController {
            inner: self.inner.clone_box(),
            anchor: self.anchor,
            bytes_in_flight: self.bytes_in_flight,
            max_datagram_size: self.max_datagram_size,
            newest_acked_sent: self.newest_acked_sent,
            pacer: self.pacer.clone(),
        }
    }
}

impl StoqCongestionController {
    /// Wraps `inner` for a path whose maximum UDP payload is `max_datagram_size`.
    pub fn new(inner: Box<dyn CongestionController>, max_datagram_size: u16) -> Self {
        StoqCongestionController {
            inner,
            anchor: None,
            bytes_in_flight: 0,
            max_datagram_size,
            newest_acked_sent: None,
            pacer: Pacer::default(),
        }
    }

    /// The wrapped STOQ controller.
    pub fn controller(&self) -> &dyn CongestionController {
        self.inner.as_ref()
    }

    /// Converts an s2n-quic timestamp to an `Instant`.
    fn instant(&mut self, t: Timestamp) -> Instant {
        let (t0, i0) = *self.anchor.get_or_insert_with(|| (t, Instant::now()));
        if t >= t0 {
            i0 + t.saturating_duration_since(t0)
        } else {
            let back = t0.saturating_duration_since(t);
            i0.checked_sub(back).unwrap_or(i0)
        }
    }

    /// The rate to pace at now, bytes per second, or `None` for no pacing.
    fn pacing_rate(&self, rtt: &RttEstimator) -> Option<u64> {
        if let Some(rate) = self.inner.pacing_rate() {
            return Some(rate);
        }
        let srtt = rtt.smoothed_rtt();
        if srtt < MINIMUM_PACING_RTT {
            return None;
        }
        let m = self.inner.metrics();
        let slow_start = m.ssthresh.is_none_or(|ssthresh| m.window < ssthresh);
        // Gains 2 and 1.25 as fractions: rate = window / srtt * num / den.
        let (num, den) = if slow_start { (2u128, 1u128) } else { (5, 4) };
        let rate =
            u128::from(self.inner.window()) * num * 1_000_000_000 / (den * srtt.as_nanos().max(1));
        Some(u64::try_from(rate).unwrap_or(u64::MAX))
    }
}

/// Spreads bursts of [`BURST_PACKETS`] datagrams over time at a given rate.
#[derive(Debug, Clone, Default)]
struct Pacer {
    /// Bytes the current burst may still send.
    capacity: u64,
    next_departure: Option<Timestamp>,
}

impl Pacer {
    fn on_packet_sent(&mut self, now: Timestamp, bytes: u64, rate: Option<u64>, mds: u16) {
        let Some(rate) = rate.filter(|r| *r > 0) else {
            self.next_departure = None;
            self.capacity = 0;
            return;
        };
        if self.capacity == 0 {
            let burst = BURST_PACKETS * u64::from(mds);
            let interval = Duration::from_nanos(
                u64::try_from(u128::from(burst) * 1_000_000_000 / u128::from(rate))
                    .unwrap_or(u64::MAX),
            );
            self.next_departure = Some(match self.next_departure {
                Some(next) => (next + interval).max(now),
                None => now,
            });
            self.capacity = burst;
        }
        self.capacity = self.capacity.saturating_sub(bytes);
    }
}

fn rtt_sample(rtt: &RttEstimator) -> RttSample {
    RttSample {
        latest: rtt.latest_rtt(),
        smoothed: rtt.smoothed_rtt(),
        min: rtt.min_rtt(),
        variance: rtt.rttvar(),
    }
}

impl S2nController for StoqCongestionController {
    type PacketInfo = SentPacketInfo;

    fn congestion_window(&self) -> u32 {
        u32::try_from(self.inner.window()).unwrap_or(u32::MAX)
    }

    fn bytes_in_flight(&self) -> u32 {
        u32::try_from(self.bytes_in_flight).unwrap_or(u32::MAX)
    }

    fn is_congestion_limited(&self) -> bool {
        self.inner.window().saturating_sub(self.bytes_in_flight) < u64::from(self.max_datagram_size)
    }

    fn requires_fast_retransmission(&self) -> bool {
        // STOQ controllers have no "send one packet past the window on entering recovery"
        // state (RFC 9002 section 7.3.2 makes it optional).
        false
    }

    fn on_packet_sent<Pub: Publisher>(
        &mut self,
        time_sent: Timestamp,
        sent_bytes: usize,
        app_limited: Option<bool>,
        rtt_estimator: &RttEstimator,
        _publisher: &mut Pub,
    ) -> SentPacketInfo {
        let app_limited = app_limited.unwrap_or(false);
        if sent_bytes > 0 {
            let bytes = sent_bytes as u64;
            let now = self.instant(time_sent);
            self.bytes_in_flight = self.bytes_in_flight.saturating_add(bytes);
            self.inner.on_packet_sent(now, bytes, app_limited);
            let rate = self.pacing_rate(rtt_estimator);
            self.pacer
                .on_packet_sent(time_sent, bytes, rate, self.max_datagram_size);
        }
        SentPacketInfo {
            time_sent,
            app_limited,
        }
    }

    fn on_rtt_update<Pub: Publisher>(
        &mut self,
        time_sent: Timestamp,
        _now: Timestamp,
        _rtt_estimator: &RttEstimator,
        _publisher: &mut Pub,
    ) {
        self.newest_acked_sent = Some(time_sent);
    }

    fn on_ack<Pub: Publisher>(
        &mut self,
        newest_acked_time_sent: Timestamp,
        bytes_acknowledged: usize,
        newest_acked_packet_info: SentPacketInfo,
        rtt_estimator: &RttEstimator,
        _random_generator: &mut dyn RandomGenerator,
        ack_receive_time: Timestamp,
        _publisher: &mut Pub,
    ) {
        let bytes = bytes_acknowledged as u64;
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(bytes);
        let now = self.instant(ack_receive_time);
        let sent_time = self.instant(newest_acked_time_sent);
        self.inner.on_ack(&AckEvent {
            now,
            sent_time,
            bytes,
            app_limited: newest_acked_packet_info.app_limited,
            rtt: rtt_sample(rtt_estimator),
        });
        self.inner.on_ack_batch_end(now, None);
    }

    fn on_packet_lost<Pub: Publisher>(
        &mut self,
        lost_bytes: u32,
        packet_info: SentPacketInfo,
        persistent_congestion: bool,
        _new_loss_burst: bool,
        _random_generator: &mut dyn RandomGenerator,
        timestamp: Timestamp,
        _publisher: &mut Pub,
    ) {
        let lost = u64::from(lost_bytes);
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(lost);
        let now = self.instant(timestamp);
        let sent_time = self.instant(packet_info.time_sent);
        self.inner.on_congestion_event(&CongestionEvent {
            now,
            sent_time,
            lost_bytes: lost,
            persistent: persistent_congestion,
            ecn: false,
        });
    }

    fn on_explicit_congestion<Pub: Publisher>(
        &mut self,
        _ce_count: u64,
        event_time: Timestamp,
        _publisher: &mut Pub,
    ) {
        let now = self.instant(event_time);
        let sent = self.newest_acked_sent.unwrap_or(event_time);
        let sent_time = self.instant(sent);
        self.inner.on_congestion_event(&CongestionEvent {
            now,
            sent_time,
            lost_bytes: 0,
            persistent: false,
            ecn: true,
        });
    }

    fn on_mtu_update<Pub: Publisher>(&mut self, max_data_size: u16, _publisher: &mut Pub) {
        self.max_datagram_size = max_data_size;
        self.inner.on_mtu_update(max_data_size);
    }

    fn on_packet_discarded<Pub: Publisher>(&mut self, bytes_sent: usize, _publisher: &mut Pub) {
        let bytes = bytes_sent as u64;
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(bytes);
        self.inner.on_packet_discarded(bytes);
    }

    fn earliest_departure_time(&self) -> Option<Timestamp> {
        self.pacer.next_departure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(micros: u64) -> Timestamp {
        use s2n_quic_core::time::{Clock, NoopClock};
        NoopClock.get_time() + Duration::from_micros(micros)
    }

    #[test]
    fn pacer_spaces_bursts_at_the_rate() {
        let mut p = Pacer::default();
        let t0 = ts(1_000_000);
        // 1 MB/s with 1000-byte datagrams: bursts of 10 kB every 10 ms.
        p.on_packet_sent(t0, 1000, Some(1_000_000), 1000);
        assert_eq!(p.next_departure, Some(t0));
        for _ in 0..9 {
            p.on_packet_sent(t0, 1000, Some(1_000_000), 1000);
        }
        assert_eq!(p.next_departure, Some(t0));
        p.on_packet_sent(t0, 1000, Some(1_000_000), 1000);
        assert_eq!(p.next_departure, Some(t0 + Duration::from_millis(10)));
        // No rate: no pacing.
        p.on_packet_sent(t0, 1000, None, 1000);
        assert_eq!(p.next_departure, None);
    }
}
