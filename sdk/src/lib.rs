//! # Phoenix, the STOQ SDK
//!
//! Phoenix puts an application on QUIC in a few lines: whole messages, streams,
//! multiplexed bulk transfers, request/response as a [`tower::Service`], connection
//! pooling, statistics and network-tier tuning, over whichever STOQ backend is chosen.
//!
//! ## Quick start
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), phoenix::PhoenixError> {
//! # let home = tempfile::tempdir().unwrap();
//! # std::env::set_var("STOQ_HOME", home.path()); // keep this test's certificates out of ~
//! use phoenix::Phoenix;
//!
//! let server = Phoenix::new("my-app").await?;
//! let listener = server.listen("[::]:0").await?;
//! let port = listener.local_addr().port();
//!
//! let client = Phoenix::new("my-app").await?;
//! client.send_data(&format!("localhost:{port}"), b"hello, phoenix").await?;
//!
//! let message = listener.next_message().await?;
//! assert_eq!(&message.bytes[..], b"hello, phoenix");
//! # Ok(()) }
//! ```
//!
//! `Phoenix::new` needs no set-up: certificates come from STOQ's self-managed store
//! (`$STOQ_HOME/certs`, else e.g. `~/.config/stoq/certs`), where a local development CA is
//! created and trusted on first use; the ALPN protocol is the application's name. Use
//! [`Phoenix::builder`] to choose the backend, configuration (or a TOML file),
//! certificates, congestion controller, network tier and limits.
//!
//! ## What is in it
//! * [`Phoenix`]: dials through a [`Pool`] ([`connect`](Phoenix::connect),
//!   [`send_data`](Phoenix::send_data)) and listens ([`listen`](Phoenix::listen) gives a
//!   [`Listener`]).
//! * [`PhoenixConnection`]: [`send_data`](PhoenixConnection::send_data) /
//!   [`recv_message`](PhoenixConnection::recv_message) for whole, acknowledged messages;
//!   [`open_stream`](PhoenixConnection::open_stream) /
//!   [`accept_stream`](PhoenixConnection::accept_stream) for STOQ's `AsyncRead`/`AsyncWrite`
//!   streams; [`send_multiplexed`](PhoenixConnection::send_multiplexed) to spread one
//!   large payload over several streams and connections, reassembled and SHA-256-checked
//!   at the receiver; [`service`](PhoenixConnection::service) /
//!   [`serve_requests`](PhoenixConnection::serve_requests) for request/response.
//! * [`framing`]: the wire formats, and the [`Reassembler`](framing::Reassembler).
//! * [`stats`](Phoenix::stats): Phoenix's counters (messages, bytes, goodput over the
//!   active period) with the engine's (RTT, congestion window, losses), per connection and
//!   in total, serialisable for `--json`.
//! * [`tier`]: [`NetworkTier`] classification, [`TierProfile`]s and
//!   [`Phoenix::probe`].
//!
//! ## Backends
//! Phoenix is the only layer that knows every compiled-in backend; everything below it
//! (`stoq-core`, the backend crates) knows none of the others. Each backend is behind a
//! cargo feature of this crate (`quinn`, on by default); [`backend`] picks one by name and
//! [`backend_names`] lists them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::Arc;

use stoq_core::{Backend, Error};

mod address;
mod builder;
mod connection;
mod error;
pub mod framing;
mod listener;
mod mux;
mod phoenix;
mod pool;
mod service;
mod stats;
pub mod tier;

pub use builder::{
    CertSource, FalconMode, PhoenixBuilder, DEFAULT_CERT_NAMES, DEFAULT_MAX_MESSAGE_SIZE,
};
pub use connection::{Message, PhoenixConnection};
pub use error::PhoenixError;
pub use framing::codes;
pub use listener::Listener;
pub use mux::MuxOptions;
pub use phoenix::Phoenix;
pub use pool::{Pool, PoolConfig, PoolKey, PoolStats};
pub use service::{serve_requests, PhoenixService, ServeTarget};
pub use stats::{ConnectionReport, PhoenixStats, SdkStats, TotalStats, TransportTotals};
pub use tier::{probe, NetworkTier, ProbeReport, TierProfile, TierReport, TierSource};

/// Re-exported so applications name the same types as Phoenix.
pub use bytes::Bytes;
/// Re-exported so applications name the same types as Phoenix.
pub use stoq_core::{
    CongestionConfig, ConnectionError, ConnectionHandle, RecvStream, SendStream, Side, StreamError,
    TlsMaterial, TransportConfig,
};
/// FALCON security levels, for [`PhoenixBuilder::post_quantum_identity`].
pub use stoq_crypto::falcon::FalconLevel;

/// The backend used when none is named.
pub const DEFAULT_BACKEND: &str = "quinn";

/// The names of the backends compiled into this build, default first.
// One push per cargo feature, so the vector cannot be a literal.
#[allow(unused_mut, clippy::vec_init_then_push)]
pub fn backend_names() -> Vec<&'static str> {
    let mut names = Vec::new();
    #[cfg(feature = "quinn")]
    names.push("quinn");
    #[cfg(feature = "s2n")]
    names.push("s2n");
    #[cfg(feature = "quiche")]
    names.push("quiche");
    #[cfg(feature = "uring")]
    names.push("uring");
    names
}

/// The backend called `name`. Fails with [`Error::Config`] naming the backends that are
/// compiled in when `name` is not one of them.
pub fn backend(name: &str) -> Result<Arc<dyn Backend>, Error> {
    match name {
        #[cfg(feature = "quinn")]
        "quinn" => Ok(Arc::new(stoq_quinn::QuinnBackend)),
        #[cfg(feature = "s2n")]
        "s2n" => Ok(Arc::new(stoq_s2n::S2nBackend)),
        #[cfg(feature = "quiche")]
        "quiche" => Ok(Arc::new(stoq_quiche::QuicheBackend)),
        #[cfg(feature = "uring")]
        "uring" => Ok(Arc::new(stoq_uring::UringBackend)),
        // The io_uring backend with quinn's async glue instead of its own driver (for
        // comparing the two engines; not in `backend_names`, so not in the matrix).
        #[cfg(feature = "uring")]
        "uring-glue" => Ok(Arc::new(stoq_uring::TunedUringBackend(
            stoq_uring::UringOptions::default().with_engine(stoq_uring::UringEngine::QuinnGlue),
        ))),
        _ => Err(Error::config(
            "backend",
            format!(
                "no backend named {name:?} in this build; compiled in: {}",
                backend_names().join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_backend_resolves_to_itself() {
        for name in backend_names() {
            assert_eq!(backend(name).unwrap().name(), name);
        }
        assert!(backend_names().contains(&DEFAULT_BACKEND));
    }

    #[test]
    fn unknown_backend_is_a_config_error_listing_the_choices() {
        let err = backend("carrier-pigeon").unwrap_err();
        match err {
            Error::Config { field, reason } => {
                assert_eq!(field, "backend");
                assert!(reason.contains("carrier-pigeon") && reason.contains(DEFAULT_BACKEND));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
