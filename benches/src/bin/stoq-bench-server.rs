//! `stoq-bench-server`: the benchmark server process for tests and local runs of the
//! matrix without the `phoenix` CLI. It knows the four backends stoq-bench depends on by
//! name: `quinn`, `s2n`, `quiche` and `uring`; `phoenix bench-server` knows every
//! compiled-in backend.
//!
//! Usage (as `run_matrix` invokes it): `stoq-bench-server --driver stoq --backend quinn
//! --bind [::1]:0 --cert-dir DIR`; prints `LISTENING <addr>`, serves until stdin closes.

use std::sync::Arc;

use clap::Parser;
use stoq_core::Backend;

#[derive(Parser, Debug)]
#[command(version, about = "STOQ benchmark server (one driver per process)")]
struct Cli {
    #[command(flatten)]
    server: stoq_bench::ServerCli,
    /// Backend for `--driver stoq`: "quinn", "s2n", "quiche" or "uring".
    #[arg(long, default_value = "quinn")]
    backend: String,
}

fn backend(name: &str) -> Result<Arc<dyn Backend>, stoq_core::Error> {
    match name {
        "quinn" => Ok(Arc::new(stoq_quinn::QuinnBackend)),
        "s2n" => Ok(Arc::new(stoq_s2n::S2nBackend)),
        "quiche" => Ok(Arc::new(stoq_quiche::QuicheBackend)),
        "uring" => Ok(Arc::new(stoq_uring::UringBackend)),
        other => Err(stoq_core::Error::config(
            "backend",
            format!(
                "stoq-bench-server knows \"quinn\", \"s2n\", \"quiche\" and \"uring\", not {other:?}; \
                 phoenix bench-server knows every backend compiled into phoenix"
            ),
        )),
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = cli
        .server
        .into_args(|| backend(&cli.backend))
        .and_then(|args| rt.block_on(stoq_bench::server_main(args)));
    // The stdin reader may still be blocked in a read (when serving failed first): do
    // not wait for it.
    rt.shutdown_background();
    if let Err(e) = result {
        eprintln!("stoq-bench-server: {e}");
        std::process::exit(1);
    }
}
