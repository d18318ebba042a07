//! [`PhoenixBuilder`]: every part of a [`Phoenix`] chosen explicitly.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use stoq_core::{Backend, Capability, CongestionConfig, TlsMaterial, Transport, TransportConfig};
use stoq_crypto::falcon::post_handshake::{FalconAuthConfig, FalconAuthTransport};
use stoq_crypto::falcon::FalconLevel;
use stoq_crypto::{CertStore, LeafKind};

use crate::phoenix::Phoenix;
use crate::pool::PoolConfig;
use crate::tier::NetworkTier;
use crate::PhoenixError;

/// The largest message (or multiplexed transfer) accepted by default: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 64 * 1024 * 1024;

/// The names the default certificate is issued for.
pub const DEFAULT_CERT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How a [`Phoenix`] built with [`PhoenixBuilder::falcon_identity`] authenticates with
/// FALCON, chosen from the backend's capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FalconMode {
    /// The FALCON leaf is the TLS certificate ([`Capability::FalconInHandshake`]: quinn,
    /// s2n-quic, io_uring), rotated from the store as it nears expiry.
    InHandshake,
    /// The TLS handshake uses the store's classical leaf and both sides then prove their
    /// FALCON identity on the connection ([`Capability::FalconPostHandshake`], e.g. quiche;
    /// see `stoq_crypto::falcon::post_handshake`). The FALCON leaf is fixed for the
    /// lifetime of the [`Phoenix`].
    PostHandshake,
}

/// Where a [`Phoenix`] gets its certificates and trust roots.
#[derive(Clone)]
#[non_exhaustive]
pub enum CertSource {
    /// STOQ's self-managed store at its default place (`$STOQ_HOME/certs`, else e.g.
    /// `~/.config/stoq/certs`): a local CA, created on first use and trusted, and a leaf
    /// for the certificate names, reissued from the store when it nears expiry while the
    /// endpoints run (on backends whose TLS stack is rustls: `stoq_crypto::RotatingIdentity`).
    DefaultStore,
    /// STOQ's self-managed store in this directory (as [`CertSource::DefaultStore`]).
    Store(PathBuf),
    /// PEM files: an identity (certificate chain, private key) to accept connections,
    /// and roots to verify servers against. Either may be absent (a pure client needs no
    /// identity; a pure server no roots).
    Pem {
        /// Certificate chain and key files.
        identity: Option<(PathBuf, PathBuf)>,
        /// File of trusted CA certificates.
        roots: Option<PathBuf>,
    },
    /// Ready material (e.g. `stoq_crypto::ephemeral_material` in tests).
    Material(TlsMaterial),
}

impl fmt::Debug for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertSource::DefaultStore => f.write_str("DefaultStore"),
            CertSource::Store(d) => f.debug_tuple("Store").field(d).finish(),
            CertSource::Pem { identity, roots } => f
                .debug_struct("Pem")
                .field("identity", identity)
                .field("roots", roots)
                .finish(),
            CertSource::Material(_) => f.write_str("Material(..)"),
        }
    }
}

enum BackendChoice {
    Name(String),
    Instance(Arc<dyn Backend>),
}

/// Builds a [`Phoenix`]: backend, transport configuration, certificates, congestion
/// control, network tier, limits. Start with [`Phoenix::builder`].
///
/// ```no_run
/// # async fn demo() -> Result<(), phoenix::PhoenixError> {
/// use phoenix::{NetworkTier, Phoenix};
/// let phoenix = Phoenix::builder()
///     .app_name("my-app")
///     .backend("quinn")
///     .config_file("stoq.toml")
///     .cert_store("/var/lib/my-app/certs")
///     .tier(NetworkTier::Performance)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct PhoenixBuilder {
    app: Option<String>,
    backend: BackendChoice,
    transport: Option<Arc<dyn Transport>>,
    config: Option<TransportConfig>,
    config_file: Option<PathBuf>,
    congestion: Option<CongestionConfig>,
    certs: CertSource,
    cert_names: Vec<String>,
    tier: Option<NetworkTier>,
    max_message_size: u64,
    pool: PoolConfig,
    falcon: Option<FalconLevel>,
}

impl fmt::Debug for PhoenixBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoenixBuilder")
            .field("app", &self.app)
            .field("certs", &self.certs)
            .field("tier", &self.tier)
            .field("falcon", &self.falcon)
            .finish_non_exhaustive()
    }
}

impl Default for PhoenixBuilder {
    fn default() -> Self {
        PhoenixBuilder {
            app: None,
            backend: BackendChoice::Name(crate::DEFAULT_BACKEND.to_string()),
            transport: None,
            config: None,
            config_file: None,
            congestion: None,
            certs: CertSource::DefaultStore,
            cert_names: DEFAULT_CERT_NAMES.iter().map(|s| s.to_string()).collect(),
            tier: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            pool: PoolConfig::default(),
            falcon: None,
        }
    }
}

