//! A qlog-style trace of a congestion controller's events.
//!
//! [`TracingFactory`] wraps any [`CongestionControllerFactory`]; every controller it builds
//! behaves exactly like the wrapped one and also writes one JSON object per line (JSON
//! Lines) to a shared sink, named after qlog's recovery events (draft-ietf-quic-qlog-quic-events):
//!
//! * `recovery:metrics_updated` whenever window, ssthresh, pacing rate or bytes in flight
//!   changed after an event (`congestion_window`, `ssthresh`, `pacing_rate` in bytes per
//!   second, `bytes_in_flight`, and `smoothed_rtt`/`min_rtt`/`latest_rtt` in ms when the
//!   event carried an RTT sample);
//! * `recovery:congestion_event` for each loss or ECN-CE report (`lost_bytes`,
//!   `persistent_congestion`, `ecn`);
//! * `recovery:mtu_updated` when the path's maximum datagram size changed.
//!
//! Every line has `time` (ms since the factory was created), `path` (a number per
//! controller, in the order they were built), `algorithm`, `name` and `data`. Writing is
//! best effort: a failed write is counted ([`TracingFactory::write_errors`]) and never
//! disturbs the connection.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use super::{
    AckEvent, CongestionController, CongestionControllerFactory, CongestionEvent,
    CongestionMetrics, RttSample,
};

/// The shared sink of a trace.
struct Sink {
    out: Mutex<Box<dyn Write + Send>>,
    start: Instant,
    errors: AtomicU64,
}

impl Sink {
    fn write(&self, path: u64, algorithm: &str, name: &str, data: Value) {
        let line = json!({
            "time": self.start.elapsed().as_secs_f64() * 1e3,
            "path": path,
            "algorithm": algorithm,
            "name": name,
            "data": data,
        });
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if writeln!(out, "{line}").is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Builds the wrapped factory's controllers, each tracing its events to one sink (see the
/// module documentation).
pub struct TracingFactory {
    inner: Arc<dyn CongestionControllerFactory>,
    sink: Arc<Sink>,
    next_path: AtomicU64,
}

impl std::fmt::Debug for TracingFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingFactory")
            .field("inner", &self.inner.name())
            .finish_non_exhaustive()
    }
}

impl TracingFactory {
    /// Traces the controllers of `inner` to `out` (a file, a buffer, ...).
    pub fn new(inner: Arc<dyn CongestionControllerFactory>, out: Box<dyn Write + Send>) -> Self {
        TracingFactory {
            inner,
            sink: Arc::new(Sink {
                out: Mutex::new(out),
                start: Instant::now(),
                errors: AtomicU64::new(0),
            }),
            next_path: AtomicU64::new(0),
        }
    }

    /// Lines that could not be written so far.
    pub fn write_errors(&self) -> u64 {
        self.sink.errors.load(Ordering::Relaxed)
    }

    /// Flushes the sink.
    pub fn flush(&self) -> std::io::Result<()> {
        self.sink
            .out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush()
    }
}

impl CongestionControllerFactory for TracingFactory {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn build(&self, now: Instant, max_datagram_size: u16) -> Box<dyn CongestionController> {
        let inner = self.inner.build(now, max_datagram_size);
        let path = self.next_path.fetch_add(1, Ordering::Relaxed);
        let t = Tracing {
            algorithm: inner.name().to_string(),
            inner,
            path,
            sink: self.sink.clone(),
            last: None,
        };
        t.sink.write(
            path,
            &t.algorithm,
            "recovery:parameters_set",
            json!({
                "max_datagram_size": max_datagram_size,
                "initial_congestion_window": t.inner.initial_window(),
            }),
        );
        Box::new(t)
    }
}

/// One traced controller.
struct Tracing {
    inner: Box<dyn CongestionController>,
    algorithm: String,
    path: u64,
    sink: Arc<Sink>,
    last: Option<CongestionMetrics>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("inner", &self.inner)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Tracing {
    /// Writes `metrics_updated` if the metrics changed since the last line.
    fn trace_metrics(&mut self, rtt: Option<&RttSample>) {
        let m = self.inner.metrics();
        if self.last == Some(m) {
            return;
        }
        self.last = Some(m);
        let mut data = json!({
            "congestion_window": m.window,
            "bytes_in_flight": m.bytes_in_flight,
        });
        if let Some(s) = m.ssthresh {
            data["ssthresh"] = s.into();
        }
        if let Some(p) = m.pacing_rate {
            data["pacing_rate"] = p.into();
        }
        if let Some(r) = rtt {
            data["smoothed_rtt"] = (r.smoothed.as_secs_f64() * 1e3).into();
            data["min_rtt"] = (r.min.as_secs_f64() * 1e3).into();
            data["latest_rtt"] = (r.latest.as_secs_f64() * 1e3).into();
        }
        self.sink
            .write(self.path, &self.algorithm, "recovery:metrics_updated", data);
    }
}

impl CongestionController for Tracing {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn on_packet_sent(&mut self, now: Instant, bytes: u64, app_limited: bool) {
        self.inner.on_packet_sent(now, bytes, app_limited);
    }

