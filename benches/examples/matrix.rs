//! Runs the benchmark matrix without the `phoenix` CLI (which is the supported front end:
//! `phoenix bench`). Uses quinn and s2n as the STOQ backends and `stoq-bench-server`
//! (built next to this example) as the server process.
//!
//! ```sh
//! cargo build --release -p stoq-bench --bins --examples
//! target/release/examples/matrix --out bench-results            # full default matrix
//! target/release/examples/matrix --quick --scenarios bulk,rpc_1k_100 --drivers tcp
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use stoq_bench::{report, run_matrix, scenario, Driver, MatrixOptions, Scale};
use stoq_core::Backend;

#[derive(Parser, Debug)]
struct Args {
    /// Shrink every scenario by its quick_scale and run each cell once.
    #[arg(long)]
    quick: bool,
    /// Comma-separated scenario names (default: all built-in).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Comma-separated driver names: stoq-quinn, stoq-s2n, quinn-direct, s2n-direct,
    /// quiche-direct, tcp, tls-tcp (default: all).
    #[arg(long, value_delimiter = ',')]
    drivers: Vec<String>,
    /// Runs per cell (default: each scenario's own).
    #[arg(long)]
    runs: Option<usize>,
    /// Multiply every scenario's sizes and durations by this factor.
    #[arg(long)]
    scale: Option<f64>,
    /// Time budget in seconds.
    #[arg(long, default_value_t = 540)]
    budget: u64,
    /// Directory for results.json, report.md and chart.svg.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// The server program (default: stoq-bench-server next to this example's directory).
    #[arg(long)]
    server: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let server = match args.server {
        Some(s) => s,
        None => {
            let exe = std::env::current_exe()?;
            let dir = exe.parent().and_then(|p| p.parent()).ok_or("no exe dir")?;
            dir.join("stoq-bench-server")
        }
    };
    let mut options = if args.quick {
        MatrixOptions::quick(vec![server.into()])
    } else {
        MatrixOptions::new(vec![server.into()])
    };
    if let Some(f) = args.scale {
        options.scale = Scale::Factor(f);
    }
    if args.runs.is_some() {
        options.runs = args.runs;
    }
    options.budget = Duration::from_secs(args.budget);
    let scenarios = if args.scenarios.is_empty() {
        scenario::builtin()
    } else {
        let names: Vec<&str> = args.scenarios.iter().map(String::as_str).collect();
        scenario::builtin_named(&names)?
    };
    let mut drivers = Driver::defaults([
        Arc::new(stoq_quinn::QuinnBackend) as Arc<dyn Backend>,
        Arc::new(stoq_s2n::S2nBackend),
    ]);
    if !args.drivers.is_empty() {
        drivers.retain(|d| args.drivers.contains(&d.name()));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = rt.block_on(run_matrix(&options, drivers, scenarios, |p| {
        eprintln!(
            "[{:>5.1}s {:>3}/{}] {}",
            p.elapsed.as_secs_f64(),
            p.completed,
            p.total,
            p.message
        );
    }))?;
    let files = report::write_all(&results, &args.out)?;
    println!("{}", report::markdown(&results));
    eprintln!(
        "wrote {}, {}, {}",
        files.json.display(),
        files.markdown.display(),
        files.svg.display()
    );
    Ok(())
}
