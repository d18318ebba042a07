//! Runs the matrix: for each driver, spawn its server process, run every scenario's runs,
//! record per-run values and summaries, and stay within a time budget.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq_core::TlsMaterial;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::client::{self, Ctx, RunData};
use crate::driver::{Applicability, Driver, SERVER_NAME};
use crate::net::{dialer, Dialer, Session};
use crate::paired::PairedOverhead;
use crate::results::{
    metric_meta, CellResult, CellStatus, DriverInfo, Machine, MatrixResults, Metric,
};
use crate::scenario::{Scenario, Transfer, Workload};
use crate::stats::Summary;
use crate::{BenchError, ServerCli};

/// How scenarios are sized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// As written in the scenario files.
    Full,
    /// Each scenario shrunk by its own `quick_scale` (CI smoke tests).
    Quick,
    /// Every scenario multiplied by this factor.
    Factor(f64),
}

impl Scale {
    fn factor(self, s: &Scenario) -> f64 {
        match self {
            Scale::Full => 1.0,
            Scale::Quick => s.quick_scale,
            Scale::Factor(f) => f,
        }
    }

    fn label(self) -> String {
        match self {
            Scale::Full => "full".into(),
            Scale::Quick => "quick".into(),
            Scale::Factor(f) => format!("x{f}"),
        }
    }
}

/// Options of a matrix run.
#[derive(Debug, Clone)]
pub struct MatrixOptions {
    /// The server process: program and leading arguments, e.g. `[phoenix, "bench-server"]`.
    /// The runner appends `--driver D [--backend B] --bind ADDR --cert-dir DIR`
    /// ([`ServerCli`]); the program must call [`server_main`](crate::server_main).
    pub server_command: Vec<OsString>,
    /// Scenario sizing.
    pub scale: Scale,
    /// Runs per cell; `None` takes each scenario's `runs`.
    pub runs: Option<usize>,
    /// The whole matrix's time budget. Each cell gets a fair share of what remains; a cell
    /// stops early (keeping at least one run) when its next run would overrun its share,
    /// and cells are skipped once the budget is spent.
    pub budget: Duration,
    /// A run that takes longer fails (and the driver's server is restarted).
    pub run_timeout: Duration,
    /// Where servers listen: `[::1]:0` (IPv6 loopback, ephemeral port) by default.
    pub bind: SocketAddr,
    /// The certificate store shared with the server processes; `None`: a fresh local CA
    /// in a temporary directory, removed afterwards.
    pub cert_dir: Option<PathBuf>,
    /// Run one small unrecorded transfer on each driver before its first cell.
    pub warmup: bool,
    /// Rounds of the paired overhead comparison ([`crate::paired`]) per STOQ row and
    /// scenario; 0 turns it off. It runs after the matrix, within the same budget.
    pub paired_rounds: usize,
    /// The scenarios compared in pairs (by name; absent ones are ignored).
    pub paired_scenarios: Vec<String>,
    /// Pin the paired runs' client (this process) and servers to disjoint CPUs
    /// ([`crate::affinity`]), taking scheduler placement out of the comparison.
    pub pin_paired: bool,
    /// A run fails once this process's resident memory has grown by more than this many
    /// bytes since the run started (the client side of every driver runs here): a runaway
    /// engine fails its own cell and its driver is restarted, instead of the kernel killing
    /// the whole matrix. Growth, not size: memory a runaway held may stay resident after it
    /// is freed (the allocator keeps it), and must not fail the runs after it. `None`: no
    /// limit.
    pub memory_limit: Option<u64>,
}

/// The default [`MatrixOptions::memory_limit`]: 4 GiB of growth in one run, well above any
/// run's needs (the largest client measured stays under 200 MB) and far below this
/// machine's 24 GiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 4 << 30;

