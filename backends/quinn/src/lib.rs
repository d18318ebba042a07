//! # STOQ on quinn
//!
//! A [`Backend`] that runs STOQ's traits on [quinn] 0.11: quinn-proto's sans-IO state
//! machine, quinn-udp's socket layer (GSO on send, GRO on receive, ECN) and rustls on
//! aws-lc-rs with hybrid X25519MLKEM768 key exchange preferred (see `stoq-crypto`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), stoq_core::Error> {
//! use stoq_core::{Backend, EndpointSpec, TransportConfig};
//! let tls = stoq_crypto::ephemeral_material(&["localhost"])?;
//! let server = stoq_quinn::QuinnBackend.bind(EndpointSpec::server(
//!     "[::1]:0".parse().unwrap(), TransportConfig::default(), tls.clone()))?;
//! let client = stoq_quinn::QuinnBackend.bind(EndpointSpec::client(
//!     server.local_addr()?, TransportConfig::default(), tls))?;
//! let conn = client.connect(server.local_addr()?, "localhost").await?;
//! # Ok(()) }
//! ```
//!
//! Mapping notes:
//! * quinn finishes a dropped `SendStream`; STOQ's core handle resets it instead (the
//!   contract every backend meets), so the adapter never relies on quinn's drop.
//! * quinn always uses GRO where the kernel offers it and has no switch to turn it off;
//!   `gro = false` is refused as a configuration error rather than silently ignored.
//! * A custom [`CongestionController`](stoq_core::congestion::CongestionController) runs
//!   inside quinn-proto through [`congestion::StoqControllerFactory`]. quinn-proto paces
//!   from window and RTT (1.25 × window / smoothed RTT) and has no pacing rate, so the
//!   endpoint's socket is wrapped in [`pacing::PacedSocket`], which holds each connection's
//!   sends to its controller's `pacing_rate` ([`Capability::PacingHonored`]); quinn's own
//!   pacer still applies on top. The limits (bursts, the longest hold, rebinding) are in
//!   the [`pacing`] module's documentation.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod congestion;
mod connection;
mod endpoint;
pub mod errors;
pub mod pacing;
pub mod session;
mod stream;

use std::sync::Arc;

use stoq_core::{Backend, Capabilities, Capability, EndpointSpec, Error, Transport};

pub use connection::QuinnConnection;
pub use endpoint::{
    bind_socket, quinn_configs, transport_config, EngineIdentity, QuinnConfigs, QuinnTransport,
    QUINN_IDENTITY,
};

/// What quinn endpoints can do through STOQ.
pub const CAPABILITIES: Capabilities = Capabilities::from_slice(&[
    Capability::Datagrams,
    Capability::CustomCongestionControl,
    // pacing::PacedSocket, for STOQ controllers.
    Capability::PacingHonored,
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
    // rustls with stoq-crypto's FALCON provider: FALCON certificates authenticate both
    // sides inside the TLS 1.3 handshake.
    Capability::FalconInHandshake,
    // Unidirectional streams and the TLS exporter: stoq_crypto::falcon::post_handshake.
    Capability::FalconPostHandshake,
]);

/// The quinn engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuinnBackend;

impl Backend for QuinnBackend {
    fn name(&self) -> &str {
        "quinn"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn bind(&self, spec: EndpointSpec) -> Result<Arc<dyn Transport>, Error> {
        Ok(Arc::new(QuinnTransport::bind(spec)?))
    }
}
