//! Congestion control on emulated paths, per backend and controller (issue 6, item 5).
//!
//! Every run goes through stoq-conformance's user-space emulator (this kernel has no
//! netem): a 50 Mbit/s bottleneck with a one-BDP tail-drop queue (250 kB) on the data
//! direction (client to server), 20 ms each way (40 ms RTT), the ACK direction delayed
//! only. One unidirectional stream per connection, client to server, written as fast as
//! the stream takes it; the receiver checks every byte against the bench's pattern
//! (`stoq_bench::pattern`) and counts it. Scenarios:
//!
//! * `loss`: 1 % random loss on the data direction; goodput over `[warmup, seconds]`.
//! * `queue`: no random loss; the queueing delay the flow adds, read from the emulator's
//!   bottleneck (the wait of each delivered datagram behind the bytes queued before it,
//!   `QueueDelayHistogram`) over `[warmup, seconds]`: median and p95. The sender's
//!   smoothed RTT minus the 40 ms base, sampled every 100 ms, is reported beside it.
//! * `fairness`: no random loss; two connections of the same controller from two client
//!   endpoints through one shared relay (`Emulator::start_shared`: one queue for both),
//!   the second started 1 s after the first; Jain's index of the two flows' goodputs over
//!   `[fairness_from, fairness_seconds]`.
//! * `fairness_long`: the same two flows over a longer run (60 s by default), Jain's index
//!   over `[fairness_long_from, fairness_long_seconds]` (30–60 s): the share the flows
//!   converge to, where `fairness` (4–12 s) measures how fast the late flow catches up.
//!   Not in the default scenario list (each run takes a minute).
//! * `blackhole`: no random loss; both directions drop everything from 4 s to 6 s after
//!   the emulator started. Pre-blackhole rate: receiver goodput over [2 s, 4 s).
//!   Recovery time: from the blackhole's end (6 s) to the end of the first 200 ms
//!   receiver window (two consecutive 100 ms samples, windows stepping by 100 ms,
//!   starting at or after 6 s) whose goodput is at least 80 % of the pre-blackhole rate.
//!
//! Samples every 100 ms: bytes received (receiver), congestion window and smoothed RTT
//! from the sender's `ConnectionStats` (works for engine-native and STOQ controllers).
//!
//! Two steps, so a long campaign can be split into short runs and reported at once:
//!
//! ```text
//! emulated_paths run --backends quinn --out /tmp/quinn.json      # raw runs, with series
//! emulated_paths report /tmp/*.json                              # JSON, Markdown, SVGs
//! ```
//!
//! A benchmark, not a test: it prints measured figures and asserts nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use stoq_bench::pattern;
use stoq_bench::stats::{percentile_sorted, Summary};
use stoq_conformance::emulator::{Blackhole, Emulator, Impairments};
use stoq_core::{
    Backend, CongestionAlgorithm, CongestionConfig, CongestionImplementation, ConnectionHandle,
    EndpointSpec, TransportConfig,
};

/// Bottleneck rate, bits per second.
const RATE: u64 = 50_000_000;
/// One-way delay of each direction.
const ONE_WAY: Duration = Duration::from_millis(20);
/// The base RTT.
const BASE_RTT: Duration = Duration::from_millis(40);
/// One BDP at 50 Mbit/s and 40 ms.
const QUEUE_BYTES: usize = (RATE / 8 * 40 / 1000) as usize;
/// Scenarios whose first-seed run is plotted (and keeps its time series in the JSON).
const PLOTTED: [&str; 4] = ["loss", "blackhole", "fairness", "fairness_long"];
/// Sampling interval at receiver and sender.
const SAMPLE: Duration = Duration::from_millis(100);
/// Blackhole placement (from the emulator's start).
const BLACKHOLE_START: Duration = Duration::from_secs(4);
const BLACKHOLE_LEN: Duration = Duration::from_secs(2);
/// Pre-blackhole rate window start.
const PRE_FROM: Duration = Duration::from_secs(2);
/// Recovery window length and threshold.
const RECOVERY_WINDOW: Duration = Duration::from_millis(200);
const RECOVERY_SHARE: f64 = 0.8;
/// Second flow's start in the fairness scenario.
const SECOND_FLOW_AT: Duration = Duration::from_secs(1);

/// `RunArgs::second_flow_at_ms` of raw files written before the flag existed.
fn default_second_flow_at_ms() -> u64 {
    SECOND_FLOW_AT.as_millis() as u64
}
/// `RunArgs::fairness_long_seconds` of raw files written before the flag existed.
fn default_fairness_long_seconds() -> u64 {
    60
}
/// `RunArgs::fairness_long_from` of raw files written before the flag existed.
fn default_fairness_long_from() -> u64 {
    30
}
/// Write size of the sender.
const CHUNK: usize = 64 * 1024;

#[derive(Parser)]
#[command(about = "Congestion control on emulated paths (see the file's documentation)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios and write the raw runs (with their time series) as JSON.
    Run(RunArgs),
    /// Merge raw run files; write the results JSON, the Markdown table and SVG plots.
    Report(ReportArgs),
}

#[derive(clap::Args, Clone, Serialize, Deserialize)]
struct RunArgs {
    /// Backends: quinn, s2n, quiche, uring.
    #[arg(long, value_delimiter = ',', default_value = "quinn,s2n,quiche,uring")]
    backends: Vec<String>,
    /// Controllers as implementation:algorithm (engine|stoq : new_reno|cubic|bbr).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "engine:new_reno,engine:cubic,engine:bbr,stoq:new_reno,stoq:cubic,stoq:bbr"
    )]
    controllers: Vec<String>,
    /// Scenarios: loss, queue, fairness, blackhole, fairness_long (the last is not in
    /// the default list: a minute per run).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "loss,queue,fairness,blackhole"
    )]
    scenarios: Vec<String>,
    /// Runs per cell, each with its own emulator seed.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Length of a `loss` or `queue` run, seconds.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Start of the measurement window in `loss` and `queue` runs, seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Length of a `fairness` run, seconds.
    #[arg(long, default_value_t = 12)]
    fairness_seconds: u64,
    /// Start of the fairness measurement window, seconds.
    #[arg(long, default_value_t = 4)]
    fairness_from: u64,
    /// Length of a `fairness_long` run, seconds.
    #[arg(long, default_value_t = 60)]
    #[serde(default = "default_fairness_long_seconds")]
    fairness_long_seconds: u64,
    /// Start of the `fairness_long` measurement window, seconds.
    #[arg(long, default_value_t = 30)]
    #[serde(default = "default_fairness_long_from")]
    fairness_long_from: u64,
    /// When the second flow of `fairness` and `fairness_long` starts, milliseconds after
    /// the first (the report's definitions assume the default, 1000).
    #[arg(long, default_value_t = 1000)]
    #[serde(default = "default_second_flow_at_ms")]
    second_flow_at_ms: u64,
    /// Length of a `blackhole` run, seconds (the blackhole is 4 s to 6 s).
    #[arg(long, default_value_t = 12)]
    blackhole_seconds: u64,
    /// Seed of the first run (run k uses seed + k).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the raw runs.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Raw run files written by `run`.
    inputs: Vec<PathBuf>,
    /// Results JSON.
    #[arg(long, default_value = "benches/results/emulated-paths.json")]
    json: PathBuf,
    /// Markdown table.
    #[arg(long, default_value = "benches/results/emulated-path.md")]
    md: PathBuf,
    /// Directory for the SVG plots.
    #[arg(long, default_value = "benches/results")]
    svg_dir: PathBuf,
}

