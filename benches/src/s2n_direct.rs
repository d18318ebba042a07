//! The s2n-direct driver: s2n-quic 1.91's own API (`s2n_quic::Server`/`Client`,
//! `Connection`, `BidirectionalStream`, its default datagram provider), configured from a
//! STOQ [`TransportConfig`] by `stoq-s2n`'s own code ([`stoq_s2n::EngineProviders`]: the
//! UDP socket with its buffer sizes, the tokio IO provider with GSO/GRO and MTU bounds,
//! the connection limits, the per-path MTU pinned to the 1452-byte UDP payload, the
//! congestion controller) and `stoq_crypto`'s rustls configurations. So both the
//! `stoq-s2n` and the `s2n-direct` rows run identical engine settings, and their ratio is
//! STOQ's framework overhead on s2n-quic.
//!
//! Left out, because they are what STOQ adds on top of the engine: STOQ's TLS key log
//! (keying-material export), its event subscriber (statistics, close reasons), its
//! datagram endpoint and its close formatter. Datagrams go through s2n-quic's default
//! datagram provider with STOQ's queue sizes; a send when the queue is full drops the
//! oldest queued datagram (`send_datagram_forced`), as quinn does.
//!
//! One adaptation: s2n-quic's `tokio::io::AsyncWrite::poll_shutdown` on a send stream waits
//! until the peer acknowledged all data and the FIN (`poll_close`), where quinn's and
//! STOQ's shutdown only send the FIN. The benchmark protocol means "send the FIN", so
//! [`FinishOnShutdown`] maps shutdown to s2n-quic's `SendStream::finish`; writes go through
//! s2n-quic's own `AsyncWrite`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use s2n_quic::connection::{Handle, StreamAcceptor};
use s2n_quic::provider::congestion_controller::{Bbr, Cubic};
use s2n_quic::provider::datagram::default as dgram;
use s2n_quic::provider::tls::rustls as s2n_rustls;
use s2n_quic::stream::SendStream;
use stoq_core::{TlsMaterial, TransportConfig};
use stoq_s2n::{Congestion, EngineProviders};

use crate::driver::SERVER_NAME;
use crate::net::{io_other, BoxRead, BoxWrite, Dialer, Session};
use crate::BenchError;

/// Adds `providers`, `tls` and `datagrams` to an s2n-quic server or client builder, picks
/// the congestion controller (each is a different builder type) and starts it.
macro_rules! start {
    ($builder:expr, $providers:expr, $tls:expr, $datagrams:expr, $what:literal) => {{
        let p: EngineProviders = $providers;
        let e = |x: &dyn std::fmt::Display| BenchError::Usage(format!("{}: {x}", $what));
        let builder = $builder
            .with_tls($tls)
            .map_err(|x| e(&x))?
            .with_io(p.io)
            .map_err(|x| e(&x))?
            .with_limits(p.limits)
            .map_err(|x| e(&x))?
            .with_mtu(p.mtu)
            .map_err(|x| e(&x))?
            .with_datagram($datagrams)
            .map_err(|x| e(&x))?;
        match p.congestion {
            Congestion::Cubic => builder
                .with_congestion_controller(Cubic::default())
                .map_err(|x| e(&x))?
                .start(),
            Congestion::Bbr => builder
                .with_congestion_controller(Bbr::default())
                .map_err(|x| e(&x))?
                .start(),
            Congestion::Stoq(cc) => builder
                .with_congestion_controller(cc)
                .map_err(|x| e(&x))?
                .start(),
        }
        .map_err(|x| e(&x))?
    }};
}

/// s2n-quic's default datagram provider with `cfg`'s queue sizes (in datagrams).
pub fn datagram_endpoint(cfg: &TransportConfig) -> Result<dgram::Endpoint, BenchError> {
    let e = |x: &dyn std::fmt::Display| BenchError::Usage(format!("datagram queues: {x}"));
    let endpoint = dgram::Endpoint::builder()
        .with_send_capacity(cfg.datagrams.send_queue.max(1))
        .map_err(|x| e(&x))?
        .with_recv_capacity(cfg.datagrams.receive_queue.max(1))
        .map_err(|x| e(&x))?
        .build()
        .map_err(|x| e(&x))?;
    Ok(endpoint)
}

