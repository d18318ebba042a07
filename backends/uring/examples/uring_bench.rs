//! `phoenix bench-server` and `phoenix bench --to` for io_uring settings that phoenix has
//! no flag for (SQPOLL): the same protocol, configuration, certificates and verification
//! (`stoq_bench::loopback`, the module phoenix's bench uses), through
//! [`stoq_uring::TunedUringBackend`]. `benches/syscalls.sh` uses it for its SQPOLL rows.
//!
//! ```text
//! uring_bench server [--bind ADDR] [--sqpoll-idle-ms MS [--sqpoll-cpu CPU]]
//!     prints `LISTENING <addr>`, serves until stdin closes
//! uring_bench client --to ADDR [--mib N] [--runs R] [--sqpoll-idle-ms MS [--sqpoll-cpu CPU]]
//!     prints one JSON document: {"backend", "goodput_gbps": {"median", "runs"}, "runs"}
//! ```

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stoq_bench::loopback;
use stoq_core::Backend;
use stoq_uring::{SqPoll, TunedUringBackend, UringOptions};

struct Args {
    server: bool,
    bind: SocketAddr,
    to: Option<SocketAddr>,
    mib: u64,
    runs: usize,
    options: UringOptions,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let server = match it.next().as_deref() {
        Some("server") => true,
        Some("client") => false,
        other => return Err(format!("expected `server` or `client`, got {other:?}")),
    };
    let mut args = Args {
        server,
        bind: "[::1]:0".parse().expect("address"),
        to: None,
        mib: 1024,
        runs: 1,
        options: UringOptions::default(),
    };
    let mut idle = None;
    let mut cpu = None;
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--bind" => args.bind = value.parse().map_err(|e| bad(&e))?,
            "--to" => args.to = Some(value.parse().map_err(|e| bad(&e))?),
            "--mib" => args.mib = value.parse().map_err(|e| bad(&e))?,
            "--runs" => args.runs = value.parse().map_err(|e| bad(&e))?,
            "--sqpoll-idle-ms" => idle = Some(value.parse().map_err(|e| bad(&e))?),
            "--sqpoll-cpu" => cpu = Some(value.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    match (idle, cpu) {
        (Some(ms), cpu) => {
            let mut options = UringOptions::default();
            options.sqpoll = Some(SqPoll {
                cpu,
                idle: Duration::from_millis(ms),
            });
            args.options = options;
        }
        (None, Some(_)) => return Err("--sqpoll-cpu needs --sqpoll-idle-ms".into()),
        (None, None) => {}
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let backend: Arc<dyn Backend> = Arc::new(TunedUringBackend(args.options.clone()));
    // The certificates phoenix uses (its local CA), so both processes agree on them.
    let tls = stoq_crypto::CertStore::open_default()?.material(&["localhost"])?;
    if args.server {
        let server = loopback::bind_server(&backend, args.bind, tls)?;
        println!("LISTENING {}", server.local_addr()?);
        std::io::stdout().flush()?;
        tokio::select! {
            r = loopback::serve(server) => r?,
            _ = tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                while std::io::stdin().lock().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
            }) => {}
        }
        return Ok(());
    }
    let to = args.to.ok_or("client needs --to ADDR")?;
    let client = loopback::bind_client(&backend, to, tls)?;
    let bytes = args.mib << 20;
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let r = loopback::run_once(&client, to, bytes, 0x5eed_0000 + i as u64).await?;
        if !r.receiver.verified || r.receiver.bytes != bytes {
            return Err(format!(
                "run {}: receiver got {} of {bytes} bytes, verified={}, {:?}",
                i + 1,
                r.receiver.bytes,
                r.receiver.verified,
                r.receiver.error
            )
            .into());
        }
        runs.push(r);
    }
    let gbps: Vec<f64> = runs.iter().map(|r| r.receiver.goodput_bps / 1e9).collect();
    let doc = serde_json::json!({
        "backend": format!("uring {:?}", args.options),
        "bytes_per_run": bytes,
        "goodput_gbps": { "median": loopback::median(&gbps), "runs": gbps },
        "runs": runs,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
