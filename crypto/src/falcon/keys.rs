//! FALCON key pairs: generation, signing, verification and their SPKI / PKCS#8 encodings.

use std::fmt;
use std::io::Write;
use std::path::Path;

use fn_dsa::{
    KeyPairGenerator, KeyPairGeneratorStandard, SigningKey, SigningKeyStandard, VerifyingKey,
    VerifyingKeyStandard, DOMAIN_NONE, HASH_ID_ORIGINAL_FALCON,
};
use pkcs8::PrivateKeyInfo;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_cert::der::asn1::{BitString, OctetStringRef};
use x509_cert::der::pem::LineEnding;
use x509_cert::der::{Decode, Encode};
use x509_cert::spki::{
    AlgorithmIdentifierOwned, AlgorithmIdentifierRef, SubjectPublicKeyInfoOwned,
    SubjectPublicKeyInfoRef,
};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::codec;
use super::{FalconAlgorithm, FalconLevel};
use crate::CryptoError;

/// PEM label of a `SubjectPublicKeyInfo`.
const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";
/// PEM label of an unencrypted PKCS#8 `PrivateKeyInfo`.
const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";

/// A FALCON public (verifying) key: its algorithm and the raw key bytes, already checked
/// to be a well-formed key of that algorithm's level.
#[derive(Clone, PartialEq, Eq)]
pub struct FalconPublicKey {
    algorithm: FalconAlgorithm,
    bytes: Vec<u8>,
}

impl fmt::Debug for FalconPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FalconPublicKey")
            .field("algorithm", &self.algorithm)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl FalconPublicKey {
    /// Takes a raw public key (897 or 1,793 bytes, as PQClean and liboqs store it) for
    /// `algorithm`. Fails with [`CryptoError::WrongLength`] for another length and
    /// [`CryptoError::InvalidKey`] if it does not decode as a key of that level.
    pub fn from_bytes(algorithm: FalconAlgorithm, bytes: &[u8]) -> Result<Self, CryptoError> {
        let p = algorithm.params();
        if bytes.len() != p.public_key_len {
            return Err(CryptoError::WrongLength {
                what: format!("{} public key", p.name),
                expected: p.public_key_len,
                found: bytes.len(),
            });
        }
        // The header byte is logn; the length check above already ties it to the level.
        if u32::from(bytes[0]) != p.level.logn() || VerifyingKeyStandard::decode(bytes).is_none() {
            return Err(CryptoError::InvalidKey {
                what: format!("{} public key", p.name),
                reason: "not a valid encoding (header byte or coefficient out of range)".into(),
            });
        }
        Ok(Self {
            algorithm,
            bytes: bytes.to_vec(),
        })
    }

    /// The algorithm this key is for (its SPKI OID).
    pub fn algorithm(&self) -> FalconAlgorithm {
        self.algorithm
    }

    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Verifies `signature` over `message` (original Falcon: SHAKE256 of nonce and message),
    /// in this key's algorithm's encoding. `Ok(())` only for a valid signature; otherwise
    /// [`CryptoError::BadSignature`] (or [`CryptoError::WrongLength`] for a length no
    /// signature of the algorithm can have).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        self.verify_as(self.algorithm, message, signature)
    }

    /// Like [`verify`](Self::verify), with the signature in `algorithm`'s encoding (padded
    /// or not), which must be of this key's level ([`CryptoError::WrongAlgorithm`]
    /// otherwise). Certificates name their signature algorithm apart from their key's.
    pub fn verify_as(
        &self,
        algorithm: FalconAlgorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        if algorithm.level() != self.algorithm.level() {
            return Err(CryptoError::WrongAlgorithm {
                what: "FALCON signature",
                found: algorithm.name().to_string(),
                expected: format!("an algorithm of the key's level ({})", self.algorithm),
            });
        }
        let padded = codec::to_padded(algorithm, signature)?;
        let bad = || CryptoError::BadSignature {
            what: format!("{algorithm} signature"),
        };
        let vk = VerifyingKeyStandard::decode(&self.bytes).ok_or_else(bad)?;
        if vk.verify(&padded, &DOMAIN_NONE, &HASH_ID_ORIGINAL_FALCON, message) {
            Ok(())
        } else {
            Err(bad())
        }
    }

    /// The DER `SubjectPublicKeyInfo`: the algorithm's OID with parameters absent, the raw
    /// key as the bit string (Open Quantum Safe's encoding).
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.spki()
            .to_der()
            .expect("a FALCON SubjectPublicKeyInfo always encodes")
    }

    /// [`to_spki_der`](Self::to_spki_der) as PEM (`PUBLIC KEY`).
    pub fn to_spki_pem(&self) -> String {
        x509_cert::der::pem::encode_string(PUBLIC_KEY_LABEL, LineEnding::LF, &self.to_spki_der())
            .expect("PEM encoding of DER cannot fail")
    }

    /// Reads a DER `SubjectPublicKeyInfo`. Errors: [`CryptoError::MalformedDer`] if it is
    /// not one (or has parameters), [`CryptoError::WrongAlgorithm`] for a non-FALCON OID,
    /// then as [`from_bytes`](Self::from_bytes).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        let spki =
            SubjectPublicKeyInfoRef::from_der(der).map_err(|e| CryptoError::MalformedDer {
                what: "SubjectPublicKeyInfo",
                detail: e.to_string(),
            })?;
        Self::from_spki(&spki)
    }

    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfoRef<'_>) -> Result<Self, CryptoError> {
        let algorithm = algorithm_of("SubjectPublicKeyInfo", &spki.algorithm)?;
        let bytes =
            spki.subject_public_key
                .as_bytes()
                .ok_or_else(|| CryptoError::MalformedDer {
                    what: "SubjectPublicKeyInfo",
                    detail: "the public key bit string is not a whole number of bytes".into(),
                })?;
        Self::from_bytes(algorithm, bytes)
    }

    /// Reads a PEM `PUBLIC KEY` (see [`from_spki_der`](Self::from_spki_der)).
    pub fn from_spki_pem(pem: &str) -> Result<Self, CryptoError> {
        let der = decode_pem(pem, PUBLIC_KEY_LABEL, "SubjectPublicKeyInfo PEM")?;
        Self::from_spki_der(&der)
    }

    pub(crate) fn spki(&self) -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned {
            algorithm: algorithm_identifier(self.algorithm),
            subject_public_key: BitString::from_bytes(&self.bytes)
                .expect("a byte string is a valid bit string"),
        }
    }
}