/// One 100 ms sample of one flow.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Sample {
    /// Milliseconds since the emulator started.
    t_ms: f64,
    /// Verified payload bytes received so far.
    rx_bytes: u64,
    /// Sender's congestion window, bytes (0 before the connection exists).
    cwnd: u64,
    /// Sender's smoothed RTT, microseconds (0 before the connection exists).
    srtt_us: u64,
}

/// One run of one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    backend: String,
    controller: String,
    scenario: String,
    seed: u64,
    /// Set when the run could not be made (the typed error's text).
    error: Option<String>,
    /// Goodput (sum of flows) over the scenario's measurement window, bit/s.
    goodput_bps: Option<f64>,
    /// Per-flow goodput over the measurement window (fairness), bit/s.
    flow_goodput_bps: Vec<f64>,
    jain: Option<f64>,
    /// Queueing delay in the emulator's bottleneck over the window, ms.
    queue_p50_ms: Option<f64>,
    queue_p95_ms: Option<f64>,
    queue_mean_ms: Option<f64>,
    /// Median of (sender's smoothed RTT - 40 ms) over the window, ms.
    srtt_excess_p50_ms: Option<f64>,
    /// Blackhole: receiver goodput over [2 s, 4 s), bit/s.
    pre_blackhole_bps: Option<f64>,
    /// Blackhole: recovery time, s (`None`: not recovered by the end of the run).
    recovery_s: Option<f64>,
    /// Datagrams the emulator dropped on the data direction: random loss, full queue,
    /// blackhole.
    dropped_loss: u64,
    dropped_queue: u64,
    dropped_blackhole: u64,
    /// Verified payload bytes per flow at the end.
    verified_bytes: Vec<u64>,
    /// Time series per flow.
    series: Vec<Vec<Sample>>,
}

#[derive(Serialize, Deserialize)]
struct RawFile {
    args: RunArgs,
    started: String,
    wall_seconds: f64,
    runs: Vec<RunRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Controller {
    implementation: CongestionImplementation,
    algorithm: CongestionAlgorithm,
}

impl Controller {
    fn parse(s: &str) -> Result<Self, String> {
        let (i, a) = s
            .split_once(':')
            .ok_or_else(|| format!("controller {s:?}: expected implementation:algorithm"))?;
        let implementation = match i {
            "engine" => CongestionImplementation::Engine,
            "stoq" => CongestionImplementation::Stoq,
            _ => {
                return Err(format!(
                    "controller {s:?}: implementation is engine or stoq"
                ))
            }
        };
        let algorithm = match a {
            "new_reno" => CongestionAlgorithm::NewReno,
            "cubic" => CongestionAlgorithm::Cubic,
            "bbr" => CongestionAlgorithm::Bbr,
            _ => {
                return Err(format!(
                    "controller {s:?}: algorithm is new_reno, cubic or bbr"
                ))
            }
        };
        Ok(Controller {
            implementation,
            algorithm,
        })
    }

