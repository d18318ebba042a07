//! An s2n-quic connection behind STOQ's [`Connection`] trait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use s2n_quic::connection::{BidirectionalStreamAcceptor, Handle, ReceiveStreamAcceptor};
use stoq_core::pki_types::CertificateDer;
use stoq_core::{
    Connection, ConnectionCounters, ConnectionError, ConnectionStats, DatagramError, Error,
    RecvStream, SendStream, Side,
};
use tokio::sync::Mutex;

use crate::datagram::{max_datagram_payload, DatagramSender, DatagramShared};
use crate::errors::{app_code, connection_error};
use crate::events::{ConnContext, ConnShared};
use crate::stream::{S2nRecv, S2nSend};

/// How long an operation that saw the connection end without an error waits for the
/// close event that says why.
const CLOSE_EVENT_WAIT: Duration = Duration::from_secs(2);

/// What keeps an s2n-quic connection open: its handle and shared state. The STOQ
/// connection and every stream it handed out hold one `Arc` of it; when the last one is
/// dropped, the s2n-quic handle goes and s2n-quic closes the connection (as quinn does when
/// all its handles are dropped). The endpoint keeps a `Weak` to close live connections.
#[derive(Debug)]
pub(crate) struct ConnCore {
    handle: Handle,
    pub(crate) shared: Arc<ConnShared>,
}

impl ConnCore {
    /// Closes the connection with an application `code`. s2n-quic sends no reason phrase,
    /// so the recorded reason is empty (what was really sent).
    pub(crate) fn close(&self, code: u64) {
        let code = app_code(code);
        self.shared.set_closed(ConnectionError::LocallyClosed {
            code: u64::from(code),
            reason: Bytes::new(),
        });
        self.handle.close(code);
    }

    /// Waits until s2n-quic processed the close.
    pub(crate) async fn wait_close_processed(&self) {
        self.shared.engine_closed().await
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.close_reason().is_some()
    }
}

/// One s2n-quic connection.
#[derive(Debug)]
pub struct S2nConnection {
    core: Arc<ConnCore>,
    bidi: Mutex<BidirectionalStreamAcceptor>,
    uni: Mutex<ReceiveStreamAcceptor>,
    datagrams: Arc<DatagramShared>,
    counters: Arc<ConnectionCounters>,
    side: Side,
    remote: SocketAddr,
    alpn: Option<Vec<u8>>,
    id: u64,
}

/// Reports an IPv4 peer on a dual-stack socket by its IPv4 address.
pub(crate) fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

impl S2nConnection {
    /// Wraps an established s2n-quic connection. `keep_alive` turns on s2n-quic's PINGs
    /// (their period is set in the endpoint's limits).
    pub(crate) fn new(
        conn: s2n_quic::Connection,
        side: Side,
        datagrams_enabled: bool,
        keep_alive: bool,
    ) -> Self {
        let (mut handle, acceptor) = conn.split();
        let (bidi, uni) = acceptor.split();
        let shared = handle
            .query_event_context(|c: &ConnContext| c.shared.clone())
            .unwrap_or_else(|_| {
                // The connection was finalised before STOQ saw it.
                let s = ConnShared::default();
                s.set_closed(ConnectionError::Engine(
                    "the connection ended before it was handed to STOQ".into(),
                ));
                Arc::new(s)
            });
        let datagrams = handle
            .datagram_mut(|s: &mut DatagramSender| s.shared.clone())
            .unwrap_or_else(|_| Arc::new(DatagramShared::closed(datagrams_enabled)));
        if keep_alive {
            // Fails only if the connection already ended; nothing to keep alive then.
            let _ = handle.keep_alive(true);
        }
        let remote = handle
            .remote_addr()
            .map(unmap)
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let alpn = handle
            .application_protocol()
            .ok()
            .filter(|p| !p.is_empty())
            .map(|p| p.to_vec());
        let id = handle.id();
        S2nConnection {
            core: Arc::new(ConnCore { handle, shared }),
            bidi: Mutex::new(bidi),
            uni: Mutex::new(uni),
            datagrams,
            counters: Arc::default(),
            side,
            remote,
            alpn,
            id,
        }
    }

    /// The keep-open token the endpoint tracks for `Transport::close`.
    pub(crate) fn core(&self) -> &Arc<ConnCore> {
        &self.core
    }

    /// The underlying s2n-quic handle, for features STOQ does not wrap.
    pub fn s2n(&self) -> &Handle {
        &self.core.handle
    }

    fn conn_err(&self, e: s2n_quic::connection::Error) -> ConnectionError {
        self.core
            .shared
            .close_reason()
            .unwrap_or_else(|| connection_error(e))
    }

    /// Why the connection ended, after an operation found it ended without an error
    /// value (s2n-quic's acceptors return `Ok(None)` then).
    async fn ended(&self) -> ConnectionError {
        if let Some(r) = self.core.shared.close_reason() {
            return r;
        }
        tokio::time::timeout(CLOSE_EVENT_WAIT, self.core.shared.closed())
            .await
            .unwrap_or(ConnectionError::LocallyClosed {
                code: 0,
                reason: Bytes::new(),
            })
    }