/// An expanded signing key kept between signatures (zeroised by fn-dsa when dropped).
#[derive(Default)]
pub(crate) struct SigningKeyCache(std::sync::Mutex<Option<Box<SigningKeyStandard>>>);

impl fmt::Debug for SigningKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKeyCache")
    }
}

/// A FALCON secret (signing) key with its public key. The secret bytes are overwritten
/// with zeros when the value is dropped (clones too, each its own copy); `Debug` never
/// prints them.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct FalconSecretKey {
    #[zeroize(skip)]
    algorithm: FalconAlgorithm,
    secret: Vec<u8>,
    #[zeroize(skip)]
    public: FalconPublicKey,
}

impl fmt::Debug for FalconSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FalconSecretKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl FalconSecretKey {
    /// A new key pair of `level` from the operating system's RNG, for the level's padded
    /// algorithm (`falconpadded512` or `falconpadded1024`, see the module docs).
    pub fn generate(level: FalconLevel) -> Self {
        Self::generate_for(level.default_algorithm())
    }

    /// A new key pair for `algorithm` from the operating system's RNG. Key generation takes
    /// 5 to 10 ms at 512 and 15 to 35 ms at 1024 on the project's machine
    /// (`examples/falcon_timing.rs`); signing about 0.3 ms and 0.7 ms, verifying 20 to 35 µs.
    /// Panics only if the operating system's RNG fails (as `rand_core::OsRng` does); so does
    /// [`sign`](Self::sign), which draws its nonce and sampler seed from it.
    pub fn generate_for(algorithm: FalconAlgorithm) -> Self {
        let p = algorithm.params();
        let mut secret = vec![0u8; p.secret_key_len];
        let mut public = vec![0u8; p.public_key_len];
        let mut kg = Box::<KeyPairGeneratorStandard>::default();
        kg.keygen(
            p.level.logn(),
            &mut rand_core::OsRng,
            &mut secret,
            &mut public,
        );
        Self {
            algorithm,
            secret,
            public: FalconPublicKey {
                algorithm,
                bytes: public,
            },
        }
    }

