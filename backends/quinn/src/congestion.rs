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
//!
//! After every callback the adapter publishes the controller's `pacing_rate` to a
//! [`PacingRate`] that [`crate::pacing::PacedSocket`] paces the connection's sends with.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn_proto::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

use crate::pacing::{self, PacingRate};
use stoq_core::congestion::{
    AckEvent, CongestionController, CongestionControllerFactory, CongestionEvent, RttSample,
};

/// A quinn `ControllerFactory` building STOQ controllers.
pub struct StoqControllerFactory {
    factory: Arc<dyn CongestionControllerFactory>,
    paced: bool,
}

impl StoqControllerFactory {
    /// Builds `factory`'s controllers for an endpoint on a plain socket: their pacing rate
    /// is published but nothing reads it.
    pub fn new(factory: Arc<dyn CongestionControllerFactory>) -> Self {
        StoqControllerFactory {
            factory,
            paced: false,
        }
    }

    /// Builds `factory`'s controllers for an endpoint on a [`pacing::PacedSocket`]: each
    /// controller's rate is handed to its connection's poller.
    pub fn paced(factory: Arc<dyn CongestionControllerFactory>) -> Self {
        StoqControllerFactory {
            factory,
            paced: true,
        }
    }
}

impl ControllerFactory for StoqControllerFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        let controller = StoqController::new(self.factory.build(now, current_mtu), now);
        if self.paced {
            // For the paced socket's poller of the connection being created (see `pacing`).
            pacing::controller_built(&controller.pacing);
        }
        Box::new(controller)
    }
}

/// A STOQ controller wearing quinn's `Controller` trait.
#[derive(Debug)]
pub struct StoqController {
    inner: Box<dyn CongestionController>,
    pacing: Arc<PacingRate>,
}

impl StoqController {
    /// Wraps `inner`, publishing its pacing rate as of `now`.
    pub fn new(inner: Box<dyn CongestionController>, now: Instant) -> Self {
        let pacing = Arc::new(PacingRate::default());
        pacing.set(inner.pacing_rate(), Some(now));
        StoqController { inner, pacing }
    }

    /// The STOQ controller inside.
    pub fn controller(&self) -> &dyn CongestionController {
        &*self.inner
    }

    /// Where this controller's pacing rate is published after every callback.
    pub fn pacing_rate(&self) -> &Arc<PacingRate> {
        &self.pacing
    }

    fn publish(&self, now: Instant) {
        self.pacing.set(self.inner.pacing_rate(), Some(now));
    }
}

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
        self.inner.on_packet_sent(now, bytes, false);
        self.publish(now);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(&AckEvent {
            now,
            sent_time: sent,
            bytes,
            app_limited,
            rtt: rtt_sample(rtt),
        });
        self.publish(now);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        _app_limited: bool,
        _largest_packet_num_acked: Option<u64>,
    ) {
        self.inner.on_ack_batch_end(now, Some(in_flight));
        self.publish(now);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner.on_congestion_event(&CongestionEvent {
            now,
            sent_time: sent,
            lost_bytes,
            persistent: is_persistent_congestion,
            ecn: lost_bytes == 0,
        });
        self.publish(now);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
        // quinn gives no time here: the rate is published without a write stamp, which
        // stays comparable only with quinn's own clock.
        self.pacing.set(self.inner.pacing_rate(), None);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        let m = self.inner.metrics();
        let mut out = ControllerMetrics::default();
        out.congestion_window = m.window;
        out.ssthresh = m.ssthresh;
        // quinn reports pacing in bits per second.
        out.pacing_rate = m.pacing_rate.map(|r| r.saturating_mul(8));
        out
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        // quinn-proto clones the controller for a new IPv4 path to the same address (a port
        // change) and for `Connection::congestion_state` snapshots. The clone shares the rate cell:
        // the new path goes on publishing to the connection's pacer, and a snapshot gets no
        // callbacks, so it never writes.
        Box::new(StoqController {
            inner: self.inner.clone_box(),
            pacing: self.pacing.clone(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}
