//! An s2n-quic endpoint behind STOQ's [`Transport`] trait.

use std::fmt::Display;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use s2n_quic::provider::congestion_controller::{Bbr, Cubic};
use s2n_quic::provider::event::events::SocketAddress as EventAddress;
use s2n_quic::provider::io::tokio::Builder as IoBuilder;
use s2n_quic::provider::limits::Limits;
use s2n_quic::provider::mtu;
use s2n_quic::provider::tls::rustls as s2n_rustls;
use stoq_core::congestion::NewRenoFactory;
use stoq_core::{
    Capabilities, Capability, CongestionAlgorithm, ConnectionError, ConnectionHandle, EndpointRole,
    EndpointSpec, EndpointStats, Error, Side, Transport, TransportConfig,
};
use tokio::sync::{mpsc, Notify};
use tracing::debug;

use crate::congestion::StoqCongestionEndpoint;
use crate::connection::{ConnCore, S2nConnection};
use crate::datagram::DatagramEndpoint;
use crate::errors::{connection_error, StoqCloseFormatter};
use crate::events::{lock, EndpointShared, StoqSubscriber};
use crate::exporter::ExporterKeyLog;

/// How long [`Transport::close`] waits for the connections' closes to be processed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Established incoming connections waiting for `accept`. Bounded so a flood of
/// handshakes cannot grow memory without limit; the accept loop waits when it is full.
const ACCEPT_QUEUE: usize = 1024;

/// UDP header plus the minimal IPv4 / IPv6 header: s2n-quic configures MTUs as IP packet
/// sizes and subtracts these per peer address family
/// (`s2n-quic-core/src/path/mtu.rs`, `max_datagram_size`).
const UDP_IPV4_OVERHEAD: u16 = 8 + 20;
const UDP_IPV6_OVERHEAD: u16 = 8 + 40;

/// Which congestion controller an endpoint's connections run, as chosen from a
/// [`TransportConfig`] ([`Congestion::from_config`]).
pub enum Congestion {
    /// s2n-quic's CUBIC.
    Cubic,
    /// s2n-quic's BBRv2.
    Bbr,
    /// A STOQ controller through the adapter.
    Stoq(StoqCongestionEndpoint),
}

impl Congestion {
    /// The controller `cfg.congestion` selects: s2n-quic's CUBIC or BBRv2 for
    /// `implementation = "engine"`, otherwise (and for NewReno) a STOQ controller through
    /// the adapter.
    pub fn from_config(cfg: &TransportConfig) -> Result<Self, Error> {
        if let Some(factory) = cfg.congestion.stoq_factory()? {
            return Ok(Congestion::Stoq(StoqCongestionEndpoint::new(factory)));
        }
        match cfg.congestion.algorithm {
            CongestionAlgorithm::Cubic => Ok(Congestion::Cubic),
            CongestionAlgorithm::Bbr => Ok(Congestion::Bbr),
            // s2n-quic has no NewReno; STOQ's RFC 9002 NewReno runs through the adapter.
            CongestionAlgorithm::NewReno => Ok(Congestion::Stoq(StoqCongestionEndpoint::new(
                Arc::new(NewRenoFactory::default()),
            ))),
            other => Err(Error::config(
                "congestion.algorithm",
                format!("{other:?} has no s2n-quic implementation"),
            )),
        }
    }
}

/// The path MTU configuration for each new path: the configured UDP payload sizes turned
/// into the IP MTUs s2n-quic expects for the peer's address family (s2n-quic treats an
/// IPv4-mapped peer as IPv6, so the payload is the same on every path). s2n-quic's MTU
/// provider ([`mtu::Endpoint`]).
#[derive(Debug, Clone, Copy)]
pub struct PathMtu {
    initial_payload: u16,
    max_payload: u16,
}

impl PathMtu {
    /// From `cfg`: `initial_max_udp_payload` on every path, probing up to
    /// `max_udp_payload` only when `mtu_discovery` is on.
    pub fn from_config(cfg: &TransportConfig) -> Self {
        PathMtu {
            initial_payload: cfg.initial_max_udp_payload,
            max_payload: if cfg.mtu_discovery {
                cfg.max_udp_payload
            } else {
                cfg.initial_max_udp_payload
            },
        }
    }