    /// Takes a raw secret key (1,281 or 2,305 bytes, PQClean's and liboqs's format) for
    /// `algorithm` and derives its public key. Fails with [`CryptoError::WrongLength`] or
    /// [`CryptoError::InvalidKey`].
    pub fn from_bytes(algorithm: FalconAlgorithm, secret: &[u8]) -> Result<Self, CryptoError> {
        let p = algorithm.params();
        if secret.len() != p.secret_key_len {
            return Err(CryptoError::WrongLength {
                what: format!("{} secret key", p.name),
                expected: p.secret_key_len,
                found: secret.len(),
            });
        }
        let invalid = || CryptoError::InvalidKey {
            what: format!("{} secret key", p.name),
            reason: "not a valid encoding (header byte or coefficients out of range)".into(),
        };
        let sk = Box::new(SigningKeyStandard::decode(secret).ok_or_else(invalid)?);
        if sk.get_logn() != p.level.logn() {
            return Err(invalid());
        }
        let mut public = vec![0u8; p.public_key_len];
        sk.to_verifying_key(&mut public);
        Ok(Self {
            algorithm,
            secret: secret.to_vec(),
            public: FalconPublicKey {
                algorithm,
                bytes: public,
            },
        })
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> FalconAlgorithm {
        self.algorithm
    }

    /// The matching public key.
    pub fn public_key(&self) -> &FalconPublicKey {
        &self.public
    }

    /// The raw secret key bytes (handle with care: copies are not zeroised for you).
    pub fn secret_bytes(&self) -> &[u8] {
        &self.secret
    }

    /// Signs `message` (original Falcon, fresh random nonce from the OS RNG), in this key's
    /// algorithm's encoding: 666 / 1,280 bytes for the padded algorithms.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut sk = self.signing_key()?;
        self.sign_with(&mut sk, message)
    }

    /// Like [`sign`](Self::sign), reusing the expanded signing key kept in `cache` (decoding
    /// it costs about a third of a signature). If another thread holds the cache, this
    /// signs with a freshly decoded key instead of waiting.
    pub(crate) fn sign_cached(
        &self,
        cache: &SigningKeyCache,
        message: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        match cache.0.try_lock() {
            Ok(mut slot) => {
                if slot.is_none() {
                    *slot = Some(self.signing_key()?);
                }
                match slot.as_mut() {
                    Some(sk) => self.sign_with(sk, message),
                    None => self.sign(message),
                }
            }
            Err(_) => self.sign(message),
        }
    }

    /// The expanded fn-dsa signing key (on the heap: it is about 110 KiB).
    fn signing_key(&self) -> Result<Box<SigningKeyStandard>, CryptoError> {
        SigningKeyStandard::decode(&self.secret)
            .map(Box::new)
            .ok_or_else(|| CryptoError::InvalidKey {
                what: format!("{} secret key", self.algorithm.name()),
                reason: "does not decode".into(),
            })
    }

    fn sign_with(
        &self,
        sk: &mut SigningKeyStandard,
        message: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let logn = self.algorithm.level().logn();
        let mut sig = vec![0u8; fn_dsa::signature_size(logn)];
        sk.sign(
            &mut rand_core::OsRng,
            &DOMAIN_NONE,
            &HASH_ID_ORIGINAL_FALCON,
            message,
            &mut sig,
        );
        codec::from_padded(self.algorithm, sig)
    }

