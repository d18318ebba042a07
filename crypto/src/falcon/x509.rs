//! FALCON-signed X.509 certificates (x509-cert's builder): a self-signed CA, leaves it
//! issues, and checks of a certificate's signature and validity.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use stoq_core::Identity;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::asn1::{Any, BitString, Ia5String, OctetString, SetOfVec};
use x509_cert::der::pem::LineEnding;
use x509_cert::der::{Decode, Encode, Header, Reader, SliceReader, Tag};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SignatureBitStringEncoding,
};
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

use super::keys::{algorithm_identifier, algorithm_of};
use super::{FalconLevel, FalconPublicKey, FalconSecretKey};
use crate::store::{normalize_names, BACKDATE};
use crate::CryptoError;

/// How long [`FalconCa::generate`] makes a CA valid when asked for the default: ten years,
/// as the classical local CA.
pub const FALCON_CA_VALIDITY: Duration = crate::CA_VALIDITY;

/// The default leaf lifetime: 90 days, as the classical local CA's leaves.
pub const FALCON_LEAF_VALIDITY: Duration = crate::LEAF_VALIDITY;

/// A FALCON signature as x509-cert's builder takes it: the raw signature bytes, which
/// become the certificate's signature bit string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FalconSignature(pub Vec<u8>);

impl SignatureBitStringEncoding for FalconSignature {
    fn to_bitstring(&self) -> x509_cert::der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl signature::Signer<FalconSignature> for FalconSecretKey {
    /// Signs `msg` with [`FalconSecretKey::sign`].
    fn try_sign(&self, msg: &[u8]) -> Result<FalconSignature, signature::Error> {
        self.sign(msg)
            .map(FalconSignature)
            .map_err(signature::Error::from_source)
    }
}

impl signature::Keypair for FalconSecretKey {
    type VerifyingKey = FalconPublicKey;

    fn verifying_key(&self) -> FalconPublicKey {
        self.public_key().clone()
    }
}

impl DynSignatureAlgorithmIdentifier for FalconSecretKey {
    /// The key's algorithm OID with parameters absent (Open Quantum Safe's convention).
    fn signature_algorithm_identifier(&self) -> x509_cert::spki::Result<AlgorithmIdentifierOwned> {
        Ok(algorithm_identifier(self.algorithm()))
    }
}

impl EncodePublicKey for FalconPublicKey {
    /// The SubjectPublicKeyInfo of [`FalconPublicKey::to_spki_der`].
    fn to_public_key_der(&self) -> x509_cert::spki::Result<x509_cert::der::Document> {
        Ok(x509_cert::der::Document::try_from(self.to_spki_der())?)
    }
}

/// A FALCON certificate authority: a self-signed FALCON certificate and its secret key.
/// Clients trust [`cert`](Self::cert); servers present leaves it issued (the leaf alone:
/// the CA is the trust anchor, so it never needs to travel).
#[derive(Debug, Clone)]
pub struct FalconCa {
    cert: CertificateDer<'static>,
    key: FalconSecretKey,
    name: Name,
}

/// A leaf certificate issued by a [`FalconCa`] with its secret key.
#[derive(Debug, Clone)]
pub struct FalconLeaf {
    /// The DER certificate.
    pub cert: CertificateDer<'static>,
    /// Its secret key.
    pub key: FalconSecretKey,
}

impl FalconLeaf {
    /// As a [`stoq_core::Identity`]: the leaf alone as the chain, the key as PKCS#8 DER.
    pub fn identity(&self) -> Identity {
        Identity {
            cert_chain: vec![self.cert.clone()],
            key: Arc::new(self.key.to_private_key_der()),
        }
    }

    /// The certificate as PEM (`CERTIFICATE`).
    pub fn cert_pem(&self) -> String {
        pem_cert(&self.cert)
    }
}

impl FalconCa {
    /// A new CA of `level` (a fresh padded key) named `common_name`, valid from five
    /// minutes ago (clock skew) for `validity`. Its certificate has basicConstraints
    /// `cA=TRUE`, keyUsage `keyCertSign, cRLSign` and a subject key identifier.
    pub fn generate(
        level: FalconLevel,
        common_name: &str,
        validity: Duration,
    ) -> Result<FalconCa, CryptoError> {
        let key = FalconSecretKey::generate(level);
        let name = common_name_dn(common_name)?;
        let now = SystemTime::now();
        let validity = validity_between(now - BACKDATE, now + validity)?;
        let builder = CertificateBuilder::new(
            Profile::Root,
            random_serial()?,
            validity,
            name.clone(),
            key.public_key().spki(),
            &key,
        )
        .map_err(build_err)?;
        let cert = build(builder)?;
        Ok(FalconCa { cert, key, name })
    }

