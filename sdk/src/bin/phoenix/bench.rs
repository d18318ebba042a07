//! `phoenix bench`: bulk goodput on one connection and one stream (or `--connections N`
//! in parallel, one stream each), measured and verified at the receiver; against a
//! loopback server process (default) or a remote `phoenix serve`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use stoq_bench::loopback::{self, median, RunReport};

use crate::CliError;

/// Arguments of `phoenix bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A remote `phoenix serve` to measure against; by default a server process is
    /// started on loopback.
    #[arg(long)]
    to: Option<String>,
    /// Payload per run, in MiB (split evenly across the connections).
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Connections per run, all from one client endpoint and started together, one stream
    /// each. With more than one, a run's goodput is the verified bytes of all of them over
    /// the longest connection's receive time, and its CPU figures are the processes' own
    /// over the run (the receiver's: the longest of the connections' windows).
    #[arg(long, default_value_t = 1)]
    connections: u64,
    /// Number of runs (each on a fresh connection); the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Loopback address (and so address family) of the local server.
    #[arg(long, default_value = "[::1]:0")]
    bind: SocketAddr,
    /// Run each connection's sender as a task on the runtime's worker threads (as the
    /// server runs its receivers) instead of on the thread that blocks on `main`, which is
    /// not a worker. Where the application runs decides how often threads park and wake
    /// each other, so it moves the system-call count (`benches/syscalls.sh`'s `-task`
    /// rows) and, on few cores, goodput.
    #[arg(long)]
    sender_tasks: bool,
}

/// Arguments of the hidden `phoenix bench-server` (the loopback server process).
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "[::1]:0")]
    bind: SocketAddr,
}

/// Serves the benchmark protocol, printing `LISTENING <addr>`; exits when stdin closes.
pub async fn server(global: &crate::common::Global, args: ServerArgs) -> Result<(), CliError> {
    let backend = phoenix::backend(&global.backend)?;
    let tls = cert_material()?;
    let server = loopback::bind_server(&backend, args.bind, tls)?;
    println!("LISTENING {}", server.local_addr()?);
    std::io::stdout()
        .flush()
        .map_err(|e| CliError::failed(e.to_string()))?;
    tokio::select! {
        r = loopback::serve(server) => r?,
        _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        }) => {}
    }
    Ok(())
}

fn cert_material() -> Result<stoq_core::TlsMaterial, CliError> {
    stoq_crypto_store()
        .and_then(|s| s.material(&["localhost"]))
        .map_err(|e| CliError::failed(format!("certificates: {e}")))
}

fn stoq_crypto_store() -> Result<stoq_crypto::CertStore, stoq_crypto::CryptoError> {
    stoq_crypto::CertStore::open_default()
}

/// Kills the server process when the benchmark ends, however it ends.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(
    backend: &str,
    worker_threads: Option<usize>,
    args: &Args,
) -> Result<(ServerProcess, SocketAddr), CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::failed(e.to_string()))?;
    let mut command = Command::new(exe);
    command.args([
        "bench-server",
        "--backend",
        backend,
        "--bind",
        &args.bind.to_string(),
    ]);
    // The server process runs on the same kind of runtime as the client.
    if let Some(n) = worker_threads {
        command.args(["--worker-threads", &n.to_string()]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::failed(format!("starting the server process: {e}")))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let child = ServerProcess(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| CliError::failed(e.to_string()))?;
    let addr = line
        .strip_prefix("LISTENING ")
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| CliError::failed(format!("server process did not start: {line:?}")))?;
    Ok((child, addr))
}

