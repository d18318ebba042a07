//! Runs a STOQ [`CongestionController`] inside quinn-proto.
//!
//! quinn-proto calls its `Controller` trait from the connection state machine; this adapter
//! forwards each callback to the STOQ controller. Mapping: `on_sent` → `on_packet_sent`
//! (quinn does not say whether the sender was application-limited at send time, so
//! `app_limited` is `false` there; it does say so on ACK, which is where controllers use it),
//! `on_ack` → `on_ack`, `on_end_acks` → `on_ack_batch_end` with quinn's in-flight count,
//! `on_congestion_event` → `on_congestion_event` (ECN when no bytes were lost). quinn's
//! `RttEstimator` exposes the smoothed and minimum RTT but not the latest sample or the
//! variance, so `latest` is the smoothed RTT and `variance` is derived as half of it.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn_proto::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;
use stoq_core::congestion::{
    AckEvent, CongestionController, CongestionControllerFactory, CongestionEvent, RttSample,
};

/// A quinn `ControllerFactory` building STOQ controllers.
pub struct StoqControllerFactory(pub Arc<dyn CongestionControllerFactory>);

impl ControllerFactory for StoqControllerFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(StoqController(self.0.build(now, current_mtu)))
    }
}

/// A STOQ controller wearing quinn's `Controller` trait.
#[derive(Debug)]
pub struct StoqController(pub Box<dyn CongestionController>);

fn rtt_sample(rtt: &RttEstimator) -> RttSample {
    let smoothed = rtt.get();
    RttSample {
        latest: smoothed,
        smoothed,
        min: rtt.min(),
        variance: smoothed / 2,
    }
}

impl Controller for StoqController {
    fn on_sent(&mut self, now: Instant, bytes: u64, _last_packet_number: u64) {
        self.0.on_packet_sent(now, bytes, false);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.0.on_ack(&AckEvent {
            now,
            sent_time: sent,
            bytes,
            app_limited,
            rtt: rtt_sample(rtt),
        });
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        _app_limited: bool,
        _largest_packet_num_acked: Option<u64>,
    ) {
        self.0.on_ack_batch_end(now, Some(in_flight));
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.0.on_congestion_event(&CongestionEvent {
            now,
            sent_time: sent,
            lost_bytes,
            persistent: is_persistent_congestion,
            ecn: lost_bytes == 0,
        });
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.0.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.0.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        let m = self.0.metrics();
        let mut out = ControllerMetrics::default();
        out.congestion_window = m.window;
        out.ssthresh = m.ssthresh;
        // quinn reports pacing in bits per second.
        out.pacing_rate = m.pacing_rate.map(|r| r.saturating_mul(8));
        out
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(StoqController(self.0.clone_box()))
    }

    fn initial_window(&self) -> u64 {
        self.0.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}
