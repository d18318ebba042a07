//! # STOQ crypto
//!
//! Everything TLS that STOQ's QUIC backends share, built on rustls with the aws-lc-rs
//! provider:
//!
//! * [`provider()`]: the crypto provider, with hybrid post-quantum key exchange
//!   (`X25519MLKEM768`) preferred and AES-128-GCM as the first TLS 1.3 cipher suite.
//! * [`server_config`] / [`client_config`]: rustls configurations (TLS 1.3 only, ALPN,
//!   optional mutual authentication) from [`stoq_core::TlsMaterial`], the DER handoff type
//!   every backend accepts.
//! * [`load_identity`] / [`load_roots`]: PEM files to DER, with errors that name the file
//!   and the problem.
//! * [`CertStore`]: self-managing certificates: a local development CA created on first use
//!   and leaf certificates it issues, stored with private permissions and rotated before
//!   they expire; the same for FALCON (a FALCON CA and leaves, [`CertStore::falcon_material`]
//!   with a trust store mixing both CAs). [`ephemeral_material`] does the same in memory for
//!   tests and benchmarks.
//! * [`RotatingIdentity`] / [`IdentityResolver`]: rotation without restarting: set
//!   `TlsMaterial::identity_source` ([`CertStore::rotating_material`]) and every new
//!   handshake gets the store's current leaf; established connections keep theirs.
//!
//! * [`falcon`]: FALCON post-quantum identity: keys and their encodings, FALCON-signed
//!   X.509 certificates, and the rustls pieces that carry them in a TLS 1.3 handshake.
//!
//! Every fallible function returns [`CryptoError`], which converts into
//! [`stoq_core::Error::Tls`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod error;
pub mod falcon;
mod pem;
mod rotation;
mod store;
mod x509;

pub use config::{classical_client_config, client_config, provider, server_config};
pub use error::CryptoError;
pub use pem::{load_identity, load_roots};
pub use rotation::{IdentityResolver, LeafKind, RotatingIdentity};
pub use store::{
    ephemeral_material, CertStore, LocalCa, CA_COMMON_NAME, CA_VALIDITY, FALCON_CA_COMMON_NAME,
    LEAF_RENEW_BEFORE, LEAF_VALIDITY,
};

/// The rustls version this crate builds configurations for, re-exported so backends use
/// the same one.
pub use rustls;
