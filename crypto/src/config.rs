//! The crypto provider and rustls configurations built from [`TlsMaterial`].

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{cipher_suite, kx_group};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;
use stoq_core::{Identity, TlsMaterial};

use crate::CryptoError;

/// The TLS versions STOQ speaks: QUIC (RFC 9001) is TLS 1.3 only.
static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// STOQ's rustls crypto provider: aws-lc-rs with a fixed, explicit preference order.
///
/// * Key exchange groups: `X25519MLKEM768` (hybrid post-quantum) first, then `X25519`,
///   `secp256r1`, `secp384r1`. A peer without ML-KEM still connects, classically.
/// * Cipher suites: TLS 1.3 only, `TLS13_AES_128_GCM_SHA256` first (so every backend
///   negotiates the same cipher in benchmarks), then `TLS13_AES_256_GCM_SHA384`, then
///   `TLS13_CHACHA20_POLY1305_SHA256`.
/// * Signature verification algorithms and key loading: aws-lc-rs's defaults.
///
/// The provider is built once and shared; every call returns the same `Arc`.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    cipher_suite::TLS13_AES_128_GCM_SHA256,
                    cipher_suite::TLS13_AES_256_GCM_SHA384,
                    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                ],
                kx_groups: vec![
                    kx_group::X25519MLKEM768,
                    kx_group::X25519,
                    kx_group::SECP256R1,
                    kx_group::SECP384R1,
                ],
                ..rustls::crypto::aws_lc_rs::default_provider()
            })
        })
        .clone()
}

/// Builds a rustls server configuration from `material`.
///
/// * TLS 1.3 only, with [`crate::falcon::falcon_provider()`]: [`provider()`]'s key
///   exchange and ciphers, and FALCON as well as every classical signature scheme. The
///   server chooses the cipher suite by its own order (`ignore_client_order`), so
///   AES-128-GCM wins whenever the client offers it.
/// * A FALCON identity ([`crate::falcon::is_falcon_key`]) is presented as
///   [`crate::falcon::falcon_server_config`] does: the leaf alone, so the first flight fits
///   QUIC's anti-amplification budget. A classical identity sends its whole chain.
/// * `material.identity` is required ([`CryptoError::NoIdentity`] otherwise); its key must
///   match the leaf certificate ([`CryptoError::KeyMismatch`] otherwise).
/// * ALPN protocols are `alpn`, in that order of preference.
/// * If `material.require_client_auth`, clients must present a certificate that chains to
///   one of `material.roots` ([`CryptoError::NoRoots`] if there are none); otherwise no
///   client certificate is requested.
/// * 0-RTT stays disabled (`max_early_data_size` is 0).
/// * With `material.identity_source` (rotation, e.g. [`crate::RotatingIdentity`]) the
///   identity is asked from it at the start of every handshake instead
///   ([`crate::IdentityResolver`]); `material.identity` is then not used, and the source's
///   first identity must load (checked here).
pub fn server_config(material: &TlsMaterial, alpn: &[String]) -> Result<ServerConfig, CryptoError> {
    if material.identity_source.is_some() {
        return server_config_with(crate::falcon::falcon_provider(), material, alpn);
    }
    let identity = material.identity.as_ref().ok_or(CryptoError::NoIdentity)?;
    if crate::falcon::is_falcon_key(&identity.key) {
        return crate::falcon::falcon_server_config(material, alpn);
    }
    server_config_with(crate::falcon::falcon_provider(), material, alpn)
}

/// [`server_config`] with another crypto provider (the FALCON one, see
/// [`crate::falcon::falcon_server_config`]).
pub(crate) fn server_config_with(
    provider: Arc<CryptoProvider>,
    material: &TlsMaterial,
    alpn: &[String],
) -> Result<ServerConfig, CryptoError> {
    let resolver: Arc<dyn rustls::server::ResolvesServerCert> = match &material.identity_source {
        Some(source) => Arc::new(crate::rotation::IdentityResolver::new(
            provider.clone(),
            source.clone(),
        )?),
        None => {
            let identity = material.identity.as_ref().ok_or(CryptoError::NoIdentity)?;
            let certified = certified_key_with(
                &provider,
                identity,
                "the identity's leaf certificate",
                "the identity's private key",
            )?;
            Arc::new(SingleCertAndKey::from(certified))
        }
    };
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(TLS13_ONLY)?;
    let builder = if material.require_client_auth {
        let roots = root_store(&material.roots)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| match e {
                rustls::server::VerifierBuilderError::NoRootAnchors => CryptoError::NoRoots,
                other => CryptoError::Rustls(rustls::Error::General(format!(
                    "building the client certificate verifier: {other}"
                ))),
            })?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = alpn_bytes(alpn);
    config.ignore_client_order = true;
    config.max_early_data_size = 0;
    Ok(config)
}

