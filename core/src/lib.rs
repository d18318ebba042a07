//! # STOQ core
//!
//! STOQ lets an application speak QUIC (RFC 9000) through one async API while the QUIC
//! engine underneath — quinn, s2n-quic, quiche, an io_uring engine or one of your own — is
//! chosen at run time. This crate holds everything an engine adapter and an application
//! share, and nothing engine-specific:
//!
//! * [`Transport`]: one QUIC *endpoint* (a UDP socket that can dial and accept).
//! * [`Connection`]: one QUIC connection: streams, datagrams, close, stats, keying
//!   material export. Applications hold it as [`ConnectionHandle`] (`Arc<dyn Connection>`).
//! * [`SendStream`] / [`RecvStream`]: concrete stream handles implementing tokio's
//!   [`AsyncWrite`](tokio::io::AsyncWrite) / [`AsyncRead`](tokio::io::AsyncRead), wrapping
//!   the engine's stream behind [`SendStreamBackend`] / [`RecvStreamBackend`].
//! * [`Backend`]: a factory that binds endpoints of one engine from an [`EndpointSpec`], so
//!   the SDK, the conformance suite and the benchmarks treat every engine alike.
//! * [`congestion`]: the sans-IO [`CongestionController`](congestion::CongestionController)
//!   trait and the built-in NewReno (RFC 9002) and CUBIC (RFC 9438) controllers.
//! * [`Capabilities`]: what an engine can do. Anything it cannot do is reported as
//!   [`Error::Unsupported`] — never a panic, never a silent downgrade.
//! * [`TransportConfig`]: the serde-deserialisable configuration every backend honours.
//!
//! ## About QUIC, briefly
//! A QUIC connection multiplexes independent, ordered byte *streams* (bidirectional or
//! unidirectional, opened by either side) and unreliable *datagrams* (RFC 9221) over UDP,
//! secured by TLS 1.3. A sender ends a stream cleanly with a FIN (`finish`) or abruptly
//! with `RESET_STREAM` (`reset`, carrying an application error code); a receiver can ask
//! the sender to stop with `STOP_SENDING` (`stop`). A connection ends with
//! `CONNECTION_CLOSE` carrying a code and a reason, by an idle timeout, or by a stateless
//! reset. STOQ's vocabulary follows RFC 9000 throughout.
//!
//! ## Design decisions
//! * Traits are object-safe (`async-trait`) so `Arc<dyn Transport>` works and users can
//!   plug in their own engine; the per-byte hot path (stream reads and writes) is
//!   poll-based and allocates nothing per call.
//! * Behaviour that must be identical on every engine lives in the core handles rather than
//!   in each adapter: e.g. dropping a [`SendStream`] without `finish()` always resets it
//!   (quinn would finish it implicitly, which could pass a truncated message off as
//!   complete), and application byte counters are kept by the handles.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod capabilities;
mod config;
mod connection;
mod error;
mod stats;
mod stream;
mod tls;
mod transport;

pub mod congestion;
pub mod socket;

pub use capabilities::{Capabilities, Capability};
pub use config::{
    CongestionAlgorithm, CongestionConfig, CongestionImplementation, DatagramConfig,
    TransportConfig,
};
pub use connection::{Connection, ConnectionHandle, Side};
pub use error::{
    ConnectionError, DatagramError, Error, FalconAuthFailure, StreamError, FALCON_AUTH_CLOSE_CODE,
};
pub use stats::{ConnectionCounters, ConnectionStats, EndpointStats};
pub use stream::{RecvStream, RecvStreamBackend, SendStream, SendStreamBackend, StreamId};
pub use tls::{Identity, IdentitySource, TlsMaterial};
pub use transport::{Backend, EndpointRole, EndpointSpec, Transport};

/// Re-exported so backends and applications name the same DER types.
pub use rustls_pki_types as pki_types;