/// This process's resident set size in bytes (`VmRSS` in `/proc/self/status`), `None`
/// where that file does not exist.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// One run of `workload`, failed when it takes longer than `options.run_timeout` or this
/// process outgrows `options.memory_limit` (see [`MatrixOptions::memory_limit`]).
async fn guarded_run(
    options: &MatrixOptions,
    ctx: &Ctx,
    workload: &Workload,
) -> Result<RunData, String> {
    tokio::select! {
        outcome = tokio::time::timeout(options.run_timeout, client::run(ctx, workload)) => {
            outcome.map_err(|_| format!("timed out after {} s", options.run_timeout.as_secs()))?
        }
        grown = memory_exceeded(options.memory_limit) => Err(format!(
            "the client's resident memory grew by {:.1} GiB during the run (limit {:.1} GiB); \
             the driver is restarted, which drops its engine's tasks",
            grown as f64 / f64::from(1u32 << 30),
            options.memory_limit.unwrap_or(0) as f64 / f64::from(1u32 << 30),
        )),
    }
}

/// Resolves (with the growth seen) once this process's resident memory has grown by more
/// than `limit` since the call; never resolves when `limit` is `None` or the size cannot
/// be read. Checks every 100 ms: at the fastest growth seen (about 100 MB/s) that
/// overshoots by about 10 MB.
async fn memory_exceeded(limit: Option<u64>) -> u64 {
    let (Some(limit), Some(base)) = (limit, resident_bytes()) else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        match resident_bytes() {
            Some(rss) if rss.saturating_sub(base) > limit => return rss - base,
            Some(_) => {}
            None => return std::future::pending().await,
        }
    }
}

impl MatrixOptions {
    /// Defaults: full scale, each scenario's run count, a 9-minute budget, 120 s per run,
    /// `[::1]:0`, a temporary CA, warm-up on.
    pub fn new(server_command: Vec<OsString>) -> Self {
        MatrixOptions {
            server_command,
            scale: Scale::Full,
            runs: None,
            budget: Duration::from_secs(9 * 60),
            run_timeout: Duration::from_secs(120),
            bind: "[::1]:0".parse().expect("literal"),
            cert_dir: None,
            warmup: true,
            paired_rounds: crate::paired::DEFAULT_ROUNDS,
            paired_scenarios: crate::paired::default_scenarios(),
            pin_paired: true,
            memory_limit: Some(DEFAULT_MEMORY_LIMIT),
        }
    }

    /// The smallest matrix: quick scale, one run per cell, 30 s per run, no warm-up, one
    /// paired round.
    pub fn quick(server_command: Vec<OsString>) -> Self {
        MatrixOptions {
            scale: Scale::Quick,
            runs: Some(1),
            run_timeout: Duration::from_secs(30),
            warmup: false,
            paired_rounds: 1,
            ..MatrixOptions::new(server_command)
        }
    }
}

/// A progress report, given to the callback before each run and when a cell ends.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Runs done (or given up) so far.
    pub completed: usize,
    /// Runs planned in all (n/a cells count none).
    pub total: usize,
    /// The current driver.
    pub driver: String,
    /// The current scenario.
    pub scenario: String,
    /// A short line, e.g. `stoq-quinn / bulk: run 2 of 5`.
    pub message: String,
    /// Time since the matrix started.
    pub elapsed: Duration,
}