impl PhoenixBuilder {
    /// A builder with every default: backend `quinn`, default configuration, the default
    /// certificate store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The application's name, used as the ALPN protocol (replacing the configuration's
    /// `alpn`): only peers with the same name connect.
    pub fn app_name(mut self, name: impl Into<String>) -> Self {
        self.app = Some(name.into());
        self
    }

    /// The backend, by name (see [`backend_names`](crate::backend_names)). An unknown name
    /// fails in [`build`](Self::build) with [`PhoenixError::UnknownBackend`].
    pub fn backend(mut self, name: impl Into<String>) -> Self {
        self.backend = BackendChoice::Name(name.into());
        self
    }

    /// The backend, as a value (e.g. one of your own).
    pub fn backend_impl(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = BackendChoice::Instance(backend);
        self
    }

    /// A ready endpoint to dial from, instead of binding one with the backend (listening
    /// still uses the backend).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The transport configuration.
    pub fn config(mut self, config: TransportConfig) -> Self {
        self.config = Some(config);
        self.config_file = None;
        self
    }

    /// Loads the transport configuration from a TOML file when building
    /// ([`TransportConfig::from_toml_file`]); a missing or invalid file fails
    /// [`build`](Self::build) with [`PhoenixError::Core`] naming it.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self.config = None;
        self
    }

    /// The congestion controller (replacing the configuration's).
    pub fn congestion(mut self, congestion: CongestionConfig) -> Self {
        self.congestion = Some(congestion);
        self
    }

    /// Where certificates come from.
    pub fn certs(mut self, source: CertSource) -> Self {
        self.certs = source;
        self
    }

    /// STOQ's self-managed certificate store in `dir`.
    pub fn cert_store(self, dir: impl Into<PathBuf>) -> Self {
        self.certs(CertSource::Store(dir.into()))
    }

    /// The identity from PEM files (certificate chain, private key).
    pub fn pem_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        let identity = Some((cert.into(), key.into()));
        self.certs = match self.certs {
            CertSource::Pem { roots, .. } => CertSource::Pem { identity, roots },
            _ => CertSource::Pem {
                identity,
                roots: None,
            },
        };
        self
    }

    /// Trusted CA certificates from a PEM file.
    pub fn pem_roots(mut self, roots: impl Into<PathBuf>) -> Self {
        let roots = Some(roots.into());
        self.certs = match self.certs {
            CertSource::Pem { identity, .. } => CertSource::Pem { identity, roots },
            _ => CertSource::Pem {
                identity: None,
                roots,
            },
        };
        self
    }

    /// Ready TLS material.
    pub fn tls(self, material: TlsMaterial) -> Self {
        self.certs(CertSource::Material(material))
    }

    /// The names a store-issued certificate covers (default: `localhost`, `127.0.0.1`,
    /// `::1`).
    pub fn cert_names(mut self, names: &[&str]) -> Self {
        self.cert_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Authenticates with a FALCON-512 post-quantum identity from the certificate store:
    /// [`post_quantum_identity`](Self::post_quantum_identity)`(FalconLevel::L512)`.
    pub fn falcon_identity(self) -> Self {
        self.post_quantum_identity(FalconLevel::L512)
    }

    /// Authenticates with a FALCON identity of `level` from the certificate store (the
    /// default one, or [`cert_store`](Self::cert_store)), on every backend:
    ///
    /// * The store's FALCON CA and a FALCON leaf for the [`cert_names`](Self::cert_names)
    ///   are created on first use (`falcon-ca.pem`, `falcon-leaf-<hash>.pem`, ...).
    /// * Peers are trusted if they chain to the store's classical CA or its FALCON CA (a
    ///   mixed trust store), so both ends must use the same store (or share its CAs).
    /// * On a backend with [`Capability::FalconInHandshake`] the FALCON leaf is the TLS
    ///   certificate and rotates as it nears expiry ([`FalconMode::InHandshake`]); otherwise
    ///   (quiche) every endpoint is wrapped in `FalconAuthTransport` and the FALCON identity
    ///   is proven right after the handshake ([`FalconMode::PostHandshake`]). Either way a
    ///   connection's `peer_identity()` is the peer's verified FALCON chain.
    ///
    /// [`build`](Self::build) fails with [`PhoenixError::InvalidOptions`] if the
    /// certificates come from PEM files or ready material (they have no FALCON store), and
    /// with [`PhoenixError::Core`] (`Unsupported`) on a backend with neither capability.
    pub fn post_quantum_identity(mut self, level: FalconLevel) -> Self {
        self.falcon = Some(level);
        self
    }

    /// Fixes the network tier: its profile applies at once and
    /// [`Phoenix::probe`](crate::Phoenix::probe) measures nothing.
    pub fn tier(mut self, tier: NetworkTier) -> Self {
        self.tier = Some(tier);
        self
    }

    /// The largest message or multiplexed transfer sent or accepted (default 64 MiB).
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Connection pool limits.
    pub fn pool(mut self, config: PoolConfig) -> Self {
        self.pool = config;
        self
    }

    /// Builds the [`Phoenix`]. Must run inside a tokio runtime.
    ///
    /// Fails with [`PhoenixError::UnknownBackend`], [`PhoenixError::Core`] for a missing
    /// or invalid configuration ([`stoq_core::Error::ConfigFile`] /
    /// [`stoq_core::Error::Config`]), and [`PhoenixError::Crypto`] when certificates
    /// cannot be created or loaded.
    pub async fn build(self) -> Result<Phoenix, PhoenixError> {
        let backend = match self.backend {
            BackendChoice::Instance(b) => b,
            BackendChoice::Name(name) => {
                crate::backend(&name).map_err(|_| PhoenixError::UnknownBackend {
                    name,
                    available: crate::backend_names(),
                })?
            }
        };
        let mut config = match (self.config, self.config_file) {
            (_, Some(path)) => TransportConfig::from_toml_file(path)?,
            (Some(c), None) => c,
            (None, None) => TransportConfig::default(),
        };
        if let Some(app) = &self.app {
            config.alpn = vec![app.clone()];
        }
        if let Some(cc) = self.congestion {
            config.congestion = cc;
        }
        config.validate()?;
        if self.max_message_size == 0 {
            return Err(PhoenixError::InvalidOptions(
                "max_message_size must be at least 1".into(),
            ));
        }
        let names: Vec<&str> = self.cert_names.iter().map(String::as_str).collect();
        let store = match &self.certs {
            CertSource::DefaultStore => Some(CertStore::open_default()?),
            CertSource::Store(dir) => Some(CertStore::open(dir)?),
            _ => None,
        };
        let mut falcon_auth = None;
        let mut falcon_mode = None;
        let tls = match (self.certs, store, self.falcon) {
            (_, Some(store), Some(level)) => {
                let store = store.with_falcon_level(level);
                let caps = backend.capabilities();
                if caps.contains(Capability::FalconInHandshake) {
                    falcon_mode = Some(FalconMode::InHandshake);
                    store.rotating_material(&names, LeafKind::Falcon)?
                } else {
                    caps.require(Capability::FalconPostHandshake)?;
                    falcon_mode = Some(FalconMode::PostHandshake);
                    // The TLS layer stays classical (its stack cannot parse FALCON); the
                    // FALCON leaf and CA are proven and checked after the handshake.
                    let identity = store.falcon_leaf(&names)?;
                    let anchor = store.falcon_ca()?.cert().clone();
                    falcon_auth = Some(FalconAuthConfig::new(&identity, &[anchor])?);
                    store.material(&names)?
                }
            }
            (_, None, Some(_)) => {
                return Err(PhoenixError::InvalidOptions(
                    "a FALCON identity comes from the certificate store: use the default \
                     store or cert_store(dir), not PEM files or ready material"
                        .into(),
                ))
            }
            (_, Some(store), None) => store.rotating_material(&names, LeafKind::Classical)?,
            (CertSource::Pem { identity, roots }, None, None) => TlsMaterial {
                identity: match identity {
                    Some((cert, key)) => Some(stoq_crypto::load_identity(&cert, &key)?),
                    None => None,
                },
                roots: match roots {
                    Some(path) => stoq_crypto::load_roots(&path)?,
                    None => Vec::new(),
                },
                require_client_auth: false,
                identity_source: None,
            },
            (CertSource::Material(m), None, None) => m,
            (_, None, None) => unreachable!("store sources have a store"),
        };
        let transport = match (self.transport, &falcon_auth) {
            (Some(t), Some(auth)) => {
                Some(Arc::new(FalconAuthTransport::new(t, auth.clone())?) as Arc<dyn Transport>)
            }
            (t, _) => t,
        };
        let app = self
            .app
            .unwrap_or_else(|| config.alpn.first().cloned().unwrap_or_default());
        Ok(Phoenix::from_parts(crate::phoenix::Parts {
            app,
            backend,
            config,
            tls,
            transport,
            falcon_auth,
            falcon_mode,
            tier: self.tier,
            max_message_size: self.max_message_size,
            pool: self.pool,
        }))
    }
}
