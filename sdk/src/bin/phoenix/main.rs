//! `phoenix`: STOQ's command-line tool.
//!
//! Every command prints human-readable text, or one JSON document with `--json`.
//! Exit codes: 0 success; 1 the operation failed (unreachable peer, failed contract,
//! verification error); 2 bad input (bad address, missing file, unknown backend, bad
//! flags — clap uses 2 for its own usage errors too).

mod bench;
mod common;
mod conformance;
mod matrix;
mod serve;
mod transfer;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// STOQ's command-line tool: serve, send, receive, benchmark and check QUIC engines.
#[derive(Parser, Debug)]
#[command(name = "phoenix", version, about)]
struct Cli {
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    global: common::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Echo and sink server: echoes every stream, receives and counts every message.
    Serve(serve::Args),
    /// Send a file to a `phoenix recv`, with a progress bar; the receiver verifies its
    /// SHA-256.
    Send(transfer::SendArgs),
    /// Receive files from `phoenix send`, verifying each one's SHA-256.
    Recv(transfer::RecvArgs),
    /// Run the conformance suite against a backend (or a client/server pair) and print a
    /// pass / fail / unsupported report.
    Conformance(conformance::Args),
    /// Measure bulk goodput at the receiver, CPU time per GB and RTT, against a loopback
    /// server process or a remote `phoenix serve`.
    Bench(bench::Args),
    /// The benchmark server: `phoenix bench` starts one on loopback; run it on a remote
    /// machine for `phoenix bench --to HOST:PORT`.
    BenchServer(bench::ServerArgs),
    /// Run every compiled-in backend and the reference rows (quinn direct, kernel TCP,
    /// TLS over TCP) through every benchmark scenario; write JSON, Markdown and SVG.
    Matrix(matrix::Args),
    /// The server process `phoenix matrix` starts.
    #[command(hide = true)]
    MatrixServer(stoq_bench::ServerCli),
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// 1 for an operation that failed, 2 for bad input.
    pub code: u8,
    /// What to tell the user.
    pub message: String,
}

impl CliError {
    /// Bad input (exit code 2).
    pub fn input(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }

    /// A failed operation (exit code 1).
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<stoq_core::Error> for CliError {
    fn from(e: stoq_core::Error) -> Self {
        use stoq_core::Error as E;
        match e {
            E::Config { .. } | E::ConfigFile { .. } | E::InvalidAddress(_) | E::Tls(_) => {
                CliError::input(e.to_string())
            }
            other => CliError::failed(other.to_string()),
        }
    }
}

/// Resolves `host:port` to the first address, with errors that name the input.
pub async fn resolve(input: &str) -> Result<std::net::SocketAddr, CliError> {
    if let Ok(addr) = input.parse() {
        return Ok(addr);
    }
    let (host, port) = input
        .rsplit_once(':')
        .ok_or_else(|| CliError::input(format!("bad address {input:?}: expected HOST:PORT")))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(CliError::input(format!(
            "bad address {input:?}: expected HOST:PORT with a port from 0 to 65535"
        )));
    }
    tokio::net::lookup_host(input)
        .await
        .map_err(|e| CliError::input(format!("cannot resolve {input:?}: {e}")))?
        .next()
        .ok_or_else(|| CliError::input(format!("{input:?} resolves to no address")))
}

/// A progress bar when `show` (text mode), else `None`.
pub fn progress(show: bool, len: u64, unit: &str) -> Option<indicatif::ProgressBar> {
    show.then(|| {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{bar:30}} {{pos}}/{{len}} {unit} {{msg}}"
            ))
            .expect("static template"),
        );
        bar
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics go to stderr, filtered by `RUST_LOG` (e.g. `RUST_LOG=stoq_quiche=debug`);
    // nothing is printed without it. `try_init`: a second subscriber is not an error.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let mut builder = match cli.global.worker_threads {
        Some(0) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("phoenix: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(&cli.global, args, cli.json).await,
            Command::Send(args) => transfer::send(&cli.global, args, cli.json).await,
            Command::Recv(args) => transfer::recv(&cli.global, args, cli.json).await,
            Command::Conformance(args) => conformance::run(&cli.global, args, cli.json).await,
            Command::Bench(args) => bench::run(&cli.global, args, cli.json).await,
            Command::BenchServer(args) => bench::server(&cli.global, args).await,
            Command::Matrix(args) => matrix::run(&cli.global, args, cli.json).await,
            Command::MatrixServer(args) => matrix::server(&cli.global, args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phoenix: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