    /// The PKCS#8 `PrivateKeyInfo` (v1) DER in Open Quantum Safe's layout: the algorithm's
    /// OID with parameters absent, `privateKey` holding a DER OCTET STRING of the secret key
    /// followed by the public key.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let len = self.secret.len() + self.public.bytes.len();
        let mut inner = Zeroizing::new(Vec::with_capacity(len + 4));
        // Both sizes (2,178 and 4,098 bytes) take a two-byte long-form length.
        inner.extend_from_slice(&[0x04, 0x82, (len >> 8) as u8, len as u8]);
        inner.extend_from_slice(&self.secret);
        inner.extend_from_slice(&self.public.bytes);
        let oid = self.algorithm.oid();
        let info = PrivateKeyInfo {
            algorithm: AlgorithmIdentifierRef {
                oid,
                parameters: None,
            },
            private_key: &inner,
            public_key: None,
        };
        let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
        info.encode_to_vec(&mut out)
            .expect("a FALCON PrivateKeyInfo always encodes");
        out
    }

    /// [`to_pkcs8_der`](Self::to_pkcs8_der) as PEM (`PRIVATE KEY`).
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(
            x509_cert::der::pem::encode_string(
                PRIVATE_KEY_LABEL,
                LineEnding::LF,
                &self.to_pkcs8_der(),
            )
            .expect("PEM encoding of DER cannot fail"),
        )
    }

    /// The PKCS#8 DER as rustls and [`stoq_core::Identity`] carry a private key. That copy
    /// is not zeroised on drop (rustls-pki-types does not do it): keep it only as long as
    /// the identity lives.
    pub fn to_private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.to_pkcs8_der().to_vec()))
    }

    /// Reads a PKCS#8 `PrivateKeyInfo` DER. Accepts Open Quantum Safe's layout (an inner
    /// OCTET STRING of secret key then public key), the same without the inner OCTET
    /// STRING, and a secret key alone; an included public key must match the secret key.
    /// Errors: [`CryptoError::MalformedDer`], [`CryptoError::WrongAlgorithm`] (not a FALCON
    /// OID), [`CryptoError::WrongLength`], [`CryptoError::InvalidKey`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let malformed = |detail: String| CryptoError::MalformedDer {
            what: "PKCS#8 PrivateKeyInfo",
            detail,
        };
        let info = PrivateKeyInfo::from_der(der).map_err(|e| malformed(e.to_string()))?;
        let algorithm = algorithm_of("PKCS#8 PrivateKeyInfo", &info.algorithm)?;
        let p = algorithm.params();
        let content = match info.private_key.first() {
            Some(0x04) => OctetStringRef::from_der(info.private_key)
                .map_err(|e| malformed(format!("privateKey: {e}")))?
                .as_bytes(),
            _ => info.private_key,
        };
        let (secret, public) = if content.len() == p.secret_key_len + p.public_key_len {
            let (s, pk) = content.split_at(p.secret_key_len);
            (s, Some(pk))
        } else if content.len() == p.secret_key_len {
            (content, None)
        } else {
            return Err(CryptoError::WrongLength {
                what: format!(
                    "{} PKCS#8 private key (secret key, then public key)",
                    p.name
                ),
                expected: p.secret_key_len + p.public_key_len,
                found: content.len(),
            });
        };
        let key = Self::from_bytes(algorithm, secret)?;
        for pk in public.into_iter().chain(info.public_key) {
            if pk != key.public.bytes.as_slice() {
                return Err(CryptoError::InvalidKey {
                    what: format!("{} PKCS#8 private key", p.name),
                    reason: "the public key it holds does not match its secret key".into(),
                });
            }
        }
        Ok(key)
    }

    /// Reads a PEM `PRIVATE KEY` (see [`from_pkcs8_der`](Self::from_pkcs8_der)).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, CryptoError> {
        let der = decode_pem(pem, PRIVATE_KEY_LABEL, "PKCS#8 PEM")?;
        Self::from_pkcs8_der(&der)
    }

    /// Writes the PKCS#8 PEM to `path`, readable and writable by the owner only (mode 0600
    /// on Unix). The file is created with that mode (a temporary file in the same
    /// directory, renamed over `path`), so the key is never readable by others, not even
    /// briefly, and an existing file at `path` is replaced whatever its mode was.
    pub fn write_pkcs8_pem(&self, path: &Path) -> Result<(), CryptoError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CryptoError::Io { path, source }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".tmp-key-");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o600));
        }
        let mut tmp = builder.tempfile_in(dir).map_err(io_err(dir))?;
        tmp.write_all(self.to_pkcs8_pem().as_bytes())
            .map_err(io_err(path))?;
        tmp.as_file().sync_all().map_err(io_err(path))?;
        tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
        Ok(())
    }

    /// Reads a PKCS#8 PEM file written by [`write_pkcs8_pem`](Self::write_pkcs8_pem) (or
    /// by oqs-provider). Errors name the file: [`CryptoError::Io`] if it cannot be read,
    /// [`CryptoError::File`] if it does not hold a FALCON key.
    pub fn read_pkcs8_pem(path: &Path) -> Result<Self, CryptoError> {
        let pem =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| CryptoError::Io {
                    path: path.to_path_buf(),
                    source,
                })?,
            );
        Self::from_pkcs8_pem(&pem).map_err(|e| CryptoError::File {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })
    }
}

