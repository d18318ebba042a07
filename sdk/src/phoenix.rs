//! [`Phoenix`]: the SDK's entry point.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use stoq_core::{Backend, EndpointSpec, TlsMaterial, Transport, TransportConfig};

use crate::address::resolve;
use crate::builder::{FalconMode, PhoenixBuilder};
use crate::connection::{Ctx, PhoenixConnection};
use crate::listener::Listener;
use crate::mux::{MoreConnections, MuxOptions};
use crate::pool::{Pool, PoolConfig, PoolKey};
use crate::stats::{PhoenixStats, TotalStats, TransportTotals};
use crate::tier::{NetworkTier, TierReport, TierSource, DEFAULT_PROBE_BYTES};
use crate::PhoenixError;
use stoq_crypto::falcon::post_handshake::{FalconAuthConfig, FalconAuthTransport};

pub(crate) struct Parts {
    pub(crate) app: String,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) config: TransportConfig,
    pub(crate) tls: TlsMaterial,
    pub(crate) transport: Option<Arc<dyn Transport>>,
    pub(crate) falcon_auth: Option<FalconAuthConfig>,
    pub(crate) falcon_mode: Option<FalconMode>,
    pub(crate) tier: Option<NetworkTier>,
    pub(crate) max_message_size: u64,
    pub(crate) pool: PoolConfig,
}

#[derive(Default)]
struct Dialers {
    v4: Option<Arc<dyn Transport>>,
    v6: Option<Arc<dyn Transport>>,
}

struct PhoenixInner {
    app: String,
    backend: Arc<dyn Backend>,
    base_config: TransportConfig,
    tls: TlsMaterial,
    custom_dialer: Option<Arc<dyn Transport>>,
    falcon_auth: Option<FalconAuthConfig>,
    falcon_mode: Option<FalconMode>,
    dialers: Mutex<Dialers>,
    tier: Mutex<Option<TierReport>>,
    pool: Pool,
    ctx: Arc<Ctx>,
}

/// A QUIC application endpoint: dials ([`connect`](Self::connect),
/// [`send_data`](Self::send_data)) through a connection [`Pool`], and listens
/// ([`listen`](Self::listen)).
///
/// `Phoenix::new("my-app")` needs no other set-up: the default backend (quinn), the
/// default [`TransportConfig`] with ALPN `my-app`, and certificates from STOQ's
/// self-managed local store (a development CA created and trusted on first use, and a
/// leaf for `localhost`, `127.0.0.1` and `::1`). [`Phoenix::builder`] chooses each part.
///
/// Cheap to clone; clones share the pool, the statistics and the tier.
#[derive(Clone)]
pub struct Phoenix {
    inner: Arc<PhoenixInner>,
}

impl fmt::Debug for Phoenix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Phoenix")
            .field("app", &self.inner.app)
            .field("backend", &self.inner.backend.name())
            .finish_non_exhaustive()
    }
}

impl Phoenix {
    /// A Phoenix with every default, for application `app` (the ALPN protocol).
    pub async fn new(app: &str) -> Result<Phoenix, PhoenixError> {
        Phoenix::builder().app_name(app).build().await
    }

    /// A builder to choose the backend, configuration, certificates and more.
    pub fn builder() -> PhoenixBuilder {
        PhoenixBuilder::new()
    }

    pub(crate) fn from_parts(p: Parts) -> Phoenix {
        let tier = p.tier.map(|tier| TierReport {
            tier,
            source: TierSource::Override,
            profile: tier.profile(),
            probe: None,
        });
        Phoenix {
            inner: Arc::new(PhoenixInner {
                app: p.app,
                backend: p.backend,
                base_config: p.config,
                tls: p.tls,
                custom_dialer: p.transport,
                falcon_auth: p.falcon_auth,
                falcon_mode: p.falcon_mode,
                dialers: Mutex::default(),
                tier: Mutex::new(tier),
                pool: Pool::new(p.pool),
                ctx: Arc::new(Ctx::new(p.max_message_size)),
            }),
        }
    }

