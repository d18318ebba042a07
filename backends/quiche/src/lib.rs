//! # STOQ on quiche
//!
//! A [`Backend`] that runs STOQ's traits on Cloudflare's [quiche] 0.30 with BoringSSL
//! (through the `boring` crate). quiche is a sans-IO state machine: it parses and builds
//! packets but owns no socket, no timer and no task. This crate supplies them:
//!
//! * **One driver task per endpoint** (`driver.rs`) owns the UDP socket (quinn-udp:
//!   `recvmmsg`, GRO on receive, GSO on send), routes datagrams to connections by
//!   destination connection ID, creates server connections only for well-formed Initial
//!   packets of at least 1,200 bytes, answers unknown versions with version negotiation,
//!   runs each connection's timer (`timeout_instant()` / `on_timeout()`), and flushes
//!   packets in GSO batches of equal-sized segments (the path's maximum UDP payload).
//! * **Each connection** is a `quiche::Connection` behind one mutex shared by the driver
//!   and the application's handles (`connection.rs`); handles hold wakers so the core's
//!   poll-based stream traits work from ordinary tokio code. No lock is held across an
//!   `await`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stoq_core::Error> {
//! use stoq_core::{Backend, EndpointSpec, TransportConfig};
//! let tls = stoq_crypto::ephemeral_material(&["localhost"])?;
//! let server = stoq_quiche::QuicheBackend.bind(EndpointSpec::server(
//!     "[::1]:0".parse().unwrap(), TransportConfig::default(), tls.clone()))?;
//! let client = stoq_quiche::QuicheBackend.bind(EndpointSpec::client(
//!     server.local_addr()?, TransportConfig::default(), tls))?;
//! let conn = client.connect(server.local_addr()?, "localhost").await?;
//! # Ok(()) }
//! ```
//!
//! ## Mapping notes
//!
//! **TLS.** Certificates, key and trust roots go from DER straight into a BoringSSL
//! `SslContextBuilder` handed to `quiche::Config::with_boring_ssl_ctx_builder`: nothing
//! is written to disk and only the given roots are trusted. Clients verify the peer
//! (`SSL_VERIFY_PEER`) and the server name (quiche sets SNI and the expected host; an IP
//! address is checked against the certificate's IP SANs and sent without SNI). Key
//! exchange prefers the hybrid `X25519MLKEM768`, then X25519, P-256, P-384
//! ([`config::GROUPS`]). TLS 1.3 cipher suites are not configurable in BoringSSL; with
//! AES hardware it negotiates `TLS_AES_128_GCM_SHA256`
//! ([`QuicheConnection::tls_parameters`] reports what was negotiated).
//!
//! **Keying-material export** uses BoringSSL's own RFC 8446 section 7.5 exporter
//! (`SSL_export_keying_material`), reached through quiche's
//! `impl AsMut<boring::ssl::SslRef> for Connection`; labels must be UTF-8 (BoringSSL's
//! API takes text). The values equal rustls's for the same label and context (tested
//! against the quinn backend in both directions).
//!
//! **Congestion control.** `new_reno`, `cubic` and `bbr` map to quiche's `Reno`, `CUBIC`
//! and `Bbr2Gcongestion`. quiche 0.30 has no pluggable controller (its
//! `CongestionControlAlgorithm` is a closed enum), so a custom controller or
//! `implementation = "stoq"` is refused at bind with
//! `Error::Unsupported(Capability::CustomCongestionControl)`.
//!
//! quiche's CUBIC has one behaviour users see on lossy or shared paths: when the first
//! packet sent after a window cut is acknowledged, it undoes the cut as "spurious" if fewer
//! than max(2, 20 % of the reduced window in packets) were lost since the cut (`rollback` in
//! quiche 0.30's `recovery/congestion/cubic.rs`, `ROLLBACK_THRESHOLD_PERCENT`,
//! `MIN_ROLLBACK_THRESHOLD`; not after a cut from slow start, and no configuration turns it
//! off). RFC 9438 (section 4.9) undoes a cut when a detection mechanism shows the loss was
//! spurious; a count of lost packets is passed by real losses too. So a large window shrugs
//! off isolated random losses, and of two flows sharing a tail-drop queue the one with the
//! larger window rolls back nearly every cut while the smaller one keeps most of its cuts.
//! `benches/results/emulated-path.md` measures both.
//!
//! **Pacing.** quiche stamps packets with `SendInfo.at`; only its BBRv2 sets it ahead
//! (Reno and CUBIC have no pacer in quiche 0.30 and stamp "now"). The driver holds a
//! packet whose time is further ahead than quiche's `max_release_into_future()` and
//! sends it from a timer; nearer ones go at once (tokio's timer has millisecond
//! resolution; SO_TXTIME is not used).
//!
//! **Streams.** `write_chunk` hands the `Bytes` to quiche without copying
//! (`stream_send_zc` with a `Bytes` buffer factory); `AsyncWrite` copies once. quiche
//! lets an application queue at most what the congestion window and the peer's
//! flow-control credit allow (`tx_cap`), so `TransportConfig::send_window` has no
//! quiche equivalent and is not used. Stream priority maps STOQ's "higher first" onto
//! quiche's urgency (lower first, 127 default).
//!
//! **`stopped()`** returns `Ok(None)` only when quiche has *collected* the stream, which
//! it does once all data and the FIN are acknowledged — for a unidirectional stream as
//! soon as that happens, for a bidirectional stream only once its receive half is also
//! finished (the peer's FIN or reset read, or reading stopped after the peer's FIN).
//! quiche exposes no per-stream acknowledgement state, so `stopped()` on a
//! bidirectional stream whose receive half is still open waits for that too.
//!
//! **Two quiche behaviours the driver works around.** (1) quiche skips the rest of a
//! datagram once one coalesced packet in it cannot be decrypted (quiche 0.30
//! `Connection::recv`: `Err(Done)` from `recv_single` consumes the remainder), so a
//! peer's 1-RTT CONNECTION_CLOSE coalesced behind a Handshake packet whose keys quiche
//! already dropped was lost; the driver splits coalesced long-header packets by their
//! Length field and feeds them one by one. (2) quiche forgets a STOP_SENDING code when
//! the stream is collected in the same receive (STOP_SENDING plus an ACK, as s2n-quic
//! sends them) and the stream had been taken out of quiche's writable set; the driver
//! therefore never uses `stream_writable_next()` and polls parked writers' capacity
//! instead, which keeps stopped streams in that set until STOQ has read the code.
//!
//! **Connections.** Close codes and reasons go out as `CONNECTION_CLOSE`
//! (`conn.close(true, code, reason)`); the peer's arrive through `peer_error()`, quiche's
//! own (TLS alerts, protocol errors) through `local_error()`, idle timeouts through
//! `is_timed_out()`. Keep-alive is done by the driver (`send_ack_eliciting()` after
//! `keep_alive_interval` without sending). Dropping every handle of a connection closes
//! it with code 0, as quinn does. A server endpoint dials from its own socket.
//!
//! **Not supported**: custom congestion control (see above), pacing at a controller's
//! rate (no custom controllers), 0-RTT and connection migration (quiche can do both, but
//! STOQ's API has no session resumption or migration calls yet), FALCON certificates in
//! the handshake (BoringSSL has no FALCON signature scheme). ECN is not used: quiche
//! 0.30 neither marks nor reads ECN codepoints.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
mod connection;
mod driver;
mod endpoint;
mod errors;
mod socket;
mod stream;

