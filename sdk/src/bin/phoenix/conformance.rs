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
}

pub async fn run(global: &crate::common::Global, args: Args, json: bool) -> Result<(), CliError> {
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