    /// A CA from its certificate and key (e.g. read back from files). The key must be the
    /// certificate's ([`CryptoError::KeyMismatch`]) and the certificate must verify under it.
    pub fn from_parts(
        cert: CertificateDer<'static>,
        key: FalconSecretKey,
    ) -> Result<FalconCa, CryptoError> {
        let parsed = parse(&cert)?;
        let public = certificate_public_key(&cert)?;
        if &public != key.public_key() {
            return Err(CryptoError::KeyMismatch {
                cert: "the FALCON CA certificate".into(),
                key: "the FALCON CA key".into(),
            });
        }
        verify_certificate_signature(&cert, &public)?;
        Ok(FalconCa {
            name: parsed.tbs_certificate.subject,
            cert,
            key,
        })
    }

    /// The CA certificate (DER): the trust anchor clients add to their roots.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_cert(&self.cert)
    }

    /// The CA's secret key.
    pub fn key(&self) -> &FalconSecretKey {
        &self.key
    }

    /// Issues a leaf with a new key of `level` for `names` (DNS names or IP addresses, at
    /// least one), valid from five minutes ago for `validity`.
    pub fn issue_leaf(
        &self,
        level: FalconLevel,
        names: &[&str],
        validity: Duration,
    ) -> Result<FalconLeaf, CryptoError> {
        let key = FalconSecretKey::generate(level);
        let now = SystemTime::now();
        let cert = self.issue_for(key.public_key(), names, now - BACKDATE, now + validity)?;
        Ok(FalconLeaf { cert, key })
    }

    /// Issues a leaf certificate for `public_key` (which may be of either level) and
    /// `names`, valid from `not_before` to `not_after` (any times X.509 can express, past
    /// ones included: tests use that for expired certificates).
    ///
    /// The certificate: subject CN = the first name (after normalisation: IP addresses in
    /// canonical form, DNS names lower-cased, sorted); subjectAltName with every name;
    /// basicConstraints `cA=FALSE`; keyUsage `digitalSignature` (and `nonRepudiation`, as
    /// x509-cert's leaf profile sets); extendedKeyUsage serverAuth and clientAuth; subject
    /// and authority key identifiers; a random 127-bit serial. Signed with the CA's key.
    /// Bad names give [`CryptoError::InvalidName`].
    pub fn issue_for(
        &self,
        public_key: &FalconPublicKey,
        names: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<CertificateDer<'static>, CryptoError> {
        let names = normalize_names(names)?;
        let profile = Profile::Leaf {
            issuer: self.name.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        };
        let mut builder = CertificateBuilder::new(
            profile,
            random_serial()?,
            validity_between(not_before, not_after)?,
            common_name_dn(&names[0])?,
            public_key.spki(),
            &self.key,
        )
        .map_err(build_err)?;
        let sans = names
            .iter()
            .map(|n| general_name(n))
            .collect::<Result<Vec<_>, _>>()?;
        builder
            .add_extension(&SubjectAltName(sans))
            .map_err(build_err)?;
        builder
            .add_extension(&ExtendedKeyUsage(vec![
                x509_cert::der::oid::db::rfc5280::ID_KP_SERVER_AUTH,
                x509_cert::der::oid::db::rfc5280::ID_KP_CLIENT_AUTH,
            ]))
            .map_err(build_err)?;
        build(builder)
    }
}

/// Verifies that `cert_der`'s signature is a valid FALCON signature by `issuer` over its
/// exact TBS bytes. Checks only the signature: not validity dates, names or extensions
/// (see [`check_validity`]; rustls checks all of it in a handshake).
///
/// Errors: [`CryptoError::MalformedDer`] if it is not a certificate,
/// [`CryptoError::WrongAlgorithm`] if its signature algorithm is not FALCON (or the outer
/// and TBS algorithms differ, or are of another level than `issuer`),
/// [`CryptoError::WrongLength`] / [`CryptoError::BadSignature`] if the signature fails.
pub fn verify_certificate_signature(
    cert_der: &[u8],
    issuer: &FalconPublicKey,
) -> Result<(), CryptoError> {
    let cert = parse(cert_der)?;
    let tbs = tbs_bytes(cert_der)?;
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(CryptoError::WrongAlgorithm {
            what: "certificate",
            found: format!(
                "{} outside, {} in the TBS",
                cert.signature_algorithm.oid, cert.tbs_certificate.signature.oid
            ),
            expected: "the same signature algorithm in both".into(),
        });
    }
    let algorithm = algorithm_of("certificate signature algorithm", &cert.signature_algorithm)?;
    let signature = cert
        .signature
        .as_bytes()
        .ok_or_else(|| CryptoError::MalformedDer {
            what: "certificate",
            detail: "the signature bit string is not a whole number of bytes".into(),
        })?;
    issuer
        .verify_as(algorithm, tbs, signature)
        .map_err(|e| match e {
            CryptoError::BadSignature { .. } => CryptoError::BadSignature {
                what: "certificate signature".into(),
            },
            other => other,
        })
}

