//! A quinn connection behind STOQ's [`Connection`] trait.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use stoq_core::pki_types::CertificateDer;
use stoq_core::{
    Connection, ConnectionCounters, ConnectionError, ConnectionStats, DatagramError, Error,
    RecvStream, SendStream, Side,
};

use crate::errors::{connection_error, datagram_error, LocalClose};
use crate::session;
use crate::stream::{QuinnRecv, QuinnSend};

/// One quinn connection.
#[derive(Debug, Clone)]
pub struct QuinnConnection {
    inner: quinn::Connection,
    counters: Arc<ConnectionCounters>,
    local_close: Arc<LocalClose>,
    datagrams_enabled: bool,
}

impl QuinnConnection {
    pub(crate) fn new(inner: quinn::Connection, datagrams_enabled: bool) -> Self {
        QuinnConnection {
            inner,
            counters: Arc::default(),
            local_close: Arc::default(),
            datagrams_enabled,
        }
    }

    /// The underlying quinn connection, for features STOQ does not wrap.
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }

    fn conn_err(&self, e: quinn::ConnectionError) -> ConnectionError {
        connection_error(e, &self.local_close)
    }

    fn send_stream(&self, s: quinn::SendStream) -> SendStream {
        SendStream::new(
            Box::new(QuinnSend::new(s, self.local_close.clone())),
            self.counters.clone(),
        )
    }

    fn recv_stream(&self, s: quinn::RecvStream) -> RecvStream {
        RecvStream::new(
            Box::new(QuinnRecv {
                inner: s,
                local_close: self.local_close.clone(),
            }),
            self.counters.clone(),
        )
    }
}

#[async_trait]
impl Connection for QuinnConnection {
    async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let (s, r) = self.inner.open_bi().await.map_err(|e| self.conn_err(e))?;
        Ok((self.send_stream(s), self.recv_stream(r)))
    }

    async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        let s = self.inner.open_uni().await.map_err(|e| self.conn_err(e))?;
        Ok(self.send_stream(s))
    }

    async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let (s, r) = self.inner.accept_bi().await.map_err(|e| self.conn_err(e))?;
        Ok((self.send_stream(s), self.recv_stream(r)))
    }

    async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        let r = self
            .inner
            .accept_uni()
            .await
            .map_err(|e| self.conn_err(e))?;
        Ok(self.recv_stream(r))
    }

    fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        if !self.datagrams_enabled {
            return Err(DatagramError::Disabled);
        }
        if let Some(reason) = self.close_reason() {
            return Err(DatagramError::ConnectionLost(reason));
        }
        let size = data.len();
        let max = self.inner.max_datagram_size();
        if let Some(max) = max {
            if size > max {
                return Err(DatagramError::TooLarge { size, max });
            }
        }
        self.inner
            .send_datagram(data)
            .map_err(|e| datagram_error(e, size, max, &self.local_close))?;
        self.counters.add_datagram_sent(size as u64);
        Ok(())
    }

    async fn recv_datagram(&self) -> Result<Bytes, DatagramError> {
        if !self.datagrams_enabled {
            return Err(DatagramError::Disabled);
        }
        let d = self
            .inner
            .read_datagram()
            .await
            .map_err(|e| DatagramError::ConnectionLost(self.conn_err(e)))?;
        self.counters.add_datagram_received(d.len() as u64);
        Ok(d)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        if !self.datagrams_enabled {
            return None;
        }
        self.inner.max_datagram_size()
    }

    fn close(&self, code: u64, reason: &[u8]) {
        let code = quinn::VarInt::from_u64(code).unwrap_or(quinn::VarInt::MAX);
        {
            let mut local = self.local_close.lock().expect("close lock poisoned");
            if local.is_none() && self.inner.close_reason().is_none() {
                *local = Some((code.into_inner(), Bytes::copy_from_slice(reason)));
            }
        }
        self.inner.close(code, reason);
    }

    async fn closed(&self) -> ConnectionError {
        let e = self.inner.closed().await;
        self.conn_err(e)
    }

    fn close_reason(&self) -> Option<ConnectionError> {
        self.inner.close_reason().map(|e| self.conn_err(e))
    }

    fn stats(&self) -> ConnectionStats {
        let q = self.inner.stats();
        let mut s = ConnectionStats::default();
        s.rtt = q.path.rtt;
        s.min_rtt = Some(self.inner.min_rtt());
        s.congestion_window = q.path.cwnd;
        s.udp_datagrams_sent = q.udp_tx.datagrams;
        s.udp_datagrams_received = q.udp_rx.datagrams;
        s.udp_bytes_sent = q.udp_tx.bytes;
        s.udp_bytes_received = q.udp_rx.bytes;
        s.packets_lost = q.path.lost_packets;
        s.bytes_lost = q.path.lost_bytes;
        s.congestion_events = Some(q.path.congestion_events);
        s.path_mtu = q.path.current_mtu;
        self.counters.fill(&mut s);
        s
    }

    fn remote_addr(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    fn side(&self) -> Side {
        session::side(self.inner.side())
    }

    fn alpn(&self) -> Option<Vec<u8>> {
        session::alpn(self.inner.handshake_data())
    }

    fn peer_identity(&self) -> Option<Vec<CertificateDer<'static>>> {
        session::peer_certificates(self.inner.peer_identity())
    }

    fn export_keying_material(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), Error> {
        self.inner
            .export_keying_material(out, label, context)
            .map_err(session::export_failed)
    }

    fn stable_id(&self) -> u64 {
        self.inner.stable_id() as u64
    }
}