/// An s2n-quic server on `bind`: `stoq-s2n`'s providers for `cfg`,
/// `stoq_crypto::server_config`, s2n-quic's default datagram provider.
pub fn server(
    bind: SocketAddr,
    tls: &TlsMaterial,
    cfg: &TransportConfig,
) -> Result<s2n_quic::Server, BenchError> {
    let providers = EngineProviders::new(bind, cfg)?;
    let rustls = stoq_crypto::server_config(tls, &cfg.alpn)?;
    Ok(start!(
        s2n_quic::Server::builder(),
        providers,
        s2n_rustls::Server::from(rustls),
        datagram_endpoint(cfg)?,
        "starting the s2n-quic server"
    ))
}

/// An s2n-quic client on `bind`: `stoq-s2n`'s providers for `cfg`,
/// `stoq_crypto::client_config`, s2n-quic's default datagram provider.
pub fn client(
    bind: SocketAddr,
    tls: &TlsMaterial,
    cfg: &TransportConfig,
) -> Result<s2n_quic::Client, BenchError> {
    let providers = EngineProviders::new(bind, cfg)?;
    let rustls = stoq_crypto::client_config(tls, &cfg.alpn)?;
    Ok(start!(
        s2n_quic::Client::builder(),
        providers,
        s2n_rustls::Client::from(rustls),
        datagram_endpoint(cfg)?,
        "starting the s2n-quic client"
    ))
}

/// s2n-quic's send stream with `shutdown` sending the FIN without waiting for its
/// acknowledgement (see the module documentation); everything else is s2n-quic's
/// `AsyncWrite`.
pub struct FinishOnShutdown(pub SendStream);

impl tokio::io::AsyncWrite for FinishOnShutdown {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.finish().map_err(io::Error::from))
    }
}

/// Waits for the next datagram on a connection using [`datagram_endpoint`]; `None` once
/// the connection has ended.
pub(crate) async fn recv_datagram(handle: &Handle) -> Option<Bytes> {
    std::future::poll_fn(|cx| {
        match handle.datagram_mut(|r: &mut dgram::Receiver| r.poll_recv_datagram(cx)) {
            Ok(Poll::Ready(Ok(d))) => Poll::Ready(Some(d)),
            Ok(Poll::Pending) => Poll::Pending,
            // A connection error, or the connection is gone.
            Ok(Poll::Ready(Err(_))) | Err(_) => Poll::Ready(None),
        }
    })
    .await
}

/// Dials one server with an s2n-quic client.
pub(crate) struct S2nDialer {
    client: s2n_quic::Client,
    addr: SocketAddr,
    timeout: Duration,
    max_datagram: usize,
}

impl S2nDialer {
    pub(crate) fn new(
        addr: SocketAddr,
        tls: &TlsMaterial,
        cfg: &TransportConfig,
    ) -> Result<Self, BenchError> {
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        Ok(S2nDialer {
            client: client(bind, tls, cfg)?,
            addr,
            timeout: cfg.connect_timeout,
            max_datagram: stoq_s2n::max_datagram_payload(cfg.initial_max_udp_payload),
        })
    }
}

#[async_trait]
impl Dialer for S2nDialer {
    async fn connect(&self) -> io::Result<Arc<dyn Session>> {
        let connect = s2n_quic::client::Connect::new(self.addr).with_server_name(SERVER_NAME);
        let conn = tokio::time::timeout(self.timeout, self.client.connect(connect))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "s2n-quic connect timed out"))?
            .map_err(io_other)?;
        let (handle, acceptor) = conn.split();
        Ok(Arc::new(S2nSession {
            handle,
            _acceptor: acceptor,
            max_datagram: self.max_datagram,
        }))
    }

    async fn shutdown(&self) {
        let mut client = self.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), client.wait_idle()).await;
    }
}

struct S2nSession {
    handle: Handle,
    /// Kept with the handle: the connection lives as long as the session.
    _acceptor: StreamAcceptor,
    max_datagram: usize,
}

#[async_trait]
impl Session for S2nSession {
    async fn open(&self) -> io::Result<(BoxWrite, BoxRead)> {
        let mut handle = self.handle.clone();
        let stream = handle.open_bidirectional_stream().await.map_err(io_other)?;
        let (r, w) = stream.split();
        Ok((Box::new(FinishOnShutdown(w)), Box::new(r)))
    }

    fn send_datagram(&self, data: Bytes) -> io::Result<()> {
        self.handle
            .datagram_mut(|s: &mut dgram::Sender| s.send_datagram_forced(data))
            .map_err(io_other)?
            .map(|_dropped_oldest| ())
            .map_err(io_other)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        Some(self.max_datagram)
    }

    async fn close(&self) {
        self.handle.close(0u8.into());
    }
}
