//! # STOQ conformance suite
//!
//! The contracts every STOQ backend meets, written once as functions over any
//! [`Backend`] (or any client/server pair of backends), and run three ways:
//! * as `cargo test` tests: a backend crate adds the whole suite with one line,
//!   [`conformance_suite!`]`(MyBackend)`, which generates one test per contract, named
//!   after it;
//! * as a report ([`run_suite`]), which `phoenix conformance` prints;
//! * across backends ([`Harness::pair`]), for the interoperability matrix.
//!
//! A contract returns [`Outcome::Passed`], or [`Outcome::Unsupported`] naming the missing
//! [`Capability`] — and only after checking that the backend *says so* with a typed
//! [`Error::Unsupported`](stoq_core::Error) (or the documented equivalent) rather than
//! misbehaving. Nothing is skipped silently. Every contract runs under a time limit, so a
//! hang is reported as a failure, never waited out.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq_core::{
    Backend, Capabilities, Capability, ConnectionHandle, EndpointSpec, TlsMaterial, Transport,
    TransportConfig,
};

mod contracts;
pub mod controllers;
pub mod emulator;
pub mod interop;
pub mod util;

pub use contracts::CONTRACTS;

/// What a contract concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend meets the contract.
    Passed,
    /// The backend lacks `Capability` and reported that with a typed error, as required.
    Unsupported(Capability),
}

/// Why a contract failed: a message with the context of the failing step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

macro_rules! failure_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure(format!("{}: {e}", stringify!($t)))
            }
        }
    )*};
}
failure_from!(
    stoq_core::Error,
    stoq_core::ConnectionError,
    stoq_core::StreamError,
    stoq_core::DatagramError,
    std::io::Error,
    stoq_crypto::CryptoError,
    tokio::time::error::Elapsed,
    tokio::task::JoinError
);

/// Fails the contract with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::Failure(format!($($arg)+)));
        }
    };
}

/// The result of one contract.
pub type ContractResult = Result<Outcome, Failure>;

type ContractFn = fn(Harness) -> Pin<Box<dyn Future<Output = ContractResult> + Send>>;

/// One contract: a name, what it checks, the check, and its time limit.
pub struct Contract {
    /// Stable snake_case name (also the generated test's name).
    pub name: &'static str,
    /// One sentence: what a backend must do.
    pub description: &'static str,
    /// Runs the contract.
    pub run: ContractFn,
    /// Upper bound on its run time; exceeding it is a failure.
    pub limit: Duration,
}

impl fmt::Debug for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contract")
            .field("name", &self.name)
            .finish()
    }
}

/// What a contract runs against: the backend of each side and the shared certificates.
#[derive(Clone)]
pub struct Harness {
    /// The backend whose endpoints dial.
    pub client: Arc<dyn Backend>,
    /// The backend whose endpoints accept.
    pub server: Arc<dyn Backend>,
    /// Certificates for `localhost`, `127.0.0.1` and `::1` under a fresh CA.
    pub tls: TlsMaterial,
    /// The configuration contracts start from.
    pub config: TransportConfig,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Harness({} -> {})",
            self.client.name(),
            self.server.name()
        )
    }
}

/// The names the suite's certificates are valid for.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The ALPN the suite uses unless a contract says otherwise.
pub const TEST_ALPN: &str = "stoq-conformance";

/// Two connected endpoints and the connection between them, seen from both sides.
pub struct Pair {
    /// The dialling endpoint.
    pub client_ep: Arc<dyn Transport>,
    /// The accepting endpoint.
    pub server_ep: Arc<dyn Transport>,
    /// The client's side of the connection.
    pub client: ConnectionHandle,
    /// The server's side of the connection.
    pub server: ConnectionHandle,
}

impl Harness {
    /// A harness for one backend talking to itself.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::pair(backend.clone(), backend)
    }

    /// A harness where `client`'s endpoints dial `server`'s.
    pub fn pair(client: Arc<dyn Backend>, server: Arc<dyn Backend>) -> Self {
        let tls = stoq_crypto::ephemeral_material(&SERVER_NAMES)
            .expect("generating test certificates cannot fail");
        let config = TransportConfig {
            alpn: vec![TEST_ALPN.to_string()],
            // Long enough for debug builds on a loaded 2-core machine; contracts about
            // timeouts set their own.
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ..TransportConfig::default()
        };
        Harness {
            client,
            server,
            tls,
            config,
        }
    }

    /// The capabilities both sides have.
    pub fn capabilities(&self) -> Capabilities {
        let c = self.client.capabilities();
        let s = self.server.capabilities();
        Capability::ALL
            .into_iter()
            .filter(|cap| c.contains(*cap) && s.contains(*cap))
            .collect()
    }

    /// Binds a server endpoint on `bind` with `config`.
    pub fn server_endpoint(
        &self,
        bind: SocketAddr,
        config: TransportConfig,
    ) -> Result<Arc<dyn Transport>, Failure> {
        Ok(self
            .server
            .bind(EndpointSpec::server(bind, config, self.tls.clone()))?)
    }

    /// Binds a client endpoint able to dial `peer`'s address family, with `config`.
    pub fn client_endpoint(
        &self,
        peer: SocketAddr,
        config: TransportConfig,
    ) -> Result<Arc<dyn Transport>, Failure> {
        Ok(self
            .client
            .bind(EndpointSpec::client(peer, config, self.tls.clone()))?)
    }

    /// A connected pair over `[::1]` with the harness config on both sides.
    pub async fn connect(&self) -> Result<Pair, Failure> {
        self.connect_with(self.config.clone(), self.config.clone(), util::LOCALHOST_V6)
            .await
    }

    /// A connected pair with the given configs, the server bound to `bind`.
    pub async fn connect_with(
        &self,
        client_cfg: TransportConfig,
        server_cfg: TransportConfig,
        bind: SocketAddr,
    ) -> Result<Pair, Failure> {
        let server_ep = self.server_endpoint(bind, server_cfg)?;
        let addr = server_ep.local_addr()?;
        let client_ep = self.client_endpoint(addr, client_cfg)?;
        let accept = {
            let server_ep = server_ep.clone();
            tokio::spawn(async move { server_ep.accept().await })
        };
        let client = client_ep.connect(addr, "localhost").await?;
        let server = tokio::time::timeout(Duration::from_secs(10), accept)
            .await
            .map_err(|_| {
                Failure("server did not accept a connection the client completed".into())
            })???;
        Ok(Pair {
            client_ep,
            server_ep,
            client,
            server,
        })
    }
}