    fn on_ack(&mut self, ack: &AckEvent) {
        self.inner.on_ack(ack);
        self.trace_metrics(Some(&ack.rtt));
    }

    fn on_ack_batch_end(&mut self, now: Instant, bytes_in_flight: Option<u64>) {
        self.inner.on_ack_batch_end(now, bytes_in_flight);
        self.trace_metrics(None);
    }

    fn on_congestion_event(&mut self, event: &CongestionEvent) {
        self.inner.on_congestion_event(event);
        self.sink.write(
            self.path,
            &self.algorithm,
            "recovery:congestion_event",
            json!({
                "lost_bytes": event.lost_bytes,
                "persistent_congestion": event.persistent,
                "ecn": event.ecn,
            }),
        );
        self.trace_metrics(None);
    }

    fn on_packet_discarded(&mut self, bytes: u64) {
        self.inner.on_packet_discarded(bytes);
    }

    fn on_mtu_update(&mut self, max_datagram_size: u16) {
        self.inner.on_mtu_update(max_datagram_size);
        self.sink.write(
            self.path,
            &self.algorithm,
            "recovery:mtu_updated",
            json!({ "max_datagram_size": max_datagram_size }),
        );
        self.trace_metrics(None);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn pacing_rate(&self) -> Option<u64> {
        self.inner.pacing_rate()
    }

    fn metrics(&self) -> CongestionMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn CongestionController> {
        Box::new(Tracing {
            inner: self.inner.clone_box(),
            algorithm: self.algorithm.clone(),
            path: self.path,
            sink: self.sink.clone(),
            last: self.last,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::congestion::NewRenoFactory;

    /// A `Write` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_trace_follows_the_window_and_records_losses() {
        let buf = Buffer::default();
        let factory =
            TracingFactory::new(Arc::new(NewRenoFactory::default()), Box::new(buf.clone()));
        let t0 = Instant::now();
        let mut c = factory.build(t0, 1200);
        let rtt = RttSample::constant(Duration::from_millis(10));
        for i in 0..10u32 {
            let sent = t0 + Duration::from_millis(u64::from(i));
            c.on_packet_sent(sent, 1200, false);
            c.on_ack(&AckEvent {
                now: sent + Duration::from_millis(10),
                sent_time: sent,
                bytes: 1200,
                app_limited: false,
                rtt,
            });
        }
        let before = c.window();
        c.on_packet_sent(t0 + Duration::from_millis(20), 1200, false);
        c.on_congestion_event(&CongestionEvent {
            now: t0 + Duration::from_millis(40),
            sent_time: t0 + Duration::from_millis(20),
            lost_bytes: 1200,
            persistent: false,
            ecn: false,
        });
        assert!(c.window() < before, "NewReno halves on loss");

        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines[0]["name"], "recovery:parameters_set");
        assert_eq!(lines[0]["data"]["max_datagram_size"], 1200);
        let windows: Vec<u64> = lines
            .iter()
            .filter(|l| l["name"] == "recovery:metrics_updated")
            .map(|l| l["data"]["congestion_window"].as_u64().unwrap())
            .collect();
        // Slow start: every ack grew the window, each change is one line.
        assert!(
            windows.windows(2).take(9).all(|w| w[1] > w[0]),
            "{windows:?}"
        );
        assert_eq!(
            *windows.last().unwrap(),
            c.window(),
            "the last line is the current window"
        );
        let loss = lines
            .iter()
            .find(|l| l["name"] == "recovery:congestion_event")
            .expect("the loss is traced");
        assert_eq!(loss["data"]["lost_bytes"], 1200);
        let name = c.name().to_string();
        assert!(
            lines
                .iter()
                .all(|l| l["path"] == 0 && l["algorithm"] == name.as_str()),
            "every line names path 0 and {name}"
        );
        assert!(lines
            .iter()
            .filter(|l| l["name"] == "recovery:metrics_updated")
            .any(|l| l["data"]["ssthresh"].is_u64()));
        assert_eq!(factory.write_errors(), 0);
    }

    #[test]
    fn each_controller_is_its_own_path_and_a_broken_sink_is_only_counted() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let factory = TracingFactory::new(Arc::new(NewRenoFactory::default()), Box::new(Broken));
        let now = Instant::now();
        let mut a = factory.build(now, 1200);
        let _b = factory.build(now, 1200);
        a.on_mtu_update(1400);
        // Two parameter lines and the MTU line failed; the controller works regardless.
        assert!(factory.write_errors() >= 3, "{}", factory.write_errors());
        assert!(a.window() > 0);
        let mut buf = Buffer::default();
        let traced =
            TracingFactory::new(Arc::new(NewRenoFactory::default()), Box::new(buf.clone()));
        let _x = traced.build(now, 1200);
        let _y = traced.build(now, 1200);
        buf.flush().unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let paths: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["path"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(paths, vec![0, 1], "one path number per controller");
    }
}