    fn label(&self) -> String {
        let imp = match self.implementation {
            CongestionImplementation::Stoq => "stoq",
            _ => "engine",
        };
        format!("{imp}:{}", self.algorithm.name())
    }
}

/// A combination that is not run although the backend binds it, and why.
fn not_run_reason(backend: &str, c: Controller) -> Option<String> {
    (backend == "s2n"
        && c.algorithm == CongestionAlgorithm::NewReno
        && c.implementation == CongestionImplementation::Engine)
        .then(|| {
            "s2n-quic has no NewReno: implementation = engine runs STOQ's NewReno through the \
             adapter (stoq-s2n), the same controller as the stoq:new_reno row"
                .to_string()
        })
}

fn backend(name: &str) -> Result<Arc<dyn Backend>, String> {
    Ok(match name {
        "quinn" => Arc::new(stoq_quinn::QuinnBackend),
        "s2n" => Arc::new(stoq_s2n::S2nBackend),
        "quiche" => Arc::new(stoq_quiche::QuicheBackend),
        "uring" => Arc::new(stoq_uring::UringBackend),
        other => return Err(format!("unknown backend {other:?}")),
    })
}

struct Path {
    up: Impairments,
    down: Impairments,
    flows: usize,
    seconds: Duration,
}

/// The two-flow scenarios' run length and measurement start, seconds.
fn two_flow_window(scenario: &str, a: &RunArgs) -> Option<(u64, u64)> {
    match scenario {
        "fairness" => Some((a.fairness_seconds, a.fairness_from)),
        "fairness_long" => Some((a.fairness_long_seconds, a.fairness_long_from)),
        _ => None,
    }
}

fn path(scenario: &str, a: &RunArgs) -> Result<Path, String> {
    let clean = Impairments {
        delay: ONE_WAY,
        rate: Some(RATE),
        queue_bytes: QUEUE_BYTES,
        ..Impairments::default()
    };
    let down = Impairments {
        delay: ONE_WAY,
        ..Impairments::default()
    };
    let secs = Duration::from_secs;
    if let Some((seconds, _)) = two_flow_window(scenario, a) {
        return Ok(Path {
            up: clean,
            down,
            flows: 2,
            seconds: secs(seconds),
        });
    }
    Ok(match scenario {
        "loss" => Path {
            up: Impairments {
                loss: 0.01,
                ..clean
            },
            down,
            flows: 1,
            seconds: secs(a.seconds),
        },
        "queue" => Path {
            up: clean,
            down,
            flows: 1,
            seconds: secs(a.seconds),
        },
        "blackhole" => {
            let hole = vec![Blackhole {
                start: BLACKHOLE_START,
                duration: BLACKHOLE_LEN,
            }];
            Path {
                up: Impairments {
                    blackholes: hole.clone(),
                    ..clean
                },
                down: Impairments {
                    blackholes: hole,
                    ..down
                },
                flows: 1,
                seconds: secs(a.blackhole_seconds),
            }
        }
        other => return Err(format!("unknown scenario {other:?}")),
    })
}

/// Receives one flow: an 8-byte flow index, then the pattern seeded by that index,
/// verified and counted into `counters[index]`.
async fn receive(conn: ConnectionHandle, counters: Arc<Vec<AtomicU64>>) -> Result<(), String> {
    let mut recv = conn.accept_uni().await.map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(8);
    let mut offset = 0u64;
    let mut flow = None;
    while let Some(mut chunk) = recv
        .read_chunk(usize::MAX)
        .await
        .map_err(|e| e.to_string())?
    {
        if flow.is_none() {
            let take = (8 - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk.split_to(take));
            if head.len() < 8 {
                continue;
            }
            let i = u64::from_be_bytes(head[..8].try_into().expect("8 bytes")) as usize;
            if i >= counters.len() {
                return Err(format!("flow index {i} out of range"));
            }
            flow = Some(i);
        }
        let i = flow.expect("set above");
        pattern::verify(i as u64 + 1, offset, &chunk)
            .map_err(|at| format!("flow {i}: content check failed at offset {at}"))?;
        offset += chunk.len() as u64;
        counters[i].fetch_add(chunk.len() as u64, Relaxed);
    }
    Ok(())
}

/// Sends flow `index` on `conn` until `until`.
async fn send(conn: ConnectionHandle, index: usize, until: Instant) -> Result<(), String> {
    let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
    s.write_chunk(Bytes::copy_from_slice(&(index as u64).to_be_bytes()))
        .await
        .map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    let mut buf = vec![0u8; CHUNK];
    while Instant::now() < until {
        pattern::fill(index as u64 + 1, offset, &mut buf);
        s.write_chunk(Bytes::copy_from_slice(&buf))
            .await
            .map_err(|e| e.to_string())?;
        offset += CHUNK as u64;
    }
    let _ = s.reset(0);
    Ok(())
}

/// Goodput between the first sample at or after `from` and the last sample at or before
/// `to`, bit/s.
fn rate_between(series: &[Sample], from: Duration, to: Duration) -> Option<f64> {
    let (f, t) = (from.as_secs_f64() * 1e3, to.as_secs_f64() * 1e3 + 1.0);
    let a = series.iter().find(|s| s.t_ms >= f)?;
    let b = series.iter().rev().find(|s| s.t_ms <= t)?;
    (b.t_ms > a.t_ms).then(|| (b.rx_bytes - a.rx_bytes) as f64 * 8.0 / ((b.t_ms - a.t_ms) / 1e3))
}

fn jain(x: &[f64]) -> Option<f64> {
    let sum: f64 = x.iter().sum();
    let sq: f64 = x.iter().map(|v| v * v).sum();
    (sq > 0.0).then(|| sum * sum / (x.len() as f64 * sq))
}

/// Recovery time after the blackhole (see the module documentation), s.
fn recovery(series: &[Sample], pre_bps: f64) -> Option<f64> {
    let end = (BLACKHOLE_START + BLACKHOLE_LEN).as_secs_f64() * 1e3;
    let steps = (RECOVERY_WINDOW.as_millis() / SAMPLE.as_millis()) as usize;
    let first = series.iter().position(|s| s.t_ms >= end)?;
    (first..series.len().saturating_sub(steps)).find_map(|i| {
        let (a, b) = (series[i], series[i + steps]);
        let bps = (b.rx_bytes - a.rx_bytes) as f64 * 8.0 / ((b.t_ms - a.t_ms) / 1e3);
        (bps >= RECOVERY_SHARE * pre_bps).then(|| (b.t_ms - end) / 1e3)
    })
}

fn empty_record(backend: &str, c: Controller, scenario: &str, seed: u64) -> RunRecord {
    RunRecord {
        backend: backend.into(),
        controller: c.label(),
        scenario: scenario.into(),
        seed,
        error: None,
        goodput_bps: None,
        flow_goodput_bps: Vec::new(),
        jain: None,
        queue_p50_ms: None,
        queue_p95_ms: None,
        queue_mean_ms: None,
        srtt_excess_p50_ms: None,
        pre_blackhole_bps: None,
        recovery_s: None,
        dropped_loss: 0,
        dropped_queue: 0,
        dropped_blackhole: 0,
        verified_bytes: Vec::new(),
        series: Vec::new(),
    }
}

async fn run_once(
    backend_name: &str,
    c: Controller,
    scenario: &str,
    seed: u64,
    a: &RunArgs,
) -> Result<RunRecord, String> {
    let b = backend(backend_name)?;
    let p = path(scenario, a)?;
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).map_err(|e| e.to_string())?;
    let cfg = TransportConfig {
        congestion: CongestionConfig {
            algorithm: c.algorithm,
            implementation: c.implementation,
            custom: None,
        },
        idle_timeout: Duration::from_secs(30),
        ..TransportConfig::default()
    };
    let server = b
        .bind(EndpointSpec::server(
            "[::1]:0".parse().expect("literal"),
            cfg.clone(),
            tls.clone(),
        ))
        .map_err(|e| e.to_string())?;
    let server_addr = server.local_addr().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let emu = if p.flows > 1 {
        Emulator::start_shared(server_addr, p.up.clone(), p.down.clone(), seed).await
    } else {
        Emulator::start(server_addr, p.up.clone(), p.down.clone(), seed).await
    }
    .map_err(|e| e.to_string())?;
    let emu = Arc::new(emu);
    let end = t0 + p.seconds;
    let counters: Arc<Vec<AtomicU64>> = Arc::new((0..p.flows).map(|_| AtomicU64::new(0)).collect());
    let failure: Arc<OnceLock<String>> = Arc::default();
    let server_conns: Arc<std::sync::Mutex<Vec<ConnectionHandle>>> = Arc::default();