pub async fn run(global: &crate::common::Global, args: Args, json: bool) -> Result<(), CliError> {
    if args.runs == 0 || args.mib == 0 || args.connections == 0 {
        return Err(CliError::input(
            "--runs, --mib and --connections must be at least 1",
        ));
    }
    let backend = phoenix::backend(&global.backend)?;
    // Create the certificate store before a server process opens it.
    let tls = cert_material()?;
    let (_server, addr) = match &args.to {
        Some(to) => (None, crate::resolve(to).await?),
        None => {
            let (child, addr) = spawn_server(&global.backend, global.worker_threads, &args)?;
            (Some(child), addr)
        }
    };
    let mut config = loopback::bench_config();
    global.apply_cc_trace(&mut config)?;
    let client = backend.bind(stoq_core::EndpointSpec::client(addr, config, tls))?;
    let bytes = args.mib << 20;
    let bar = crate::progress(!json, args.runs as u64, "runs");
    let mut runs: Vec<RunReport> = Vec::new();
    for i in 0..args.runs {
        let r = run_parallel(
            &client,
            addr,
            bytes,
            args.connections,
            i as u64,
            args.sender_tasks,
        )
        .await
        .map_err(|e| CliError::failed(format!("run {}: {e}", i + 1)))?;
        if !r.receiver.verified || r.receiver.bytes != bytes {
            return Err(CliError::failed(format!(
                "run {}: receiver got {} of {bytes} bytes, verified={}, {:?}",
                i + 1,
                r.receiver.bytes,
                r.receiver.verified,
                r.receiver.error
            )));
        }
        if let Some(bar) = &bar {
            bar.println(format!(
                "run {}: {:.2} Gbit/s goodput at the receiver ({} MiB in {:.2} s, verified), \
                 rtt {} us, lost {} packets",
                i + 1,
                r.receiver.goodput_bps / 1e9,
                args.mib,
                r.receiver.seconds,
                r.rtt_micros,
                r.packets_lost
            ));
            bar.inc(1);
        }
        runs.push(r);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let gbps: Vec<f64> = runs.iter().map(|r| r.receiver.goodput_bps / 1e9).collect();
    let gb = bytes as f64 / 1e9;
    let recv_cpu: Vec<f64> = runs.iter().map(|r| r.receiver.cpu_seconds / gb).collect();
    let send_cpu: Vec<f64> = runs.iter().map(|r| r.sender_cpu_seconds / gb).collect();
    let rtts: Vec<f64> = runs.iter().map(|r| r.rtt_micros as f64).collect();
    let med = median(&gbps).unwrap_or(0.0);
    let min = gbps.iter().copied().fold(f64::INFINITY, f64::min);
    let max = gbps.iter().copied().fold(0.0, f64::max);
    if json {
        let doc = serde_json::json!({
            "backend": global.backend,
            "peer": addr.to_string(),
            "scenario": format!("bulk, {} connection(s), 1 stream each", args.connections),
            "connections": args.connections,
            "bytes_per_run": bytes,
            "goodput_gbps": { "median": med, "min": min, "max": max, "runs": gbps },
            "receiver_cpu_seconds_per_gb": median(&recv_cpu),
            "sender_cpu_seconds_per_gb": median(&send_cpu),
            "rtt_us_median": median(&rtts),
            "runs": runs,
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        println!(
            "{}: goodput {:.2} Gbit/s at the receiver (median of {} runs, min {:.2}, max {:.2}); \
             CPU per GB: receiver {:.2} s, sender {:.2} s; RTT {:.0} us",
            global.backend,
            med,
            runs.len(),
            min,
            max,
            median(&recv_cpu).unwrap_or(0.0),
            median(&send_cpu).unwrap_or(0.0),
            median(&rtts).unwrap_or(0.0),
        );
    }
    Ok(())
}

/// One run: `bytes` split across `connections` parallel connections of `client` (each its
/// own seed), folded into one report (see `Args::connections`); with `tasks`, each
/// connection's sender is a task of its own (see `Args::sender_tasks`).
async fn run_parallel(
    client: &std::sync::Arc<dyn stoq_core::Transport>,
    addr: SocketAddr,
    bytes: u64,
    connections: u64,
    run: u64,
    tasks: bool,
) -> Result<RunReport, stoq_core::Error> {
    let one = |len: u64, seed: u64| {
        let client = client.clone();
        async move {
            if !tasks {
                return loopback::run_once(&client, addr, len, seed).await;
            }
            let task =
                tokio::spawn(async move { loopback::run_once(&client, addr, len, seed).await });
            task.await.unwrap_or_else(|e| {
                Err(stoq_core::Error::config(
                    "bench",
                    format!("sender task: {e}"),
                ))
            })
        }
    };
    if connections == 1 {
        return one(bytes, 0x5eed_0000 + run).await;
    }
    let cpu0 = stoq_bench::usage::cpu_time();
    let each = bytes / connections;
    // The tasks are spawned when first polled: all at once, by `try_join_all`.
    let runs = futures_util::future::try_join_all((0..connections).map(|c| {
        let len = if c + 1 == connections {
            bytes - each * (connections - 1)
        } else {
            each
        };
        one(len, 0x5eed_0000 + (run << 8) + c)
    }))
    .await?;
    let sender_cpu_seconds = (stoq_bench::usage::cpu_time() - cpu0).as_secs_f64();
    let mut total = runs[0].clone();
    let rtts: Vec<f64> = runs.iter().map(|r| r.rtt_micros as f64).collect();
    for r in &runs[1..] {
        let (t, x) = (&mut total.receiver, &r.receiver);
        t.bytes += x.bytes;
        t.seconds = t.seconds.max(x.seconds);
        t.verified &= x.verified;
        if t.error.is_none() {
            t.error.clone_from(&x.error);
        }
        t.cpu_seconds = t.cpu_seconds.max(x.cpu_seconds);
        total.handshake_seconds = total.handshake_seconds.max(r.handshake_seconds);
        total.packets_lost += r.packets_lost;
    }
    total.receiver.goodput_bps = if total.receiver.seconds > 0.0 {
        total.receiver.bytes as f64 * 8.0 / total.receiver.seconds
    } else {
        0.0
    };
    total.sender_cpu_seconds = sender_cpu_seconds;
    total.rtt_micros = median(&rtts).unwrap_or(0.0) as u128;
    Ok(total)
}
