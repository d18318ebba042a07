//! A quiche endpoint behind STOQ's [`Transport`] trait.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rand::RngCore;
use stoq_core::{
    Capabilities, ConnectionError, ConnectionHandle, EndpointRole, EndpointSpec, EndpointStats,
    Error, Side, Transport, TransportConfig,
};
use tokio::sync::{oneshot, Notify};

use crate::config::{quiche_config, Role};
use crate::connection::{
    BytesFactory, CidKey, ConnShared, NewConn, QuicheConnection, LOCAL_CID_LEN,
};
use crate::driver::Driver;
use crate::socket::Socket;

/// How long [`Transport::close`] waits for the driver to send the CONNECTION_CLOSE
/// frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Established incoming connections waiting for `accept`. Bounded so a flood of
/// handshakes cannot grow memory without limit; beyond it new connections are refused
/// with CONNECTION_REFUSED.
pub(crate) const ACCEPT_QUEUE: usize = 1024;

/// Endpoint counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) open: AtomicU64,
}

/// A request to close every connection, answered once the frames were sent.
pub(crate) struct CloseRequest {
    pub(crate) code: u64,
    pub(crate) reason: Bytes,
    pub(crate) done: oneshot::Sender<()>,
}

/// What the endpoint's handles and its driver share.
#[derive(Default)]
pub(crate) struct EndpointShared {
    /// Wakes the driver.
    pub(crate) wake: Notify,
    /// Connections the application touched since the driver last looked.
    dirty: Mutex<Vec<Arc<ConnShared>>>,
    /// Connections dialled since the driver last looked.
    new_conns: Mutex<Vec<Arc<ConnShared>>>,
    /// Established incoming connections for `accept`.
    pub(crate) accept_queue: Mutex<VecDeque<Arc<ConnShared>>>,
    pub(crate) accept_ready: Notify,
    /// Set by `close`: no more accepting or dialling.
    pub(crate) closing: AtomicBool,
    pub(crate) close_request: Mutex<Option<CloseRequest>>,
    /// The `Transport` was dropped: the driver ends once its connections have.
    pub(crate) dropped: AtomicBool,
    /// The driver task ended (socket failure, or nothing left to do).
    pub(crate) driver_gone: AtomicBool,
    pub(crate) counters: Counters,
    next_id: AtomicU64,
}

impl std::fmt::Debug for EndpointShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointShared").finish_non_exhaustive()
    }
}

impl EndpointShared {
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    pub(crate) fn push_dirty(&self, conn: Arc<ConnShared>) {
        self.dirty.lock().push(conn);
        self.wake.notify_one();
    }

    /// Moves the dirty list into `out` (which the driver reuses).
    pub(crate) fn take_dirty(&self, out: &mut Vec<Arc<ConnShared>>) {
        std::mem::swap(&mut *self.dirty.lock(), out);
    }

    pub(crate) fn take_new(&self, out: &mut Vec<Arc<ConnShared>>) {
        std::mem::swap(&mut *self.new_conns.lock(), out);
    }
}

/// A quiche endpoint: one UDP socket and the driver task that moves its packets.
pub struct QuicheTransport {
    shared: Arc<EndpointShared>,
    local: SocketAddr,
    role: EndpointRole,
    config: TransportConfig,
    /// quiche's client configuration (with the trust roots), if this endpoint can dial.
    /// quiche needs it `&mut` to create a connection, hence the lock.
    client_config: Option<Mutex<quiche::Config>>,
    can_reach_v4: bool,
    can_reach_v6: bool,
}

