//! Loading certificates and keys from PEM files.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use stoq_core::Identity;

use crate::config::certified_key_with;
use crate::{x509, CryptoError};

/// Loads an identity: the certificate chain in `cert_path` (leaf first, then any
/// intermediates, PEM) and the first private key in `key_path` (PEM: PKCS#8
/// `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`). FALCON identities
/// (a FALCON leaf and its PKCS#8 key, as [`crate::falcon`] writes them) load too; use them
/// with [`crate::falcon::falcon_server_config`] / [`crate::falcon::falcon_client_config`].
///
/// Checks that every certificate is well-formed DER, that the leaf has not expired
/// ([`CryptoError::Expired`]), that the key is usable and that it matches the leaf
/// ([`CryptoError::KeyMismatch`]). Every error names the file at fault and the problem
/// ([`CryptoError::File`]: missing, unreadable, not PEM, no certificate or key in it,
/// malformed DER).
pub fn load_identity(cert_path: &Path, key_path: &Path) -> Result<Identity, CryptoError> {
    let cert_chain = read_certs(cert_path)?;
    let not_after = x509::not_after(&cert_chain[0]).map_err(|e| file_err(cert_path, e))?;
    if not_after < SystemTime::now() {
        return Err(CryptoError::Expired {
            cert: cert_path.display().to_string(),
            not_after,
        });
    }
    let key = read_key(key_path)?;
    let identity = Identity {
        cert_chain,
        key: Arc::new(key),
    };
    // The FALCON provider loads every key aws-lc-rs loads, and FALCON keys.
    certified_key_with(
        &crate::falcon::falcon_provider(),
        &identity,
        &cert_path.display().to_string(),
        &key_path.display().to_string(),
    )
    .map_err(|e| match e {
        CryptoError::Rustls(err) => file_err(
            key_path,
            format!(
                "the private key is malformed or of an unsupported type (ECDSA P-256/P-384, \
                 Ed25519, RSA and FALCON are supported): {err}"
            ),
        ),
        other => other,
    })?;
    Ok(identity)
}

/// Loads every certificate in the PEM file at `path`, e.g. to use as trust roots.
///
/// Fails with [`CryptoError::File`] naming the file if it is missing, unreadable, not PEM,
/// holds no certificate, or holds a certificate that is not well-formed DER.
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, CryptoError> {
    read_certs(path)
}

/// Every certificate in a PEM file, each checked to be well-formed X.509 DER; at least one.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CryptoError> {
    let bytes = read_file(path)?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert = item.map_err(|e| file_err(path, pem_problem(e)))?;
        if let Err(e) = x509::parse(&cert) {
            return Err(file_err(
                path,
                format!("certificate #{} is malformed DER: {e}", certs.len() + 1),
            ));
        }
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(file_err(
            path,
            missing_item_problem(&bytes, Wanted::Certificate),
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CryptoError> {
    let bytes = read_file(path)?;
    match PrivateKeyDer::pem_slice_iter(&bytes).next() {
        Some(Ok(key)) => Ok(key),
        Some(Err(e)) => Err(file_err(path, pem_problem(e))),
        None => Err(file_err(
            path,
            missing_item_problem(&bytes, Wanted::PrivateKey),
        )),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CryptoError> {
    std::fs::read(path).map_err(|e| {
        let problem = match e.kind() {
            io::ErrorKind::NotFound => "missing (no such file)".to_string(),
            io::ErrorKind::PermissionDenied => "unreadable: permission denied".to_string(),
            io::ErrorKind::IsADirectory => "is a directory, not a PEM file".to_string(),
            _ => format!("unreadable: {e}"),
        };
        file_err(path, problem)
    })
}

pub(crate) fn file_err(path: &Path, problem: impl Into<String>) -> CryptoError {
    CryptoError::File {
        path: PathBuf::from(path),
        problem: problem.into(),
    }
}

fn pem_problem(e: pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "not valid PEM: a block has no end line (expected {:?})",
            String::from_utf8_lossy(&end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "not valid PEM: malformed BEGIN line {:?}",
            String::from_utf8_lossy(&line)
        ),
        pem::Error::Base64Decode(detail) => {
            format!("not valid PEM: a block's body is not valid base64 ({detail})")
        }
        other => format!("not valid PEM: {other}"),
    }
}

#[derive(Clone, Copy)]
enum Wanted {
    Certificate,
    PrivateKey,
}

/// Explains why a file holds no item of the wanted kind.
fn missing_item_problem(bytes: &[u8], wanted: Wanted) -> String {
    let (what, expected) = match wanted {
        Wanted::Certificate => ("certificate", "a `-----BEGIN CERTIFICATE-----` block"),
        Wanted::PrivateKey => (
            "private key",
            "a `-----BEGIN PRIVATE KEY-----`, `EC PRIVATE KEY` or `RSA PRIVATE KEY` block",
        ),
    };
    let found: Vec<&str> = <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .map(|(kind, _)| section_label(kind))
        .collect();
    if !found.is_empty() {
        return format!(
            "no {what} in it (it holds: {}); expected {expected}",
            found.join(", ")
        );
    }
    if contains(bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return format!(
            "no usable {what} in it: the private key is encrypted; STOQ needs an unencrypted \
             key (e.g. `openssl pkey -in KEY -out KEY.plain`)"
        );
    }
    if contains(bytes, b"-----BEGIN ") {
        return format!("no {what} in it (only PEM blocks of other types); expected {expected}");
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return format!("empty: no {what} in it; expected {expected}");
    }
    if bytes.first() == Some(&0x30) {
        return format!(
            "not PEM: it looks like binary DER; convert it to PEM (e.g. `openssl {} -inform der \
             -in FILE -out FILE.pem`)",
            match wanted {
                Wanted::Certificate => "x509",
                Wanted::PrivateKey => "pkey",
            }
        );
    }
    format!("not PEM: no {what} found; expected {expected}")
}

fn section_label(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "CERTIFICATE",
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => "PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        SectionKind::EchConfigList => "ECHCONFIG",
        _ => "another PEM type",
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
