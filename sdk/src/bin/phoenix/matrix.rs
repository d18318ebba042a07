//! `phoenix matrix`: every compiled-in backend (and the reference rows: each engine driven
//! directly, kernel TCP, TLS over TCP) x every scenario, client and server in separate
//! processes, then each STOQ row against its engine's direct row in alternating runs;
//! writes results JSON, a Markdown report and an SVG chart.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stoq_bench::{report, scenario, Driver, MatrixOptions, Scale};

use crate::CliError;

/// Arguments of `phoenix matrix`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shrink every scenario (one run each) for a smoke test.
    #[arg(long)]
    quick: bool,
    /// Runs per cell (default: each scenario's own count).
    #[arg(long)]
    runs: Option<usize>,
    /// Only these scenarios (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Only these rows (comma-separated: stoq-<backend>, phoenix-quinn, quinn-direct,
    /// s2n-direct, quiche-direct, tcp, tls-tcp).
    #[arg(long, value_delimiter = ',')]
    drivers: Vec<String>,
    /// Directory for results.json, report.md and chart.svg.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// Stop starting new cells after this long, e.g. "9m".
    #[arg(long, value_parser = humantime::parse_duration)]
    budget: Option<Duration>,
    /// Rounds of the paired overhead comparison (each STOQ row against its engine driven
    /// directly, alternating run by run) on the goodput scenarios; 0 turns it off.
    #[arg(long)]
    paired_rounds: Option<usize>,
    /// Do not pin the paired runs' client and servers to disjoint CPUs (they are pinned by
    /// default: scheduler placement otherwise adds more noise than the overhead measured).
    #[arg(long)]
    no_pin: bool,
}

fn bench_err(e: stoq_bench::BenchError) -> CliError {
    match e {
        stoq_bench::BenchError::Usage(m) => CliError::input(m),
        other => CliError::failed(other.to_string()),
    }
}

pub async fn run(global: &crate::common::Global, args: Args, json: bool) -> Result<(), CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::failed(e.to_string()))?;
    let mut server_command = vec![OsString::from(exe)];
    // Server processes run on the same kind of runtime as this (client) process.
    if let Some(n) = global.worker_threads {
        server_command.push(OsString::from("--worker-threads"));
        server_command.push(OsString::from(n.to_string()));
    }
    server_command.push(OsString::from("matrix-server"));
    let mut options = MatrixOptions::new(server_command);
    if args.quick {
        options = MatrixOptions::quick(options.server_command.clone());
        options.scale = Scale::Quick;
    }
    if let Some(runs) = args.runs {
        if runs == 0 {
            return Err(CliError::input("--runs must be at least 1"));
        }
        options.runs = Some(runs);
    }
    if let Some(b) = args.budget {
        options.budget = b;
    }
    if let Some(r) = args.paired_rounds {
        options.paired_rounds = r;
    }
    options.pin_paired = !args.no_pin;
    let scenarios = if args.scenarios.is_empty() {
        scenario::builtin()
    } else {
        let names: Vec<&str> = args.scenarios.iter().map(String::as_str).collect();
        scenario::builtin_named(&names).map_err(bench_err)?
    };
    let backends: Vec<Arc<dyn stoq_core::Backend>> = phoenix::backend_names()
        .into_iter()
        .map(phoenix::backend)
        .collect::<Result<_, _>>()?;
    let sdk_row = Driver::Sdk(Arc::new(PhoenixRow(phoenix::backend(
        phoenix::DEFAULT_BACKEND,
    )?)));
    let mut drivers = Driver::defaults(backends);
    // The SDK on the default backend: what an application sees, including pooled connects.
    drivers.insert(1, sdk_row);
    if !args.drivers.is_empty() {
        let known: Vec<String> = drivers.iter().map(Driver::name).collect();
        for d in &args.drivers {
            if !known.contains(d) {
                return Err(CliError::input(format!(
                    "unknown driver {d:?}; available: {}",
                    known.join(", ")
                )));
            }
        }
        drivers.retain(|d| args.drivers.contains(&d.name()));
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::input(format!("--out {}: {e}", args.out.display())))?;

    let bar = crate::progress(!json, (drivers.len() * scenarios.len()) as u64, "cells");
    let results = stoq_bench::run_matrix(&options, drivers, scenarios, |p| {
        if let Some(bar) = &bar {
            bar.set_length(p.total as u64);
            bar.set_position(p.completed as u64);
            bar.set_message(p.message.clone());
        }
    })
    .await
    .map_err(bench_err)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let files = report::write_all(&results, &args.out).map_err(bench_err)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).map_err(|e| CliError::failed(e.to_string()))?
        );
    } else {
        println!("{}", report::markdown(&results));
        println!(
            "wrote {}, {} and {}",
            files.json.display(),
            files.markdown.display(),
            files.svg.display()
        );
    }
    Ok(())
}

/// The hidden server process the matrix runner starts.
pub async fn server(
    global: &crate::common::Global,
    cli: stoq_bench::ServerCli,
) -> Result<(), CliError> {
    let backend = global.backend.clone();
    let args = cli
        .into_args(|| phoenix::backend(&backend))
        .map_err(bench_err)?;
    stoq_bench::server_main(args).await.map_err(bench_err)
}

/// The matrix row for the Phoenix SDK: connections come from Phoenix's pool.
#[derive(Debug)]
struct PhoenixRow(Arc<dyn stoq_core::Backend>);

struct PhoenixConnector(phoenix::Phoenix);

#[async_trait::async_trait]
impl stoq_bench::driver::Connector for PhoenixConnector {
    async fn connect(
        &self,
        addr: std::net::SocketAddr,
        server_name: &str,
    ) -> Result<stoq_core::ConnectionHandle, String> {
        let conn = self
            .0
            .connect_addr(addr, server_name)
            .await
            .map_err(|e| e.to_string())?;
        Ok(conn.connection().clone())
    }
}

#[async_trait::async_trait]
impl stoq_bench::driver::ConnectorFactory for PhoenixRow {
    fn name(&self) -> String {
        format!("phoenix-{}", self.0.name())
    }

    fn description(&self) -> String {
        format!(
            "the Phoenix SDK on {}: connections from Phoenix's pool, streams through STOQ",
            self.0.name()
        )
    }

    fn backend(&self) -> Arc<dyn stoq_core::Backend> {
        self.0.clone()
    }

    async fn build(
        &self,
        transport: Arc<dyn stoq_core::Transport>,
        tls: stoq_core::TlsMaterial,
    ) -> Result<Arc<dyn stoq_bench::driver::Connector>, String> {
        let phoenix = phoenix::Phoenix::builder()
            .backend_impl(self.0.clone())
            .transport(transport)
            .config(stoq_bench::bench_config())
            .tls(tls)
            .build()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(PhoenixConnector(phoenix)))
    }
}