/// Runs `scenarios` on every driver in `drivers`, each driver's server in a child process
/// started from `options.server_command`, calling `progress` as it goes.
///
/// Call it on a multi-threaded tokio runtime (2 worker threads on this project's
/// 2-core machine, as the server uses). A failed run does not stop the matrix: its cell is
/// [`CellStatus::Failed`] with the reason. Errors are returned only for what prevents
/// any measurement (bad options, no certificates).
pub async fn run_matrix(
    options: &MatrixOptions,
    drivers: Vec<Driver>,
    scenarios: Vec<Scenario>,
    mut progress: impl FnMut(&Progress),
) -> Result<MatrixResults, BenchError> {
    if options.server_command.is_empty() {
        return Err(BenchError::Usage("server_command is empty".into()));
    }
    if drivers.is_empty() || scenarios.is_empty() {
        return Err(BenchError::Usage("no drivers or no scenarios".into()));
    }
    if let Some(0) = options.runs {
        return Err(BenchError::Usage("runs must be at least 1".into()));
    }
    let machine = Machine::detect();
    let start = Instant::now();
    let deadline = start + options.budget;
    let scenarios: Vec<Scenario> = scenarios
        .iter()
        .map(|s| s.scaled(options.scale.factor(s)))
        .collect();
    for s in &scenarios {
        s.validate().map_err(|reason| BenchError::Scenario {
            name: s.name.clone(),
            reason,
        })?;
    }

    let temp;
    let cert_dir: &Path = match &options.cert_dir {
        Some(d) => d,
        None => {
            temp = tempfile::Builder::new()
                .prefix("stoq-bench-certs")
                .tempdir()
                .map_err(|e| BenchError::io("creating a temporary certificate store", e))?;
            temp.path()
        }
    };
    // Create the CA and leaf before any server process opens the store.
    let tls = stoq_crypto::CertStore::open(cert_dir)?.material(&[SERVER_NAME])?;

    let planned = |d: &Driver, s: &Scenario| match d.applicability(s) {
        Applicability::Runs { .. } => options.runs.unwrap_or(s.runs),
        Applicability::NotApplicable(_) => 0,
    };
    let paired_scenarios: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| options.paired_scenarios.contains(&s.name))
        .collect();
    let paired_runs =
        crate::paired::pairs(&drivers).len() * paired_scenarios.len() * options.paired_rounds * 2;
    let total: usize = drivers
        .iter()
        .flat_map(|d| scenarios.iter().map(move |s| planned(d, s)))
        .sum::<usize>()
        + paired_runs;
    let mut remaining_cells = drivers
        .iter()
        .flat_map(|d| scenarios.iter().map(move |s| planned(d, s)))
        .filter(|&p| p > 0)
        .count();
    let mut completed = 0usize;
    let mut cells = Vec::new();

    for driver in &drivers {
        let name = driver.name();
        let mut live: Option<Live> = None;
        for scenario in &scenarios {
            let runs_planned = planned(driver, scenario);
            let mut cell = CellResult {
                driver: name.clone(),
                scenario: scenario.name.clone(),
                status: CellStatus::Measured,
                reason: None,
                note: None,
                runs_planned,
                wall_seconds: 0.0,
                metrics: Vec::new(),
                server_reports: Vec::new(),
            };
            match driver.applicability(scenario) {
                Applicability::NotApplicable(reason) => {
                    cell.status = CellStatus::NotApplicable;
                    cell.reason = Some(reason);
                    cells.push(cell);
                    continue;
                }
                Applicability::Runs { note } => cell.note = note,
            }
            let mut report = |completed: usize, message: String| {
                progress(&Progress {
                    completed,
                    total,
                    driver: name.clone(),
                    scenario: scenario.name.clone(),
                    message,
                    elapsed: start.elapsed(),
                })
            };
            let now = Instant::now();
            if now >= deadline {
                cell.status = CellStatus::Skipped;
                cell.reason = Some(format!(
                    "time budget of {} s spent",
                    options.budget.as_secs()
                ));
                completed += runs_planned;
                remaining_cells -= 1;
                report(
                    completed,
                    format!("{name} / {}: skipped (budget)", scenario.name),
                );
                cells.push(cell);
                continue;
            }
            let share = (deadline - now) / remaining_cells.max(1) as u32;
            remaining_cells -= 1;
            let cell_start = Instant::now();

            if live.is_none() {
                report(completed, format!("{name}: starting server"));
                match Live::start(options, driver, cert_dir, &tls).await {
                    Ok(l) => live = Some(l),
                    Err(e) => {
                        cell.status = CellStatus::Failed;
                        cell.reason = Some(format!("could not start: {e}"));
                        completed += runs_planned;
                        cells.push(cell);
                        continue;
                    }
                }
            }
            let l = live.as_ref().expect("started above");

            let mut values: Vec<(String, Vec<f64>)> = Vec::new();
            let mut done = 0;
            for run in 0..runs_planned {
                if run > 0 {
                    let per_run = cell_start.elapsed() / run as u32;
                    if cell_start.elapsed() + per_run > share {
                        break;
                    }
                }
                report(
                    completed,
                    format!(
                        "{name} / {}: run {} of {runs_planned}",
                        scenario.name,
                        run + 1
                    ),
                );
                let ctx = Ctx {
                    dialer: l.dialer.clone(),
                    control: l.control.clone(),
                    multiplexed: driver.multiplexed(),
                    seed: run_seed(&name, &scenario.name, run),
                };
                if let Err(e) = guarded_run(options, &ctx, &scenario.workload)
                    .await
                    .map(|data| {
                        record(&mut values, &data);
                        cell.server_reports.push(data.server);
                    })
                {
                    cell.status = CellStatus::Failed;
                    cell.reason = Some(format!("run {}: {e}", run + 1));
                }
                completed += 1;
                done += 1;
                if cell.status == CellStatus::Failed {
                    break;
                }
            }
            completed += runs_planned - done;
            cell.metrics = values
                .into_iter()
                .map(|(key, values)| {
                    let (label, unit, higher_is_better) = metric_meta(&key);
                    Metric {
                        summary: Summary::of(&values),
                        key,
                        label,
                        unit: unit.to_string(),
                        higher_is_better,
                        values,
                    }
                })
                .collect();
            cell.wall_seconds = cell_start.elapsed().as_secs_f64();
            if cell.status == CellStatus::Failed {
                // Start afresh for the next cell: the server may hold a half-done run.
                if let Some(l) = live.take() {
                    l.stop().await;
                }
            }
            let status = match cell.status {
                CellStatus::Failed => "FAILED",
                _ => "done",
            };
            report(completed, format!("{name} / {}: {status}", scenario.name));
            cells.push(cell);
        }
        if let Some(l) = live.take() {
            l.stop().await;
        }
    }

    let paired = if options.paired_rounds > 0 {
        let ctx = PairedCtx {
            options,
            cert_dir,
            tls: &tls,
            deadline,
            start,
            total,
        };
        run_paired(
            &ctx,
            &drivers,
            &paired_scenarios,
            &mut completed,
            &mut progress,
        )
        .await
    } else {
        Vec::new()
    };

    Ok(MatrixResults {
        format: 1,
        machine,
        scale: options.scale.label(),
        elapsed_seconds: start.elapsed().as_secs_f64(),
        budget_seconds: options.budget.as_secs_f64(),
        drivers: drivers
            .iter()
            .map(|d| DriverInfo {
                name: d.name(),
                kind: d.kind(),
                backend: d.backend_name(),
                description: d.description(),
            })
            .collect(),
        scenarios,
        cells,
        paired,
    })
}

