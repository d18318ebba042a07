//! The endpoint trait and the backend factory.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{Capabilities, ConnectionHandle, EndpointStats, Error, TlsMaterial, TransportConfig};

/// One QUIC endpoint: a UDP socket that dials ([`connect`](Self::connect)) and, when it
/// has an identity, accepts ([`accept`](Self::accept)).
///
/// Object-safe: applications hold `Arc<dyn Transport>` and may supply their own.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// The backend's name, e.g. `"quinn"`.
    fn name(&self) -> &str;

    /// What this endpoint can do.
    fn capabilities(&self) -> Capabilities;

    /// Dials `addr`, verifying the server's certificate against `server_name`, and
    /// completes the handshake. Fails with
    /// [`ConnectionError::ConnectTimedOut`](crate::ConnectionError::ConnectTimedOut) after the configured `connect_timeout`,
    /// [`ConnectionError::Tls`](crate::ConnectionError::Tls) for an untrusted certificate or no common ALPN, and
    /// [`Error::InvalidAddress`] for an unusable address or name.
    async fn connect(&self, addr: SocketAddr, server_name: &str)
        -> Result<ConnectionHandle, Error>;

    /// Waits for the next incoming connection whose handshake completed. Handshakes run
    /// concurrently; failed ones are counted in [`EndpointStats::handshake_failures`] and
    /// logged, not returned. Fails with [`Error::EndpointClosed`] once the endpoint is
    /// closed, and with [`Error::Unsupported`]/[`Error::Tls`] if it has no identity.
    async fn accept(&self) -> Result<ConnectionHandle, Error>;

    /// The address the socket is bound to (with the real port when bound to port 0).
    fn local_addr(&self) -> Result<SocketAddr, Error>;

    /// Endpoint statistics.
    fn stats(&self) -> EndpointStats;

    /// Closes every connection with `code` and `reason`, stops accepting, and waits
    /// (bounded by a short grace period) until the peers were told.
    async fn close(&self, code: u64, reason: &[u8]);
}

/// Which roles an endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointRole {
    /// Dials only.
    Client,
    /// Accepts. Dials too (from the same socket) where the backend has
    /// [`Capability::DialFromServer`](crate::Capability); elsewhere `connect` fails with
    /// [`Error::Unsupported`].
    Server,
}

/// Everything needed to bind one endpoint, independent of the engine.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    /// The local address to bind (`[::]:0` for an ephemeral client port). Binding `[::]`
    /// accepts IPv4 peers too where the OS allows dual-stack sockets.
    pub bind: SocketAddr,
    /// Transport settings.
    pub config: TransportConfig,
    /// Certificates, keys and roots.
    pub tls: TlsMaterial,
    /// Client or server.
    pub role: EndpointRole,
}

impl EndpointSpec {
    /// A client endpoint on an ephemeral port of the unspecified address of `family_of`'s
    /// family.
    pub fn client(family_of: SocketAddr, config: TransportConfig, tls: TlsMaterial) -> Self {
        let bind = if family_of.is_ipv6() {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
        };
        EndpointSpec {
            bind,
            config,
            tls,
            role: EndpointRole::Client,
        }
    }

    /// A server endpoint bound to `bind`.
    pub fn server(bind: SocketAddr, config: TransportConfig, tls: TlsMaterial) -> Self {
        EndpointSpec {
            bind,
            config,
            tls,
            role: EndpointRole::Server,
        }
    }
}

/// A QUIC engine: binds endpoints from an [`EndpointSpec`].
///
/// The SDK, the conformance suite and the benchmarks only know engines through this
/// trait, so a user's own engine gets the same treatment as the built-in ones.
pub trait Backend: Send + Sync + fmt::Debug {
    /// A short stable name, e.g. `"quinn"`.
    fn name(&self) -> &str;

    /// What endpoints of this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Binds an endpoint. Must be called within a tokio runtime. Fails with
    /// [`Error::Config`] for invalid settings, [`Error::Unsupported`] for a feature the
    /// engine lacks (e.g. a custom congestion controller), [`Error::Tls`] for unusable
    /// certificates and [`Error::Io`] when the socket cannot be bound.
    fn bind(&self, spec: EndpointSpec) -> Result<Arc<dyn Transport>, Error>;
}
