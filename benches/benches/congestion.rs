//! Cost per call of STOQ's congestion controllers (NewReno, CUBIC): `on_packet_sent`,
//! `on_ack` in congestion avoidance, and `on_congestion_event` (each call a new loss, so
//! every call does the full reaction).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use stoq_core::congestion::{
    AckEvent, CongestionController, CongestionEvent, Cubic, NewReno, RttSample,
};

const MDS: u16 = 1452;

type Make = fn() -> Box<dyn CongestionController>;

fn controllers() -> [(&'static str, Make); 2] {
    [
        ("new_reno", || Box::new(NewReno::new(MDS))),
        ("cubic", || Box::new(Cubic::new(MDS))),
    ]
}

fn bench(c: &mut Criterion) {
    let rtt = RttSample::constant(Duration::from_micros(200));
    for (name, make) in controllers() {
        let mut g = c.benchmark_group(format!("congestion/{name}"));

        g.bench_function("on_packet_sent", |b| {
            let mut cc = make();
            let t0 = Instant::now();
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                cc.on_packet_sent(
                    black_box(t0 + Duration::from_nanos(i)),
                    black_box(1452),
                    false,
                );
            });
            black_box(cc.window());
        });

        g.bench_function("on_ack_congestion_avoidance", |b| {
            let mut cc = make();
            let t0 = Instant::now();
            cc.on_packet_sent(t0, 1 << 50, false);
            // One loss to leave slow start; acknowledged packets are sent after it.
            cc.on_congestion_event(&CongestionEvent {
                now: t0,
                sent_time: t0,
                lost_bytes: 1452,
                persistent: false,
                ecn: false,
            });
            let mut i = 1u64;
            b.iter(|| {
                i += 1;
                let now = t0 + Duration::from_micros(i);
                cc.on_ack(black_box(&AckEvent {
                    now,
                    sent_time: now - Duration::from_nanos(1),
                    bytes: 1452,
                    app_limited: false,
                    rtt,
                }));
            });
            black_box(cc.window());
        });

        g.bench_function("on_congestion_event", |b| {
            let mut cc = make();
            let t0 = Instant::now();
            cc.on_packet_sent(t0, 1 << 50, false);
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let now = t0 + Duration::from_micros(i);
                // Sent after the previous event: a new recovery period every call.
                cc.on_congestion_event(black_box(&CongestionEvent {
                    now,
                    sent_time: now,
                    lost_bytes: 1452,
                    persistent: false,
                    ecn: false,
                }));
            });
            black_box(cc.window());
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