    fn send_stream(&self, s: s2n_quic::stream::SendStream) -> SendStream {
        SendStream::new(
            Box::new(S2nSend::new(s, self.core.clone())),
            self.counters.clone(),
        )
    }

    fn recv_stream(&self, r: s2n_quic::stream::ReceiveStream) -> RecvStream {
        RecvStream::new(
            Box::new(S2nRecv::new(r, self.core.clone())),
            self.counters.clone(),
        )
    }

    fn bidi_pair(&self, s: s2n_quic::stream::BidirectionalStream) -> (SendStream, RecvStream) {
        let (recv, send) = s.split();
        (self.send_stream(send), self.recv_stream(recv))
    }
}

#[async_trait]
impl Connection for S2nConnection {
    async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        if let Some(r) = self.core.shared.close_reason() {
            return Err(r);
        }
        // Each handle clone has its own open token, so concurrent opens do not interfere.
        let mut handle = self.core.handle.clone();
        let s = handle
            .open_bidirectional_stream()
            .await
            .map_err(|e| self.conn_err(e))?;
        Ok(self.bidi_pair(s))
    }

    async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        if let Some(r) = self.core.shared.close_reason() {
            return Err(r);
        }
        let mut handle = self.core.handle.clone();
        let s = handle
            .open_send_stream()
            .await
            .map_err(|e| self.conn_err(e))?;
        Ok(self.send_stream(s))
    }

    async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let r = self.bidi.lock().await.accept_bidirectional_stream().await;
        match r {
            Ok(Some(s)) => Ok(self.bidi_pair(s)),
            Ok(None) => Err(self.ended().await),
            Err(e) => Err(self.conn_err(e)),
        }
    }

    async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        let r = self.uni.lock().await.accept_receive_stream().await;
        match r {
            Ok(Some(s)) => Ok(self.recv_stream(s)),
            Ok(None) => Err(self.ended().await),
            Err(e) => Err(self.conn_err(e)),
        }
    }

    fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        if !self.datagrams.enabled {
            return Err(DatagramError::Disabled);
        }
        if let Some(r) = self.core.shared.close_reason() {
            return Err(DatagramError::ConnectionLost(r));
        }
        let Some(max) = self.max_datagram_size() else {
            return Err(DatagramError::Disabled);
        };
        let size = data.len();
        if size > max {
            return Err(DatagramError::TooLarge { size, max });
        }
        self.datagrams.send(data).map_err(|_| {
            DatagramError::ConnectionLost(
                self.core
                    .shared
                    .close_reason()
                    .unwrap_or(ConnectionError::Engine("the connection ended".into())),
            )
        })?;
        self.counters.add_datagram_sent(size as u64);
        Ok(())
    }

    async fn recv_datagram(&self) -> Result<Bytes, DatagramError> {
        if !self.datagrams.enabled {
            return Err(DatagramError::Disabled);
        }
        match self.datagrams.recv().await {
            Some(d) => {
                self.counters.add_datagram_received(d.len() as u64);
                Ok(d)
            }
            None => Err(DatagramError::ConnectionLost(self.ended().await)),
        }
    }

    fn max_datagram_size(&self) -> Option<usize> {
        if !self.datagrams.enabled || self.datagrams.peer_max_payload == 0 {
            return None;
        }
        let path = max_datagram_payload(self.core.shared.mtu());
        let peer = usize::try_from(self.datagrams.peer_max_payload).unwrap_or(usize::MAX);
        Some(path.min(peer))
    }

    fn close(&self, code: u64, _reason: &[u8]) {
        // s2n-quic's close carries an application code only
        // (`s2n_quic::connection::Handle::close(application::Error)`).
        self.core.close(code);
    }

    async fn closed(&self) -> ConnectionError {
        self.core.shared.closed().await
    }

    fn close_reason(&self) -> Option<ConnectionError> {
        self.core.shared.close_reason()
    }

    fn stats(&self) -> ConnectionStats {
        let mut s = ConnectionStats::default();
        self.core.shared.fill(&mut s);
        self.counters.fill(&mut s);
        s
    }

    fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    fn side(&self) -> Side {
        self.side
    }

    fn alpn(&self) -> Option<Vec<u8>> {
        self.alpn.clone()
    }

    fn peer_identity(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.core.shared.peer_chain()
    }

    fn export_keying_material(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), Error> {
        let secret = self.core.shared.exporter().ok_or_else(|| {
            Error::Tls(
                "the TLS exporter secret of this connection was not captured at the end of \
                 the handshake"
                    .into(),
            )
        })?;
        secret
            .export(out, label, context)
            .map_err(|e| Error::Tls(format!("keying material export failed: {e:?}")))
    }

    fn stable_id(&self) -> u64 {
        self.id
    }
}
