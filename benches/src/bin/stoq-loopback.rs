//! `stoq-loopback`: a bulk transfer over loopback on one QUIC connection and one stream,
//! client and server in separate processes, printing the goodput measured at the receiver.
//!
//! Certificates come from STOQ's self-managed store (created on first use under the user's
//! config directory, or `$STOQ_HOME`), which both processes open.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use clap::Parser;
use stoq_bench::loopback::{self, median, RunReport};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Loopback QUIC goodput, measured and verified at the receiver"
)]
struct Args {
    /// Backend (engine) to use.
    #[arg(long, default_value = phoenix::DEFAULT_BACKEND)]
    backend: String,
    /// Payload per run, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Number of runs (each on a fresh connection); the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Address family of the loopback path.
    #[arg(long, default_value = "[::1]:0")]
    bind: SocketAddr,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Internal: run as the server process and print its address.
    #[arg(long, hide = true)]
    serve: bool,
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = if args.serve {
        rt.block_on(serve(&args))
    } else {
        rt.block_on(client(&args))
    };
    if let Err(e) = result {
        eprintln!("stoq-loopback: {e}");
        std::process::exit(1);
    }
}

async fn serve(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let backend = phoenix::backend(&args.backend)?;
    let tls = stoq_crypto::CertStore::open_default()?.material(&["localhost"])?;
    let server = loopback::bind_server(&backend, args.bind, tls)?;
    println!("LISTENING {}", server.local_addr()?);
    std::io::stdout().flush()?;
    // Exit when the parent goes away (its end of our stdin closes).
    tokio::select! {
        r = loopback::serve(server) => r?,
        _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        }) => {}
    }
    Ok(())
}

async fn client(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.runs == 0 || args.mib == 0 {
        return Err("--runs and --mib must be at least 1".into());
    }
    let backend = phoenix::backend(&args.backend)?;
    // Create the store (CA and leaf) before the server process opens it.
    let tls = stoq_crypto::CertStore::open_default()?.material(&["localhost"])?;

    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--serve",
            "--backend",
            &args.backend,
            "--bind",
            &args.bind.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line)?;
    let addr: SocketAddr = line
        .strip_prefix("LISTENING ")
        .ok_or_else(|| format!("server process did not start: {line:?}"))?
        .trim()
        .parse()?;

    let client = loopback::bind_client(&backend, addr, tls)?;
    let bytes = args.mib << 20;
    let mut runs: Vec<RunReport> = Vec::new();
    for i in 0..args.runs {
        let r = loopback::run_once(&client, addr, bytes, 0x5eed_0000 + i as u64).await?;
        if !r.receiver.verified || r.receiver.bytes != bytes {
            let _ = child.kill();
            return Err(format!(
                "run {i}: receiver got {} of {bytes} bytes, verified={}, {:?}",
                r.receiver.bytes, r.receiver.verified, r.receiver.error
            )
            .into());
        }
        if !args.json {
            println!(
                "run {}: {:.2} Gbit/s goodput at the receiver ({} MiB in {:.2} s, verified), \
                 rtt {} us, lost {} packets",
                i + 1,
                r.receiver.goodput_bps / 1e9,
                args.mib,
                r.receiver.seconds,
                r.rtt_micros,
                r.packets_lost
            );
        }
        runs.push(r);
    }
    let _ = child.kill();
    let _ = child.wait();

    let gbps: Vec<f64> = runs.iter().map(|r| r.receiver.goodput_bps / 1e9).collect();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let recv_cpu: Vec<f64> = runs.iter().map(|r| r.receiver.cpu_seconds / gib).collect();
    let send_cpu: Vec<f64> = runs.iter().map(|r| r.sender_cpu_seconds / gib).collect();
    let med = median(&gbps).unwrap_or(0.0);
    let min = gbps.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = gbps.iter().cloned().fold(0.0, f64::max);
    if args.json {
        let doc = serde_json::json!({
            "backend": args.backend,
            "scenario": "bulk, 1 connection, 1 stream, loopback, separate processes",
            "bytes_per_run": bytes,
            "runs": runs,
            "goodput_gbps": { "median": med, "min": min, "max": max },
            "receiver_cpu_seconds_per_gib": median(&recv_cpu),
            "sender_cpu_seconds_per_gib": median(&send_cpu),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{}: goodput {:.2} Gbit/s (median of {} runs, min {:.2}, max {:.2}); \
             CPU per GiB: receiver {:.2} s, sender {:.2} s",
            args.backend,
            med,
            runs.len(),
            min,
            max,
            median(&recv_cpu).unwrap_or(0.0),
            median(&send_cpu).unwrap_or(0.0)
        );
    }
    Ok(())
}
