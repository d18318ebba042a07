//! One client-side interface over every driver: a [`Dialer`] makes [`Session`]s
//! (connections), a session opens bidirectional byte streams and, where the driver has
//! them, sends datagrams. For TCP drivers a session's first stream is the connection made
//! by `connect`; every further stream is a new TCP (or TLS) connection.
//!
//! Also here: the quinn configuration the quinn-direct driver builds itself, mirroring what
//! `stoq-quinn` builds from the same [`TransportConfig`] (s2n-direct: [`crate::s2n_direct`];
//! quiche-direct: [`crate::quiche_direct`]).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use stoq_core::{ConnectionHandle, EndpointSpec, TlsMaterial, Transport, TransportConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::driver::{bench_config, Driver, SERVER_NAME};
use crate::BenchError;

pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

pub(crate) fn io_other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// One connection, as the client sees it.
#[async_trait]
pub(crate) trait Session: Send + Sync {
    /// Opens a bidirectional stream (TCP drivers: the first call takes the connection
    /// `connect` made, later calls make new ones).
    async fn open(&self) -> io::Result<(BoxWrite, BoxRead)>;
    /// Queues an unreliable datagram.
    fn send_datagram(&self, data: Bytes) -> io::Result<()>;
    /// The largest datagram payload, or `None` without datagram support.
    fn max_datagram_size(&self) -> Option<usize>;
    /// Closes the connection (immediately for QUIC; TLS sends close_notify).
    async fn close(&self);
}

/// Makes sessions to one server.
#[async_trait]
pub(crate) trait Dialer: Send + Sync {
    /// Dials and completes the handshake.
    async fn connect(&self) -> io::Result<Arc<dyn Session>>;
    /// Closes the client endpoint.
    async fn shutdown(&self);
    /// Whether `connect` returns pooled connections when a live one exists (then a
    /// "pooled connect" is a `connect` call that hits the pool).
    fn pooled(&self) -> bool {
        false
    }
    /// A session for the runner's control messages, never shared with the workload (a
    /// pooled dialer would otherwise hand the workload the control connection, and the
    /// workload's `close` would end it).
    async fn connect_control(&self) -> io::Result<Arc<dyn Session>> {
        self.connect().await
    }
}

/// The client side of `driver`, dialling `addr`.
pub(crate) fn dialer(
    driver: &Driver,
    addr: SocketAddr,
    tls: &TlsMaterial,
) -> Result<Arc<dyn Dialer>, BenchError> {
    let config = bench_config();
    Ok(match driver {
        Driver::Stoq(backend) => Arc::new(StoqDialer {
            transport: backend.bind(EndpointSpec::client(addr, config, tls.clone()))?,
            addr,
        }),
        Driver::Sdk(factory) => Arc::new(SdkDialer {
            factory: factory.clone(),
            transport: factory
                .backend()
                .bind(EndpointSpec::client(addr, config, tls.clone()))?,
            tls: tls.clone(),
            addr,
            connector: tokio::sync::OnceCell::new(),
        }),
        Driver::QuinnDirect => {
            let bind: SocketAddr = if addr.is_ipv6() {
                "[::]:0".parse().expect("literal")
            } else {
                "0.0.0.0:0".parse().expect("literal")
            };
            let mut endpoint = quinn_endpoint(bind, &config, None)?;
            endpoint.set_default_client_config(quinn_client_config(tls, &config)?);
            Arc::new(QuinnDialer {
                endpoint,
                addr,
                timeout: config.connect_timeout,
            })
        }
        Driver::S2nDirect => Arc::new(crate::s2n_direct::S2nDialer::new(addr, tls, &config)?),
        #[cfg(feature = "quiche-direct")]
        Driver::QuicheDirect => {
            Arc::new(crate::quiche_direct::QuicheDialer::new(addr, tls, &config)?)
        }
        #[cfg(not(feature = "quiche-direct"))]
        Driver::QuicheDirect => return Err(crate::driver::quiche_direct_missing()),
        Driver::KernelTcp => Arc::new(TcpDialer(Arc::new(TcpDialerInner { addr, tls: None }))),
        Driver::TlsTcp => {
            let cc = stoq_crypto::client_config(tls, &config.alpn)?;
            let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)
                .map_err(|e| BenchError::Usage(e.to_string()))?;
            Arc::new(TcpDialer(Arc::new(TcpDialerInner {
                addr,
                tls: Some((tokio_rustls::TlsConnector::from(Arc::new(cc)), name)),
            })))
        }
    })
}