    /// The application name.
    pub fn app(&self) -> &str {
        &self.inner.app
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The configuration new endpoints get: the configured one with the tier's profile
    /// applied, if a tier is set.
    pub fn config(&self) -> TransportConfig {
        let mut cfg = self.inner.base_config.clone();
        if let Some(t) = &*self.inner.tier.lock().expect("tier lock") {
            t.profile.apply(&mut cfg);
        }
        cfg
    }

    /// The TLS material.
    pub fn tls(&self) -> &TlsMaterial {
        &self.inner.tls
    }

    /// How this Phoenix authenticates with FALCON, if it was built with
    /// [`PhoenixBuilder::falcon_identity`] / [`PhoenixBuilder::post_quantum_identity`].
    pub fn falcon_mode(&self) -> Option<FalconMode> {
        self.inner.falcon_mode
    }

    /// A newly bound endpoint, wrapped for post-handshake FALCON authentication in
    /// [`FalconMode::PostHandshake`].
    fn bind(&self, spec: EndpointSpec) -> Result<Arc<dyn Transport>, PhoenixError> {
        let transport = self.inner.backend.bind(spec)?;
        Ok(match &self.inner.falcon_auth {
            Some(auth) => Arc::new(FalconAuthTransport::new(transport, auth.clone())?),
            None => transport,
        })
    }

    /// The largest message sent or accepted.
    pub fn max_message_size(&self) -> u64 {
        self.inner.ctx.max_message_size
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Binds a server endpoint (e.g. `"[::]:4433"`, `"127.0.0.1:0"`, `"localhost:4433"`)
    /// and starts accepting connections.
    pub async fn listen(&self, addr: &str) -> Result<Listener, PhoenixError> {
        let (_, addrs) = resolve(addr).await?;
        let spec = EndpointSpec::server(addrs[0], self.config(), self.inner.tls.clone());
        let transport = self.bind(spec)?;
        Listener::start(transport, self.inner.ctx.clone())
    }

    /// A connection to `target` (`host:port`, `[v6]:port`, `a.b.c.d:port`): a live one
    /// from the pool, or a new one. The host part is the TLS server name; names are
    /// resolved with the system resolver and the addresses tried in its order.
    pub async fn connect(&self, target: &str) -> Result<PhoenixConnection, PhoenixError> {
        let (host, addrs) = resolve(target).await?;
        if addrs[0].port() == 0 {
            return Err(PhoenixError::BadAddress {
                input: target.to_string(),
                why: "port 0 cannot be dialled".into(),
            });
        }
        let keys: Vec<PoolKey> = addrs.iter().map(|a| PoolKey::new(*a, &host)).collect();
        self.connect_keys(&format!("{host}:{}", addrs[0].port()), &keys)
            .await
    }

    /// A connection to `addr`, verifying the certificate against `server_name`: a live
    /// one from the pool, or a new one.
    pub async fn connect_addr(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<PhoenixConnection, PhoenixError> {
        let key = PoolKey::new(addr, server_name);
        self.connect_keys(&format!("{server_name}@{addr}"), &[key])
            .await
    }

    async fn connect_keys(
        &self,
        gate: &str,
        keys: &[PoolKey],
    ) -> Result<PhoenixConnection, PhoenixError> {
        let pool = &self.inner.pool;
        if let Some(c) = pool.find(keys) {
            pool.record(true);
            return Ok(c);
        }
        let gate = pool.gate(gate);
        let _dialing = gate.lock().await;
        if let Some(c) = pool.find(keys) {
            pool.record(true);
            return Ok(c);
        }
        pool.record(false);
        let mut last = None;
        for key in keys {
            match self.dial(key).await {
                Ok(c) => {
                    pool.insert(key.clone(), c.clone());
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one address"))
    }

    /// Dials a new connection (not pooled yet).
    async fn dial(&self, key: &PoolKey) -> Result<PhoenixConnection, PhoenixError> {
        let transport = self.dialer(key.addr)?;
        let conn = transport
            .connect(key.addr, &key.server_name)
            .await
            .map_err(|e| match e {
                stoq_core::Error::Connection(e) => PhoenixError::Connection(e),
                e => PhoenixError::Core(e),
            })?;
        let pc = PhoenixConnection::wrap(conn, Some(transport), self.inner.ctx.clone(), None);
        let weak = Arc::downgrade(&self.inner);
        let key = key.clone();
        *pc.shared.pool_link.lock().expect("pool link lock") = Some(Box::new(move |n| {
            more_connections(weak.clone(), key.clone(), n)
        }));
        Ok(pc)
    }

    /// The endpoint to dial `addr` from: the supplied transport, or a client endpoint of
    /// the address's family, bound on first use with the current configuration.
    fn dialer(&self, addr: SocketAddr) -> Result<Arc<dyn Transport>, PhoenixError> {
        if let Some(t) = &self.inner.custom_dialer {
            return Ok(t.clone());
        }
        let config = self.config();
        let mut d = self.inner.dialers.lock().expect("dialers lock");
        let slot = if addr.is_ipv6() { &mut d.v6 } else { &mut d.v4 };
        if let Some(t) = slot {
            return Ok(t.clone());
        }
        let spec = EndpointSpec::client(addr, config, self.inner.tls.clone());
        let t = self.bind(spec)?;
        *slot = Some(t.clone());
        Ok(t)
    }

    /// `n` live connections to the pool key's peer (pooled ones first, then new ones,
    /// added to the pool).
    async fn pooled(
        &self,
        key: &PoolKey,
        n: usize,
    ) -> Result<Vec<PhoenixConnection>, PhoenixError> {
        let max = self.inner.pool.config().max_connections;
        if n > max {
            return Err(PhoenixError::InvalidOptions(format!(
                "{n} connections exceed the pool's limit of {max}"
            )));
        }
        let mut conns = self.inner.pool.get_many(key, n);
        while conns.len() < n {
            let c = self.dial(key).await?;
            self.inner.pool.insert(key.clone(), c.clone());
            conns.push(c);
        }
        Ok(conns)
    }

    /// Sends `data` as one message to `target` over a pooled connection; see
    /// [`PhoenixConnection::send_data`].
    pub async fn send_data(&self, target: &str, data: &[u8]) -> Result<(), PhoenixError> {
        self.connect(target).await?.send_data(data).await
    }

    /// [`send_data`](Self::send_data) without copying `data`.
    pub async fn send_bytes(&self, target: &str, data: Bytes) -> Result<(), PhoenixError> {
        self.connect(target).await?.send_bytes(data).await
    }

    /// Sends `data` to `target` as one multiplexed transfer over pooled connections; see
    /// [`PhoenixConnection::send_multiplexed`].
    pub async fn send_multiplexed(
        &self,
        target: &str,
        data: &[u8],
        options: MuxOptions,
    ) -> Result<(), PhoenixError> {
        self.connect(target)
            .await?
            .send_multiplexed(data, options)
            .await
    }

    /// Classifies the path to `conn`'s peer (see [`crate::tier`]) with a 4 MiB probe, and
    /// applies the tier's profile to connections made from now on. With a tier fixed by
    /// [`PhoenixBuilder::tier`] nothing is measured and that tier is returned.
    pub async fn probe(&self, conn: &PhoenixConnection) -> Result<TierReport, PhoenixError> {
        self.probe_with(conn, DEFAULT_PROBE_BYTES).await
    }

    /// [`probe`](Self::probe) with a probe of `probe_bytes`.
    pub async fn probe_with(
        &self,
        conn: &PhoenixConnection,
        probe_bytes: u64,
    ) -> Result<TierReport, PhoenixError> {
        if let Some(t) = &*self.inner.tier.lock().expect("tier lock") {
            if t.source == TierSource::Override {
                return Ok(t.clone());
            }
        }
        let measured = conn.measure(probe_bytes).await?;
        let report = TierReport {
            tier: measured.tier,
            source: TierSource::Probe,
            profile: measured.tier.profile(),
            probe: Some(measured),
        };
        *self.inner.tier.lock().expect("tier lock") = Some(report.clone());
        // New connections come from endpoints bound with the tier's profile; existing
        // ones keep theirs (each connection holds its endpoint).
        *self.inner.dialers.lock().expect("dialers lock") = Dialers::default();
        Ok(report)
    }

    /// The tier in force, if one was fixed or probed.
    pub fn tier(&self) -> Option<TierReport> {
        self.inner.tier.lock().expect("tier lock").clone()
    }

    /// Statistics: totals, every live connection (dialled or accepted), the pool and the
    /// tier.
    pub fn stats(&self) -> PhoenixStats {
        let live = self.inner.ctx.live();
        let connections: Vec<_> = live.iter().map(|c| c.stats()).collect();
        let retired = self.inner.ctx.retired.lock().expect("retired lock").clone();
        let transport = TransportTotals::aggregate(
            &retired,
            connections
                .iter()
                .map(|r| (&r.transport, r.close_reason.is_none())),
        );
        PhoenixStats {
            app: self.inner.app.clone(),
            backend: self.inner.backend.name().to_string(),
            tier: self.tier(),
            total: TotalStats {
                sdk: self.inner.ctx.totals.snapshot(),
                transport,
            },
            connections,
            pool: self.inner.pool.stats(),
        }
    }

    /// Closes every pooled connection and the dialling endpoints (waiting briefly until
    /// peers were told). Listeners are closed with [`Listener::close`].
    pub async fn close(&self) {
        self.inner.pool.clear();
        let dialers = std::mem::take(&mut *self.inner.dialers.lock().expect("dialers lock"));
        for t in [dialers.v4, dialers.v6].into_iter().flatten() {
            t.close(0, b"").await;
        }
    }
}

fn more_connections(phoenix: Weak<PhoenixInner>, key: PoolKey, n: usize) -> MoreConnections {
    Box::pin(async move {
        let inner = phoenix.upgrade().ok_or(PhoenixError::Closed)?;
        Phoenix { inner }.pooled(&key, n).await
    })
}
