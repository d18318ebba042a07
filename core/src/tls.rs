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
}