/// What the paired phase shares with the rest of the matrix.
struct PairedCtx<'a> {
    options: &'a MatrixOptions,
    cert_dir: &'a Path,
    tls: &'a TlsMaterial,
    deadline: Instant,
    start: Instant,
    total: usize,
}

/// The paired phase ([`crate::paired`]): each STOQ row against its engine's direct row,
/// both servers up, alternating run by run on `scenarios`.
async fn run_paired(
    cx: &PairedCtx<'_>,
    drivers: &[Driver],
    scenarios: &[&Scenario],
    completed: &mut usize,
    progress: &mut impl FnMut(&Progress),
) -> Vec<PairedOverhead> {
    let options = cx.options;
    let mut paired = Vec::new();
    for (stoq, direct) in crate::paired::pairs(drivers) {
        let name = format!("{} vs {}", stoq.name(), direct.name());
        let mut report = |completed: usize, scenario: &str, message: String| {
            progress(&Progress {
                completed,
                total: cx.total,
                driver: name.clone(),
                scenario: scenario.to_string(),
                message,
                elapsed: cx.start.elapsed(),
            })
        };
        let mut results: Vec<PairedOverhead> = scenarios
            .iter()
            .map(|s| PairedOverhead::new(stoq, direct, s))
            .collect();
        let done_before = *completed;
        let lives = if Instant::now() >= cx.deadline {
            Err(format!(
                "time budget of {} s spent",
                options.budget.as_secs()
            ))
        } else {
            report(*completed, "", format!("{name}: starting both servers"));
            match Live::start(options, stoq, cx.cert_dir, cx.tls).await {
                Ok(a) => match Live::start(options, direct, cx.cert_dir, cx.tls).await {
                    Ok(b) => Ok((a, b)),
                    Err(e) => {
                        a.stop().await;
                        Err(format!("could not start: {e}"))
                    }
                },
                Err(e) => Err(format!("could not start: {e}")),
            }
        };
        match lives {
            Err(why) => results
                .iter_mut()
                .for_each(|r| r.failure = Some(why.clone())),
            Ok((a, b)) => {
                let pinned = if options.pin_paired {
                    match pin_paired(&[&a.server, &b.server]) {
                        Ok((restore, placement)) => {
                            results
                                .iter_mut()
                                .for_each(|r| r.placement = Some(placement.clone()));
                            Some(restore)
                        }
                        Err(why) => {
                            let note = format!("not pinned: {why}");
                            results
                                .iter_mut()
                                .for_each(|r| r.placement = Some(note.clone()));
                            None
                        }
                    }
                } else {
                    None
                };
                for (scenario, result) in scenarios.iter().zip(&mut results) {
                    let began = Instant::now();
                    for round in 0..options.paired_rounds {
                        if !crate::paired::round_fits(began, round, cx.deadline) {
                            result.failure = Some(format!(
                                "time budget of {} s spent after {round} rounds",
                                options.budget.as_secs()
                            ));
                            break;
                        }
                        report(
                            *completed,
                            &scenario.name,
                            format!(
                                "{name} / {}: paired round {} of {}",
                                scenario.name,
                                round + 1,
                                options.paired_rounds
                            ),
                        );
                        let (first, second) = if crate::paired::stoq_first(round) {
                            ((&a, stoq), (&b, direct))
                        } else {
                            ((&b, direct), (&a, stoq))
                        };
                        let metric = result.metric.clone();
                        let outcome =
                            match paired_run(options, first.0, first.1, scenario, round, &metric)
                                .await
                            {
                                Ok(x) => paired_run(
                                    options, second.0, second.1, scenario, round, &metric,
                                )
                                .await
                                .map(|y| (x, y)),
                                Err(e) => Err(e),
                            };
                        *completed += 2;
                        match outcome {
                            Ok((x, y)) => {
                                let (s, d) = if std::ptr::eq(first.1, stoq) {
                                    (x, y)
                                } else {
                                    (y, x)
                                };
                                result.record(s, d);
                            }
                            Err(e) => {
                                result.failure = Some(format!("round {}: {e}", round + 1));
                                break;
                            }
                        }
                    }
                }
                if let Some(all) = pinned {
                    if let Err(e) = crate::affinity::pin_process(0, &all) {
                        tracing::warn!(error = %e, "could not restore this process's CPU affinity");
                    }
                }
                a.stop().await;
                b.stop().await;
            }
        }
        *completed = done_before + scenarios.len() * options.paired_rounds * 2;
        report(*completed, "", format!("{name}: paired runs done"));
        paired.extend(results);
    }
    paired
}

