//! Moves data over loopback with the Vegas controller of this crate running inside quinn,
//! verifies it, and shows that the engine used the controller's window.
//!
//! Usage: `stoq-example-custom-congestion [MiB]` (default 32). Exits with status 1 when the
//! data or the window do not match, 2 when the transfer itself fails.

use std::process::ExitCode;

use stoq_example_custom_congestion::run_transfer;

const DEFAULT_MIB: usize = 32;

#[tokio::main]
async fn main() -> ExitCode {
    let mib = match std::env::args().nth(1) {
        None => DEFAULT_MIB,
        Some(arg) => match arg.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("usage: stoq-example-custom-congestion [MiB > 0], got {arg:?}");
                return ExitCode::from(2);
            }
        },
    };
    let report = match run_transfer(mib << 20).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("transfer failed: {e}");
            return ExitCode::from(2);
        }
    };
    let c = &report.controller;
    println!(
        "transferred {} MiB over quinn on [::1] with the custom \"vegas\" controller",
        mib
    );
    println!(
        "received   {} bytes in {:.3} s, SHA-256 {}",
        report.bytes_received,
        report.elapsed.as_secs_f64(),
        if report.hash_verified() {
            "verified"
        } else {
            "MISMATCH"
        }
    );
    println!("goodput    {:.1} Mbit/s", report.goodput_mbit_s());
    println!("controller window {} bytes", c.window);
    println!(
        "engine     stats().congestion_window {} bytes ({})",
        report.engine_window,
        if report.window_matches() {
            "equal"
        } else {
            "DIFFERENT"
        }
    );
    println!(
        "events     {} sends / {} bytes sent, {} bytes acked, {} congestion events \
         ({} halvings, {} bytes lost)",
        c.packets_sent,
        c.bytes_sent,
        c.bytes_acked,
        c.congestion_events,
        c.loss_reductions,
        c.bytes_lost
    );
    println!(
        "rounds     {} evaluated: {} increases, {} decreases, {} slow-start exits, \
         {} window changes",
        c.rounds, c.increases, c.decreases, c.slow_start_exits, c.window_changes
    );
    println!(
        "path       rtt {:?}, min rtt {:?}",
        report.connection.rtt, report.connection.min_rtt
    );
    let problems = report.problems();
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        for p in problems {
            eprintln!("error: {p}");
        }
        ExitCode::FAILURE
    }
}
