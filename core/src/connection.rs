//! The connection trait.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rustls_pki_types::CertificateDer;

use crate::{ConnectionError, ConnectionStats, DatagramError, Error, RecvStream, SendStream};

/// Which side of a connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Side {
    /// This side dialled.
    Client,
    /// This side accepted.
    Server,
}

/// How applications hold a connection: cheap to clone, shareable across tasks.
pub type ConnectionHandle = Arc<dyn Connection>;

/// One established QUIC connection.
///
/// Every method is safe to call concurrently from several tasks. Once the connection has
/// ended, stream and datagram operations fail with the [`ConnectionError`] that ended it
/// (the same value [`closed`](Self::closed) returns).
#[async_trait]
pub trait Connection: Send + Sync + fmt::Debug {
    /// Opens a bidirectional stream, waiting while the peer's stream limit is reached.
    /// The peer learns of the stream when data (or the FIN) is first sent on it.
    async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError>;

    /// Opens a unidirectional (send-only) stream, waiting while the peer's limit is reached.
    async fn open_uni(&self) -> Result<SendStream, ConnectionError>;

    /// Waits for the peer to open a bidirectional stream.
    async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError>;

    /// Waits for the peer to open a unidirectional stream.
    async fn accept_uni(&self) -> Result<RecvStream, ConnectionError>;

    /// Queues an unreliable datagram (RFC 9221). Best effort: it may be lost or dropped
    /// when the send buffer is full. Fails with [`DatagramError::TooLarge`] above
    /// [`max_datagram_size`](Self::max_datagram_size) and [`DatagramError::Disabled`] when
    /// either side has datagrams off.
    fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError>;

    /// Waits for the next datagram from the peer.
    async fn recv_datagram(&self) -> Result<Bytes, DatagramError>;

    /// The largest datagram payload that can be sent now, or `None` when datagrams are
    /// unavailable on this connection. May change when the path MTU changes.
    fn max_datagram_size(&self) -> Option<usize>;

    /// Closes the connection immediately with an application `code` (< 2^62) and
    /// `reason`; the peer sees [`ConnectionError::ApplicationClosed`] with both. Backends
    /// without [`Capability::CloseReason`](crate::Capability) send the code only, and the
    /// reason in [`ConnectionError::LocallyClosed`] is then empty (what was really sent). Streams
    /// and datagrams in flight are abandoned: finish streams and wait for
    /// [`SendStream::stopped`] first for a graceful end.
    fn close(&self, code: u64, reason: &[u8]);

    /// Waits until the connection has ended and says why.
    async fn closed(&self) -> ConnectionError;

    /// Why the connection ended, or `None` while it is open.
    fn close_reason(&self) -> Option<ConnectionError>;

    /// A statistics snapshot.
    fn stats(&self) -> ConnectionStats;

    /// The peer's current address.
    fn remote_addr(&self) -> SocketAddr;

    /// Which side this is.
    fn side(&self) -> Side;

    /// The application protocol agreed in the handshake.
    fn alpn(&self) -> Option<Vec<u8>>;

    /// The peer's certificate chain (leaf first, DER), if it presented one.
    fn peer_identity(&self) -> Option<Vec<CertificateDer<'static>>>;

    /// Fills `out` with keying material exported from the TLS session (RFC 8446
    /// section 7.5) for `label` and `context`. Both sides derive the same bytes.
    /// Backends without [`Capability::KeyingMaterialExport`](crate::Capability) return
    /// [`Error::Unsupported`].
    fn export_keying_material(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), Error>;

    /// An ID unique among this endpoint's live connections.
    fn stable_id(&self) -> u64;
}