use std::sync::Arc;

use stoq_core::{Backend, Capabilities, Capability, EndpointSpec, Error, Transport};

pub use connection::QuicheConnection;
pub use endpoint::QuicheTransport;

/// What quiche endpoints can do through STOQ.
pub const CAPABILITIES: Capabilities = Capabilities::from_slice(&[
    Capability::Datagrams,
    Capability::KeyingMaterialExport,
    Capability::Gso,
    Capability::Gro,
    Capability::Ipv6,
    Capability::Ipv4,
    Capability::PeerIdentity,
    Capability::StreamPriority,
    Capability::KeepAlive,
    Capability::CloseReason,
    Capability::DialFromServer,
    // BoringSSL cannot carry a FALCON chain in the handshake (`FalconInHandshake` is
    // refused at bind), but post-handshake FALCON authentication needs only unidirectional
    // streams and the exporter: stoq_crypto::falcon::post_handshake.
    Capability::FalconPostHandshake,
]);

/// The quiche engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuicheBackend;

impl Backend for QuicheBackend {
    fn name(&self) -> &str {
        "quiche"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn bind(&self, spec: EndpointSpec) -> Result<Arc<dyn Transport>, Error> {
        Ok(Arc::new(QuicheTransport::bind(spec)?))
    }
}