/// Builds a rustls client configuration from `material`.
///
/// * TLS 1.3 only, with [`crate::falcon::falcon_provider()`]: it offers the FALCON
///   signature schemes after the classical ones, so servers with FALCON or classical
///   certificates are verified alike ([`classical_client_config`] offers no FALCON).
/// * The server's certificate must chain to one of `material.roots`
///   ([`CryptoError::NoRoots`] if there are none, [`CryptoError::BadRoot`] if one is not a
///   usable CA certificate).
/// * ALPN protocols are `alpn`, in that order of preference.
/// * If `material.identity` is present it is offered as the client certificate (mutual
///   authentication; its key must match its leaf), otherwise none is sent. With
///   `material.identity_source`, the certificate is asked from it at every handshake.
/// * Early data stays disabled.
pub fn client_config(material: &TlsMaterial, alpn: &[String]) -> Result<ClientConfig, CryptoError> {
    client_config_with(crate::falcon::falcon_provider(), material, alpn)
}

/// [`client_config`] with [`provider()`] alone: it offers no FALCON signature scheme, so a
/// server that can authenticate only with FALCON refuses it
/// (`PeerIncompatible::NoSignatureSchemesInCommon`).
pub fn classical_client_config(
    material: &TlsMaterial,
    alpn: &[String],
) -> Result<ClientConfig, CryptoError> {
    client_config_with(provider(), material, alpn)
}

/// [`client_config`] with another crypto provider (the FALCON one, see
/// [`crate::falcon::falcon_client_config`]).
pub(crate) fn client_config_with(
    provider: Arc<CryptoProvider>,
    material: &TlsMaterial,
    alpn: &[String],
) -> Result<ClientConfig, CryptoError> {
    if material.roots.is_empty() {
        return Err(CryptoError::NoRoots);
    }
    let roots = root_store(&material.roots)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(TLS13_ONLY)?
        .with_root_certificates(roots);
    let mut config = match (&material.identity_source, &material.identity) {
        (Some(source), _) => builder.with_client_cert_resolver(Arc::new(
            crate::rotation::IdentityResolver::new(provider.clone(), source.clone())?,
        )),
        (None, Some(identity)) => {
            // Check first: a mismatch gets a clear KeyMismatch rather than a rustls error.
            certified_key_with(
                &provider,
                identity,
                "the identity's leaf certificate",
                "the identity's private key",
            )?;
            builder.with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())?
        }
        (None, None) => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn_bytes(alpn);
    config.enable_early_data = false;
    Ok(config)
}

fn alpn_bytes(alpn: &[String]) -> Vec<Vec<u8>> {
    alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// Every root in order; the first one rustls refuses is reported by index.
pub(crate) fn root_store(roots: &[CertificateDer<'static>]) -> Result<RootCertStore, CryptoError> {
    if roots.is_empty() {
        return Err(CryptoError::NoRoots);
    }
    let mut store = RootCertStore::empty();
    for (index, root) in roots.iter().enumerate() {
        store
            .add(root.clone())
            .map_err(|source| CryptoError::BadRoot { index, source })?;
    }
    Ok(store)
}

/// Loads the identity's key with `provider`'s key provider and checks it matches the leaf;
/// a mismatch is [`CryptoError::KeyMismatch`] naming `cert_origin` and `key_origin`.
pub(crate) fn certified_key_with(
    provider: &CryptoProvider,
    identity: &Identity,
    cert_origin: &str,
    key_origin: &str,
) -> Result<CertifiedKey, CryptoError> {
    if identity.cert_chain.is_empty() {
        return Err(CryptoError::NoIdentity);
    }
    let signing_key = provider
        .key_provider
        .load_private_key(identity.key.clone_key())?;
    let certified = CertifiedKey::new(identity.cert_chain.clone(), signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CryptoError::KeyMismatch {
                cert: cert_origin.to_string(),
                key: key_origin.to_string(),
            })
        }
        // The key type cannot report its public key: nothing to compare, accept it.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(other) => Err(other.into()),
    }
}
