//! A quinn endpoint behind STOQ's [`Transport`] trait.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stoq_core::{
    Capabilities, CongestionAlgorithm, ConnectionError, ConnectionHandle, EndpointRole,
    EndpointSpec, EndpointStats, Error, Transport, TransportConfig,
};
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, warn};

use crate::congestion::StoqControllerFactory;
use crate::connection::QuinnConnection;
use crate::errors::{connect_error, connection_error, LocalClose};

/// How long [`Transport::close`] waits for peers to be told.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Established incoming connections waiting for `accept`. Bounded so a flood of
/// handshakes cannot grow memory without limit; the accept loop waits when it is full.
const ACCEPT_QUEUE: usize = 1024;

/// The name and capabilities a [`QuinnTransport`] reports through [`Transport::name`] and
/// [`Transport::capabilities`]: quinn's own for [`QuinnTransport::bind`], another engine's
/// when that engine runs quinn on its own socket through [`QuinnTransport::bind_with_socket`]
/// (stoq-uring does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineIdentity {
    /// The backend name, e.g. `"quinn"`.
    pub name: &'static str,
    /// What endpoints of this engine can do.
    pub capabilities: Capabilities,
}

/// quinn's own identity: name `"quinn"`, [`crate::CAPABILITIES`].
pub const QUINN_IDENTITY: EngineIdentity = EngineIdentity {
    name: "quinn",
    capabilities: crate::CAPABILITIES,
};

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    handshake_failures: AtomicU64,
    connected: AtomicU64,
}

/// A quinn endpoint.
#[derive(Debug)]
pub struct QuinnTransport {
    endpoint: quinn::Endpoint,
    incoming: Option<Mutex<mpsc::Receiver<QuinnConnection>>>,
    client_config: Option<quinn::ClientConfig>,
    config: TransportConfig,
    counters: Arc<Counters>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
    identity: EngineIdentity,
}

impl QuinnTransport {
    /// Binds an endpoint as `spec` says. Must be called within a tokio runtime.
    pub fn bind(spec: EndpointSpec) -> Result<Self, Error> {
        Self::bind_with_socket(
            spec,
            |addr, cfg| {
                let socket = bind_socket(addr, cfg)?;
                quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)
                    .map_err(|e| Error::io(format!("starting quinn endpoint on {addr}"), e))
            },
            QUINN_IDENTITY,
        )
    }

    /// Binds an endpoint as `spec` says on the socket `socket` returns, reporting
    /// `identity` as its name and capabilities: how another engine runs quinn-proto and
    /// quinn's async glue on its own UDP I/O. `socket` is called with `spec.bind` and
    /// `spec.config` after the configuration and TLS material were checked, so those
    /// errors come first as with [`QuinnTransport::bind`]. Must be called within a tokio
    /// runtime (timers and tasks are tokio's).
    pub fn bind_with_socket<F>(
        spec: EndpointSpec,
        socket: F,
        identity: EngineIdentity,
    ) -> Result<Self, Error>
    where
        F: FnOnce(SocketAddr, &TransportConfig) -> Result<Arc<dyn quinn::AsyncUdpSocket>, Error>,
    {
        let cfg = &spec.config;
        let QuinnConfigs {
            endpoint: endpoint_config,
            server: server_config,
            client: client_config,
            paced,
        } = quinn_configs(&spec)?;

        let socket = socket(spec.bind, cfg)?;
        let socket: Arc<dyn quinn::AsyncUdpSocket> = if paced {
            crate::pacing::PacedSocket::new(socket)
        } else {
            socket
        };
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            server_config,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| Error::io(format!("starting quinn endpoint on {}", spec.bind), e))?;

        let counters = Arc::new(Counters::default());
        let (incoming, accept_task) = if spec.role == EndpointRole::Server {
            let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
            let task = tokio::spawn(accept_loop(
                endpoint.clone(),
                tx,
                counters.clone(),
                cfg.datagrams.enabled,
                cfg.connect_timeout,
            ));
            (Some(Mutex::new(rx)), Some(task))
        } else {
            (None, None)
        };

        Ok(QuinnTransport {
            endpoint,
            incoming,
            client_config,
            config: spec.config,
            counters,
            accept_task,
            identity,
        })
    }

    /// The underlying quinn endpoint. Rebinding it ([`quinn::Endpoint::rebind`]) replaces
    /// the socket STOQ set up, and with it the pacing of STOQ controllers
    /// ([`crate::pacing`]) for every connection alive then.
    pub fn quinn(&self) -> &quinn::Endpoint {
        &self.endpoint
    }
}

impl Drop for QuinnTransport {
    fn drop(&mut self) {
        if let Some(t) = &self.accept_task {
            t.abort();
        }
    }
}

