//! Runs the Vegas controller inside quinn end to end.

use stoq_example_custom_congestion::run_transfer;

const LEN: usize = 8 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vegas_drives_a_verified_quinn_transfer() {
    let report = run_transfer(LEN).await.expect("transfer");
    let c = report.controller;
    assert!(
        report.hash_verified(),
        "{} of {LEN} bytes arrived, hashes equal: {}",
        report.bytes_received,
        report.sent_sha256 == report.received_sha256
    );
    assert_eq!(report.bytes_received, LEN as u64);
    assert_eq!(
        report.engine_window, c.window,
        "the engine does not report the controller's window"
    );
    assert!(
        c.bytes_acked >= LEN as u64,
        "controller saw {} bytes acknowledged, less than {LEN}",
        c.bytes_acked
    );
    assert!(
        c.bytes_sent >= c.bytes_acked,
        "acknowledged {} of {} bytes sent",
        c.bytes_acked,
        c.bytes_sent
    );
    assert!(c.packets_sent > 0 && c.rounds > 0, "{c:?}");
    assert!(c.window_changes >= 1, "the window never changed: {c:?}");
    assert!(report.problems().is_empty(), "{:?}", report.problems());
}