    // Receivers: one per accepted connection.
    let accept = tokio::spawn({
        let (server, counters, failure, server_conns) = (
            server.clone(),
            counters.clone(),
            failure.clone(),
            server_conns.clone(),
        );
        let flows = p.flows;
        async move {
            for _ in 0..flows {
                let Ok(conn) = server.accept().await else {
                    return;
                };
                server_conns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn.clone());
                let (counters, failure) = (counters.clone(), failure.clone());
                tokio::spawn(async move {
                    if let Err(e) = receive(conn, counters).await {
                        if !e.contains("closed") && !e.contains("reset") {
                            let _ = failure.set(e);
                        }
                    }
                });
            }
        }
    });

    // Senders: a client endpoint each (its own address), flow k starting after k s.
    let conns: Arc<Vec<OnceLock<ConnectionHandle>>> =
        Arc::new((0..p.flows).map(|_| OnceLock::new()).collect());
    let mut clients = Vec::new();
    let mut senders = Vec::new();
    let stagger = Duration::from_millis(a.second_flow_at_ms);
    for k in 0..p.flows {
        let client = b
            .bind(EndpointSpec::client(emu.addr(), cfg.clone(), tls.clone()))
            .map_err(|e| e.to_string())?;
        clients.push(client.clone());
        let (conns, failure, addr) = (conns.clone(), failure.clone(), emu.addr());
        senders.push(tokio::spawn(async move {
            tokio::time::sleep_until((t0 + stagger * k as u32).into()).await;
            let conn = match client.connect(addr, "localhost").await {
                Ok(c) => c,
                Err(e) => {
                    let _ = failure.set(format!("flow {k}: connect: {e}"));
                    return;
                }
            };
            let _ = conns[k].set(conn.clone());
            if let Err(e) = send(conn, k, end).await {
                let _ = failure.set(format!("flow {k}: send: {e}"));
            }
        }));
    }

    // Sampler, every 100 ms from t0; queue-delay snapshots at the window's edges.
    let (window_from, window_to) = match (scenario, two_flow_window(scenario, a)) {
        (_, Some((_, from))) => (Duration::from_secs(from), p.seconds),
        ("blackhole", None) => (PRE_FROM, BLACKHOLE_START),
        _ => (Duration::from_secs(a.warmup), p.seconds),
    };
    let mut series: Vec<Vec<Sample>> = vec![Vec::new(); p.flows];
    let mut q_from = None;
    let mut q_to = None;
    let mut tick = tokio::time::interval_at(t0.into(), SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let t = now - t0;
        for (k, s) in series.iter_mut().enumerate() {
            let stats = conns[k].get().map(|c| c.stats());
            s.push(Sample {
                t_ms: t.as_secs_f64() * 1e3,
                rx_bytes: counters[k].load(Relaxed),
                cwnd: stats.as_ref().map_or(0, |s| s.congestion_window),
                srtt_us: stats.as_ref().map_or(0, |s| s.rtt.as_micros() as u64),
            });
        }
        if q_from.is_none() && t >= window_from {
            q_from = Some(emu.up.queue_delay.snapshot());
        }
        if q_to.is_none() && t + SAMPLE / 2 >= window_to {
            q_to = Some(emu.up.queue_delay.snapshot());
        }
        if now >= end {
            break;
        }
    }
    for s in &senders {
        s.abort();
    }
    for c in conns.iter().filter_map(|c| c.get()) {
        c.close(0, b"done");
    }
    accept.abort();
    for c in server_conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
    {
        c.close(0, b"done");
    }
    // Let the endpoints wind down before the next run starts.
    for e in clients.iter().chain([&server]) {
        let _ = tokio::time::timeout(Duration::from_secs(1), e.close(0, b"done")).await;
    }
    let mut r = empty_record(backend_name, c, scenario, seed);
    r.dropped_loss = emu.up.dropped_loss.load(Relaxed);
    r.dropped_queue = emu.up.dropped_queue.load(Relaxed);
    r.dropped_blackhole = emu.up.dropped_blackhole.load(Relaxed);
    r.verified_bytes = counters.iter().map(|c| c.load(Relaxed)).collect();
    if let Some(e) = failure.get() {
        r.error = Some(e.clone());
        r.series = series;
        return Ok(r);
    }
    match scenario {
        _ if p.flows > 1 => {
            r.flow_goodput_bps = series
                .iter()
                .filter_map(|s| rate_between(s, window_from, window_to))
                .collect();
            r.goodput_bps = Some(r.flow_goodput_bps.iter().sum());
            r.jain = jain(&r.flow_goodput_bps);
        }
        "blackhole" => {
            r.pre_blackhole_bps = rate_between(&series[0], PRE_FROM, BLACKHOLE_START);
            r.goodput_bps = r.pre_blackhole_bps;
            r.recovery_s = r
                .pre_blackhole_bps
                .and_then(|pre| recovery(&series[0], pre));
        }
        _ => {
            r.goodput_bps = rate_between(&series[0], window_from, window_to);
            if let (Some(from), Some(to)) = (&q_from, &q_to) {
                let q = to.since(from);
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                r.queue_p50_ms = q.percentile(50.0).map(ms);
                r.queue_p95_ms = q.percentile(95.0).map(ms);
                r.queue_mean_ms = q.mean().map(ms);
            }
            let f = window_from.as_secs_f64() * 1e3;
            let mut excess: Vec<f64> = series[0]
                .iter()
                .filter(|s| s.t_ms >= f && s.srtt_us > 0)
                .map(|s| s.srtt_us as f64 / 1e3 - BASE_RTT.as_secs_f64() * 1e3)
                .collect();
            excess.sort_by(f64::total_cmp);
            r.srtt_excess_p50_ms = percentile_sorted(&excess, 50.0);
        }
    }
    r.series = series;
    drop(emu);
    Ok(r)
}

