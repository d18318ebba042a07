//! FALCON post-quantum signatures: keys, encodings, X.509 certificates and TLS 1.3, and
//! [`post_handshake`] authentication for engines whose TLS stack cannot carry FALCON.
//!
//! The implementation is [fn-dsa] 0.3.0 (pure Rust) in its *original Falcon* mode
//! (`HASH_ID_ORIGINAL_FALCON`): the Falcon round-3 scheme as PQClean, liboqs and the Open
//! Quantum Safe OpenSSL provider (oqs-provider) implement it, byte for byte. FN-DSA
//! (FIPS 206) is not published yet; when it is, its identifiers and probably its encodings
//! will differ, which is why every identifier lives in the one table [`FALCON_ALGORITHMS`].
//!
//! # Padded or not
//!
//! Falcon signatures are a header byte, a 40-byte nonce and a compressed polynomial whose
//! length varies. Open Quantum Safe names two encodings of the same scheme:
//!
//! * `falcon512` / `falcon1024`: the compressed value as it comes, so the length varies
//!   (about 655 bytes at 512, up to 752);
//! * `falconpadded512` / `falconpadded1024`: zero-padded to a fixed 666 / 1,280 bytes.
//!
//! fn-dsa produces (and verifies) only the padded form. **Keys made here are padded
//! (`falconpadded512`, `falconpadded1024`) and sign with the padded form**: it is what the
//! implementation produces, a fixed size makes the TLS handshake's size known in advance
//! (which matters under QUIC's anti-amplification limit), and it carries no length side
//! channel. Unpadded keys and signatures from other implementations are still read and
//! verified (and an unpadded key signs unpadded): the padding is stripped or added exactly
//! as PQClean does, with a strict check that the unpadded length is the encoding's own.
//! One limit: an unpadded signature longer than the padded size (rare, but PQClean allows
//! up to 752 bytes at 512) cannot be verified by fn-dsa and is refused with
//! [`CryptoError::WrongLength`](crate::CryptoError::WrongLength).
//!
//! # Encodings (Open Quantum Safe's)
//!
//! * Public key: `SubjectPublicKeyInfo` with the algorithm's OID, parameters absent, the
//!   bit string holding the raw public key (897 / 1,793 bytes).
//! * Secret key: PKCS#8 `PrivateKeyInfo` v1 with the same OID, parameters absent; its
//!   `privateKey` octet string holds a DER OCTET STRING of the secret key (1,281 / 2,305
//!   bytes) followed by the public key, as oqs-provider writes it. Reading also accepts the
//!   concatenation without the inner OCTET STRING, and a secret key alone.
//! * Signatures in certificates and TLS are the raw signature bytes.
//!
//! [fn-dsa]: https://crates.io/crates/fn-dsa

mod codec;
mod keys;
pub mod post_handshake;
mod tls;
mod x509;

use std::fmt;

use x509_cert::der::oid::ObjectIdentifier;

pub use keys::{is_falcon_key, FalconPublicKey, FalconSecretKey};
pub use tls::{
    falcon_client_config, falcon_provider, falcon_server_config, falcon_verification_algorithms,
    FalconSigningKey,
};
pub use x509::{
    certificate_public_key, check_validity, verify_certificate_signature, FalconCa, FalconLeaf,
    FalconSignature, FALCON_CA_VALIDITY, FALCON_LEAF_VALIDITY,
};

/// The two FALCON security levels: the lattice degree n.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FalconLevel {
    /// n = 512, NIST security level I.
    L512,
    /// n = 1024, NIST security level V.
    L1024,
}

impl FalconLevel {
    /// log2 of the degree (9 or 10), as fn-dsa counts it.
    pub const fn logn(self) -> u32 {
        match self {
            FalconLevel::L512 => 9,
            FalconLevel::L1024 => 10,
        }
    }

