//! `phoenix conformance`: the conformance suite as a readable report.

use std::time::Instant;

use crate::CliError;

/// Arguments of `phoenix conformance`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backend for the server side, to check interoperability of a pair.
    #[arg(long)]
    server_backend: Option<String>,
    /// Run only contracts whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Instead of the contracts, run the interoperability matrix: every ordered pair of
    /// compiled-in backends (handshake, echo, 64 MiB with a SHA-256 check, close code and
    /// reason).
    #[arg(long, conflicts_with_all = ["only", "server_backend"])]
    interop: bool,
}

async fn interop(json: bool) -> Result<(), CliError> {
    let names = phoenix::backend_names();
    let bar = crate::progress(!json, (names.len() * names.len()) as u64, "pairs");
    let mut rows = Vec::new();
    for client in &names {
        for server in &names {
            if let Some(bar) = &bar {
                bar.set_message(format!("{client} -> {server}"));
            }
            let harness = stoq_conformance::Harness::pair(
                phoenix::backend(client)?,
                phoenix::backend(server)?,
            );
            let result = tokio::time::timeout(
                std::time::Duration::from_secs(180),
                stoq_conformance::interop::interop(harness),
            )
            .await;
            let (ok, detail) = match result {
                Ok(Ok(r)) => (
                    true,
                    format!(
                        "ok ({} MiB verified, {:.0} Mbit/s{})",
                        r.transfer_bytes >> 20,
                        r.transfer_mbps,
                        if r.close_reason_checked {
                            ""
                        } else {
                            ", close code only"
                        }
                    ),
                ),
                Ok(Err(f)) => (false, format!("FAIL: {f}")),
                Err(_) => (false, "FAIL: did not finish within 180 s".into()),
            };
            rows.push(serde_json::json!({
                "client": client, "server": server, "ok": ok, "detail": detail,
            }));
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let failed = rows.iter().filter(|r| r["ok"] == false).count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "pairs": rows, "failed": failed }))
                .expect("json")
        );
    } else {
        println!("interoperability: rows are clients, columns servers\n");
        println!("| client \\ server | {} |", names.join(" | "));
        println!("|---|{}", "---|".repeat(names.len()));
        for client in &names {
            let cells: Vec<String> = names
                .iter()
                .map(|server| {
                    rows.iter()
                        .find(|r| r["client"] == *client && r["server"] == *server)
                        .and_then(|r| r["detail"].as_str())
                        .unwrap_or("-")
                        .to_string()
                })
                .collect();
            println!("| {client} | {} |", cells.join(" | "));
        }
    }
    if failed > 0 {
        Err(CliError::failed(format!("{failed} pair(s) failed")))
    } else {
        Ok(())
    }
}

pub async fn run(global: &crate::common::Global, args: Args, json: bool) -> Result<(), CliError> {
    if args.interop {
        return interop(json).await;
    }
    // The client backend is the global --backend.
    let client = phoenix::backend(&global.backend)?;
    let server = match &args.server_backend {
        Some(name) => phoenix::backend(name)?,
        None => client.clone(),
    };
    let harness = stoq_conformance::Harness::pair(client.clone(), server.clone());
    let contracts: Vec<_> = stoq_conformance::CONTRACTS
        .iter()
        .filter(|c| args.only.as_deref().is_none_or(|f| c.name.contains(f)))
        .collect();
    if contracts.is_empty() {
        return Err(CliError::input(format!(
            "no contract name contains {:?}",
            args.only.unwrap_or_default()
        )));
    }
    let bar = (!json).then(|| {
        let bar = indicatif::ProgressBar::new(contracts.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                .expect("static template"),
        );
        bar
    });
    let mut rows = Vec::new();
    for c in contracts {
        if let Some(bar) = &bar {
            bar.set_message(c.name);
        }
        let start = Instant::now();
        let result = stoq_conformance::run_contract(c, harness.clone()).await;
        let (status, detail) = match result {
            Ok(stoq_conformance::Outcome::Passed) => ("passed", None),
            Ok(stoq_conformance::Outcome::Unsupported(cap)) => {
                ("unsupported", Some(format!("backend lacks `{cap}`")))
            }
            Err(f) => ("failed", Some(f.0)),
        };
        rows.push(serde_json::json!({
            "contract": c.name,
            "description": c.description,
            "status": status,
            "detail": detail,
            "millis": start.elapsed().as_millis() as u64,
        }));
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let count = |s: &str| rows.iter().filter(|r| r["status"] == s).count();
    let (passed, unsupported, failed) = (count("passed"), count("unsupported"), count("failed"));
    if json {
        let doc = serde_json::json!({
            "client_backend": client.name(),
            "server_backend": server.name(),
            "passed": passed,
            "unsupported": unsupported,
            "failed": failed,
            "contracts": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        println!(
            "conformance: client {} -> server {}",
            client.name(),
            server.name()
        );
        let width = rows
            .iter()
            .map(|r| r["contract"].as_str().unwrap_or("").len())
            .max()
            .unwrap_or(0);
        for r in &rows {
            let status = r["status"].as_str().unwrap_or("");
            let mark = match status {
                "passed" => "PASS",
                "unsupported" => "UNSUPPORTED",
                _ => "FAIL",
            };
            let mut line = format!(
                "  {:<11} {:<width$} {:>6} ms",
                mark,
                r["contract"].as_str().unwrap_or(""),
                r["millis"].as_u64().unwrap_or(0)
            );
            if let Some(d) = r["detail"].as_str() {
                line.push_str(&format!("  ({d})"));
            }
            println!("{line}");
        }
        println!("{passed} passed, {failed} failed, {unsupported} unsupported");
    }
    if failed > 0 {
        Err(CliError::failed(format!("{failed} contract(s) failed")))
    } else {
        Ok(())
    }
}
