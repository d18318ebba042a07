//! `phoenix serve`: an echo and sink server.
//!
//! Every bidirectional stream is echoed back (so `tokio::io::copy`-style clients and the
//! SDK's request/response see their bytes returned); every message sent with
//! `send_data` is received whole and discarded (a sink), and counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::CliError;

/// Arguments of `phoenix serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "[::]:4433")]
    listen: String,
    /// Exit after this many connections have ended (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    connections: u64,
}

#[derive(Default)]
struct Totals {
    echoed_bytes: AtomicU64,
    messages: AtomicU64,
    message_bytes: AtomicU64,
}

pub async fn run(global: &crate::common::Global, args: Args, json: bool) -> Result<(), CliError> {
    let phoenix = global.phoenix().await?;
    let listener = phoenix.listen(&args.listen).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "listening": listener.local_addr().to_string() })
        );
    } else {
        println!(
            "listening on {} (app {:?}, backend {}): echoing streams, sinking messages",
            listener.local_addr(),
            global.app,
            global.backend
        );
    }
    let totals = Arc::new(Totals::default());
    let mut tasks = tokio::task::JoinSet::new();
    let mut accepted = 0u64;
    loop {
        if args.connections != 0 && accepted == args.connections {
            break;
        }
        let conn = tokio::select! {
            c = listener.accept() => c?,
            _ = tokio::signal::ctrl_c() => break,
        };
        accepted += 1;
        let totals = totals.clone();
        tasks.spawn(async move {
            let peer = conn.remote_addr();
            let echo = {
                let conn = conn.clone();
                let totals = totals.clone();
                async move {
                    while let Ok((mut send, mut recv)) = conn.accept_stream().await {
                        let totals = totals.clone();
                        tokio::spawn(async move {
                            if let Ok(n) = tokio::io::copy(&mut recv, &mut send).await {
                                totals.echoed_bytes.fetch_add(n, Relaxed);
                                let _ = send.finish().await;
                                let _ = send.stopped().await;
                            }
                        });
                    }
                }
            };
            let sink = {
                let conn = conn.clone();
                let totals = totals.clone();
                async move {
                    while let Ok(m) = conn.recv_message().await {
                        totals.messages.fetch_add(1, Relaxed);
                        totals.message_bytes.fetch_add(m.len() as u64, Relaxed);
                    }
                }
            };
            let reason = tokio::join!(echo, sink, conn.closed()).2;
            let stats = conn.stats();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "peer": peer.to_string(), "closed": reason.to_string(), "stats": stats })
                );
            } else {
                println!("{peer}: {reason}");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let t = &totals;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "connections": accepted,
                "echoed_bytes": t.echoed_bytes.load(Relaxed),
                "messages": t.messages.load(Relaxed),
                "message_bytes": t.message_bytes.load(Relaxed),
            })
        );
    } else {
        println!(
            "{accepted} connection(s); echoed {} bytes; received {} message(s), {} bytes",
            t.echoed_bytes.load(Relaxed),
            t.messages.load(Relaxed),
            t.message_bytes.load(Relaxed)
        );
    }
    Ok(())
}