    /// The algorithm new keys of this level get: the padded one (see the module docs).
    pub const fn default_algorithm(self) -> FalconAlgorithm {
        match self {
            FalconLevel::L512 => FalconAlgorithm::FalconPadded512,
            FalconLevel::L1024 => FalconAlgorithm::FalconPadded1024,
        }
    }
}

/// One of the four FALCON algorithms Open Quantum Safe names: a level and a signature
/// encoding. Every identifier of an algorithm is in its [`FalconParams`] row of
/// [`FALCON_ALGORITHMS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FalconAlgorithm {
    /// `falcon512`: Falcon-512, variable-length signatures.
    Falcon512,
    /// `falcon1024`: Falcon-1024, variable-length signatures.
    Falcon1024,
    /// `falconpadded512`: Falcon-512, signatures padded to 666 bytes (what STOQ signs with).
    FalconPadded512,
    /// `falconpadded1024`: Falcon-1024, signatures padded to 1,280 bytes.
    FalconPadded1024,
}

/// Everything that identifies or sizes one FALCON algorithm. The only place identifiers
/// are written down: change them here when FIPS 206 assigns its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FalconParams {
    /// Which algorithm this row describes.
    pub algorithm: FalconAlgorithm,
    /// Open Quantum Safe's name, e.g. `falconpadded512`.
    pub name: &'static str,
    /// Security level.
    pub level: FalconLevel,
    /// Whether signatures are zero-padded to a fixed length.
    pub padded: bool,
    /// X.509 OID (key and signature algorithm alike), dotted.
    pub oid: &'static str,
    /// The same OID as a DER TLV (`06 len bytes`): the `AlgorithmIdentifier` contents with
    /// parameters absent, as rustls-webpki compares them.
    pub oid_der: &'static [u8],
    /// TLS 1.3 `SignatureScheme` code point.
    pub tls_scheme: u16,
    /// Raw public key length in bytes.
    pub public_key_len: usize,
    /// Raw secret key length in bytes.
    pub secret_key_len: usize,
    /// Signature length in bytes: exact when padded, the largest PQClean emits otherwise.
    pub signature_len: usize,
}

/// The identifier table: Open Quantum Safe's OIDs (arc 1.3.9999.3, parameters absent) and
/// TLS code points (private-use range), with the round-3 Falcon sizes.
pub static FALCON_ALGORITHMS: [FalconParams; 4] = [
    FalconParams {
        algorithm: FalconAlgorithm::Falcon512,
        name: "falcon512",
        level: FalconLevel::L512,
        padded: false,
        oid: "1.3.9999.3.11",
        oid_der: &[0x06, 0x05, 0x2b, 0xce, 0x0f, 0x03, 0x0b],
        tls_scheme: 0xfed7,
        public_key_len: 897,
        secret_key_len: 1281,
        signature_len: 752,
    },
    FalconParams {
        algorithm: FalconAlgorithm::Falcon1024,
        name: "falcon1024",
        level: FalconLevel::L1024,
        padded: false,
        oid: "1.3.9999.3.14",
        oid_der: &[0x06, 0x05, 0x2b, 0xce, 0x0f, 0x03, 0x0e],
        tls_scheme: 0xfeda,
        public_key_len: 1793,
        secret_key_len: 2305,
        signature_len: 1462,
    },
    FalconParams {
        algorithm: FalconAlgorithm::FalconPadded512,
        name: "falconpadded512",
        level: FalconLevel::L512,
        padded: true,
        oid: "1.3.9999.3.16",
        oid_der: &[0x06, 0x05, 0x2b, 0xce, 0x0f, 0x03, 0x10],
        tls_scheme: 0xfedc,
        public_key_len: 897,
        secret_key_len: 1281,
        signature_len: 666,
    },
    FalconParams {
        algorithm: FalconAlgorithm::FalconPadded1024,
        name: "falconpadded1024",
        level: FalconLevel::L1024,
        padded: true,
        oid: "1.3.9999.3.19",
        oid_der: &[0x06, 0x05, 0x2b, 0xce, 0x0f, 0x03, 0x13],
        tls_scheme: 0xfedf,
        public_key_len: 1793,
        secret_key_len: 2305,
        signature_len: 1280,
    },
];

