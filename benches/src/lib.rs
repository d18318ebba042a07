//! # STOQ benchmarks
//!
//! A benchmark **matrix**: scenarios (bulk transfer, many connections, many streams,
//! request/response, handshakes, cold versus pooled connects, datagrams) times drivers
//! (any STOQ backend through STOQ's traits, quinn, s2n-quic and quiche driven directly,
//! kernel TCP, TLS over TCP), so that STOQ's framework overhead is a measured ratio and
//! every engine is judged against the same references.
//!
//! Method (shared/FACTS.md):
//! * Client and server run in **separate processes**: [`run_matrix`] spawns the server
//!   from the command its caller gives ([`MatrixOptions::server_command`], e.g.
//!   `phoenix bench-server`), and that command calls [`server_main`].
//! * Goodput is payload counted **and verified** ([`pattern`]) at the receiver and
//!   reported by the receiver; each process reports its own CPU time ([`usage`],
//!   getrusage), turned into CPU-seconds per GiB (or per operation).
//! * Every QUIC driver pins the UDP payload at 1452 B with MTU discovery off and the same
//!   windows ([`bench_config`]); every driver (QUIC and TLS/TCP) uses `stoq-crypto`'s
//!   rustls configurations, except the quiche rows (stoq-quiche, [`quiche_direct`]), which
//!   load the same certificates into BoringSSL; TLS_AES_128_GCM_SHA256 everywhere.
//! * Each cell records its run count, median, minimum and maximum ([`stats::Summary`]).
//!
//! Scenarios are data: one TOML file each in `benches/scenarios/`, embedded in the library
//! ([`scenario::builtin`]). Results are [`MatrixResults`] (JSON, with a machine
//! description); [`report`] renders a Markdown table and an SVG chart.
//!
//! The crate must not depend on `phoenix` (which depends on it for `phoenix bench`):
//! backends come in as `Arc<dyn Backend>` values inside [`Driver::Stoq`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod affinity;
mod client;
pub mod driver;
mod error;
pub mod loopback;
mod net;
pub mod paired;
pub mod pattern;
#[cfg(feature = "quiche-direct")]
pub mod quiche_direct;
pub mod quinn_direct;
pub mod report;
pub mod results;
pub mod runner;
pub mod s2n_direct;
pub mod scenario;
pub mod server;
pub mod stats;
pub mod usage;
pub mod wire;

pub use driver::{bench_config, Driver, DriverKind};
pub use error::BenchError;
pub use results::{CellResult, CellStatus, Machine, MatrixResults, Metric};
pub use runner::{run_matrix, MatrixOptions, Progress, Scale};
pub use scenario::{Scenario, Workload};
pub use server::{server_main, ServerArgs, ServerCli};
pub use stats::Summary;
pub use wire::ServerRunReport;