/// The FALCON public key a certificate certifies. [`CryptoError::WrongAlgorithm`] if its
/// key is not a FALCON key, [`CryptoError::MalformedDer`] if it is not a certificate.
pub fn certificate_public_key(cert_der: &[u8]) -> Result<FalconPublicKey, CryptoError> {
    let cert = parse(cert_der)?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| CryptoError::MalformedDer {
            what: "certificate",
            detail: e.to_string(),
        })?;
    FalconPublicKey::from_spki_der(&spki)
}

/// Checks that `now` is inside the certificate's validity period (inclusive):
/// [`CryptoError::Expired`] after `notAfter`, [`CryptoError::NotYetValid`] before
/// `notBefore`. Works for any certificate, FALCON or not.
pub fn check_validity(cert_der: &[u8], now: SystemTime) -> Result<(), CryptoError> {
    let cert = parse(cert_der)?;
    let v = &cert.tbs_certificate.validity;
    let (not_before, not_after) = (v.not_before.to_system_time(), v.not_after.to_system_time());
    if now > not_after {
        return Err(CryptoError::Expired {
            cert: "the certificate".into(),
            not_after,
        });
    }
    if now < not_before {
        return Err(CryptoError::NotYetValid {
            cert: "the certificate".into(),
            not_before,
        });
    }
    Ok(())
}

fn parse(der: &[u8]) -> Result<Certificate, CryptoError> {
    Certificate::from_der(der).map_err(|e| CryptoError::MalformedDer {
        what: "certificate",
        detail: e.to_string(),
    })
}

/// The TBSCertificate exactly as it appears in the certificate (what was signed).
fn tbs_bytes(der: &[u8]) -> Result<&[u8], CryptoError> {
    let malformed = |e: x509_cert::der::Error| CryptoError::MalformedDer {
        what: "certificate",
        detail: e.to_string(),
    };
    let mut reader = SliceReader::new(der).map_err(malformed)?;
    let header = Header::decode(&mut reader).map_err(malformed)?;
    header.tag.assert_eq(Tag::Sequence).map_err(malformed)?;
    reader.tlv_bytes().map_err(malformed)
}

fn common_name_dn(cn: &str) -> Result<Name, CryptoError> {
    let value = Any::new(Tag::Utf8String, cn.as_bytes()).map_err(|e| CryptoError::InvalidName {
        name: cn.to_string(),
        reason: e.to_string(),
    })?;
    let atv = x509_cert::attr::AttributeTypeAndValue {
        oid: x509_cert::der::oid::db::rfc4519::CN,
        value,
    };
    let set = SetOfVec::try_from(vec![atv]).map_err(|e| CryptoError::InvalidName {
        name: cn.to_string(),
        reason: e.to_string(),
    })?;
    Ok(RdnSequence(vec![RelativeDistinguishedName::from(set)]))
}

fn general_name(name: &str) -> Result<GeneralName, CryptoError> {
    let invalid = |reason: String| CryptoError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if let Ok(ip) = IpAddr::from_str(name) {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        return OctetString::new(bytes)
            .map(GeneralName::IpAddress)
            .map_err(|e| invalid(e.to_string()));
    }
    Ia5String::new(name)
        .map(GeneralName::DnsName)
        .map_err(|e| invalid(e.to_string()))
}

fn validity_between(
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<Validity, CryptoError> {
    let time = |t: SystemTime| {
        Time::try_from(t).map_err(|e| CryptoError::Generate(format!("validity time: {e}")))
    };
    Ok(Validity {
        not_before: time(not_before)?,
        not_after: time(not_after)?,
    })
}

/// 16 random bytes, positive and without a leading zero byte.
fn random_serial() -> Result<SerialNumber, CryptoError> {
    use rand_core::RngCore;
    let mut bytes = [0u8; 16];
    rand_core::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| CryptoError::Generate(format!("random serial number: {e}")))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::new(&bytes).map_err(|e| CryptoError::Generate(format!("serial number: {e}")))
}

fn build_err(e: x509_cert::builder::Error) -> CryptoError {
    CryptoError::Generate(format!("FALCON certificate: {e}"))
}

fn build<'s>(
    builder: CertificateBuilder<'s, FalconSecretKey>,
) -> Result<CertificateDer<'static>, CryptoError> {
    let cert = builder.build::<FalconSignature>().map_err(build_err)?;
    let der = cert
        .to_der()
        .map_err(|e| CryptoError::Generate(format!("FALCON certificate DER: {e}")))?;
    Ok(CertificateDer::from(der))
}

fn pem_cert(cert: &CertificateDer<'_>) -> String {
    x509_cert::der::pem::encode_string("CERTIFICATE", LineEnding::LF, cert)
        .expect("PEM encoding of DER cannot fail")
}