/// One contract's line in a report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContractReport {
    /// The contract's name.
    pub name: &'static str,
    /// What it checks.
    pub description: &'static str,
    /// `"passed"`, `"unsupported"` or `"failed"`.
    pub status: &'static str,
    /// The missing capability, or why it failed.
    pub detail: Option<String>,
    /// How long it took.
    pub millis: u128,
}

/// Runs one contract under its time limit.
pub async fn run_contract(contract: &Contract, harness: Harness) -> ContractResult {
    match tokio::time::timeout(contract.limit, (contract.run)(harness)).await {
        Ok(r) => r,
        Err(_) => Err(Failure(format!(
            "did not finish within {:?} (a hang is a failure)",
            contract.limit
        ))),
    }
}

/// Runs every contract in order and reports each.
pub async fn run_suite(harness: &Harness) -> Vec<ContractReport> {
    let mut out = Vec::new();
    for c in CONTRACTS {
        let start = Instant::now();
        let r = run_contract(c, harness.clone()).await;
        let (status, detail) = match r {
            Ok(Outcome::Passed) => ("passed", None),
            Ok(Outcome::Unsupported(cap)) => ("unsupported", Some(cap.to_string())),
            Err(f) => ("failed", Some(f.0)),
        };
        out.push(ContractReport {
            name: c.name,
            description: c.description,
            status,
            detail,
            millis: start.elapsed().as_millis(),
        });
    }
    out
}

/// Looks a contract up by name.
pub fn contract(name: &str) -> Option<&'static Contract> {
    CONTRACTS.iter().find(|c| c.name == name)
}

/// Runs the named contract against `harness` and panics (failing the test) unless it
/// passed or was reported unsupported. Used by [`conformance_suite!`].
pub async fn check(name: &str, harness: Harness) {
    let c = contract(name).unwrap_or_else(|| panic!("no contract named {name}"));
    match run_contract(c, harness.clone()).await {
        Ok(Outcome::Passed) => {}
        Ok(Outcome::Unsupported(cap)) => {
            // Reported, not hidden: the test output lists it (cargo shows stdout of
            // passing tests with --nocapture; nextest with --success-output).
            println!("UNSUPPORTED {name} on {harness:?}: backend lacks `{cap}` and said so");
        }
        Err(f) => panic!("contract {name} failed on {harness:?}: {f}"),
    }
}

/// Generates one `#[tokio::test]` per contract for a backend, in a module named
/// `conformance`. The argument is an expression producing the backend.
///
/// ```ignore
/// stoq_conformance::conformance_suite!(stoq_quinn::QuinnBackend);
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance_suite!(@tests $backend;
            handshake_alpn, alpn_mismatch_fails, untrusted_certificate_fails,
            wrong_server_name_fails, ipv4_and_ipv6, peer_identity, bidi_echo, uni_streams,
            concurrent_streams_1000, request_stream_churn, large_transfer_hash, drop_without_finish_resets,
            finish_delivers_all_data, reset_code_reaches_peer, stop_code_reaches_peer, reads_after_stop_fail,
            close_code_and_reason, server_endpoint_dials, endpoint_close_reaches_peers, idle_timeout_closes_both,
            keep_alive_prevents_idle_timeout, datagram_round_trip, oversized_datagram_rejected,
            datagrams_disabled_rejected, stats_agree_with_application, connect_no_listener_times_out,
            keying_material_export, falcon_mutual_auth_in_handshake, falcon_bad_certificates_fail,
            falcon_mutual_auth_post_handshake, falcon_post_handshake_failures_close,
            impaired_path_delivers_intact, corrupted_packets_are_dropped, blackhole_is_survived,
            malformed_packets_ignored, handshake_flood_spares_connections,
            invalid_config_rejected,
            stoq_congestion_controllers, custom_congestion_controller, custom_pacing_rate_is_honoured
        );
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        #[cfg(test)]
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend: ::std::sync::Arc<dyn $crate::__Backend> =
                        ::std::sync::Arc::new($backend);
                    $crate::check(stringify!($name), $crate::Harness::new(backend)).await;
                }
            )*
            #[test]
            fn every_contract_has_a_test() {
                let generated: &[&str] = &[$(stringify!($name)),*];
                for c in $crate::CONTRACTS {
                    assert!(generated.contains(&c.name), "contract {} has no generated test", c.name);
                }
            }
        }
    };
}

#[doc(hidden)]
pub use stoq_core::Backend as __Backend;