    fn config(&self, overhead: u16) -> Option<mtu::Config> {
        let ip = |payload: u16| payload.saturating_add(overhead);
        mtu::Config::builder()
            .with_max_mtu(ip(self.max_payload))
            .ok()?
            .with_base_mtu(ip(1200))
            .ok()?
            .with_initial_mtu(ip(self.initial_payload))
            .ok()?
            .build()
            .ok()
    }
}

impl mtu::Endpoint for PathMtu {
    fn on_path(
        &mut self,
        info: &mtu::PathInfo,
        _endpoint_mtu_config: mtu::Config,
    ) -> Option<mtu::Config> {
        let overhead = match info.remote_address {
            EventAddress::IpV4 { .. } => UDP_IPV4_OVERHEAD,
            _ => UDP_IPV6_OVERHEAD,
        };
        self.config(overhead)
    }
}

/// Counts and closes the endpoint's live connections.
#[derive(Debug, Default)]
struct Registry {
    conns: Mutex<Vec<Weak<ConnCore>>>,
}

impl Registry {
    fn add(&self, core: &Arc<ConnCore>) {
        let mut conns = lock(&self.conns);
        if conns.len() >= 64 && conns.len().is_power_of_two() {
            conns.retain(|w| w.upgrade().is_some_and(|c| !c.is_closed()));
        }
        conns.push(Arc::downgrade(core));
    }

    fn live(&self) -> Vec<Arc<ConnCore>> {
        lock(&self.conns)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| !c.is_closed())
            .collect()
    }
}

/// An s2n-quic endpoint: a server (accepts) or a client (dials).
pub struct S2nTransport {
    shared: Arc<EndpointShared>,
    registry: Arc<Registry>,
    client: Option<s2n_quic::Client>,
    incoming: Option<tokio::sync::Mutex<mpsc::Receiver<Arc<S2nConnection>>>>,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: AtomicBool,
    closed_notify: Notify,
    local_addr: SocketAddr,
    config: TransportConfig,
}

impl std::fmt::Debug for S2nTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2nTransport")
            .field("local_addr", &self.local_addr)
            .field("server", &self.incoming.is_some())
            .finish_non_exhaustive()
    }
}

/// The s2n-quic providers [`S2nTransport::bind`] builds from a [`TransportConfig`]: the
/// bound socket's IO, the connection limits, the per-path MTU and the congestion
/// controller. Public so that s2n-quic can be driven directly with exactly STOQ's settings
/// (the benchmarks' `s2n-direct` reference row); STOQ adds its TLS key log, event
/// subscriber, datagram endpoint and close formatter on top.
pub struct EngineProviders {
    /// The bound socket's address.
    pub local_addr: SocketAddr,
    /// s2n-quic's tokio IO on the socket STOQ bound ([`bind_socket`], [`io_provider`]).
    pub io: s2n_quic::provider::io::tokio::Provider,
    /// The connection limits ([`limits`]).
    pub limits: Limits,
    /// The per-path MTU provider.
    pub mtu: PathMtu,
    /// The congestion controller.
    pub congestion: Congestion,
}

impl EngineProviders {
    /// Validates `cfg`, binds the UDP socket on `bind` and builds the providers. Must be
    /// called within a tokio runtime.
    pub fn new(bind: SocketAddr, cfg: &TransportConfig) -> Result<Self, Error> {
        cfg.validate()?;
        let congestion = Congestion::from_config(cfg)?;
        let limits = limits(cfg)?;
        let socket = bind_socket(bind, cfg)?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| Error::io("reading local address", e))?;
        let io = io_provider(socket, cfg)?;
        Ok(EngineProviders {
            local_addr,
            io,
            limits,
            mtu: PathMtu::from_config(cfg),
            congestion,
        })
    }
}

fn start_err(what: &'static str) -> impl Fn(&dyn Display) -> Error {
    move |e| Error::io(what, std::io::Error::other(e.to_string()))
}

