//! Certificate rotation without restarting an endpoint: an [`IdentitySource`] that follows a
//! [`CertStore`], and the rustls resolvers that ask a source at every handshake.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use rustls_pki_types::CertificateDer;
use stoq_core::{Identity, IdentitySource};

use crate::config::certified_key_with;
use crate::store::{normalize_names, CertStore};
use crate::{x509, CryptoError};

/// Which kind of leaf a [`RotatingIdentity`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeafKind {
    /// The classical leaf ([`CertStore::leaf`], ECDSA P-256).
    Classical,
    /// The FALCON leaf ([`CertStore::falcon_leaf`], at the store's FALCON level).
    Falcon,
}

/// The current leaf of a [`CertStore`] for a set of names, as an [`IdentitySource`].
///
/// [`current`](IdentitySource::current) returns the cached leaf while it stays valid for
/// longer than the store's renewal window ([`CertStore::renew_before`]); once it enters
/// the window (or has expired) it asks the store again, which reissues (or picks up a leaf
/// another process already reissued), and caches the result. Only the handshakes that find
/// the cache stale touch the disk. If the store fails, the stale leaf is served while it is
/// still valid (the error is logged); after that, the error fails the handshake.
pub struct RotatingIdentity {
    store: CertStore,
    names: Vec<String>,
    kind: LeafKind,
    cached: Mutex<(Identity, SystemTime)>,
}

impl fmt::Debug for RotatingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingIdentity")
            .field("dir", &self.store.dir())
            .field("names", &self.names)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn leaf_not_after(identity: &Identity) -> Result<SystemTime, CryptoError> {
    let leaf = identity.cert_chain.first().ok_or(CryptoError::NoIdentity)?;
    x509::not_after(leaf).map_err(CryptoError::Generate)
}

impl RotatingIdentity {
    /// Follows `store`'s leaf of `kind` for `names`, loading (or issuing) it now.
    pub fn new(
        store: CertStore,
        names: &[&str],
        kind: LeafKind,
    ) -> Result<RotatingIdentity, CryptoError> {
        let names = normalize_names(names)?;
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let identity = store.leaf_of(&refs, kind)?;
        let not_after = leaf_not_after(&identity)?;
        Ok(RotatingIdentity {
            store,
            names,
            kind,
            cached: Mutex::new((identity, not_after)),
        })
    }

    /// The kind of leaf served.
    pub fn kind(&self) -> LeafKind {
        self.kind
    }

    /// The identity [`current`](IdentitySource::current) would serve now, as a
    /// [`CryptoError`] on failure.
    pub fn identity(&self) -> Result<Identity, CryptoError> {
        let mut cached = self.cached.lock().expect("rotating identity lock");
        let now = SystemTime::now();
        if now + self.store.renew_before() < cached.1 {
            return Ok(cached.0.clone());
        }
        let refs: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let fresh = self
            .store
            .leaf_of(&refs, self.kind)
            .and_then(|identity| Ok((leaf_not_after(&identity)?, identity)));
        match fresh {
            Ok((not_after, identity)) => {
                if identity.cert_chain[0] != cached.0.cert_chain[0] {
                    tracing::info!(names = ?self.names, kind = ?self.kind, "rotated the leaf certificate");
                }
                *cached = (identity.clone(), not_after);
                Ok(identity)
            }
            Err(e) if now < cached.1 => {
                tracing::warn!(error = %e, names = ?self.names, "leaf renewal failed; serving the current leaf until it expires");
                Ok(cached.0.clone())
            }
            Err(e) => Err(e),
        }
    }
}

impl IdentitySource for RotatingIdentity {
    fn current(&self) -> Result<Identity, stoq_core::Error> {
        self.identity().map_err(Into::into)
    }
}

/// A rustls certificate resolver (server side and client side) that asks an
/// [`IdentitySource`] for the identity at every handshake and serves it, reusing the loaded
/// key while the leaf stays the same and swapping to a newly loaded one when it changes.
/// A FALCON identity is presented as the leaf alone, as [`crate::falcon::falcon_server_config`]
/// does. A handshake whose identity cannot be obtained or loaded gets no certificate (rustls
/// then fails that handshake); other handshakes and established connections are unaffected.
///
/// [`crate::server_config`] and [`crate::client_config`] install it when
/// `TlsMaterial::identity_source` is set.
pub struct IdentityResolver {
    provider: Arc<CryptoProvider>,
    source: Arc<dyn IdentitySource>,
    loaded: RwLock<(CertificateDer<'static>, Arc<CertifiedKey>)>,
}

impl fmt::Debug for IdentityResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityResolver")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl IdentityResolver {
    /// A resolver over `source`, loading keys with `provider`'s key provider. Loads the
    /// source's current identity now, so an unusable one fails here rather than in the first
    /// handshake ([`CryptoError::KeyMismatch`], [`CryptoError::NoIdentity`], ...).
    pub fn new(
        provider: Arc<CryptoProvider>,
        source: Arc<dyn IdentitySource>,
    ) -> Result<IdentityResolver, CryptoError> {
        let identity = source
            .current()
            .map_err(|e| CryptoError::Generate(format!("identity source: {e}")))?;
        let loaded = load(&provider, &identity)?;
        Ok(IdentityResolver {
            provider,
            source,
            loaded: RwLock::new(loaded),
        })
    }

    /// The certified key for a handshake starting now.
    fn resolve_now(&self) -> Option<Arc<CertifiedKey>> {
        let identity = match self.source.current() {
            Ok(identity) => identity,
            Err(e) => {
                tracing::warn!(error = %e, "no identity for this handshake");
                return None;
            }
        };
        let leaf = identity.cert_chain.first()?;
        {
            let loaded = self.loaded.read().expect("resolver lock");
            if &loaded.0 == leaf {
                return Some(loaded.1.clone());
            }
        }
        match load(&self.provider, &identity) {
            Ok(fresh) => {
                let key = fresh.1.clone();
                *self.loaded.write().expect("resolver lock") = fresh;
                Some(key)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the rotated identity does not load");
                None
            }
        }
    }
}

fn load(
    provider: &CryptoProvider,
    identity: &Identity,
) -> Result<(CertificateDer<'static>, Arc<CertifiedKey>), CryptoError> {
    let identity = if crate::falcon::is_falcon_key(&identity.key) {
        Identity {
            cert_chain: identity.cert_chain.iter().take(1).cloned().collect(),
            key: identity.key.clone(),
        }
    } else {
        identity.clone()
    };
    let certified = certified_key_with(
        provider,
        &identity,
        "the rotating identity's leaf certificate",
        "the rotating identity's private key",
    )?;
    Ok((identity.cert_chain[0].clone(), Arc::new(certified)))
}

impl ResolvesServerCert for IdentityResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.resolve_now()
    }
}

impl ResolvesClientCert for IdentityResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.resolve_now()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