impl std::fmt::Debug for QuicheTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicheTransport")
            .field("local", &self.local)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl QuicheTransport {
    /// Binds an endpoint as `spec` says and starts its driver. Must be called within a
    /// tokio runtime.
    pub fn bind(spec: EndpointSpec) -> Result<Self, Error> {
        let cfg = &spec.config;
        cfg.validate()?;
        // Refuse what quiche cannot run before touching certificates or sockets.
        crate::config::cc_algorithm(cfg)?;
        let server_config = match spec.role {
            EndpointRole::Server => Some(quiche_config(cfg, &spec.tls, Role::Server)?),
            EndpointRole::Client => None,
        };
        let client_config = if spec.tls.roots.is_empty() {
            if spec.role == EndpointRole::Client {
                return Err(Error::config(
                    "tls.roots",
                    "a client endpoint needs at least one trust root",
                ));
            }
            None
        } else {
            Some(quiche_config(cfg, &spec.tls, Role::Client)?)
        };
        let socket = Socket::bind(spec.bind, cfg)?;
        let local = socket.local;
        let can_reach_v4 = socket.can_reach(SocketAddr::from(([127, 0, 0, 1], 1)));
        let can_reach_v6 = socket.can_reach(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 1)));
        let shared = Arc::new(EndpointShared::default());
        let driver = Driver::new(socket, shared.clone(), server_config, cfg);
        tokio::spawn(driver.run());
        Ok(QuicheTransport {
            shared,
            local,
            role: spec.role,
            config: spec.config,
            client_config: client_config.map(Mutex::new),
            can_reach_v4,
            can_reach_v6,
        })
    }

    /// Dials `addr` like [`Transport::connect`], returning the concrete connection
    /// (for [`QuicheConnection::tls_parameters`] and quiche's own statistics).
    pub async fn dial(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Arc<QuicheConnection>, Error> {
        if self.is_closed() {
            return Err(Error::EndpointClosed);
        }
        let client_config = self
            .client_config
            .as_ref()
            .ok_or_else(|| Error::config("tls.roots", "this endpoint has no trust roots"))?;
        let peer = Socket::normalise(addr);
        let reachable = if peer.is_ipv4() {
            self.can_reach_v4
        } else {
            self.can_reach_v6
        };
        if !reachable || peer.port() == 0 || peer.ip().is_unspecified() {
            return Err(Error::InvalidAddress(format!(
                "{addr} cannot be dialled from this endpoint (bound to {}): port 0, an \
                 unspecified address, or an address family the socket does not support",
                self.local
            )));
        }
        let ip_name = parse_server_name(server_name)?;
        let scid = random_cid();
        let mut conn = {
            let mut cfg = client_config.lock();
            quiche::connect_with_buffer_factory::<BytesFactory>(
                ip_name.is_none().then_some(server_name),
                &quiche::ConnectionId::from_ref(&scid),
                self.local,
                peer,
                &mut cfg,
            )
            .map_err(|e| Error::Tls(format!("quiche could not start a connection: {e}")))?
        };
        if let Some(ip) = ip_name {
            // No SNI for addresses (RFC 6066); verify the certificate's IP instead.
            let ssl: &mut boring::ssl::SslRef = conn.as_mut();
            ssl.param_mut()
                .set_ip(ip)
                .map_err(|e| Error::Tls(format!("setting the expected peer address: {e}")))?;
        }
        let shared = ConnShared::new(
            self.shared.clone(),
            NewConn {
                conn,
                side: Side::Client,
                peer,
                scid: CidKey::new(&scid),
                odcid: None,
                datagrams: self.config.datagrams.enabled,
                keep_alive: self.config.keep_alive_interval,
                handshake_deadline: None,
            },
        );
        self.shared.new_conns.lock().push(shared.clone());
        self.shared.wake.notify_one();

        let timeout = self.config.connect_timeout;
        match tokio::time::timeout(timeout, shared.established()).await {
            Ok(Ok(())) => {
                self.shared.counters.connected.fetch_add(1, Relaxed);
                Ok(Arc::new(QuicheConnection::new(shared)))
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let e = ConnectionError::ConnectTimedOut {
                    addr,
                    after: timeout,
                };
                shared.with_state(|st, wakers, ev| {
                    // Nothing useful to tell a peer that never answered: forget it.
                    st.abandoned = true;
                    st.set_closed(e.clone(), wakers, ev);
                });
                Err(e.into())
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.shared.closing.load(Relaxed) || self.shared.driver_gone.load(Relaxed)
    }
}

impl Drop for QuicheTransport {
    fn drop(&mut self) {
        self.shared.dropped.store(true, Relaxed);
        self.shared.wake.notify_one();
    }
}

/// A fresh random connection ID of [`LOCAL_CID_LEN`] bytes.
pub(crate) fn random_cid() -> [u8; LOCAL_CID_LEN] {
    let mut cid = [0u8; LOCAL_CID_LEN];
    rand::rng().fill_bytes(&mut cid);
    cid
}

/// Checks the server name: an IP address (verified against the certificate's IP
/// addresses) or a DNS name (sent as SNI and verified against its DNS names).
fn parse_server_name(name: &str) -> Result<Option<IpAddr>, Error> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(Some(ip));
    }
    match stoq_core::pki_types::ServerName::try_from(name) {
        Ok(stoq_core::pki_types::ServerName::DnsName(_)) => Ok(None),
        _ => Err(Error::InvalidAddress(format!(
            "{name:?} is not a valid DNS name or IP address"
        ))),
    }
}

#[async_trait]
impl Transport for QuicheTransport {
    fn name(&self) -> &str {
        "quiche"
    }

    fn capabilities(&self) -> Capabilities {
        crate::CAPABILITIES
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<ConnectionHandle, Error> {
        Ok(self.dial(addr, server_name).await?)
    }

    async fn accept(&self) -> Result<ConnectionHandle, Error> {
        if self.role != EndpointRole::Server {
            return Err(Error::config(
                "role",
                "this endpoint was bound as a client; bind it with EndpointRole::Server to accept",
            ));
        }
        loop {
            let mut notified = pin!(self.shared.accept_ready.notified());
            notified.as_mut().enable();
            if self.is_closed() {
                return Err(Error::EndpointClosed);
            }
            if let Some(conn) = self.shared.accept_queue.lock().pop_front() {
                return Ok(Arc::new(QuicheConnection::new(conn)));
            }
            notified.await;
        }
    }

    fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.local)
    }

    fn stats(&self) -> EndpointStats {
        let c = &self.shared.counters;
        let mut s = EndpointStats::default();
        s.accepted = c.accepted.load(Relaxed);
        s.handshake_failures = c.handshake_failures.load(Relaxed);
        s.connected = c.connected.load(Relaxed);
        s.open_connections = c.open.load(Relaxed);
        s
    }

    async fn close(&self, code: u64, reason: &[u8]) {
        self.shared.closing.store(true, Relaxed);
        self.shared.accept_ready.notify_waiters();
        if self.shared.driver_gone.load(Relaxed) {
            // No driver, no connections left to tell.
            return;
        }
        let (done, wait) = oneshot::channel();
        *self.shared.close_request.lock() = Some(CloseRequest {
            code,
            reason: Bytes::copy_from_slice(reason),
            done,
        });
        self.shared.wake.notify_one();
        let _ = tokio::time::timeout(CLOSE_GRACE, wait).await;
    }
}