// ---------------------------------------------------------------------------------------
// STOQ

struct StoqDialer {
    transport: Arc<dyn Transport>,
    addr: SocketAddr,
}

#[async_trait]
impl Dialer for StoqDialer {
    async fn connect(&self) -> io::Result<Arc<dyn Session>> {
        let conn = self
            .transport
            .connect(self.addr, SERVER_NAME)
            .await
            .map_err(io_other)?;
        Ok(Arc::new(StoqSession(conn)))
    }

    async fn shutdown(&self) {
        self.transport.close(0, b"bench done").await;
    }
}

/// Connections through an SDK's pool ([`crate::driver::Connector`]).
struct SdkDialer {
    factory: Arc<dyn crate::driver::ConnectorFactory>,
    transport: Arc<dyn Transport>,
    tls: TlsMaterial,
    addr: SocketAddr,
    connector: tokio::sync::OnceCell<Arc<dyn crate::driver::Connector>>,
}

#[async_trait]
impl Dialer for SdkDialer {
    async fn connect(&self) -> io::Result<Arc<dyn Session>> {
        let connector = self
            .connector
            .get_or_try_init(|| self.factory.build(self.transport.clone(), self.tls.clone()))
            .await
            .map_err(io::Error::other)?;
        let conn = connector
            .connect(self.addr, SERVER_NAME)
            .await
            .map_err(io::Error::other)?;
        Ok(Arc::new(StoqSession(conn)))
    }

    async fn shutdown(&self) {
        self.transport.close(0, b"bench done").await;
    }

    fn pooled(&self) -> bool {
        true
    }

    async fn connect_control(&self) -> io::Result<Arc<dyn Session>> {
        let conn = self
            .transport
            .connect(self.addr, SERVER_NAME)
            .await
            .map_err(io_other)?;
        Ok(Arc::new(StoqSession(conn)))
    }
}

struct StoqSession(ConnectionHandle);

#[async_trait]
impl Session for StoqSession {
    async fn open(&self) -> io::Result<(BoxWrite, BoxRead)> {
        let (s, r) = self.0.open_bi().await.map_err(io_other)?;
        Ok((Box::new(s), Box::new(r)))
    }

    fn send_datagram(&self, data: Bytes) -> io::Result<()> {
        self.0.send_datagram(data).map_err(io_other)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        self.0.max_datagram_size()
    }

    async fn close(&self) {
        self.0.close(0, b"bench done");
    }
}

// ---------------------------------------------------------------------------------------
// quinn, driven directly

struct QuinnDialer {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    timeout: std::time::Duration,
}

#[async_trait]
impl Dialer for QuinnDialer {
    async fn connect(&self) -> io::Result<Arc<dyn Session>> {
        let connecting = self
            .endpoint
            .connect(self.addr, SERVER_NAME)
            .map_err(io_other)?;
        let conn = tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "quinn connect timed out"))?
            .map_err(io_other)?;
        Ok(Arc::new(QuinnSession(conn)))
    }

    async fn shutdown(&self) {
        self.endpoint.close(0u32.into(), b"bench done");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.endpoint.wait_idle())
            .await;
    }
}

struct QuinnSession(quinn::Connection);

#[async_trait]
impl Session for QuinnSession {
    async fn open(&self) -> io::Result<(BoxWrite, BoxRead)> {
        let (s, r) = self.0.open_bi().await.map_err(io_other)?;
        Ok((Box::new(s), Box::new(r)))
    }

    fn send_datagram(&self, data: Bytes) -> io::Result<()> {
        self.0.send_datagram(data).map_err(io_other)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        self.0.max_datagram_size()
    }

    async fn close(&self) {
        self.0.close(0u32.into(), b"bench done");
    }
}

/// quinn's transport configuration from STOQ's, as `stoq-quinn` builds it (windows,
/// pinned MTU, GSO, datagram buffers, the engine's CUBIC).
pub fn quinn_transport(cfg: &TransportConfig) -> Result<quinn::TransportConfig, BenchError> {
    // The very function stoq-quinn uses, so both rows run identical quinn settings.
    Ok(stoq_quinn::transport_config(cfg)?)
}