async fn run(a: RunArgs) -> Result<(), String> {
    let controllers: Vec<Controller> = a
        .controllers
        .iter()
        .map(|c| Controller::parse(c))
        .collect::<Result<_, _>>()?;
    for s in &a.scenarios {
        path(s, &a)?;
    }
    for bk in &a.backends {
        backend(bk)?;
    }
    let wall = Instant::now();
    let started = humantime_now();
    let mut runs = Vec::new();
    for bk in &a.backends {
        for &c in &controllers {
            if let Some(reason) = not_run_reason(bk, c) {
                eprintln!("{bk} {}: not run: {reason}", c.label());
                let mut r = empty_record(bk, c, "all", 0);
                r.error = Some(format!("not run: {reason}"));
                runs.push(r);
                continue;
            }
            'scenarios: for s in &a.scenarios {
                for k in 0..u64::from(a.runs) {
                    let seed = a.seed + k;
                    let t = Instant::now();
                    match run_once(bk, c, s, seed, &a).await {
                        Ok(r) => {
                            eprintln!(
                                "{bk} {} {s} seed {seed}: {:.1} s, goodput {} jain {} q50 {} \
                                 q95 {} recovery {} {}",
                                c.label(),
                                t.elapsed().as_secs_f64(),
                                opt(r.goodput_bps.map(|g| g / 1e6)),
                                opt(r.jain),
                                opt(r.queue_p50_ms),
                                opt(r.queue_p95_ms),
                                opt(r.recovery_s),
                                r.error.as_deref().unwrap_or("")
                            );
                            runs.push(r);
                        }
                        // Binding failed: the combination cannot run (e.g. Unsupported).
                        // Record the typed error once for the cell and move on.
                        Err(e) => {
                            eprintln!("{bk} {} {s}: not run: {e}", c.label());
                            let mut r = empty_record(bk, c, "all", seed);
                            r.error = Some(format!("not run: {e}"));
                            runs.push(r);
                            break 'scenarios;
                        }
                    }
                }
            }
        }
    }
    let raw = RawFile {
        args: a.clone(),
        started,
        wall_seconds: wall.elapsed().as_secs_f64(),
        runs,
    };
    std::fs::write(
        &a.out,
        serde_json::to_string(&raw).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", a.out.display()))?;
    eprintln!("wrote {} ({:.0} s wall)", a.out.display(), raw.wall_seconds);
    Ok(())
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

fn humantime_now() -> String {
    stoq_bench::Machine::detect().date
}

// ---------------------------------------------------------------------------------------
// Report

/// Summaries of one cell (backend x controller).
#[derive(Debug, Clone, Default, Serialize)]
struct Cell {
    backend: String,
    controller: String,
    /// Why the cell was not run (typed error text), if it was not.
    not_run: Option<String>,
    /// Runs that failed, with their error.
    failed_runs: Vec<String>,
    loss_goodput_mbps: Option<Summary>,
    loss_share_pct: Option<Summary>,
    queue_goodput_mbps: Option<Summary>,
    queue_p50_ms: Option<Summary>,
    queue_p95_ms: Option<Summary>,
    srtt_excess_p50_ms: Option<Summary>,
    fairness_jain: Option<Summary>,
    fairness_total_mbps: Option<Summary>,
    /// Jain's index of the `fairness_long` runs (the converged share).
    fairness_long_jain: Option<Summary>,
    /// Queue path: datagrams the full bottleneck queue dropped over the whole run, per 100
    /// full-size datagrams' worth of payload delivered (verified bytes / 1452).
    queue_drops_per_100: Option<Summary>,
    blackhole_pre_mbps: Option<Summary>,
    /// Over the runs that recovered.
    blackhole_recovery_s: Option<Summary>,
    blackhole_not_recovered: usize,
}

#[derive(Serialize)]
struct Results {
    description: &'static str,
    definitions: BTreeMap<&'static str, &'static str>,
    run_args: Vec<RunArgs>,
    campaign_wall_seconds: f64,
    started: Vec<String>,
    /// Each part's run time, in the order of `run_args` and `started`.
    part_wall_seconds: Vec<f64>,
    cells: Vec<Cell>,
    /// Every run's scalar results (series dropped).
    runs: Vec<RunRecord>,
    /// The time series of the first seed's run of each cell and scenario (the plotted
    /// run).
    plotted_series: Vec<RunRecord>,
}

fn summary<F: Fn(&RunRecord) -> Option<f64>>(runs: &[&RunRecord], f: F) -> Option<Summary> {
    Summary::of(&runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
}

fn fmt_s(s: &Option<Summary>, digits: usize) -> String {
    match s {
        Some(s) => format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.min, s.max, d = digits),
        None => "–".into(),
    }
}

fn report(a: ReportArgs) -> Result<(), String> {
    let mut raws = Vec::new();
    for p in &a.inputs {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let raw: RawFile =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        raws.push(raw);
    }
    let all: Vec<RunRecord> = raws.iter().flat_map(|r| r.runs.clone()).collect();
    // Cells in a fixed order.
    let backends = ["quinn", "s2n", "quiche", "uring"];
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in &all {
        let k = (r.backend.clone(), r.controller.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let order = |c: &str| {
        [
            "engine:new_reno",
            "engine:cubic",
            "engine:bbr",
            "stoq:new_reno",
            "stoq:cubic",
            "stoq:bbr",
        ]
        .iter()
        .position(|x| *x == c)
        .unwrap_or(99)
    };
    keys.sort_by_key(|(b, c)| (backends.iter().position(|x| x == b).unwrap_or(99), order(c)));
    let mut cells = Vec::new();
    for (b, c) in &keys {
        let runs: Vec<&RunRecord> = all
            .iter()
            .filter(|r| &r.backend == b && &r.controller == c)
            .collect();
        let ok = |s: &str| -> Vec<&RunRecord> {
            runs.iter()
                .copied()
                .filter(|r| r.scenario == s && r.error.is_none())
                .collect()
        };
        let mut cell = Cell {
            backend: b.clone(),
            controller: c.clone(),
            ..Cell::default()
        };
        if let Some(nr) = runs.iter().find(|r| r.scenario == "all") {
            cell.not_run = nr.error.clone();
        }
        cell.failed_runs = runs
            .iter()
            .filter(|r| r.scenario != "all")
            .filter_map(|r| {
                r.error
                    .as_ref()
                    .map(|e| format!("{} seed {}: {e}", r.scenario, r.seed))
            })
            .collect();
        let mbps = |r: &RunRecord| r.goodput_bps.map(|g| g / 1e6);
        let loss = ok("loss");
        cell.loss_goodput_mbps = summary(&loss, mbps);
        cell.loss_share_pct = summary(&loss, |r| r.goodput_bps.map(|g| g / RATE as f64 * 100.0));
        let queue = ok("queue");
        cell.queue_goodput_mbps = summary(&queue, mbps);
        cell.queue_p50_ms = summary(&queue, |r| r.queue_p50_ms);
        cell.queue_p95_ms = summary(&queue, |r| r.queue_p95_ms);
        cell.srtt_excess_p50_ms = summary(&queue, |r| r.srtt_excess_p50_ms);
        cell.queue_drops_per_100 = summary(&queue, |r| {
            // Every run uses the default datagram size (1452 B).
            let full = f64::from(TransportConfig::default().max_udp_payload);
            let delivered = r.verified_bytes.iter().sum::<u64>() as f64 / full;
            (delivered > 0.0).then(|| r.dropped_queue as f64 * 100.0 / delivered)
        });
        let fair = ok("fairness");
        cell.fairness_jain = summary(&fair, |r| r.jain);
        cell.fairness_total_mbps = summary(&fair, mbps);
        cell.fairness_long_jain = summary(&ok("fairness_long"), |r| r.jain);
        let bh = ok("blackhole");
        cell.blackhole_pre_mbps = summary(&bh, |r| r.pre_blackhole_bps.map(|g| g / 1e6));
        cell.blackhole_recovery_s = summary(&bh, |r| r.recovery_s);
        cell.blackhole_not_recovered = bh.iter().filter(|r| r.recovery_s.is_none()).count();
        cells.push(cell);
    }

    // The plotted run of each cell and scenario: the first seed's.
    let mut plotted: Vec<RunRecord> = Vec::new();
    for r in &all {
        if r.scenario == "all" || r.error.is_some() {
            continue;
        }
        if !plotted.iter().any(|p| {
            p.backend == r.backend && p.controller == r.controller && p.scenario == r.scenario
        }) {
            plotted.push(r.clone());
        }
    }
    // Only the plotted scenarios keep a series; times to 0.1 ms keep the file small.
    plotted.retain(|p| PLOTTED.contains(&p.scenario.as_str()));
    for p in &mut plotted {
        for s in p.series.iter_mut().flatten() {
            s.t_ms = (s.t_ms * 10.0).round() / 10.0;
        }
    }
    plotted.retain(|p| {
        let min_seed = all
            .iter()
            .filter(|r| {
                r.backend == p.backend
                    && r.controller == p.controller
                    && r.scenario == p.scenario
                    && r.error.is_none()
            })
            .map(|r| r.seed)
            .min();
        Some(p.seed) == min_seed
    });

    let wall: f64 = raws.iter().map(|r| r.wall_seconds).sum();
    let mut definitions = BTreeMap::new();
    definitions.insert("path", "stoq-conformance user-space emulator: data direction 50 Mbit/s bottleneck, 250 kB (one BDP) tail-drop queue, 20 ms delay; ACK direction 20 ms delay; UDP payload 1452 B");
    definitions.insert("loss", "1 % random loss on the data direction; goodput = verified bytes at the receiver over [warmup, seconds]; share = goodput / 50 Mbit/s");
    definitions.insert("queue", "no random loss; queueing delay = wait of each delivered datagram in the emulator's bottleneck behind earlier bytes (excludes its own 0.23 ms serialisation), histogram in 0.1 ms bins over [warmup, seconds], median and p95; srtt_excess = median over 100 ms samples of the sender's smoothed RTT minus 40 ms; queue_drops_per_100 = datagrams dropped by the full queue over the whole run per 100 full-size datagrams' worth of payload delivered (verified bytes / 1452)");
    definitions.insert("fairness", "no random loss; two connections of the same controller from two client endpoints through one shared relay and queue, the second started 1 s after the first; Jain's index (x1+x2)^2 / (2 (x1^2+x2^2)) of the two flows' receiver goodputs over [fairness_from, fairness_seconds]");
    definitions.insert("fairness_long", "the fairness scenario in a longer run (fairness_long_seconds, 60 s by default); Jain's index over [fairness_long_from, fairness_long_seconds] (30-60 s by default): the share the two flows converge to");
    definitions.insert("blackhole", "no random loss; both directions drop every datagram from 4 s to 6 s after the emulator started; pre-blackhole rate = receiver goodput over [2 s, 4 s); recovery time = end of the first 200 ms receiver window (two consecutive 100 ms samples; windows start at or after 6 s and step by 100 ms) with goodput >= 80 % of the pre-blackhole rate, minus 6 s; runs that never recover are counted as not recovered");
    definitions.insert(
        "summaries",
        "median [min–max] over the runs, one emulator seed per run",
    );
    let results = Results {
        description: "Congestion control on emulated paths (benches/examples/emulated_paths.rs)",
        definitions,
        run_args: raws.iter().map(|r| r.args.clone()).collect(),
        campaign_wall_seconds: wall,
        started: raws.iter().map(|r| r.started.clone()).collect(),
        part_wall_seconds: raws.iter().map(|r| r.wall_seconds).collect(),
        cells: cells.clone(),
        runs: all
            .iter()
            .map(|r| RunRecord {
                series: Vec::new(),
                ..r.clone()
            })
            .collect(),
        plotted_series: plotted.clone(),
    };
    std::fs::write(
        &a.json,
        // Compact: the plotted series make a pretty-printed file twice as large.
        serde_json::to_string(&results).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", a.json.display()))?;

    // SVGs: per controller, the loss path and the blackhole path.
    let mut svgs = Vec::new();
    let controllers: Vec<String> = {
        let mut v: Vec<String> = keys.iter().map(|(_, c)| c.clone()).collect();
        v.sort_by_key(|c| order(c));
        v.dedup();
        v
    };
    for scenario in PLOTTED {
        for c in &controllers {
            let runs: Vec<&RunRecord> = plotted
                .iter()
                .filter(|r| &r.controller == c && r.scenario == scenario)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let name = format!("emulated-{scenario}-{}.svg", c.replace(':', "-"));
            let svg = plot(scenario, c, &runs)?;
            std::fs::write(a.svg_dir.join(&name), svg).map_err(|e| e.to_string())?;
            svgs.push((scenario, c.clone(), name));
        }
    }

    let md = markdown(&raws, &cells, &svgs, wall);
    std::fs::write(&a.md, md).map_err(|e| format!("{}: {e}", a.md.display()))?;
    eprintln!(
        "wrote {}, {} and {} SVGs",
        a.json.display(),
        a.md.display(),
        svgs.len()
    );
    Ok(())
}

/// How many runs each scenario's cells have, and with which seeds, from the records
/// themselves: a campaign may add seeds to some scenarios or rows in extra parts, so the
/// main part's `--runs` does not describe every column. Cells with the same seeds are
/// grouped; a group whose cells all run one algorithm (and are all of that algorithm's
/// rows) is named by it, any other group by its cells.
fn runs_per_scenario(raws: &[RawFile]) -> String {
    let all: Vec<&RunRecord> = raws
        .iter()
        .flat_map(|r| &r.runs)
        .filter(|r| r.scenario != "all")
        .collect();
    let seeds_text = |seeds: &[u64]| -> String {
        // Contiguous runs of seeds as ranges: "1–9", "1–3, 5".
        let mut parts: Vec<String> = Vec::new();
        let mut i = 0;
        while i < seeds.len() {
            let mut j = i;
            while j + 1 < seeds.len() && seeds[j + 1] == seeds[j] + 1 {
                j += 1;
            }
            parts.push(if i == j {
                seeds[i].to_string()
            } else {
                format!("{}–{}", seeds[i], seeds[j])
            });
            i = j + 1;
        }
        let word = if seeds.len() == 1 { "seed" } else { "seeds" };
        format!("{word} {}", parts.join(", "))
    };
    let algorithm = |controller: &str| controller.split(':').nth(1).unwrap_or("").to_string();
    let names = [
        ("loss", "1 % loss"),
        ("queue", "queueing delay"),
        ("fairness", "Jain"),
        ("blackhole", "blackhole"),
        ("fairness_long", "Jain, long"),
    ];
    let mut out: Vec<String> = Vec::new();
    for (scenario, title) in names {
        // (backend, controller) -> sorted, deduplicated seeds, in first-seen order.
        let mut cells: Vec<((String, String), Vec<u64>)> = Vec::new();
        for r in all.iter().filter(|r| r.scenario == scenario) {
            let key = (r.backend.clone(), r.controller.clone());
            match cells.iter_mut().find(|(k, _)| *k == key) {
                Some((_, seeds)) => seeds.push(r.seed),
                None => cells.push((key, vec![r.seed])),
            }
        }
        if cells.is_empty() {
            continue;
        }
        for (_, seeds) in &mut cells {
            seeds.sort_unstable();
            seeds.dedup();
        }
        // (seeds, the cells run with exactly those seeds)
        type Group = (Vec<u64>, Vec<(String, String)>);
        let mut groups: Vec<Group> = Vec::new();
        for (key, seeds) in &cells {
            match groups.iter_mut().find(|(s, _)| s == seeds) {
                Some((_, keys)) => keys.push(key.clone()),
                None => groups.push((seeds.clone(), vec![key.clone()])),
            }
        }
        // The largest group first.
        groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
        let text = if groups.len() == 1 {
            let seeds = &groups[0].0;
            format!("{title} {} ({})", seeds.len(), seeds_text(seeds))
        } else {
            let described: Vec<String> = groups
                .iter()
                .map(|(seeds, keys)| {
                    let alg = algorithm(&keys[0].1);
                    let same_alg = keys.iter().all(|k| algorithm(&k.1) == alg);
                    let all_of_alg =
                        cells.iter().filter(|(k, _)| algorithm(&k.1) == alg).count() == keys.len();
                    let whom = if same_alg && all_of_alg {
                        format!("the `{alg}` rows")
                    } else {
                        keys.iter()
                            .map(|(b, c)| format!("{b} `{c}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    };
                    format!("{} ({}) for {whom}", seeds.len(), seeds_text(seeds))
                })
                .collect();
            format!("{title} {}", described.join(", "))
        };
        out.push(text);
    }
    out.join("; ")
}

fn markdown(
    raws: &[RawFile],
    cells: &[Cell],
    svgs: &[(&str, String, String)],
    wall: f64,
) -> String {
    let mut o = String::new();
    // The header describes the main parts: the first file that ran more than
    // `fairness_long` (whose run count and seeds usually differ), whatever the input order.
    let args = raws
        .iter()
        .map(|r| &r.args)
        .find(|a| a.scenarios.iter().any(|s| s != "fairness_long"))
        .or(raws.first().map(|r| &r.args));
    let _ = writeln!(o, "# Congestion control on emulated paths\n");
    let _ = writeln!(
        o,
        "Made by `benches/examples/emulated_paths.rs`: `run` in {} part(s) (each one \
         backend's runs of some controllers and scenarios, one part at a time with nothing else \
         running on the machine), then `report`; started {}, on 2-core machines (each part's \
         start is in the JSON); campaign wall time {:.0} min {:02.0} s (sum of the \
         parts' run time). Every run's figures and the plotted time series: \
         [emulated-paths.json](emulated-paths.json).\n",
        raws.len(),
        raws.iter().map(|r| r.started.as_str()).min().unwrap_or("?"),
        (wall / 60.0).floor(),
        wall % 60.0
    );
    if let Some(a) = args {
        let _ = writeln!(
            o,
            "Path: stoq-conformance's user-space emulator, data direction 50 Mbit/s with a \
             one-BDP (250 kB) tail-drop queue and 20 ms delay, ACK direction 20 ms (40 ms RTT); \
             UDP payload 1452 B; one stream per connection, every byte checked against the \
             bench pattern at the receiver. Runs per cell, one emulator seed each: {}. Each \
             figure is **median [min–max]** over a cell's runs.\n",
            runs_per_scenario(raws)
        );
        let _ = writeln!(
            o,
            "* **1 % loss**: 1 % random loss on the data direction; goodput at the receiver over \
             seconds {}–{}, as a share of 50 Mbit/s.\n\
             * **queueing delay**: no random loss; each delivered datagram's wait in the \
             emulator's bottleneck queue behind earlier bytes, over seconds {}–{} (p50 / p95); \
             `srtt−40` is the median of the sender's smoothed RTT minus 40 ms (100 ms samples).\n\
             * **Jain**: no random loss; two connections of the same controller through one \
             shared queue, the second started 1 s later; Jain's index of their goodputs over \
             seconds {}–{} (1.0 = equal shares, 0.5 = one flow takes everything).\n\
             * **blackhole**: no random loss; both directions drop everything from 4 s to 6 s. \
             Recovery = time from the blackhole's end to the end of the first 200 ms receiver \
             window (windows step by 100 ms) whose goodput is ≥ 80 % of the goodput over \
             [2 s, 4 s).",
            a.warmup, a.seconds, a.warmup, a.seconds, a.fairness_from, a.fairness_seconds
        );
        if let Some(l) = raws
            .iter()
            .map(|r| &r.args)
            .find(|a| a.scenarios.iter().any(|s| s == "fairness_long"))
        {
            let _ = writeln!(
                o,
                "* **Jain, long**: the same two flows in {} s runs; Jain's index over seconds \
                 {}–{}, the share they converge to (the {}–{} s figure measures how fast the \
                 late flow catches up).",
                l.fairness_long_seconds,
                l.fairness_long_from,
                l.fairness_long_seconds,
                a.fairness_from,
                a.fairness_seconds
            );
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(
        o,
        "Commands (the binary built first, then each part run alone, without compiling; \
         `bench-lock` where the machine has it):\n\n\
         ```text\n\
         cargo build --release -p stoq-bench --example emulated_paths\n\
         B=$CARGO_TARGET_DIR/release/examples/emulated_paths\n\
         $B run --backends quinn --controllers engine:new_reno,engine:cubic,engine:bbr --out quinn-engi.json\n\
         $B run --backends quinn --controllers stoq:new_reno,stoq:cubic,stoq:bbr --out quinn-stoq.json\n\
         # ... the same for s2n, quiche and uring\n\
         $B run --backends quinn --controllers engine:cubic,engine:bbr,stoq:cubic,stoq:bbr --scenarios fairness_long --runs 2 --out long-quinn.json\n\
         # more seeds for the columns the targets judge (the same for s2n, quiche and uring):\n\
         $B run --backends quinn --scenarios loss --runs 6 --seed 4 --out loss-quinn.json\n\
         $B run --backends quinn --controllers engine:bbr,stoq:bbr --scenarios fairness --runs 5 --seed 4 --out fair-bbr-quinn.json\n\
         $B run --backends quinn --controllers engine:bbr,stoq:bbr --scenarios fairness_long --runs 3 --seed 3 --out long-bbr-quinn.json\n\
         $B report *.json\n\
         ```\n"
    );
    let _ = writeln!(
        o,
        "Controllers: `stoq:*` are STOQ's NewReno (RFC 9002), CUBIC (RFC 9438) and BBRv3 \
         (draft-ietf-ccwg-bbr-06) through each backend's adapter; `engine:*` are the engine's \
         own: quinn-proto 0.11's NewReno, CUBIC and BBR (marked experimental, a port of \
         Chromium's BBRv1 sender; uring runs quinn-proto too), s2n-quic 1.91's CUBIC and \
         BBRv2, quiche 0.30's Reno, CUBIC and BBRv2 (gcongestion).\n"
    );
    let _ = writeln!(
        o,
        "| backend | controller | 1 % loss: goodput, Mbit/s | share of 50 Mbit/s, % | queueing delay p50 / p95, ms | srtt−40, ms | Jain, 2 flows | Jain, long | blackhole recovery, s |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    for c in cells {
        if let Some(nr) = &c.not_run {
            let _ = writeln!(
                o,
                "| {} | {} | {} | | | | | | |",
                c.backend, c.controller, nr
            );
            continue;
        }
        let rec = match (&c.blackhole_recovery_s, c.blackhole_not_recovered) {
            (s, 0) => fmt_s(s, 2),
            (None, n) => format!("not recovered ({n} runs)"),
            (s, n) => format!("{}; {n} runs not recovered", fmt_s(s, 2)),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
            c.backend,
            c.controller,
            fmt_s(&c.loss_goodput_mbps, 1),
            fmt_s(&c.loss_share_pct, 1),
            fmt_s(&c.queue_p50_ms, 1),
            fmt_s(&c.queue_p95_ms, 1),
            fmt_s(&c.srtt_excess_p50_ms, 1),
            fmt_s(&c.fairness_jain, 3),
            fmt_s(&c.fairness_long_jain, 3),
            rec
        );
    }
    let _ = writeln!(
        o,
        "\nGoodput is counted between 100 ms sampler ticks; a figure above 50 Mbit/s (a share \
         over 100 %) is the timing error of the user-space relay and the sampler on 2 shared \
         cores (deliveries or reads that lag behind a window's first tick land inside it), a few \
         per cent at most on the 2 s pre-blackhole window, less on the 6 s windows."
    );
    let _ = writeln!(o, "\n## Targets\n");
    let _ = writeln!(
        o,
        "Issue 6: on the 1 % loss path BBR reaches at least 80 % of the bottleneck (CUBIC \
         reported beside it); two flows of the same controller share with Jain's index at \
         least 0.9. Judged on the medians:\n"
    );
    for c in cells.iter().filter(|c| c.not_run.is_none()) {
        let mut notes = Vec::new();
        if c.controller.ends_with(":bbr") {
            if let Some(s) = &c.loss_share_pct {
                notes.push(format!(
                    "BBR share {:.1} % ({})",
                    s.median,
                    if s.median >= 80.0 { "met" } else { "NOT met" }
                ));
            }
        }
        let met = |j: &Summary| if j.median >= 0.9 { "met" } else { "NOT met" };
        if let Some(j) = &c.fairness_jain {
            notes.push(format!("Jain {:.3} ({})", j.median, met(j)));
        }
        if let Some(j) = &c.fairness_long_jain {
            notes.push(format!("Jain, long {:.3} ({})", j.median, met(j)));
        }
        let _ = writeln!(o, "* {} {}: {}", c.backend, c.controller, notes.join("; "));
    }
    let _ = writeln!(o, "\n## Other figures\n");
    let _ = writeln!(
        o,
        "Queue drops: on the queue path (no random loss), datagrams the full bottleneck queue \
         dropped over the whole run, per 100 full-size datagrams' worth of payload delivered \
         (verified bytes / 1452 B): what a controller costs the path in retransmissions.\n"
    );
    let _ = writeln!(
        o,
        "| backend | controller | clean-path goodput, Mbit/s | queue drops per 100 datagrams delivered | 2-flow total, Mbit/s | pre-blackhole goodput, Mbit/s |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for c in cells.iter().filter(|c| c.not_run.is_none()) {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            c.backend,
            c.controller,
            fmt_s(&c.queue_goodput_mbps, 1),
            fmt_s(&c.queue_drops_per_100, 1),
            fmt_s(&c.fairness_total_mbps, 1),
            fmt_s(&c.blackhole_pre_mbps, 1)
        );
    }
    let failed: Vec<String> = cells
        .iter()
        .flat_map(|c| {
            c.failed_runs
                .iter()
                .map(move |f| format!("* {} {}: {f}", c.backend, c.controller))
        })
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(o, "\n## Failed runs (left out of the summaries)\n");
        for f in failed {
            let _ = writeln!(o, "{f}");
        }
    }
    let _ = writeln!(
        o,
        "\n## Plots\n\nCongestion window (sender's `ConnectionStats`) and goodput (receiver) \
         every 100 ms, the first seed's run, one line per backend:\n"
    );
    for (scenario, c, name) in svgs {
        let _ = writeln!(o, "* {scenario}, {c}: [{name}]({name})");
    }
    o
}

/// One plotted flow: its name, goodput points (s, Mbit/s), window points (s, kB).
type PlotLine = (String, Vec<(f64, f64)>, Vec<(f64, f64)>);

/// One SVG: goodput over time (top) and congestion window over time (bottom), one line
/// per backend (per backend and flow in the fairness scenario). Drawn with plotters,
/// already a dependency of stoq-bench for its matrix chart; text is left to the SVG
/// viewer's fonts.
fn plot(scenario: &str, controller: &str, runs: &[&RunRecord]) -> Result<String, String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| format!("drawing {scenario} {controller}: {e}");
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (900, 620)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (top, body) = root.split_vertically(40);
        let title = match scenario {
            "loss" => "50 Mbit/s, 40 ms RTT, 1 % loss",
            "blackhole" => "50 Mbit/s, 40 ms RTT, blackhole 4–6 s",
            "fairness_long" => "50 Mbit/s, 40 ms RTT, two flows sharing the queue, long run",
            _ => "50 Mbit/s, 40 ms RTT, two flows sharing the queue",
        };
        top.draw(&Text::new(
            format!("{controller} — {title} (first seed's run)"),
            (10, 12),
            ("sans-serif", 16).into_font(),
        ))
        .map_err(|e| err(&e))?;
        let (g_area, c_area) = body.split_vertically(290);
        let t_max = runs
            .iter()
            .flat_map(|r| r.series.iter().flatten())
            .map(|s| s.t_ms / 1e3)
            .fold(1.0f64, f64::max);
        let mut lines: Vec<PlotLine> = Vec::new();
        for r in runs {
            for (k, s) in r.series.iter().enumerate() {
                let name = if r.series.len() > 1 {
                    format!("{} flow {}", r.backend, k + 1)
                } else {
                    r.backend.clone()
                };
                let goodput: Vec<(f64, f64)> = s
                    .windows(2)
                    .map(|w| {
                        let dt = (w[1].t_ms - w[0].t_ms) / 1e3;
                        (
                            w[1].t_ms / 1e3,
                            (w[1].rx_bytes - w[0].rx_bytes) as f64 * 8.0 / dt / 1e6,
                        )
                    })
                    .collect();
                let cwnd: Vec<(f64, f64)> = s
                    .iter()
                    .filter(|x| x.cwnd > 0)
                    .map(|x| (x.t_ms / 1e3, x.cwnd as f64 / 1e3))
                    .collect();
                lines.push((name, goodput, cwnd));
            }
        }
        let g_max = lines
            .iter()
            .flat_map(|l| l.1.iter().map(|p| p.1))
            .fold(60.0f64, f64::max)
            * 1.05;
        let c_max = lines
            .iter()
            .flat_map(|l| l.2.iter().map(|p| p.1))
            .fold(100.0f64, f64::max)
            * 1.05;
        for (area, ymax, desc, pick) in [
            (&g_area, g_max, "goodput, Mbit/s (100 ms)", 1usize),
            (&c_area, c_max, "congestion window, kB", 2usize),
        ] {
            let mut chart = ChartBuilder::on(area)
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..t_max, 0f64..ymax)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc("time since the emulator started, s")
                .y_desc(desc)
                .axis_desc_style(("sans-serif", 12))
                .label_style(("sans-serif", 11))
                .draw()
                .map_err(|e| err(&e))?;
            if pick == 1 {
                // The bottleneck rate.
                chart
                    .draw_series(LineSeries::new(
                        [(0.0, RATE as f64 / 1e6), (t_max, RATE as f64 / 1e6)],
                        BLACK.stroke_width(1),
                    ))
                    .map_err(|e| err(&e))?;
            }
            for (i, (name, g, c)) in lines.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let data = if pick == 1 { g } else { c };
                chart
                    .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 11))
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(buf)
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(a) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(run(a))),
        Cmd::Report(a) => report(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