/// The quinn-proto configuration of a STOQ endpoint: what [`QuinnTransport::bind`] and
/// [`QuinnTransport::bind_with_socket`] run quinn with, for an engine that drives
/// quinn-proto itself (stoq-uring's direct engine) and must behave the same.
#[derive(Debug)]
#[non_exhaustive]
pub struct QuinnConfigs {
    /// Endpoint-wide settings (the largest UDP payload accepted).
    pub endpoint: quinn::EndpointConfig,
    /// The server's TLS and transport settings; `None` for a client endpoint.
    pub server: Option<quinn::ServerConfig>,
    /// The settings `connect` dials with; `None` when the endpoint has no trust roots
    /// (a server that does not dial).
    pub client: Option<quinn::ClientConfig>,
    /// A STOQ controller is configured: its controllers publish their pacing rate
    /// ([`crate::pacing`]), which the engine must honour.
    pub paced: bool,
}

/// Checks `spec` and builds its [`QuinnConfigs`], with the errors `bind` gives: an invalid
/// configuration ([`Error::Config`]), unusable TLS material ([`Error::Tls`]), a client
/// without trust roots.
pub fn quinn_configs(spec: &EndpointSpec) -> Result<QuinnConfigs, Error> {
    let cfg = &spec.config;
    cfg.validate()?;
    if !cfg.gro {
        return Err(Error::config(
            "gro",
            "quinn always uses GRO where the kernel offers it and cannot turn it off",
        ));
    }
    // A STOQ controller's pacing rate is honoured by the socket (quinn-proto has no
    // pacing-rate hook); engine controllers keep quinn's socket untouched.
    let paced = cfg.congestion.stoq_factory()?.is_some();
    let transport = Arc::new(transport_config_with(cfg, paced)?);

    let server_config = match spec.role {
        EndpointRole::Server => {
            let tls = stoq_crypto::server_config(&spec.tls, &cfg.alpn)?;
            let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
                .map_err(|e| Error::Tls(format!("server TLS config unusable for QUIC: {e}")))?;
            let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
            sc.transport_config(transport.clone());
            Some(sc)
        }
        EndpointRole::Client => None,
    };
    let client_config = if spec.tls.roots.is_empty() {
        None
    } else {
        let tls = stoq_crypto::client_config(&spec.tls, &cfg.alpn)?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| Error::Tls(format!("client TLS config unusable for QUIC: {e}")))?;
        let mut cc = quinn::ClientConfig::new(Arc::new(quic));
        cc.transport_config(transport);
        Some(cc)
    };
    if spec.role == EndpointRole::Client && client_config.is_none() {
        return Err(Error::config(
            "tls.roots",
            "a client endpoint needs at least one trust root",
        ));
    }
    let mut endpoint = quinn::EndpointConfig::default();
    endpoint
        .max_udp_payload_size(cfg.max_udp_payload)
        .map_err(|e| Error::config("max_udp_payload", e.to_string()))?;
    Ok(QuinnConfigs {
        endpoint,
        server: server_config,
        client: client_config,
        paced,
    })
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    tx: mpsc::Sender<QuinnConnection>,
    counters: Arc<Counters>,
    datagrams: bool,
    handshake_timeout: Duration,
) {
    while let Some(incoming) = endpoint.accept().await {
        let tx = tx.clone();
        let counters = counters.clone();
        // Handshakes run concurrently so one slow or hostile peer cannot stall the rest.
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let result = tokio::time::timeout(handshake_timeout, async {
                let accepted = incoming.accept();
                crate::pacing::forget_built();
                match accepted {
                    Ok(connecting) => connecting.await,
                    Err(e) => Err(e),
                }
            })
            .await;
            match result {
                Ok(Ok(conn)) => {
                    counters.accepted.fetch_add(1, Relaxed);
                    if tx
                        .send(QuinnConnection::new(conn, datagrams))
                        .await
                        .is_err()
                    {
                        debug!(%remote, "endpoint dropped before accept");
                    }
                }
                Ok(Err(e)) => {
                    counters.handshake_failures.fetch_add(1, Relaxed);
                    let e = connection_error(e, &LocalClose::default());
                    warn!(%remote, error = %e, "incoming handshake failed");
                }
                Err(_) => {
                    counters.handshake_failures.fetch_add(1, Relaxed);
                    warn!(%remote, "incoming handshake timed out");
                }
            }
        });
    }
}

/// quinn's transport config for STOQ's: the exact settings every STOQ quinn endpoint uses
/// (exported so a benchmark driving quinn directly uses the same ones, keeping the
/// framework-overhead ratio honest). With a STOQ controller configured, a quinn endpoint
/// built from this alone does not honour the controller's pacing rate: that takes the
/// socket wrapper [`crate::pacing::PacedSocket`], which [`QuinnTransport::bind`] adds.
pub fn transport_config(cfg: &TransportConfig) -> Result<quinn::TransportConfig, Error> {
    transport_config_with(cfg, false)
}

