//! FALCON in rustls: signature verification algorithms for the FALCON TLS 1.3 schemes, a
//! signing key, a key provider that loads FALCON PKCS#8 keys, and the configurations.

use std::sync::{Arc, OnceLock};

use rustls::crypto::{CryptoProvider, KeyProvider, WebPkiSupportedAlgorithms};
use rustls::sign::{Signer, SigningKey};
use rustls::{ClientConfig, ServerConfig, SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::{
    AlgorithmIdentifier, InvalidSignature, PrivateKeyDer, SignatureVerificationAlgorithm,
    SubjectPublicKeyInfoDer,
};
use stoq_core::{Identity, TlsMaterial};

use super::keys::SigningKeyCache;
use super::{FalconAlgorithm, FalconPublicKey, FalconSecretKey};
use crate::config::{client_config_with, provider, server_config_with};
use crate::CryptoError;

/// Verifies one FALCON algorithm's signatures for rustls-webpki (certificates) and rustls
/// (TLS 1.3 CertificateVerify).
#[derive(Debug)]
struct FalconVerifier(FalconAlgorithm);

impl SignatureVerificationAlgorithm for FalconVerifier {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        FalconPublicKey::from_bytes(self.0, public_key)
            .and_then(|key| key.verify(message, signature))
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        AlgorithmIdentifier::from_slice(self.0.params().oid_der)
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        AlgorithmIdentifier::from_slice(self.0.params().oid_der)
    }
}

static FALCON_PADDED_512: FalconVerifier = FalconVerifier(FalconAlgorithm::FalconPadded512);
static FALCON_PADDED_1024: FalconVerifier = FalconVerifier(FalconAlgorithm::FalconPadded1024);
static FALCON_512: FalconVerifier = FalconVerifier(FalconAlgorithm::Falcon512);
static FALCON_1024: FalconVerifier = FalconVerifier(FalconAlgorithm::Falcon1024);

/// The FALCON verifiers, padded first (what STOQ signs with), then unpadded.
static FALCON_VERIFIERS: [&dyn SignatureVerificationAlgorithm; 4] = [
    &FALCON_PADDED_512,
    &FALCON_PADDED_1024,
    &FALCON_512,
    &FALCON_1024,
];

/// aws-lc-rs's signature verification algorithms (every classical one, unchanged and in
/// the same order) followed by the four FALCON ones, each mapped to its TLS 1.3 code point
/// (`SignatureScheme::Unknown(0xfedc)` and so on, from [`super::FALCON_ALGORITHMS`]). A
/// client with these offers the FALCON schemes after the classical ones, and verifies
/// certificates of either kind.
pub fn falcon_verification_algorithms() -> WebPkiSupportedAlgorithms {
    static ALGS: OnceLock<WebPkiSupportedAlgorithms> = OnceLock::new();
    *ALGS.get_or_init(|| {
        let base = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        let mut all = base.all.to_vec();
        all.extend_from_slice(&FALCON_VERIFIERS);
        let mut mapping = base.mapping.to_vec();
        for (i, verifier) in [
            FalconAlgorithm::FalconPadded512,
            FalconAlgorithm::FalconPadded1024,
            FalconAlgorithm::Falcon512,
            FalconAlgorithm::Falcon1024,
        ]
        .into_iter()
        .enumerate()
        {
            mapping.push((verifier.tls_scheme(), &FALCON_VERIFIERS[i..i + 1]));
        }
        // Built once per process; rustls wants 'static tables.
        WebPkiSupportedAlgorithms {
            all: Box::leak(all.into_boxed_slice()),
            mapping: Box::leak(mapping.into_boxed_slice()),
        }
    })
}

/// A FALCON secret key as a rustls signing key: it signs TLS 1.3 CertificateVerify with
/// its algorithm's scheme, and only when the peer offered that scheme. The expanded
/// signing key is kept between handshakes (clones share it).
#[derive(Debug, Clone)]
pub struct FalconSigningKey {
    key: Arc<FalconSecretKey>,
    cache: Arc<SigningKeyCache>,
    spki: Vec<u8>,
}

impl FalconSigningKey {
    /// Wraps `key`.
    pub fn new(key: FalconSecretKey) -> Self {
        let spki = key.public_key().to_spki_der();
        FalconSigningKey {
            key: Arc::new(key),
            cache: Arc::default(),
            spki,
        }
    }