/// Pins this process (the client) to one half of its CPUs and the `servers` to the
/// other ([`crate::affinity`]); returns the CPUs to restore afterwards and the placement
/// for the report, or why pinning was not possible.
fn pin_paired(servers: &[&ServerProcess]) -> Result<(Vec<usize>, String), String> {
    let all =
        crate::affinity::allowed_cpus().map_err(|e| format!("reading the CPU affinity: {e}"))?;
    let (client, server) = crate::affinity::split(&all)
        .ok_or_else(|| format!("{} CPU(s) allowed, pinning needs 2", all.len()))?;
    for s in servers {
        let pid = s
            .child
            .id()
            .ok_or_else(|| "a server process has already exited".to_string())?;
        crate::affinity::pin_process(pid, &server)
            .map_err(|e| format!("pinning server process {pid}: {e}"))?;
    }
    crate::affinity::pin_process(0, &client)
        .map_err(|e| format!("pinning the client process: {e}"))?;
    Ok((
        all,
        format!("client pinned to CPU {client:?}, servers to CPU {server:?}"),
    ))
}

/// One run of a paired round: `driver`'s value of `metric` on `scenario`.
async fn paired_run(
    options: &MatrixOptions,
    live: &Live,
    driver: &Driver,
    scenario: &Scenario,
    round: usize,
    metric: &str,
) -> Result<f64, String> {
    let ctx = Ctx {
        dialer: live.dialer.clone(),
        control: live.control.clone(),
        multiplexed: driver.multiplexed(),
        seed: run_seed(&driver.name(), &scenario.name, 1000 + round),
    };
    let data = guarded_run(options, &ctx, &scenario.workload)
        .await
        .map_err(|e| format!("{}: {e}", driver.name()))?;
    data.values
        .iter()
        .find(|(k, _)| k == metric)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("{}: no {metric} value", driver.name()))
}