/// Configures an s2n-quic server or client builder with STOQ's providers and starts it.
/// A macro because s2n-quic's `Server` and `Client` builders are distinct types (and each
/// congestion controller changes the builder's type) with the same method names.
macro_rules! start_endpoint {
    ($builder:expr, $tls:expr, $what:literal,
     $io:ident, $limits:ident, $mtu:ident, $subscriber:ident, $datagrams:ident, $congestion:ident) => {{
        let e = start_err(concat!("configuring the s2n-quic ", $what));
        let builder = $builder
            .with_tls($tls)
            .map_err(|x| e(&x))?
            .with_io($io)
            .map_err(|x| e(&x))?
            .with_limits($limits)
            .map_err(|x| e(&x))?
            .with_mtu($mtu)
            .map_err(|x| e(&x))?
            .with_event($subscriber)
            .map_err(|x| e(&x))?
            .with_datagram($datagrams)
            .map_err(|x| e(&x))?
            .with_connection_close_formatter(StoqCloseFormatter)
            .map_err(|x| e(&x))?;
        let e = start_err(concat!("starting the s2n-quic ", $what));
        match $congestion {
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

impl S2nTransport {
    /// Binds an endpoint as `spec` says. Must be called within a tokio runtime.
    pub fn bind(spec: EndpointSpec) -> Result<Self, Error> {
        let cfg = &spec.config;
        let EngineProviders {
            local_addr,
            io,
            limits,
            mtu: path_mtu,
            congestion,
        } = EngineProviders::new(spec.bind, cfg)?;
        let shared = Arc::new(EndpointShared::default());
        let registry = Arc::new(Registry::default());

        let subscriber = StoqSubscriber {
            endpoint: shared.clone(),
            initial_mtu: cfg.initial_max_udp_payload,
        };
        let datagrams = DatagramEndpoint {
            enabled: cfg.datagrams.enabled,
            send_queue: cfg.datagrams.send_queue,
            receive_queue: cfg.datagrams.receive_queue,
        };

        let (client, incoming, accept_task) = match spec.role {
            EndpointRole::Server => {
                let mut tls = stoq_crypto::server_config(&spec.tls, &cfg.alpn)?;
                tls.key_log = Arc::new(ExporterKeyLog {
                    inner: tls.key_log.clone(),
                    store: shared.clone(),
                });
                shared.exporter.set_provider(tls.crypto_provider());
                let server = start_endpoint!(
                    s2n_quic::Server::builder(),
                    s2n_rustls::Server::from(tls),
                    "server",
                    io,
                    limits,
                    path_mtu,
                    subscriber,
                    datagrams,
                    congestion
                );
                let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
                let task = tokio::spawn(accept_loop(
                    server,
                    tx,
                    shared.clone(),
                    registry.clone(),
                    cfg.datagrams.enabled,
                    cfg.keep_alive_interval.is_some(),
                ));
                (None, Some(tokio::sync::Mutex::new(rx)), Some(task))
            }
            EndpointRole::Client => {
                if spec.tls.roots.is_empty() {
                    return Err(Error::config(
                        "tls.roots",
                        "a client endpoint needs at least one trust root",
                    ));
                }
                let mut tls = stoq_crypto::client_config(&spec.tls, &cfg.alpn)?;
                tls.key_log = Arc::new(ExporterKeyLog {
                    inner: tls.key_log.clone(),
                    store: shared.clone(),
                });
                shared.exporter.set_provider(tls.crypto_provider());
                let client = start_endpoint!(
                    s2n_quic::Client::builder(),
                    s2n_rustls::Client::from(tls),
                    "client",
                    io,
                    limits,
                    path_mtu,
                    subscriber,
                    datagrams,
                    congestion
                );
                (Some(client), None, None)
            }
        };

        Ok(S2nTransport {
            shared,
            registry,
            client,
            incoming,
            accept_task: Mutex::new(accept_task),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            local_addr,
            config: spec.config,
        })
    }
}

impl Drop for S2nTransport {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.accept_task).take() {
            t.abort();
        }
    }
}

async fn accept_loop(
    mut server: s2n_quic::Server,
    tx: mpsc::Sender<Arc<S2nConnection>>,
    shared: Arc<EndpointShared>,
    registry: Arc<Registry>,
    datagrams: bool,
    keep_alive: bool,
) {
    // s2n-quic hands over connections once their handshake completed; failed handshakes
    // are counted by the event subscriber. The handshake duration is bounded by the
    // `max_handshake_duration` limit (the configured connect timeout).
    while let Some(conn) = server.accept().await {
        let conn = Arc::new(S2nConnection::new(
            conn,
            Side::Server,
            datagrams,
            keep_alive,
        ));
        registry.add(conn.core());
        shared.accepted.fetch_add(1, Relaxed);
        if tx.send(conn).await.is_err() {
            debug!("endpoint dropped before accept");
            return;
        }
    }
}

/// Builds s2n-quic's connection limits from STOQ's configuration.
pub fn limits(cfg: &TransportConfig) -> Result<Limits, Error> {
    let bad = |field: &'static str| {
        move |e: s2n_quic_core::connection::limits::ValidationError| {
            Error::config(field, format!("not accepted by s2n-quic: {e}"))
        }
    };
    // s2n-quic keeps flow-control windows and the send buffer as u32.
    let u32_field = |field: &'static str, v: u64| -> Result<u64, Error> {
        if v > u64::from(u32::MAX) {
            Err(Error::config(field, "s2n-quic supports at most 4 GiB - 1"))
        } else {
            Ok(v)
        }
    };
    let stream_window = u32_field("stream_receive_window", cfg.stream_receive_window)?;
    let conn_window = u32_field("connection_receive_window", cfg.connection_receive_window)?;
    let send_window = u32_field("send_window", cfg.send_window)? as u32;
    // How many streams this side may open at once is bounded by the peer's limit only;
    // s2n-quic additionally caps local opens (default 100), which STOQ lifts.
    const LOCAL_OPEN_LIMIT: u64 = 1 << 32;
    let mut limits = Limits::new()
        .with_max_idle_timeout(cfg.idle_timeout)
        .map_err(bad("idle_timeout"))?
        .with_data_window(conn_window)
        .map_err(bad("connection_receive_window"))?
        .with_bidirectional_local_data_window(stream_window)
        .map_err(bad("stream_receive_window"))?
        .with_bidirectional_remote_data_window(stream_window)
        .map_err(bad("stream_receive_window"))?
        .with_unidirectional_data_window(stream_window)
        .map_err(bad("stream_receive_window"))?
        .with_max_open_remote_bidirectional_streams(cfg.max_concurrent_bidi_streams)
        .map_err(bad("max_concurrent_bidi_streams"))?
        .with_max_open_remote_unidirectional_streams(cfg.max_concurrent_uni_streams)
        .map_err(bad("max_concurrent_uni_streams"))?
        .with_max_open_local_bidirectional_streams(LOCAL_OPEN_LIMIT)
        .map_err(bad("max_concurrent_bidi_streams"))?
        .with_max_open_local_unidirectional_streams(LOCAL_OPEN_LIMIT)
        .map_err(bad("max_concurrent_uni_streams"))?
        // Per stream in s2n-quic (quinn limits the whole connection).
        .with_max_send_buffer_size(send_window)
        .map_err(bad("send_window"))?
        // Abandons a handshake (client and server side) after the connect timeout.
        .with_max_handshake_duration(cfg.connect_timeout)
        .map_err(bad("connect_timeout"))?;
    if let Some(interval) = cfg.keep_alive_interval {
        // s2n-quic pings at min(this, 3/4 of the idle timeout) once keep-alive is enabled
        // on a connection (STOQ enables it on every connection of this endpoint).
        limits = limits
            .with_max_keep_alive_period(interval)
            .map_err(bad("keep_alive_interval"))?;
    }
    Ok(limits)
}

