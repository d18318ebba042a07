//! TLS material handed to backends, as plain DER.
//!
//! `stoq-crypto` produces it (self-managed local CA, or PEM files); backends turn it into
//! their TLS stack's configuration (rustls configs for quinn and s2n-quic, PEM for
//! BoringSSL in quiche). Keeping it as DER in core lets every backend and a user's own
//! backend take the same certificates.

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its private key (server identity, or client identity for
/// mutual authentication).
#[derive(Clone)]
pub struct Identity {
    /// Leaf first, then intermediates, as DER.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8, SEC1 or PKCS#1 DER).
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Identity")
            .field("cert_chain_len", &self.cert_chain.len())
            .finish_non_exhaustive()
    }
}

/// Where an endpoint gets the identity for each new handshake when that identity changes
/// while the endpoint runs (certificate rotation), e.g. `stoq_crypto::RotatingIdentity`.
///
/// Backends whose TLS stack chooses the certificate per handshake (rustls: quinn, s2n-quic,
/// io_uring through `stoq_crypto::server_config` / `client_config`) call
/// [`current`](Self::current) at the start of every handshake; connections already
/// established keep the certificate they were authenticated with. Backends that cannot
/// (quiche) use [`TlsMaterial::identity`] as it was when the endpoint was bound.
pub trait IdentitySource: Send + Sync + fmt::Debug {
    /// The identity a handshake starting now presents. Called once per handshake: it must
    /// be cheap when nothing changed. An error fails that handshake only (and is logged).
    fn current(&self) -> Result<Identity, crate::Error>;
}

/// Everything a backend needs for TLS on one endpoint.
#[derive(Clone, Debug, Default)]
pub struct TlsMaterial {
    /// This endpoint's identity. Required to accept connections; optional for a pure client.
    pub identity: Option<Identity>,
    /// Roots of trust for verifying the peer's certificate (DER). An endpoint that dials
    /// needs at least one.
    pub roots: Vec<CertificateDer<'static>>,
    /// Whether a server demands and verifies a client certificate against `roots`.
    pub require_client_auth: bool,
    /// If set, the identity for each new handshake comes from here (rotation) instead of
    /// [`identity`](Self::identity), which should then hold the source's identity at the
    /// time the material was made (backends that cannot rotate use it, and it keeps
    /// "has an identity" checks meaningful).
    pub identity_source: Option<Arc<dyn IdentitySource>>,
}
