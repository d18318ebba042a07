//! # STOQ on s2n-quic
//!
//! A [`Backend`] that runs STOQ's traits on [s2n-quic] 1.91, AWS's QUIC engine, with its
//! rustls TLS provider: the same `stoq-crypto` rustls configurations as the quinn backend
//! (TLS 1.3 only, hybrid X25519MLKEM768 preferred, AES-128-GCM first, aws-lc-rs), so
//! certificate work such as FALCON applies to both. s2n-quic's default TLS stack (s2n-tls,
//! a second aws-lc build) is not compiled.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stoq_core::Error> {
//! use stoq_core::{Backend, EndpointSpec, TransportConfig};
//! let tls = stoq_crypto::ephemeral_material(&["localhost"])?;
//! let server = stoq_s2n::S2nBackend.bind(EndpointSpec::server(
//!     "[::1]:0".parse().unwrap(), TransportConfig::default(), tls.clone()))?;
//! let client = stoq_s2n::S2nBackend.bind(EndpointSpec::client(
//!     server.local_addr()?, TransportConfig::default(), tls))?;
//! let conn = client.connect(server.local_addr()?, "localhost").await?;
//! # Ok(()) }
//! ```
//!
//! s2n-quic composes an endpoint from *providers* on one builder; STOQ supplies each:
//!
//! | provider | STOQ's |
//! |---|---|
//! | TLS | `s2n_quic::provider::tls::rustls` from `stoq_crypto::{server,client}_config`, with a key log that captures the exporter secret ([`exporter`](crate#keying-material-export)) |
//! | IO | s2n-quic's tokio IO on a socket STOQ binds (dual-stack on `[::]`, `SO_SNDBUF`/`SO_RCVBUF`), GSO and GRO switched by the config |
//! | limits | idle timeout, flow-control windows, stream limits, send buffer, keep-alive period, handshake duration = `connect_timeout` |
//! | MTU | per path: the configured UDP payload sizes converted to the IP MTUs s2n-quic expects for the peer's family |
//! | congestion controller | s2n-quic's CUBIC or BBR, or a STOQ controller through [`congestion`] |
//! | datagram | STOQ's queues (see below) |
//! | event | statistics, close reasons, peer certificates, exporter binding |
//! | connection close formatter | keeps TLS alert codes (s2n-quic's default replaces them all with `handshake_failure`) |
//!
//! ## Mapping notes
//! * **Close reasons.** s2n-quic closes with an application code only
//!   (`Handle::close(application::Error)`; an application CONNECTION_CLOSE is built with
//!   `reason: None`, `s2n-quic-core/src/application/error.rs`) and drops a received reason
//!   (`connection::Error::Application` has no reason field). `close(code, reason)` sends the
//!   code; [`ConnectionError::LocallyClosed`](stoq_core::ConnectionError) and
//!   `ApplicationClosed` carry an empty reason. No [`Capability::CloseReason`].
//! * **Servers do not dial.** `s2n_quic::Server` only accepts and `s2n_quic::Client` only
//!   dials, each on its own socket; `connect` on a server endpoint returns
//!   `Error::Unsupported(Capability::DialFromServer)`.
//! * **No stream priorities** in s2n-quic 1.91: `set_priority` returns
//!   `StreamError::Unsupported(Capability::StreamPriority)`.
//! * **Connection lifecycle.** s2n-quic has no `closed()` future; the event subscriber's
//!   `on_connection_closed` records why, and `close()` records a local close at once.
//!   Dropping the STOQ connection and all its streams drops the last s2n-quic handle, which
//!   closes the connection. [`Transport::close`] closes every live connection with the code
//!   (the endpoint keeps weak references) and makes `accept` fail with
//!   `Error::EndpointClosed`.
//! * **Errors.** A TLS alert arrives as transport code `0x100 + alert` and becomes
//!   `ConnectionError::Tls` through `ConnectionError::from_transport_code`; the idle timer
//!   gives `TimedOut`; a dial that neither completes within `connect_timeout` (tokio timer)
//!   nor within s2n-quic's `max_handshake_duration` (set to the same value, so abandoned
//!   attempts also end inside the engine) gives `ConnectTimedOut`. s2n-quic's rustls
//!   provider panics on a server name rustls rejects, so `connect` checks the name first
//!   and returns `Error::InvalidAddress`.
//! * **Send streams.** Dropping a STOQ `SendStream` without `finish()` resets it (core);
//!   s2n-quic alone would finish it on drop. A peer's STOP_SENDING reaches the writer as
//!   `StreamError::Stopped(code)` (s2n-quic answers it with a RESET_STREAM and fails writes
//!   with that code). `stopped()` on a finished stream waits for the acknowledgement of
//!   all data and the FIN (`poll_close`); on an unfinished one it can only end by
//!   STOP_SENDING or the connection ending, and because s2n-quic has no "wait for
//!   STOP_SENDING" operation, the adapter re-checks every 10 ms once all written data is
//!   acknowledged. `write_chunk` is zero-copy; `AsyncWrite::poll_write` copies into a
//!   `Bytes` because s2n-quic takes owned chunks.
//! * **`send_window`** is s2n-quic's *per-stream* send buffer; flow-control windows and the
//!   send buffer are limited to 4 GiB - 1 (s2n-quic stores them as `u32`) and larger
//!   values are `Error::Config`. s2n-quic's extra cap on locally opened streams (default
//!   100) is lifted: only the peer's stream limit applies, as on quinn.
//! * **MTU.** s2n-quic configures IP MTUs and subtracts 28 (IPv4) or 48 (IPv6 and
//!   IPv4-mapped) bytes per peer; STOQ's per-path MTU provider converts so that the UDP
//!   payload is `initial_max_udp_payload` on every path (1452 B pinned by default), with
//!   probing up to `max_udp_payload` only when `mtu_discovery` is on.
//! * **Datagrams** use STOQ's own provider ([`datagram`](crate#datagrams)): queues counted
//!   in datagrams, newest dropped when full on both sides, `recv_datagram` woken per
//!   arrival, and a datagram that does not fit the packet being built waits for the next
//!   one (s2n-quic's default provider would drop it). `max_datagram_size()` is the path's
//!   UDP payload minus the largest 1-RTT header (20-byte connection ID, 4-byte packet
//!   number), the AEAD tag and the DATAGRAM frame header, capped by the peer's
//!   `max_datagram_frame_size`: 1408 bytes on a 1452-byte path.
//! * **Congestion control.** `algorithm = "cubic"` and `"bbr"` with `implementation =
//!   "engine"` run s2n-quic's CUBIC and BBRv2. s2n-quic has no NewReno, so `"new_reno"`
//!   runs STOQ's RFC 9002 NewReno through the adapter even with `implementation =
//!   "engine"`. `implementation = "stoq"` and custom controllers run through the adapter
//!   (s2n-quic's `unstable-congestion-controller` API). s2n-quic paces only through the
//!   controller, so the adapter paces: at the controller's `pacing_rate` when it gives one
//!   (hence [`Capability::PacingHonored`]), otherwise from window and RTT exactly like
//!   s2n-quic's CUBIC pacer. See [`congestion`].
//! * **Statistics** come from s2n-quic's events: RTT, minimum RTT, congestion window and
//!   bytes in flight from `RecoveryMetrics`; UDP datagrams and bytes (per GSO segment)
//!   from `DatagramSent`/`DatagramReceived`; lost packets and bytes from `PacketLost`;
//!   congestion events from `Congestion`; the path MTU from `MtuUpdated`. Application byte
//!   counters are kept by the core handles ([`stoq_core::ConnectionCounters`]).
//! * **Peer identity** is the chain rustls verified, read from the TLS session when the
//!   handshake completes (`TlsSession::peer_cert_chain_der` in the `TlsExporterReady`
//!   event, documented by s2n-quic as intended for unstable use).
//!
//! ## Keying-material export
//! s2n-quic exposes the TLS exporter only inside the `on_tls_exporter_ready` event, where
//! the label must be known in advance. STOQ instead captures the TLS 1.3 exporter master
//! secret rustls logs during the handshake, binds it to the connection by comparing the
//! engine's own exporter output for a probe label with the derivation from each captured
//! secret, and serves any label afterwards with the RFC 8446 section 7.5 derivation
//! rustls itself uses (checked against rustls in this crate's tests). Hence
//! [`Capability::KeyingMaterialExport`].
//!
//! ## Datagrams
//! See the mapping note above; queues live outside s2n-quic's connection lock, so sending
//! and receiving a datagram never contend with packet processing for it.
//!
//! [s2n-quic]: https://github.com/aws/s2n-quic
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod congestion;
mod connection;
mod datagram;
mod endpoint;
mod errors;
mod events;
mod exporter;
mod stream;

