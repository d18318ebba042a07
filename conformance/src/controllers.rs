//! Congestion controllers for tests: fixed behaviour, so a test can tell what the engine
//! did with them.

use std::time::Instant;

use stoq_core::congestion::{
    AckEvent, CongestionController, CongestionControllerFactory, CongestionEvent, CongestionMetrics,
};

/// A controller that keeps a fixed window and asks for a fixed pacing rate, whatever
/// happens: with a window far above the transfer, only pacing can slow the sender.
#[derive(Debug, Clone, Copy)]
pub struct FixedRate {
    /// Bytes that may be in flight, always.
    pub window: u64,
    /// Bytes per second to pace at, always.
    pub rate: u64,
}

impl CongestionController for FixedRate {
    fn name(&self) -> &str {
        "fixed-rate"
    }
    fn on_packet_sent(&mut self, _now: Instant, _bytes: u64, _app_limited: bool) {}
    fn on_ack(&mut self, _ack: &AckEvent) {}
    fn on_congestion_event(&mut self, _e: &CongestionEvent) {}
    fn on_packet_discarded(&mut self, _bytes: u64) {}
    fn on_mtu_update(&mut self, _max_datagram_size: u16) {}
    fn window(&self) -> u64 {
        self.window
    }
    fn initial_window(&self) -> u64 {
        self.window
    }
    fn pacing_rate(&self) -> Option<u64> {
        Some(self.rate)
    }
    fn metrics(&self) -> CongestionMetrics {
        CongestionMetrics::new(self.window, 0).with_pacing_rate(Some(self.rate))
    }
    fn clone_box(&self) -> Box<dyn CongestionController> {
        Box::new(*self)
    }
}

/// Builds a [`FixedRate`] with these settings for every path.
#[derive(Debug, Clone, Copy)]
pub struct FixedRateFactory(pub FixedRate);

impl CongestionControllerFactory for FixedRateFactory {
    fn name(&self) -> &str {
        "fixed-rate"
    }
    fn build(&self, _now: Instant, _mtu: u16) -> Box<dyn CongestionController> {
        Box::new(self.0)
    }
}