/// [`transport_config`], with STOQ controllers built for a [`crate::pacing::PacedSocket`]
/// when `paced`.
fn transport_config_with(
    cfg: &TransportConfig,
    paced: bool,
) -> Result<quinn::TransportConfig, Error> {
    let varint = |field: &str, v: u64| {
        quinn::VarInt::from_u64(v).map_err(|_| Error::config(field, "must be below 2^62"))
    };
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(varint(
        "max_concurrent_bidi_streams",
        cfg.max_concurrent_bidi_streams,
    )?)
    .max_concurrent_uni_streams(varint(
        "max_concurrent_uni_streams",
        cfg.max_concurrent_uni_streams,
    )?)
    .max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(cfg.idle_timeout)
            .map_err(|_| Error::config("idle_timeout", "too large"))?,
    ))
    .keep_alive_interval(cfg.keep_alive_interval)
    .stream_receive_window(varint("stream_receive_window", cfg.stream_receive_window)?)
    .receive_window(varint(
        "connection_receive_window",
        cfg.connection_receive_window,
    )?)
    .send_window(cfg.send_window)
    .initial_mtu(cfg.initial_max_udp_payload)
    // RFC 9000 section 14: every QUIC path carries 1200-byte datagrams.
    .min_mtu(1200)
    .enable_segmentation_offload(cfg.gso)
    // quinn limits datagram buffers in bytes; STOQ configures counts.
    .datagram_receive_buffer_size(
        cfg.datagrams.enabled.then_some(
            cfg.datagrams
                .receive_queue
                .saturating_mul(cfg.max_udp_payload as usize),
        ),
    )
    .datagram_send_buffer_size(
        cfg.datagrams
            .send_queue
            .saturating_mul(cfg.max_udp_payload as usize),
    );
    if cfg.mtu_discovery {
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(cfg.max_udp_payload);
        t.mtu_discovery_config(Some(mtu));
    } else {
        t.mtu_discovery_config(None);
    }
    match cfg.congestion.stoq_factory()? {
        Some(factory) => {
            t.congestion_controller_factory(Arc::new(if paced {
                StoqControllerFactory::paced(factory)
            } else {
                StoqControllerFactory::new(factory)
            }));
        }
        None => match cfg.congestion.algorithm {
            CongestionAlgorithm::NewReno => {
                t.congestion_controller_factory(Arc::new(
                    quinn::congestion::NewRenoConfig::default(),
                ));
            }
            CongestionAlgorithm::Cubic => {
                t.congestion_controller_factory(
                    Arc::new(quinn::congestion::CubicConfig::default()),
                );
            }
            CongestionAlgorithm::Bbr => {
                t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
            }
            other => {
                return Err(Error::config(
                    "congestion.algorithm",
                    format!("{other:?} has no quinn implementation"),
                ))
            }
        },
    }
    Ok(t)
}

/// Binds the UDP socket as every STOQ backend does (see [`stoq_core::socket::bind_udp`]).
pub fn bind_socket(addr: SocketAddr, cfg: &TransportConfig) -> Result<std::net::UdpSocket, Error> {
    stoq_core::socket::bind_udp(addr, cfg)
}

#[async_trait]
impl Transport for QuinnTransport {
    fn name(&self) -> &str {
        self.identity.name
    }

    fn capabilities(&self) -> Capabilities {
        self.identity.capabilities
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<ConnectionHandle, Error> {
        let client_config = self
            .client_config
            .clone()
            .ok_or_else(|| Error::config("tls.roots", "this endpoint has no trust roots"))?;
        let connecting = self.endpoint.connect_with(client_config, addr, server_name);
        crate::pacing::forget_built();
        let connecting = connecting.map_err(connect_error)?;
        let timeout = self.config.connect_timeout;
        let conn = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(connection_error(e, &LocalClose::default()).into()),
            Err(_) => {
                return Err(ConnectionError::ConnectTimedOut {
                    addr,
                    after: timeout,
                }
                .into())
            }
        };
        self.counters.connected.fetch_add(1, Relaxed);
        Ok(Arc::new(QuinnConnection::new(
            conn,
            self.config.datagrams.enabled,
        )))
    }

    async fn accept(&self) -> Result<ConnectionHandle, Error> {
        let incoming = self.incoming.as_ref().ok_or_else(|| {
            Error::config(
                "role",
                "this endpoint was bound as a client; bind it with EndpointRole::Server to accept",
            )
        })?;
        let conn = incoming
            .lock()
            .await
            .recv()
            .await
            .ok_or(Error::EndpointClosed)?;
        Ok(Arc::new(conn))
    }

    fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.endpoint
            .local_addr()
            .map_err(|e| Error::io("reading local address", e))
    }

    fn stats(&self) -> EndpointStats {
        let mut s = EndpointStats::default();
        s.accepted = self.counters.accepted.load(Relaxed);
        s.handshake_failures = self.counters.handshake_failures.load(Relaxed);
        s.connected = self.counters.connected.load(Relaxed);
        s.open_connections = self.endpoint.open_connections() as u64;
        s
    }

    async fn close(&self, code: u64, reason: &[u8]) {
        let code = quinn::VarInt::from_u64(code).unwrap_or(quinn::VarInt::MAX);
        self.endpoint.close(code, reason);
        if let Some(t) = &self.accept_task {
            t.abort();
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
    }
}