use std::sync::Arc;

use stoq_core::{Backend, Capabilities, Capability, EndpointSpec, Error, Transport};

pub use connection::S2nConnection;
pub use endpoint::{
    bind_socket, io_provider, limits, Congestion, EngineProviders, PathMtu, S2nTransport,
};
pub use errors::StoqCloseFormatter;

/// The largest datagram payload STOQ's datagram endpoint accepts on a path whose UDP
/// payload is `path_mtu` (1408 bytes at 1452): a 1-RTT packet's worst-case overhead and a
/// DATAGRAM frame header subtracted.
pub fn max_datagram_payload(path_mtu: u16) -> usize {
    datagram::max_datagram_payload(path_mtu)
}

/// What s2n-quic endpoints can do through STOQ.
///
/// Missing, and why: `CloseReason` (s2n-quic sends and reports codes only),
/// `DialFromServer` (s2n-quic servers cannot dial), `StreamPriority` (no API in s2n-quic
/// 1.91), `ZeroRtt` and `Migration` (not wired up: STOQ's configs disable 0-RTT and the
/// adapter exposes no migration). `FalconInHandshake`: s2n-quic's rustls provider with
/// stoq-crypto's FALCON provider. `FalconPostHandshake`: unidirectional streams and the
/// exporter (derived from the logged exporter secret, see `exporter.rs`) are all it needs.
pub const CAPABILITIES: Capabilities = Capabilities::from_slice(&[
    Capability::Datagrams,
    Capability::CustomCongestionControl,
    Capability::PacingHonored,
    Capability::KeyingMaterialExport,
    Capability::Gso,
    Capability::Gro,
    Capability::Ipv6,
    Capability::Ipv4,
    Capability::PeerIdentity,
    Capability::KeepAlive,
    Capability::FalconInHandshake,
    Capability::FalconPostHandshake,
]);

/// The s2n-quic engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct S2nBackend;

impl Backend for S2nBackend {
    fn name(&self) -> &str {
        "s2n"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn bind(&self, spec: EndpointSpec) -> Result<Arc<dyn Transport>, Error> {
        Ok(Arc::new(S2nTransport::bind(spec)?))
    }
}