/// Binds the UDP socket as every STOQ backend does (see [`stoq_core::socket::bind_udp`]).
pub fn bind_socket(addr: SocketAddr, cfg: &TransportConfig) -> Result<std::net::UdpSocket, Error> {
    stoq_core::socket::bind_udp(addr, cfg)
}

/// s2n-quic's tokio IO provider on `socket`, with the GSO/GRO switches and the
/// endpoint-wide MTU bounds (the per-path values come from [`PathMtu`]).
pub fn io_provider(
    socket: std::net::UdpSocket,
    cfg: &TransportConfig,
) -> Result<s2n_quic::provider::io::tokio::Provider, Error> {
    let io_err = |e: std::io::Error| Error::io("configuring s2n-quic's UDP I/O", e);
    let max_payload = if cfg.mtu_discovery {
        cfg.max_udp_payload
    } else {
        cfg.initial_max_udp_payload
    };
    // The largest IP packet of any family: it sizes s2n-quic's buffers.
    let max_mtu = max_payload.saturating_add(UDP_IPV6_OVERHEAD);
    let initial_mtu = cfg
        .initial_max_udp_payload
        .saturating_add(UDP_IPV6_OVERHEAD)
        .min(max_mtu);
    IoBuilder::default()
        .with_rx_socket(socket)
        .map_err(io_err)?
        .with_gso(cfg.gso)
        .map_err(io_err)?
        .with_gro(cfg.gro)
        .map_err(io_err)?
        .with_max_mtu(max_mtu)
        .map_err(|e| Error::config("max_udp_payload", e.to_string()))?
        .with_initial_mtu(initial_mtu)
        .map_err(|e| Error::config("initial_max_udp_payload", e.to_string()))?
        .build()
        .map_err(io_err)
}

