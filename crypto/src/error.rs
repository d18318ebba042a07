//! The crate's error type.

use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

/// Everything that can go wrong while loading, generating or configuring TLS material.
///
/// Every message says which file (or which piece of material) is at fault and, where it
/// helps, what to do about it. Converts into [`stoq_core::Error::Tls`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A certificate or key file is missing, unreadable or does not hold what it should
    /// (no certificate in it, no private key in it, not PEM, malformed DER).
    #[error("{}: {problem}", path.display())]
    File {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it, e.g. "missing (no such file)" or "no certificate in it".
        problem: String,
    },
    /// The private key does not belong to the leaf certificate (their public keys differ).
    #[error(
        "the private key in {key} does not match the certificate in {cert}: the leaf \
         certificate's public key differs from the key's; use the key the certificate was issued for"
    )]
    KeyMismatch {
        /// Where the certificate came from: its file path, or a description of in-memory material.
        cert: String,
        /// Where the key came from: its file path, or a description of in-memory material.
        key: String,
    },
    /// A certificate is past its `notAfter` date.
    #[error("the certificate in {cert} expired at {}; renew it", fmt_time(*not_after))]
    Expired {
        /// Where the certificate came from (a file path or a description).
        cert: String,
        /// The certificate's `notAfter`.
        not_after: SystemTime,
    },
    /// A certificate's `notBefore` is still in the future.
    #[error("the certificate in {cert} is not valid before {}; check the clock", fmt_time(*not_before))]
    NotYetValid {
        /// Where the certificate came from (a file path or a description).
        cert: String,
        /// The certificate's `notBefore`.
        not_before: SystemTime,
    },
    /// rustls rejected the material or the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// A trust root is not a usable CA certificate.
    #[error("trust root #{index} is not a usable CA certificate: {source}")]
    BadRoot {
        /// The root's position in `TlsMaterial::roots` (or in the file), from 0.
        index: usize,
        /// Why rustls refused it.
        #[source]
        source: rustls::Error,
    },
    /// Generating a key or certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// A name given for a certificate is neither an IP address nor a valid DNS name.
    #[error("invalid certificate name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Reading or writing a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// A client configuration needs at least one root of trust.
    #[error(
        "no trust roots: a client (or a server requiring client certificates) needs at least one \
         CA certificate in TlsMaterial::roots, e.g. the local CA's ca.pem"
    )]
    NoRoots,
    /// A server configuration needs an identity (certificate chain and key).
    #[error(
        "no identity: a server needs a certificate chain and its private key in \
         TlsMaterial::identity (a non-empty chain, leaf first)"
    )]
    NoIdentity,
    /// A key, certificate or signature names an algorithm this crate does not handle here
    /// (an OID that is not one of [`crate::falcon::FalconAlgorithm`]'s, or the wrong one).
    #[error("{what}: unexpected algorithm {found} (expected {expected})")]
    WrongAlgorithm {
        /// What was being read, e.g. "SubjectPublicKeyInfo".
        what: &'static str,
        /// The OID (dotted) or name found.
        found: String,
        /// What was acceptable, e.g. "a FALCON OID" or "falconpadded512".
        expected: String,
    },
    /// A raw key or signature has the wrong length for its algorithm.
    #[error("{what}: {found} bytes, expected {expected}")]
    WrongLength {
        /// What was being read, e.g. "falconpadded512 public key".
        what: String,
        /// The length that would be accepted (for variable-length values, the maximum).
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// Key material has the right length and algorithm but is not a valid key (bad header
    /// byte, out-of-range coefficients, or a public key that does not match its secret key).
    #[error("{what}: invalid key: {reason}")]
    InvalidKey {
        /// What was being read.
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// A signature did not verify: the data, the signature or the key is not what was signed.
    #[error("{what}: the signature does not verify")]
    BadSignature {
        /// What was being verified, e.g. "certificate signature".
        what: String,
    },
    /// DER (or PEM around it) that does not parse as the structure it should be.
    #[error("{what}: malformed: {detail}")]
    MalformedDer {
        /// What was being parsed, e.g. "PKCS#8 PrivateKeyInfo".
        what: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// Bytes that should be a post-handshake FALCON authentication message
    /// ([`crate::falcon::post_handshake::AuthMessage`]) are not one: wrong magic, unknown
    /// version, truncated, inconsistent lengths or trailing bytes.
    #[error("FALCON authentication message: malformed: {detail}")]
    MalformedAuthMessage {
        /// What is wrong with it.
        detail: String,
    },
    /// A post-handshake FALCON authentication message is larger than the limit
    /// ([`crate::falcon::post_handshake::MAX_AUTH_MESSAGE`]); it is refused before it is read.
    #[error("FALCON authentication message: {size} bytes exceeds the limit of {max}")]
    AuthMessageTooLarge {
        /// The size announced or found.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// No directory for the certificate store could be determined.
    #[error("no directory for STOQ's certificates: set STOQ_HOME to a writable directory")]
    NoStoreDir,
}

impl From<CryptoError> for stoq_core::Error {
    /// Maps to [`stoq_core::Error::Tls`] carrying the full message.
    fn from(e: CryptoError) -> Self {
        stoq_core::Error::Tls(e.to_string())
    }
}

/// Formats a time as RFC 3339 UTC (`2026-11-22T09:23:00Z`), falling back to seconds since
/// the Unix epoch for times X.509 cannot express.
pub(crate) fn fmt_time(t: SystemTime) -> String {
    match x509_cert::der::DateTime::from_system_time(t) {
        Ok(dt) => dt.to_string(),
        Err(_) => match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => format!("{} s after the Unix epoch", d.as_secs()),
            Err(_) => "before the Unix epoch".to_string(),
        },
    }
}