    /// The TLS 1.3 signature scheme this key signs with.
    pub fn scheme(&self) -> SignatureScheme {
        self.key.algorithm().tls_scheme()
    }
}

impl SigningKey for FalconSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self.scheme();
        offered.contains(&scheme).then(|| {
            Box::new(FalconSigner {
                key: self.key.clone(),
                cache: self.cache.clone(),
                scheme,
            }) as Box<dyn Signer>
        })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        // TLS 1.2 only; FALCON has no TLS 1.2 code point.
        SignatureAlgorithm::Unknown(0)
    }
}

#[derive(Debug)]
struct FalconSigner {
    key: Arc<FalconSecretKey>,
    cache: Arc<SigningKeyCache>,
    scheme: SignatureScheme,
}

impl Signer for FalconSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key
            .sign_cached(&self.cache, message)
            .map_err(|e| rustls::Error::General(format!("FALCON signing failed: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Loads FALCON PKCS#8 keys as [`FalconSigningKey`]s and hands every other key to
/// aws-lc-rs.
#[derive(Debug)]
struct FalconKeyProvider;

static FALCON_KEY_PROVIDER: FalconKeyProvider = FalconKeyProvider;

impl KeyProvider for FalconKeyProvider {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        let fallback = rustls::crypto::aws_lc_rs::default_provider().key_provider;
        if let PrivateKeyDer::Pkcs8(pkcs8) = &key_der {
            match FalconSecretKey::from_pkcs8_der(pkcs8.secret_pkcs8_der()) {
                Ok(key) => return Ok(Arc::new(FalconSigningKey::new(key))),
                // Not a FALCON key (or not one we can parse): aws-lc-rs decides.
                Err(CryptoError::WrongAlgorithm { .. } | CryptoError::MalformedDer { .. }) => {}
                Err(e) => return Err(rustls::Error::General(e.to_string())),
            }
        }
        fallback.load_private_key(key_der)
    }
}

/// STOQ's [`provider()`] with FALCON added: the same key exchange groups
/// (`X25519MLKEM768` first) and cipher suites, [`falcon_verification_algorithms`] (every
/// classical algorithm plus FALCON), and a key provider that loads FALCON PKCS#8 keys as
/// well as every key aws-lc-rs loads. Built once; every call returns the same `Arc`.
pub fn falcon_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                signature_verification_algorithms: falcon_verification_algorithms(),
                key_provider: &FALCON_KEY_PROVIDER,
                ..(*provider()).clone()
            })
        })
        .clone()
}

/// A rustls server configuration presenting a FALCON (or classical) identity, as
/// [`crate::server_config`] builds it (TLS 1.3 only, ALPN, server's cipher order, no
/// 0-RTT, optional client authentication) but with [`falcon_provider()`], and sending
/// **the leaf certificate alone**: anything after it in `material.identity`'s chain is
/// dropped, because trust is anchored at the CA and, under QUIC's anti-amplification limit
/// (three times what the client sent, before address validation), a FALCON leaf fits in the
/// first flight where a chain costs a round trip.
///
/// `material.identity.key` is the leaf's PKCS#8 DER (e.g. [`super::FalconLeaf::identity`]);
/// it must match the leaf ([`CryptoError::KeyMismatch`]). With
/// `material.require_client_auth`, client certificates (FALCON or classical) must chain to
/// `material.roots`.
pub fn falcon_server_config(
    material: &TlsMaterial,
    alpn: &[String],
) -> Result<ServerConfig, CryptoError> {
    let identity = material.identity.as_ref().ok_or(CryptoError::NoIdentity)?;
    let leaf_only = TlsMaterial {
        identity: Some(Identity {
            cert_chain: identity.cert_chain.iter().take(1).cloned().collect(),
            key: identity.key.clone(),
        }),
        roots: material.roots.clone(),
        require_client_auth: material.require_client_auth,
        identity_source: material.identity_source.clone(),
    };
    server_config_with(falcon_provider(), &leaf_only, alpn)
}

/// A rustls client configuration, as [`crate::client_config`] builds it but with
/// [`falcon_provider()`]: it offers the FALCON signature schemes and verifies servers whose
/// certificates chain to any of `material.roots`, which may mix FALCON CAs and classical
/// ones. `material.identity`, if any (FALCON or classical), is the client certificate.
pub fn falcon_client_config(
    material: &TlsMaterial,
    alpn: &[String],
) -> Result<ClientConfig, CryptoError> {
    client_config_with(falcon_provider(), material, alpn)
}
