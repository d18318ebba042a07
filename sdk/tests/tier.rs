//! Network tiers: classification from given measurements, probing, and the override.

mod common;

use std::time::Duration;

use common::{builder, listen, phoenix, within};
use phoenix::{NetworkTier, TierSource};

#[test]
fn classification_table() {
    use NetworkTier::*;
    const MBIT: f64 = 1e6;
    const GBIT: f64 = 1e9;
    let ms = Duration::from_millis;
    let us = Duration::from_micros;
    let table: &[(f64, Duration, NetworkTier)] = &[
        // Slow links are Home whatever the RTT.
        (0.0, us(100), Home),
        (20.0 * MBIT, ms(5), Home),
        (99.9 * MBIT, ms(1), Home),
        // Long RTT makes any link Home.
        (50.0 * GBIT, ms(51), Home),
        (500.0 * MBIT, ms(80), Home),
        // 100 Mbit/s up to 1 Gbit/s.
        (100.0 * MBIT, ms(50), Standard),
        (300.0 * MBIT, ms(20), Standard),
        (999.0 * MBIT, us(200), Standard),
        // 1 Gbit/s up to 10 Gbit/s.
        (1.0 * GBIT, ms(10), Performance),
        (2.3 * GBIT, us(150), Performance),
        (9.99 * GBIT, us(50), Performance),
        // 10 Gbit/s and more, but not at data-centre RTT.
        (40.0 * GBIT, ms(1), Performance),
        (10.0 * GBIT, ms(30), Performance),
        // 10 Gbit/s and more below 1 ms.
        (10.0 * GBIT, us(999), Enterprise),
        (100.0 * GBIT, us(20), Enterprise),
        // Nonsense measurements are the most conservative tier.
        (f64::NAN, us(10), Home),
    ];
    for &(bps, rtt, want) in table {
        assert_eq!(
            NetworkTier::classify(bps, rtt),
            want,
            "{bps} bit/s at {rtt:?}"
        );
    }
}

#[test]
fn profiles_grow_with_the_tier() {
    let mut prev: Option<phoenix::TierProfile> = None;
    for t in NetworkTier::ALL {
        let p = t.profile();
        assert!(p.stream_receive_window <= p.connection_receive_window);
        if let Some(prev) = prev {
            assert!(p.stream_receive_window > prev.stream_receive_window);
            assert!(p.connection_receive_window > prev.connection_receive_window);
            assert!(p.socket_receive_buffer > prev.socket_receive_buffer);
        }
        prev = Some(p);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_measures_and_applies_the_profile_to_new_connections() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    let conn = within(20, client.connect(&target)).await.unwrap();
    assert!(client.tier().is_none());

    let report = within(60, client.probe_with(&conn, 1024 * 1024))
        .await
        .unwrap();
    assert_eq!(report.source, TierSource::Probe);
    let m = report.probe.as_ref().expect("a measurement");
    assert!(
        m.goodput_bps > 0.0 && m.rtt_ms > 0.0 && m.ping_ms > 0.0,
        "{m:?}"
    );
    assert_eq!(m.probe_bytes, 1024 * 1024);
    assert_eq!(
        report.tier,
        NetworkTier::classify(m.goodput_bps, Duration::from_secs_f64(m.rtt_ms / 1e3))
    );
    assert_eq!(report.profile, report.tier.profile());

    // Visible in stats, applied to the configuration of new endpoints.
    let stats = client.stats();
    assert_eq!(stats.tier.as_ref().unwrap().tier, report.tier);
    let cfg = client.config();
    assert_eq!(
        cfg.stream_receive_window,
        report.profile.stream_receive_window
    );
    assert_eq!(
        cfg.connection_receive_window,
        report.profile.connection_receive_window
    );
    // Probe data is discarded by the peer, not delivered as a message.
    within(20, conn.send_data(b"after the probe"))
        .await
        .unwrap();
    assert_eq!(
        &within(20, listener.next_message()).await.unwrap().bytes[..],
        b"after the probe"
    );
    // A new connection (to another listener) is dialled from an endpoint with the profile.
    let (_l2, target2) = listen(&server).await;
    let conn2 = within(20, client.connect(&target2)).await.unwrap();
    within(20, conn2.send_data(b"new endpoint")).await.unwrap();
    let json = serde_json::to_value(client.stats()).unwrap();
    assert_eq!(json["tier"]["source"], "probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_override_skips_probing() {
    let server = phoenix().await;
    let (_listener, target) = listen(&server).await;
    let client = builder().tier(NetworkTier::Home).build().await.unwrap();
    let home = NetworkTier::Home.profile();
    assert_eq!(
        client.config().stream_receive_window,
        home.stream_receive_window
    );
    assert_eq!(client.config().send_window, home.send_window);

    let conn = within(20, client.connect(&target)).await.unwrap();
    let report = within(20, client.probe(&conn)).await.unwrap();
    assert_eq!(report.tier, NetworkTier::Home);
    assert_eq!(report.source, TierSource::Override);
    assert!(report.probe.is_none());
    // Nothing was sent.
    assert_eq!(conn.stats().sdk.bytes_sent, 0);
    assert_eq!(client.stats().tier.unwrap().tier, NetworkTier::Home);
}