#[async_trait]
impl Transport for S2nTransport {
    fn name(&self) -> &str {
        "s2n"
    }

    fn capabilities(&self) -> Capabilities {
        crate::CAPABILITIES
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<ConnectionHandle, Error> {
        let Some(client) = &self.client else {
            // s2n-quic's `Server` has no connect: a server endpoint cannot dial
            // (`s2n-quic/src/server.rs` offers accept only; `Client` alone has `connect`).
            return Err(Error::Unsupported(Capability::DialFromServer));
        };
        if self.closed.load(Relaxed) {
            return Err(Error::EndpointClosed);
        }
        // s2n-quic's rustls provider panics on a name rustls refuses
        // (`s2n-quic-rustls/src/client.rs`, `expect("invalid server name")`): check first.
        if rustls::pki_types::ServerName::try_from(server_name).is_err() {
            return Err(Error::InvalidAddress(format!(
                "{server_name:?} is not a valid DNS name or IP address"
            )));
        }
        let remote = match (self.local_addr, addr) {
            (SocketAddr::V4(_), SocketAddr::V6(_)) => {
                return Err(Error::InvalidAddress(format!(
                    "{addr} cannot be dialled from the IPv4 socket {}",
                    self.local_addr
                )))
            }
            // A dual-stack IPv6 socket reaches IPv4 peers by their mapped address.
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            _ => addr,
        };
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(Error::InvalidAddress(format!("{addr} cannot be dialled")));
        }
        let connect = s2n_quic::client::Connect::new(remote).with_server_name(server_name);
        let timeout = self.config.connect_timeout;
        let timed_out = ConnectionError::ConnectTimedOut {
            addr,
            after: timeout,
        };
        let conn = match tokio::time::timeout(timeout, client.connect(connect)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(s2n_quic::connection::Error::MaxHandshakeDurationExceeded { .. })) | Err(_) => {
                return Err(timed_out.into())
            }
            Ok(Err(e)) => return Err(connection_error(e).into()),
        };
        let conn = Arc::new(S2nConnection::new(
            conn,
            Side::Client,
            self.config.datagrams.enabled,
            self.config.keep_alive_interval.is_some(),
        ));
        self.registry.add(conn.core());
        self.shared.connected.fetch_add(1, Relaxed);
        Ok(conn)
    }

    async fn accept(&self) -> Result<ConnectionHandle, Error> {
        let incoming = self.incoming.as_ref().ok_or_else(|| {
            Error::config(
                "role",
                "this endpoint was bound as a client; bind it with EndpointRole::Server to accept",
            )
        })?;
        let closed = self.closed_notify.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if self.closed.load(Relaxed) {
            return Err(Error::EndpointClosed);
        }
        let mut rx = tokio::select! {
            rx = incoming.lock() => rx,
            _ = &mut closed => return Err(Error::EndpointClosed),
        };
        tokio::select! {
            conn = rx.recv() => match conn {
                Some(conn) if !self.closed.load(Relaxed) => Ok(conn),
                _ => Err(Error::EndpointClosed),
            },
            _ = &mut closed => Err(Error::EndpointClosed),
        }
    }

    fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.local_addr)
    }

    fn stats(&self) -> EndpointStats {
        let mut s = EndpointStats::default();
        s.accepted = self.shared.accepted.load(Relaxed);
        s.handshake_failures = self.shared.handshake_failures.load(Relaxed);
        s.connected = self.shared.connected.load(Relaxed);
        s.open_connections = self.shared.open.load(Relaxed);
        s
    }

    async fn close(&self, code: u64, _reason: &[u8]) {
        self.closed.store(true, Relaxed);
        self.closed_notify.notify_waiters();
        // Dropping s2n-quic's `Server` stops accepting; its endpoint keeps running until
        // the connections below have closed.
        if let Some(t) = lock(&self.accept_task).take() {
            t.abort();
        }
        let live = self.registry.live();
        for conn in &live {
            conn.close(code);
        }
        // Each close is recorded at once; wait (bounded) until s2n-quic processed them and
        // emitted the CONNECTION_CLOSE frames.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            for conn in &live {
                conn.wait_close_processed().await;
            }
        })
        .await;
    }
}