fn record(values: &mut Vec<(String, Vec<f64>)>, data: &RunData) {
    for (k, v) in &data.values {
        match values.iter_mut().find(|(key, _)| key == k) {
            Some((_, vs)) => vs.push(*v),
            None => values.push((k.clone(), vec![*v])),
        }
    }
}

fn run_seed(driver: &str, scenario: &str, run: usize) -> u64 {
    // FNV-1a: distinct, reproducible seeds per cell and run.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in driver
        .bytes()
        .chain([0])
        .chain(scenario.bytes())
        .chain((run as u64).to_le_bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A driver's server process and the client side connected to it.
struct Live {
    server: ServerProcess,
    dialer: Arc<dyn Dialer>,
    control: Arc<dyn Session>,
}

impl Live {
    async fn start(
        options: &MatrixOptions,
        driver: &Driver,
        cert_dir: &Path,
        tls: &TlsMaterial,
    ) -> Result<Live, BenchError> {
        let server = ServerProcess::spawn(options, driver, cert_dir).await?;
        let result = async {
            let dialer = dialer(driver, server.addr, tls)?;
            let control = dialer
                .connect_control()
                .await
                .map_err(|e| BenchError::io("connecting the control session", e))?;
            if options.warmup {
                let ctx = Ctx {
                    dialer: dialer.clone(),
                    control: control.clone(),
                    multiplexed: driver.multiplexed(),
                    seed: 0x5741_524d,
                };
                let warm = Workload::Transfer(Transfer {
                    connections: 1,
                    streams_per_connection: 1,
                    bytes_per_stream: 16 << 20,
                    concurrency: 1,
                });
                guarded_run(options, &ctx, &warm)
                    .await
                    .map_err(|e| BenchError::Protocol(format!("warm-up failed: {e}")))?;
            }
            Ok::<_, BenchError>((dialer, control))
        }
        .await;
        match result {
            Ok((dialer, control)) => Ok(Live {
                server,
                dialer,
                control,
            }),
            Err(e) => {
                server.stop().await;
                Err(e)
            }
        }
    }

    async fn stop(self) {
        self.control.close().await;
        self.dialer.shutdown().await;
        self.server.stop().await;
    }
}

/// A server child process.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    _stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl ServerProcess {
    async fn spawn(
        options: &MatrixOptions,
        driver: &Driver,
        cert_dir: &Path,
    ) -> Result<ServerProcess, BenchError> {
        let (program, prefix) = options
            .server_command
            .split_first()
            .ok_or_else(|| BenchError::Usage("server_command is empty".into()))?;
        let mut child = Command::new(program)
            .args(prefix)
            .args(ServerCli::to_args(driver, options.bind, cert_dir))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::io(format!("starting {}", program.to_string_lossy()), e))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line)).await;
        let addr = match read {
            Ok(Ok(_)) => line
                .trim()
                .strip_prefix("LISTENING ")
                .and_then(|a| a.parse::<SocketAddr>().ok()),
            _ => None,
        };
        match addr {
            Some(addr) => Ok(ServerProcess {
                child,
                stdin,
                _stdout: stdout,
                addr,
            }),
            None => {
                let _ = child.kill().await;
                let status = child.wait().await.ok();
                Err(BenchError::Server(format!(
                    "{} {} did not print LISTENING <addr> (got {:?}, exit {:?})",
                    program.to_string_lossy(),
                    driver.name(),
                    line.trim(),
                    status
                )))
            }
        }
    }

    async fn stop(mut self) {
        // Closing stdin asks the server to exit; kill it if it does not.
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_matrix_future_is_send_with_a_send_callback() {
        fn assert_send<T: Send>(_: &T) {}
        let options = MatrixOptions::quick(vec!["x".into()]);
        let mut calls = 0usize;
        let fut = run_matrix(
            &options,
            vec![Driver::KernelTcp],
            crate::scenario::builtin(),
            |_| calls += 1,
        );
        assert_send(&fut);
    }

    #[tokio::test]
    async fn bad_options_are_refused_up_front() {
        let scenarios = crate::scenario::builtin();
        let empty = MatrixOptions::quick(vec![]);
        assert!(matches!(
            run_matrix(&empty, vec![Driver::KernelTcp], scenarios.clone(), |_| {}).await,
            Err(BenchError::Usage(_))
        ));
        let mut zero = MatrixOptions::quick(vec!["x".into()]);
        zero.runs = Some(0);
        assert!(
            run_matrix(&zero, vec![Driver::KernelTcp], scenarios.clone(), |_| {})
                .await
                .is_err()
        );
        let ok = MatrixOptions::quick(vec!["x".into()]);
        assert!(run_matrix(&ok, vec![], scenarios, |_| {}).await.is_err());
    }

    #[test]
    fn seeds_differ_per_cell_and_run() {
        let a = run_seed("tcp", "bulk", 0);
        assert_ne!(a, run_seed("tcp", "bulk", 1));
        assert_ne!(a, run_seed("tls-tcp", "bulk", 0));
        assert_eq!(a, run_seed("tcp", "bulk", 0));
    }

    #[test]
    fn resident_memory_is_read_and_grows_with_an_allocation() {
        let before = resident_bytes().expect("Linux has /proc/self/status");
        assert!(before > 0);
        let big = vec![1u8; 64 << 20];
        let after = resident_bytes().unwrap();
        assert!(
            after >= before + (32 << 20),
            "{before} -> {after} after touching 64 MiB"
        );
        drop(big);
    }

    #[tokio::test]
    async fn the_memory_guard_trips_on_growth_above_its_limit_only() {
        // 16 MiB of growth allowed: 64 MiB touched during the watch trips it.
        let guard = tokio::spawn(memory_exceeded(Some(16 << 20)));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let big = vec![1u8; 64 << 20];
        let grown = tokio::time::timeout(Duration::from_secs(5), guard)
            .await
            .expect("trips")
            .unwrap();
        assert!(grown > 16 << 20, "{grown}");
        // The same size already resident when the watch starts: no growth, no trip.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), memory_exceeded(Some(16 << 20)))
                .await
                .is_err()
        );
        drop(big);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), memory_exceeded(None))
                .await
                .is_err()
        );
    }

    #[test]
    fn scale_labels() {
        assert_eq!(Scale::Full.label(), "full");
        assert_eq!(Scale::Quick.label(), "quick");
        assert_eq!(Scale::Factor(0.5).label(), "x0.5");
    }
}
