//! The `phoenix` binary's exit codes and error messages on bad input, and its JSON output.

use std::process::{Command, Output};

fn phoenix(args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("tempdir");
    Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(args)
        // Certificates go to a throwaway store, never the user's.
        .env("STOQ_HOME", home.path())
        .output()
        .expect("run phoenix")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_backend_is_bad_input() {
    let o = phoenix(&["conformance", "--backend", "carrier-pigeon"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("carrier-pigeon"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("quinn"),
        "the error lists the compiled-in backends"
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let o = phoenix(&["bench", "--frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bench_rejects_zero_runs_and_bad_addresses() {
    let o = phoenix(&["bench", "--runs", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = phoenix(&["bench", "--to", "nohost:notaport"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("bad address \"nohost:notaport\""),
        "{}",
        stderr(&o)
    );
    let o = phoenix(&["bench", "--to", "no-port-here"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn conformance_json_reports_each_contract() {
    let o = phoenix(&["--json", "conformance", "--only", "bidi_echo"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(doc["passed"], 1);
    assert_eq!(doc["failed"], 0);
    assert_eq!(doc["contracts"][0]["contract"], "bidi_echo");
    assert_eq!(doc["contracts"][0]["status"], "passed");
}

#[test]
fn conformance_filter_matching_nothing_is_bad_input() {
    let o = phoenix(&["conformance", "--only", "no-such-contract"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn bench_json_reports_verified_goodput() {
    let o = phoenix(&["--json", "bench", "--mib", "4", "--runs", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert!(doc["goodput_gbps"]["median"].as_f64().unwrap() > 0.0);
    assert_eq!(doc["runs"][0]["receiver"]["verified"], true);
    assert_eq!(doc["runs"][0]["receiver"]["bytes"], 4 << 20);
}

#[test]
fn bench_runs_on_a_current_thread_runtime() {
    // --worker-threads 0: client and server process on tokio's current-thread runtime,
    // where stoq-uring's rings run io_uring task work cooperatively (COOP_TASKRUN).
    for backend in ["quinn", "uring"] {
        let o = phoenix(&[
            "--json",
            "--worker-threads",
            "0",
            "--backend",
            backend,
            "bench",
            "--mib",
            "8",
            "--runs",
            "2",
        ]);
        assert_eq!(o.status.code(), Some(0), "{backend}: {}", stderr(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
        for run in 0..2 {
            assert_eq!(doc["runs"][run]["receiver"]["verified"], true, "{backend}");
            assert_eq!(doc["runs"][run]["receiver"]["bytes"], 8 << 20, "{backend}");
        }
    }
}

#[test]
fn bench_splits_a_run_across_connections() {
    // 1 MiB over 3 connections does not divide evenly: the last one carries the remainder,
    // and the receivers together verify every byte.
    let o = phoenix(&[
        "--json",
        "bench",
        "--mib",
        "1",
        "--runs",
        "1",
        "--connections",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(doc["connections"], 3);
    assert_eq!(doc["runs"][0]["receiver"]["verified"], true);
    assert_eq!(doc["runs"][0]["receiver"]["bytes"], 1 << 20);
    let bad = phoenix(&["bench", "--connections", "0"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn bench_writes_a_congestion_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("cc.jsonl");
    let o = phoenix(&[
        "--cc-trace",
        trace.to_str().unwrap(),
        "bench",
        "--mib",
        "4",
        "--runs",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&trace).expect("the trace file exists");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON Lines"))
        .collect();
    assert!(
        lines.iter().any(|l| l["name"] == "recovery:metrics_updated"
            && l["data"]["congestion_window"].as_u64().unwrap_or(0) > 0),
        "window updates are traced"
    );
    // A directory cannot be the trace file: bad input, exit code 2.
    let o = phoenix(&[
        "--cc-trace",
        dir.path().to_str().unwrap(),
        "bench",
        "--mib",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("congestion trace file"),
        "{}",
        stderr(&o)
    );
}

/// Runs `phoenix` with a given STOQ_HOME (so client and server share the local CA).
fn phoenix_in(home: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_phoenix"));
    c.args(args).env("STOQ_HOME", home);
    c
}

/// A free UDP port on loopback (bound and released).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn send_missing_file_is_bad_input_naming_it() {
    let o = phoenix(&["send", "/no/such/file.bin", "--to", "localhost:4433"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("/no/such/file.bin"), "{}", stderr(&o));
}

#[test]
fn send_to_bad_address_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    std::fs::write(&file, b"data").unwrap();
    let o = phoenix(&["send", file.to_str().unwrap(), "--to", "nohost:notaport"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("nohost:notaport"), "{}", stderr(&o));
}

#[test]
fn send_to_unreachable_peer_fails_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    std::fs::write(&file, b"data").unwrap();
    let port = free_port().to_string();
    let start = std::time::Instant::now();
    let o = phoenix(&[
        "send",
        file.to_str().unwrap(),
        "--to",
        &format!("[::1]:{port}"),
        "--connect-timeout",
        "1s",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn recv_into_missing_directory_is_bad_input() {
    let o = phoenix(&["recv", "--out", "/no/such/dir", "--listen", "[::1]:0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("/no/such/dir"), "{}", stderr(&o));
}

#[test]
fn file_transfer_is_verified_and_identical() {
    use std::io::{BufRead, BufReader};
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("payload.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let mut recv = phoenix_in(
        home.path(),
        &[
            "--json",
            "recv",
            "--listen",
            "[::]:0",
            "--out",
            out.path().to_str().unwrap(),
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(recv.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let addr: std::net::SocketAddr = first["listening"].as_str().unwrap().parse().unwrap();
    let o = phoenix_in(
        home.path(),
        &[
            "--json",
            "send",
            file.to_str().unwrap(),
            "--to",
            &format!("localhost:{}", addr.port()),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let sent: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sent["receiver"]["ok"], true);
    assert_eq!(sent["bytes"], data.len());
    let got: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(got["verified"], true);
    assert_eq!(got["sha256"], sent["sha256"]);
    assert_eq!(
        recv.wait().unwrap().code(),
        Some(0),
        "recv exits after one file"
    );
    assert_eq!(std::fs::read(out.path().join("payload.bin")).unwrap(), data);
}

#[test]
fn serve_echoes_streams() {
    use std::io::{BufRead, BufReader};
    let home = tempfile::tempdir().unwrap();
    let mut serve = phoenix_in(
        home.path(),
        &[
            "--json",
            "serve",
            "--listen",
            "[::]:0",
            "--connections",
            "1",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let addr: std::net::SocketAddr = first["listening"].as_str().unwrap().parse().unwrap();
    // A client from the SDK, trusting the same local CA.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = phoenix::Phoenix::builder()
            .app_name("phoenix")
            .cert_store(home.path().join("certs"))
            .build()
            .await
            .unwrap();
        let conn = client
            .connect(&format!("localhost:{}", addr.port()))
            .await
            .unwrap();
        let (mut s, mut r) = conn.open_stream().await.unwrap();
        s.write_all(b"echo me").await.unwrap();
        s.finish().await.unwrap();
        assert_eq!(
            r.read_to_end(100).await.unwrap().as_deref(),
            Some(&b"echo me"[..])
        );
        conn.send_data(b"a message for the sink").await.unwrap();
        conn.close(0, b"bye");
    });
    assert_eq!(serve.wait().unwrap().code(), Some(0));
    let rest: Vec<serde_json::Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let totals = rest.last().unwrap();
    assert_eq!(totals["echoed_bytes"], 7);
    assert_eq!(totals["messages"], 1);
}