impl FalconAlgorithm {
    /// All four, in table order.
    pub const ALL: [FalconAlgorithm; 4] = [
        FalconAlgorithm::Falcon512,
        FalconAlgorithm::Falcon1024,
        FalconAlgorithm::FalconPadded512,
        FalconAlgorithm::FalconPadded1024,
    ];

    /// This algorithm's row of [`FALCON_ALGORITHMS`].
    pub fn params(self) -> &'static FalconParams {
        let index = match self {
            FalconAlgorithm::Falcon512 => 0,
            FalconAlgorithm::Falcon1024 => 1,
            FalconAlgorithm::FalconPadded512 => 2,
            FalconAlgorithm::FalconPadded1024 => 3,
        };
        &FALCON_ALGORITHMS[index]
    }

    /// Security level.
    pub fn level(self) -> FalconLevel {
        self.params().level
    }

    /// Open Quantum Safe's name.
    pub fn name(self) -> &'static str {
        self.params().name
    }

    /// The X.509 OID.
    pub fn oid(self) -> ObjectIdentifier {
        ObjectIdentifier::new_unwrap(self.params().oid)
    }

    /// The TLS 1.3 signature scheme.
    pub fn tls_scheme(self) -> rustls::SignatureScheme {
        rustls::SignatureScheme::from(self.params().tls_scheme)
    }

    /// The algorithm with this OID, if it is a FALCON one.
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<FalconAlgorithm> {
        FALCON_ALGORITHMS
            .iter()
            .find(|p| p.oid_der[2..] == *oid.as_bytes())
            .map(|p| p.algorithm)
    }

    /// The algorithm with this TLS code point, if it is a FALCON one.
    pub fn from_tls_scheme(scheme: rustls::SignatureScheme) -> Option<FalconAlgorithm> {
        let code = u16::from(scheme);
        FALCON_ALGORITHMS
            .iter()
            .find(|p| p.tls_scheme == code)
            .map(|p| p.algorithm)
    }
}

impl fmt::Display for FalconAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_oid_der_matches_the_dotted_oids() {
        for p in &FALCON_ALGORITHMS {
            let oid = ObjectIdentifier::new_unwrap(p.oid);
            assert_eq!(p.oid_der[0], 0x06);
            assert_eq!(p.oid_der[1] as usize, oid.as_bytes().len());
            assert_eq!(&p.oid_der[2..], oid.as_bytes(), "{}", p.name);
            assert_eq!(FalconAlgorithm::from_oid(&oid), Some(p.algorithm));
            assert_eq!(p.algorithm.params(), p);
        }
    }

    #[test]
    fn table_sizes_match_fn_dsa() {
        for p in &FALCON_ALGORITHMS {
            let logn = p.level.logn();
            assert_eq!(p.public_key_len, fn_dsa::vrfy_key_size(logn));
            assert_eq!(p.secret_key_len, fn_dsa::sign_key_size(logn));
            if p.padded {
                assert_eq!(p.signature_len, fn_dsa::signature_size(logn));
            } else {
                assert!(p.signature_len > fn_dsa::signature_size(logn));
            }
        }
    }

    #[test]
    fn tls_schemes_round_trip_and_are_unknown_to_rustls() {
        for alg in FalconAlgorithm::ALL {
            let scheme = alg.tls_scheme();
            assert_eq!(
                scheme,
                rustls::SignatureScheme::Unknown(alg.params().tls_scheme)
            );
            assert_eq!(FalconAlgorithm::from_tls_scheme(scheme), Some(alg));
        }
        assert_eq!(
            FalconAlgorithm::from_tls_scheme(rustls::SignatureScheme::ED25519),
            None
        );
    }
}
