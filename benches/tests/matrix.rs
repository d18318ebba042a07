//! The whole matrix at its smallest scale: every default driver (quinn and s2n through
//! STOQ, quinn direct, s2n direct, quiche direct, TCP, TLS/TCP) times every built-in
//! scenario, with the server in a separate process (`stoq-bench-server`), one run per cell.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use stoq_bench::{report, run_matrix, scenario, CellStatus, Driver, MatrixOptions, MatrixResults};
use stoq_core::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_matrix_measures_every_applicable_cell() {
    let started = Instant::now();
    let server = env!("CARGO_BIN_EXE_stoq-bench-server");
    let options = MatrixOptions::quick(vec![server.into()]);
    let drivers = Driver::defaults([
        Arc::new(stoq_quinn::QuinnBackend) as Arc<dyn Backend>,
        Arc::new(stoq_s2n::S2nBackend),
    ]);
    let names: Vec<String> = drivers.iter().map(Driver::name).collect();
    assert_eq!(
        names,
        [
            "stoq-quinn",
            "stoq-s2n",
            "quinn-direct",
            "s2n-direct",
            #[cfg(feature = "quiche-direct")]
            "quiche-direct",
            "tcp",
            "tls-tcp"
        ]
    );
    let scenarios = scenario::builtin();
    let seen = Mutex::new(Vec::new());
    let results = run_matrix(&options, drivers, scenarios.clone(), |p| {
        assert!(p.completed <= p.total, "{p:?}");
        seen.lock().unwrap().push((p.completed, p.total));
    })
    .await
    .expect("matrix runs");
    eprintln!("{}", report::markdown(&results));

    let seen = seen.into_inner().unwrap();
    let (last, total) = *seen.last().unwrap();
    assert_eq!(last, total, "progress ends complete");
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress never goes back"
    );

    let rows = if cfg!(feature = "quiche-direct") {
        7
    } else {
        6
    };
    assert_eq!(results.drivers.len(), rows);
    assert_eq!(results.cells.len(), rows * scenarios.len());
    for c in &results.cells {
        let tcp = c.driver == "tcp" || c.driver == "tls-tcp";
        // quiche-direct's datagram and handshake cells are reported n/a (known tokio-quiche
        // client defects, the reason in the cell).
        let quiche_direct = c.driver == "quiche-direct";
        if (tcp || quiche_direct) && c.scenario == "datagrams"
            || quiche_direct && c.scenario == "handshakes"
        {
            assert_eq!(c.status, CellStatus::NotApplicable, "{c:?}");
            let reason = c.reason.as_deref().unwrap();
            assert!(
                reason.contains("datagrams") || reason.contains("tokio-quiche"),
                "{reason}"
            );
        } else {
            assert_eq!(
                c.status,
                CellStatus::Measured,
                "{} x {}: {:?}",
                c.driver,
                c.scenario,
                c.reason
            );
            assert_eq!(c.runs(), 1);
        }
    }
    for d in &names {
        let d = d.as_str();
        let bulk = results.cell(d, "bulk").unwrap();
        assert!(bulk.median("goodput_gbps").unwrap() > 0.0);
        assert!(bulk.median("server_cpu_s_per_gib").unwrap() >= 0.0);
        let rpc = results.cell(d, "rpc_1k_100").unwrap();
        assert!(rpc.median("requests_per_s").unwrap() > 0.0);
        assert!(rpc.median("latency_p99_us").unwrap() >= rpc.median("latency_p50_us").unwrap());
        let cp = results.cell(d, "connect_cold_vs_pooled").unwrap();
        assert!(cp.median("cold_ms").unwrap() > 0.0);
    }
    for d in names
        .iter()
        .filter(|n| !n.contains("tcp") && *n != "quiche-direct")
    {
        let dg = results.cell(d, "datagrams").unwrap();
        assert!(dg.median("delivered_share_pct").unwrap() > 50.0, "{dg:?}");
    }

    // The paired phase: each STOQ row against its direct row on the three goodput
    // scenarios, one alternating round each in the quick matrix, client and servers pinned.
    let mut pairs: Vec<(&str, &str, &str)> = results
        .paired
        .iter()
        .map(|p| (p.stoq.as_str(), p.direct.as_str(), p.scenario.as_str()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("stoq-quinn", "quinn-direct", "bulk"),
            ("stoq-quinn", "quinn-direct", "bulk_8conn"),
            ("stoq-quinn", "quinn-direct", "streams_1000x64k"),
            ("stoq-s2n", "s2n-direct", "bulk"),
            ("stoq-s2n", "s2n-direct", "bulk_8conn"),
            ("stoq-s2n", "s2n-direct", "streams_1000x64k"),
        ]
    );
    for p in &results.paired {
        assert_eq!((p.rounds, p.failure.as_deref()), (1, None), "{p:?}");
        assert_eq!(
            p.placement.as_deref(),
            Some("client pinned to CPU [0], servers to CPU [1]"),
            "{p:?}"
        );
        let r = p.ratio.as_ref().expect("a ratio");
        assert!(r.median > 0.0 && r.median.is_finite(), "{p:?}");
        assert_eq!(p.ratios[0], p.stoq_values[0] / p.direct_values[0]);
    }

    let md = report::markdown(&results);
    assert!(md.contains("### Framework overhead, paired runs"));
    for d in &names {
        assert!(md.contains(&format!("| {d} |")), "{d} row missing");
    }
    assert!(md.contains("Framework overhead: stoq-quinn / quinn-direct"));
    assert!(md.contains("Framework overhead: stoq-s2n / s2n-direct"));
    let svg = report::svg(&results).unwrap();
    assert!(svg.contains("<svg") && svg.contains("bulk_8conn"));

    let dir = tempfile::tempdir().unwrap();
    let files = report::write_all(&results, dir.path()).unwrap();
    let back = MatrixResults::read_json(&files.json).unwrap();
    assert_eq!(back.machine, results.machine);
    assert_eq!(back.scenarios, results.scenarios);
    assert_eq!(back.cells.len(), results.cells.len());
    for (a, b) in back.cells.iter().zip(&results.cells) {
        assert_eq!(
            (&a.driver, &a.scenario, a.status),
            (&b.driver, &b.scenario, b.status)
        );
        for (ma, mb) in a.metrics.iter().zip(&b.metrics) {
            assert_eq!(ma.key, mb.key);
            let (x, y) = (ma.summary.unwrap().median, mb.summary.unwrap().median);
            assert!(
                (x - y).abs() <= 1e-9 * y.abs().max(1.0),
                "{} {x} {y}",
                ma.key
            );
        }
    }
    assert!(std::fs::read_to_string(&files.svg)
        .unwrap()
        .starts_with("<svg"));

    eprintln!("quick matrix took {:.1} s", started.elapsed().as_secs_f64());
    assert!(started.elapsed().as_secs() < 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_start_fails_its_cells_not_the_matrix() {
    let options = MatrixOptions::quick(vec!["/bin/false".into()]);
    let scenarios = scenario::builtin_named(&["bulk", "datagrams"]).unwrap();
    let results = run_matrix(&options, vec![Driver::KernelTcp], scenarios, |_| {})
        .await
        .unwrap();
    let bulk = results.cell("tcp", "bulk").unwrap();
    assert_eq!(bulk.status, CellStatus::Failed);
    assert!(
        bulk.reason.as_deref().unwrap().contains("LISTENING"),
        "{bulk:?}"
    );
    assert_eq!(
        results.cell("tcp", "datagrams").unwrap().status,
        CellStatus::NotApplicable
    );
}