/// quinn's client configuration: `stoq_crypto::client_config` plus [`quinn_transport`].
pub fn quinn_client_config(
    tls: &TlsMaterial,
    cfg: &TransportConfig,
) -> Result<quinn::ClientConfig, BenchError> {
    let rustls = stoq_crypto::client_config(tls, &cfg.alpn)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(rustls)
        .map_err(|e| BenchError::Usage(format!("client TLS config unusable for QUIC: {e}")))?;
    let mut cc = quinn::ClientConfig::new(Arc::new(quic));
    cc.transport_config(Arc::new(quinn_transport(cfg)?));
    Ok(cc)
}

/// quinn's server configuration: `stoq_crypto::server_config` plus [`quinn_transport`].
pub fn quinn_server_config(
    tls: &TlsMaterial,
    cfg: &TransportConfig,
) -> Result<quinn::ServerConfig, BenchError> {
    let rustls = stoq_crypto::server_config(tls, &cfg.alpn)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(rustls)
        .map_err(|e| BenchError::Usage(format!("server TLS config unusable for QUIC: {e}")))?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
    sc.transport_config(Arc::new(quinn_transport(cfg)?));
    Ok(sc)
}

/// A quinn endpoint on a socket sized as `cfg` says, with the payload limit pinned.
pub fn quinn_endpoint(
    bind: SocketAddr,
    cfg: &TransportConfig,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, BenchError> {
    let socket = stoq_quinn::bind_socket(bind, cfg)?;
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(cfg.max_udp_payload)
        .map_err(|e| BenchError::Usage(format!("max_udp_payload: {e}")))?;
    quinn::Endpoint::new(
        endpoint_config,
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| BenchError::io(format!("starting quinn endpoint on {bind}"), e))
}

// ---------------------------------------------------------------------------------------
// TCP and TLS over TCP

struct TcpDialerInner {
    addr: SocketAddr,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

enum TcpConn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl TcpConn {
    fn split(self) -> (BoxWrite, BoxRead) {
        match self {
            TcpConn::Plain(s) => {
                let (r, w) = s.into_split();
                (Box::new(w), Box::new(r))
            }
            TcpConn::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Box::new(w), Box::new(r))
            }
        }
    }
}

impl TcpDialerInner {
    async fn dial(&self) -> io::Result<TcpConn> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        // Close with RST once done (every exchange has completed by then): tens of
        // thousands of handshakes would otherwise leave as many TIME_WAIT ports, and
        // reusing those stalls connects for a SYN retransmission timeout.
        tcp.set_zero_linger()?;
        Ok(match &self.tls {
            None => TcpConn::Plain(tcp),
            Some((connector, name)) => {
                TcpConn::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
            }
        })
    }
}

struct TcpDialer(Arc<TcpDialerInner>);

#[async_trait]
impl Dialer for TcpDialer {
    async fn connect(&self) -> io::Result<Arc<dyn Session>> {
        let first = self.0.dial().await?;
        Ok(Arc::new(TcpSession {
            dialer: self.0.clone(),
            first: Mutex::new(Some(first)),
        }))
    }

    async fn shutdown(&self) {}
}

struct TcpSession {
    dialer: Arc<TcpDialerInner>,
    first: Mutex<Option<TcpConn>>,
}

#[async_trait]
impl Session for TcpSession {
    async fn open(&self) -> io::Result<(BoxWrite, BoxRead)> {
        let first = self.first.lock().expect("not poisoned").take();
        let conn = match first {
            Some(c) => c,
            None => self.dialer.dial().await?,
        };
        Ok(conn.split())
    }

    fn send_datagram(&self, _data: Bytes) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TCP has no datagrams",
        ))
    }

    fn max_datagram_size(&self) -> Option<usize> {
        None
    }

    async fn close(&self) {
        // A connection never used for a stream (the handshakes scenario): end it, and wait
        // until the server has seen it and closed its side, so the benchmark stays closed
        // loop (the kernel completes TCP handshakes without the server process, whose
        // accept queue would otherwise overflow).
        let first = self.first.lock().expect("not poisoned").take();
        if let Some(conn) = first {
            let (mut w, mut r) = conn.split();
            let _ = w.shutdown().await;
            let mut sink = [0u8; 64];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while let Ok(n) = r.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
    }
}