/// The `AlgorithmIdentifier` of `algorithm`: its OID, parameters absent.
pub(crate) fn algorithm_identifier(algorithm: FalconAlgorithm) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: algorithm.oid(),
        parameters: None,
    }
}

/// The FALCON algorithm an `AlgorithmIdentifier` names; parameters must be absent.
pub(crate) fn algorithm_of<P>(
    what: &'static str,
    id: &x509_cert::spki::AlgorithmIdentifier<P>,
) -> Result<FalconAlgorithm, CryptoError> {
    let algorithm =
        FalconAlgorithm::from_oid(&id.oid).ok_or_else(|| CryptoError::WrongAlgorithm {
            what,
            found: id.oid.to_string(),
            expected: "a FALCON OID (1.3.9999.3.11, .14, .16 or .19)".into(),
        })?;
    if id.parameters.is_some() {
        return Err(CryptoError::MalformedDer {
            what,
            detail: format!("{algorithm}: the algorithm parameters must be absent"),
        });
    }
    Ok(algorithm)
}

/// The DER inside a PEM block labelled `label` (zeroised when dropped: it may be a key).
fn decode_pem(
    pem: &str,
    label: &str,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let (found, der) = x509_cert::der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| {
        CryptoError::MalformedDer {
            what,
            detail: e.to_string(),
        }
    })?;
    let der = Zeroizing::new(der);
    if found != label {
        return Err(CryptoError::MalformedDer {
            what,
            detail: format!("PEM label is {found:?}, expected {label:?}"),
        });
    }
    Ok(der)
}

/// Whether `key` (the DER of an identity's private key) is a FALCON key: a PKCS#8
/// PrivateKeyInfo whose algorithm is one of [`super::FALCON_ALGORITHMS`]. Reads only the
/// algorithm identifier; the key itself is not checked (loading it does that).
pub fn is_falcon_key(key: &PrivateKeyDer<'_>) -> bool {
    let PrivateKeyDer::Pkcs8(der) = key else {
        return false;
    };
    PrivateKeyInfo::from_der(der.secret_pkcs8_der())
        .is_ok_and(|info| FalconAlgorithm::from_oid(&info.algorithm.oid).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_signing_matches_fresh_signing_and_survives_contention() {
        for level in [FalconLevel::L512, FalconLevel::L1024] {
            let key = FalconSecretKey::generate(level);
            let cache = SigningKeyCache::default();
            for i in 0..3u8 {
                let sig = key.sign_cached(&cache, &[i]).unwrap();
                key.public_key().verify(&[i], &sig).unwrap();
            }
            assert!(cache.0.lock().unwrap().is_some());
            // While another user holds the cache, signing still works (fresh key).
            let held = cache.0.lock().unwrap();
            let sig = key.sign_cached(&cache, b"busy").unwrap();
            key.public_key().verify(b"busy", &sig).unwrap();
            drop(held);
        }
    }
}
