//! Self-managing certificates: a local development CA and the leaves it issues.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use stoq_core::{Identity, TlsMaterial};

use crate::config::{certified_key_with, provider, root_store};
use crate::error::fmt_time;
use crate::falcon::{falcon_provider, FalconCa, FalconLevel, FalconSecretKey};
use crate::pem::{file_err, load_identity, read_certs, read_key};
use crate::rotation::{LeafKind, RotatingIdentity};
use crate::{x509, CryptoError};

/// The common name of the local development CA.
pub const CA_COMMON_NAME: &str = "STOQ local development CA";
/// How long a newly generated local CA is valid: 10 years (3,650 days).
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);
/// How long a newly issued leaf certificate is valid by default: 90 days.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// A stored leaf is reissued when it would expire within this window: 30 days.
pub const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The common name of the store's FALCON CA, followed by ` instance <16 hex digits>`
/// (random per CA, as for the classical CA's organizational unit).
pub const FALCON_CA_COMMON_NAME: &str = "STOQ local FALCON CA";

/// Certificates are back-dated by this much to tolerate clocks that run slightly behind.
pub(crate) const BACKDATE: Duration = Duration::from_secs(5 * 60);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A certificate authority that can issue leaf certificates: STOQ's local development CA
/// (ECDSA P-256, CN [`CA_COMMON_NAME`], basic constraints CA with path length 0, key usage
/// keyCertSign and cRLSign).
///
/// Its subject also holds an organizational unit `instance <16 hex digits>`, random per CA,
/// so CAs generated on different machines have different names: a peer that trusts another
/// local CA then rejects this one's leaves as from an unknown issuer (TLS alert
/// `unknown_ca`) rather than with a confusing bad-signature error.
///
/// Obtain one from [`CertStore::local_ca`] (persistent) or [`LocalCa::generate`] (in memory
/// only). Peers trust what it issues by putting [`LocalCa::cert`] in their roots.
pub struct LocalCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    not_after: SystemTime,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("LocalCa")
            .field("common_name", &CA_COMMON_NAME)
            .field("not_after", &fmt_time(self.not_after))
            .finish_non_exhaustive()
    }
}

/// The subject's organizational unit attribute (2.5.4.11), holding the CA's instance id.
const OU_OID: x509_cert::der::asn1::ObjectIdentifier =
    x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.4.11");

fn ca_params(instance: &str) -> CertificateParams {
    let now = time::OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationalUnitName, instance);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    params
}

/// A random instance id: distinguishes the subjects of CAs generated on different machines.
fn new_instance_id() -> Result<String, CryptoError> {
    let mut id = [0u8; 8];
    provider()
        .secure_random
        .fill(&mut id)
        .map_err(|_| CryptoError::Generate("no secure random numbers available".to_string()))?;
    Ok(format!(
        "instance {}",
        id.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn gen_err(e: rcgen::Error) -> CryptoError {
    CryptoError::Generate(e.to_string())
}

impl LocalCa {
    /// Generates a fresh CA in memory (new ECDSA P-256 key, valid for [`CA_VALIDITY`]).
    /// Nothing is written to disk.
    pub fn generate() -> Result<LocalCa, CryptoError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let params = ca_params(&new_instance_id()?);
        let cert = params.self_signed(&key).map_err(gen_err)?.der().clone();
        let not_after = x509::not_after(&cert).map_err(CryptoError::Generate)?;
        Ok(LocalCa {
            cert,
            issuer: Issuer::new(params, key),
            not_after,
        })
    }

    /// Loads a CA written by [`CertStore`]: its certificate and its key must match, and the
    /// certificate must be a STOQ local CA.
    fn load(cert_path: &Path, key_path: &Path) -> Result<LocalCa, CryptoError> {
        let cert = read_certs(cert_path)?.swap_remove(0);
        let key_der = read_key(key_path)?;
        let key = KeyPair::try_from(&key_der).map_err(|e| {
            file_err(
                key_path,
                format!("the private key is malformed or of an unsupported type: {e}"),
            )
        })?;
        let loaded = x509::parse(&cert).map_err(|e| file_err(cert_path, e.to_string()))?;
        // Re-create the CA certificate template with this key: rcgen's issuer is built from
        // the template, so its subject must be the stored certificate's subject.
        let instance = loaded
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find(|atv| atv.oid == OU_OID)
            .and_then(|atv| atv.value.decode_as::<String>().ok())
            .unwrap_or_default();
        let params = ca_params(&instance);
        let template = params.self_signed(&key).map_err(gen_err)?;
        let template =
            x509::parse(template.der()).map_err(|e| CryptoError::Generate(e.to_string()))?;
        if loaded.tbs_certificate.subject_public_key_info
            != template.tbs_certificate.subject_public_key_info
        {
            return Err(CryptoError::KeyMismatch {
                cert: cert_path.display().to_string(),
                key: key_path.display().to_string(),
            });
        }
        if loaded.tbs_certificate.subject != template.tbs_certificate.subject {
            return Err(file_err(
                cert_path,
                format!(
                    "not a STOQ local CA (its subject is \"{}\", expected CN \"{CA_COMMON_NAME}\" \
                     and an OU \"instance ...\"); delete it and its key to let STOQ generate a \
                     new one",
                    loaded.tbs_certificate.subject
                ),
            ));
        }
        Ok(LocalCa {
            cert,
            issuer: Issuer::new(params, key),
            not_after: loaded.tbs_certificate.validity.not_after.to_system_time(),
        })
    }

    /// The CA certificate (DER): what peers put in their roots to trust issued leaves.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate as PEM, e.g. to install in a browser or OS trust store.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert)
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Issues a leaf certificate for `names` with a new ECDSA P-256 key, valid from now
    /// (back-dated five minutes for clock skew) for `validity`.
    ///
    /// Each name that parses as an IP address becomes an IP subject alternative name,
    /// every other name a DNS name (`*.example.com` wildcards allowed); the first name is
    /// also the subject's common name. Extended key usage is serverAuth and clientAuth, so
    /// the leaf serves both sides of mutual authentication. The returned chain holds only
    /// the leaf: peers trust [`LocalCa::cert`] as a root, and a short chain keeps the QUIC
    /// server's first flight within the anti-amplification limit.
    pub fn issue_leaf(&self, names: &[&str], validity: Duration) -> Result<Identity, CryptoError> {
        let names = normalize_names(names)?;
        let (_, _, identity) = self.issue(&names, validity)?;
        Ok(identity)
    }

    /// Issues a leaf; returns its certificate PEM, key PEM and the identity.
    fn issue(
        &self,
        names: &[String],
        validity: Duration,
    ) -> Result<(String, String, Identity), CryptoError> {
        let now = time::OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0].as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|name| san(name))
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        let identity = Identity {
            cert_chain: vec![cert.der().clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(key.serialize_der().into())),
        };
        Ok((cert.pem(), key.serialize_pem(), identity))
    }

    /// Ok if `identity` is a leaf of this CA for every name in `names`, valid now and still
    /// valid `remaining` from now, with a matching key. Otherwise, why not.
    fn check_leaf(
        &self,
        identity: &Identity,
        names: &[String],
        remaining: Duration,
    ) -> Result<(), String> {
        check_leaf_of(provider(), &self.cert, identity, names, remaining)
    }
}

/// Ok if `identity` is a leaf issued by `ca_cert` for every name in `names`, valid now and
/// still valid `remaining` from now, with a key that `provider` loads and that matches.
fn check_leaf_of(
    provider: Arc<rustls::crypto::CryptoProvider>,
    ca_cert: &CertificateDer<'static>,
    identity: &Identity,
    names: &[String],
    remaining: Duration,
) -> Result<(), String> {
    certified_key_with(
        &provider,
        identity,
        "the identity's leaf certificate",
        "the identity's private key",
    )
    .map_err(|e| e.to_string())?;
    let roots = root_store(std::slice::from_ref(ca_cert)).map_err(|e| e.to_string())?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    let (leaf, intermediates) = identity
        .cert_chain
        .split_first()
        .ok_or("empty certificate chain")?;
    for (when, label) in [(now, "now"), (now + remaining, "in the renewal window")] {
        let at = UnixTime::since_unix_epoch(
            when.duration_since(SystemTime::UNIX_EPOCH)
                .map_err(|e| e.to_string())?,
        );
        for name in names {
            // A wildcard name is checked with a label it must cover.
            let probe = match name.strip_prefix("*.") {
                Some(rest) => format!("stoq-probe.{rest}"),
                None => name.clone(),
            };
            let server_name = ServerName::try_from(probe).map_err(|e| e.to_string())?;
            verifier
                .verify_server_cert(leaf, intermediates, &server_name, &[], at)
                .map_err(|e| format!("not valid for {name} {label}: {e}"))?;
        }
    }
    Ok(())
}

/// Canonical names: IP addresses in their canonical text form, DNS names lower-cased without
/// a trailing dot; sorted and deduplicated. At least one.
pub(crate) fn normalize_names(names: &[&str]) -> Result<Vec<String>, CryptoError> {
    let mut out = BTreeSet::new();
    for &raw in names {
        let trimmed = raw.trim();
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            out.insert(ip.to_string());
            continue;
        }
        let dns = trimmed.trim_end_matches('.').to_ascii_lowercase();
        let base = dns.strip_prefix("*.").unwrap_or(&dns);
        rustls_pki_types::DnsName::try_from(base).map_err(|_| CryptoError::InvalidName {
            name: raw.to_string(),
            reason: "neither an IP address nor a valid DNS name".to_string(),
        })?;
        out.insert(dns);
    }
    if out.is_empty() {
        return Err(CryptoError::InvalidName {
            name: String::new(),
            reason: "a certificate needs at least one DNS name or IP address".to_string(),
        });
    }
    Ok(out.into_iter().collect())
}

fn san(name: &str) -> Result<SanType, CryptoError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let ia5 = name
        .try_into()
        .map_err(|e: rcgen::Error| CryptoError::InvalidName {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
    Ok(SanType::DnsName(ia5))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    x509_cert::der::pem::encode_string(label, x509_cert::der::pem::LineEnding::LF, der)
        .expect("PEM encoding of an in-memory DER certificate cannot fail")
}

/// A directory of self-managed TLS material: a local development CA (`ca.pem`,
/// `ca-key.pem`) and the leaf certificates it issued (`leaf-<hash>.pem`,
/// `leaf-<hash>-key.pem`, where `<hash>` identifies the set of names), and the same for
/// FALCON post-quantum certificates: a FALCON CA (`falcon-ca.pem`, `falcon-ca-key.pem`) and
/// its leaves (`falcon-leaf-<hash>.pem`, `falcon-leaf-<hash>-key.pem`), created on first use
/// at [`CertStore::falcon_level`] (FALCON-512 unless [`CertStore::with_falcon_level`]).
///
/// The directory is created with mode 0700 and every private key file with mode 0600,
/// written atomically (a 0600 temporary file in the same directory, then renamed), so a
/// key is never readable by others, not even briefly. Operations on one store are
/// serialised across processes with a lock file (`.lock`).
#[derive(Debug, Clone)]
pub struct CertStore {
    dir: PathBuf,
    leaf_validity: Duration,
    renew_before: Duration,
    falcon_level: FalconLevel,
}

impl CertStore {
    /// The default store directory: `$STOQ_HOME/certs` if `STOQ_HOME` is set and not
    /// empty, else `certs/` in the platform's configuration directory for STOQ (e.g.
    /// `~/.config/stoq/certs` on Linux). Fails with [`CryptoError::NoStoreDir`] if neither
    /// can be determined.
    pub fn default_dir() -> Result<PathBuf, CryptoError> {
        let base = match std::env::var_os("STOQ_HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home),
            _ => directories::ProjectDirs::from("", "", "stoq")
                .ok_or(CryptoError::NoStoreDir)?
                .config_dir()
                .to_path_buf(),
        };
        Ok(base.join("certs"))
    }

    /// Opens (creating it if needed) the store at [`CertStore::default_dir`].
    pub fn open_default() -> Result<CertStore, CryptoError> {
        CertStore::open(CertStore::default_dir()?)
    }

    /// Opens the store rooted at `dir`, creating the directory (and missing parents) with
    /// mode 0700 if it does not exist. An existing directory is used as it is (a warning is
    /// logged if others can access it; key files are 0600 regardless).
    pub fn open(dir: impl AsRef<Path>) -> Result<CertStore, CryptoError> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir(&dir)?;
        Ok(CertStore {
            dir,
            leaf_validity: LEAF_VALIDITY,
            renew_before: LEAF_RENEW_BEFORE,
            falcon_level: FalconLevel::L512,
        })
    }

    /// Sets the renewal window (default [`LEAF_RENEW_BEFORE`]): a stored leaf, classical or
    /// FALCON, is reused only while it stays valid for at least this long, and a
    /// [`RotatingIdentity`] reissues once its leaf enters the window.
    pub fn with_renew_before(mut self, window: Duration) -> CertStore {
        self.renew_before = window;
        self
    }

    /// The renewal window ([`CertStore::with_renew_before`]).
    pub fn renew_before(&self) -> Duration {
        self.renew_before
    }

    /// Sets the FALCON level of the FALCON CA and leaves (default [`FalconLevel::L512`]).
    /// A stored FALCON CA or leaf of the other level is replaced on next use (peers must
    /// then trust the new `falcon-ca.pem`).
    pub fn with_falcon_level(mut self, level: FalconLevel) -> CertStore {
        self.falcon_level = level;
        self
    }

    /// The FALCON level of new FALCON certificates ([`CertStore::with_falcon_level`]).
    pub fn falcon_level(&self) -> FalconLevel {
        self.falcon_level
    }

    /// Sets the validity of leaves (classical and FALCON) issued from now on (default
    /// [`LEAF_VALIDITY`]). A stored leaf is reissued once less than the renewal window
    /// ([`CertStore::with_renew_before`], default [`LEAF_RENEW_BEFORE`]) remains, so a
    /// validity at or below the window makes every [`CertStore::leaf`] call issue a new leaf.
    pub fn with_leaf_validity(mut self, validity: Duration) -> CertStore {
        self.leaf_validity = validity;
        self
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate and key files: `ca.pem`, `ca-key.pem`.
    pub fn ca_paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("ca.pem"), self.dir.join("ca-key.pem"))
    }

    /// The certificate and key files of the leaf for `names`:
    /// `leaf-<hash>.pem`, `leaf-<hash>-key.pem`, where `<hash>` is the first 16 hex digits of
    /// the SHA-256 of the canonical names (sorted, deduplicated, DNS names lower-cased), so
    /// the same set of names in any order maps to the same files.
    pub fn leaf_paths(&self, names: &[&str]) -> Result<(PathBuf, PathBuf), CryptoError> {
        Ok(self.leaf_paths_of(&normalize_names(names)?))
    }

    fn leaf_paths_of(&self, names: &[String]) -> (PathBuf, PathBuf) {
        self.prefixed_leaf_paths("leaf", names)
    }

    fn prefixed_leaf_paths(&self, prefix: &str, names: &[String]) -> (PathBuf, PathBuf) {
        let digest = Sha256::digest(names.join("\n").as_bytes());
        let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        (
            self.dir.join(format!("{prefix}-{hash}.pem")),
            self.dir.join(format!("{prefix}-{hash}-key.pem")),
        )
    }

    /// The FALCON CA certificate and key files: `falcon-ca.pem`, `falcon-ca-key.pem`.
    pub fn falcon_ca_paths(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join("falcon-ca.pem"),
            self.dir.join("falcon-ca-key.pem"),
        )
    }

    /// The certificate and key files of the FALCON leaf for `names`:
    /// `falcon-leaf-<hash>.pem`, `falcon-leaf-<hash>-key.pem`, `<hash>` as in
    /// [`CertStore::leaf_paths`].
    pub fn falcon_leaf_paths(&self, names: &[&str]) -> Result<(PathBuf, PathBuf), CryptoError> {
        Ok(self.prefixed_leaf_paths("falcon-leaf", &normalize_names(names)?))
    }

    /// The store's local development CA. On first use it is generated and written to
    /// `ca.pem` and `ca-key.pem` (0600); later calls load those files, and errors name the
    /// file at fault. A CA that expires within one leaf validity (plus a day) is replaced
    /// by a new one (peers must then trust the new `ca.pem`).
    pub fn local_ca(&self) -> Result<LocalCa, CryptoError> {
        let _lock = self.lock()?;
        self.local_ca_locked()
    }

    /// A leaf identity for `names` (DNS names or IP addresses), issued by the local CA.
    ///
    /// The stored leaf is reused if it was issued by the current CA, covers every name,
    /// matches its key and stays valid for at least [`LEAF_RENEW_BEFORE`]; otherwise a new
    /// one (ECDSA P-256, valid [`LEAF_VALIDITY`] by default) is issued and stored (rotation).
    pub fn leaf(&self, names: &[&str]) -> Result<Identity, CryptoError> {
        Ok(self.ca_and_leaf(names)?.1)
    }

    /// TLS material for an endpoint serving `names`: [`CertStore::leaf`] as the identity and
    /// the local CA certificate as the only root; client authentication not required.
    pub fn material(&self, names: &[&str]) -> Result<TlsMaterial, CryptoError> {
        let (ca, identity) = self.ca_and_leaf(names)?;
        Ok(TlsMaterial {
            identity: Some(identity),
            roots: vec![ca.cert],
            require_client_auth: false,
            identity_source: None,
        })
    }

    /// The store's FALCON CA (at [`CertStore::falcon_level`]). On first use it is
    /// generated and written to `falcon-ca.pem` and `falcon-ca-key.pem` (0600, atomically);
    /// later calls load those files, and errors name the file at fault (a key that is not
    /// the certificate's is [`CryptoError::KeyMismatch`] naming both). A FALCON CA that
    /// expires within one leaf validity (plus a day), or is of another level, is replaced.
    pub fn falcon_ca(&self) -> Result<FalconCa, CryptoError> {
        let _lock = self.lock()?;
        self.falcon_ca_locked()
    }

    /// A FALCON leaf identity for `names` (DNS names or IP addresses), issued by the FALCON
    /// CA: the leaf alone as the chain and its FALCON PKCS#8 key. The same guarantees as
    /// [`CertStore::leaf`]: the stored leaf is reused if it was issued by the current FALCON
    /// CA, is of [`CertStore::falcon_level`], covers every name, matches its key and stays
    /// valid for the renewal window; otherwise a new one is issued and stored.
    pub fn falcon_leaf(&self, names: &[&str]) -> Result<Identity, CryptoError> {
        Ok(self.falcon_ca_and_leaf(names)?.2)
    }

    /// TLS material presenting the FALCON leaf for `names` ([`CertStore::falcon_leaf`]),
    /// with a **mixed trust store**: roots are the classical local CA and the FALCON CA, so
    /// a peer presenting a leaf of either kind from this store verifies (with
    /// [`crate::client_config`] / [`crate::server_config`], which use
    /// [`crate::falcon::falcon_provider`]). Client authentication not required.
    pub fn falcon_material(&self, names: &[&str]) -> Result<TlsMaterial, CryptoError> {
        let (ca, falcon_ca, identity) = self.falcon_ca_and_leaf(names)?;
        Ok(TlsMaterial {
            identity: Some(identity),
            roots: vec![ca.cert, falcon_ca.cert().clone()],
            require_client_auth: false,
            identity_source: None,
        })
    }

    /// An identity for `names` that follows the store: it serves the current leaf of
    /// `kind` and, once that leaf enters the renewal window (or expires), reissues it from
    /// the store and switches to the new one for later handshakes. See [`RotatingIdentity`].
    pub fn rotating_identity(
        &self,
        names: &[&str],
        kind: LeafKind,
    ) -> Result<Arc<RotatingIdentity>, CryptoError> {
        RotatingIdentity::new(self.clone(), names, kind).map(Arc::new)
    }

    /// Like [`CertStore::material`] (for [`LeafKind::Classical`]) or
    /// [`CertStore::falcon_material`] (for [`LeafKind::Falcon`], mixed roots), with
    /// [`CertStore::rotating_identity`] as `identity_source`: endpoints built from it with
    /// [`crate::server_config`] / [`crate::client_config`] rotate their leaf without
    /// restarting, and connections already established keep theirs.
    pub fn rotating_material(
        &self,
        names: &[&str],
        kind: LeafKind,
    ) -> Result<TlsMaterial, CryptoError> {
        let mut material = match kind {
            LeafKind::Classical => self.material(names)?,
            LeafKind::Falcon => self.falcon_material(names)?,
        };
        material.identity_source = Some(self.rotating_identity(names, kind)?);
        Ok(material)
    }

    /// The current leaf of `kind` for `names`, reissued if needed.
    pub(crate) fn leaf_of(&self, names: &[&str], kind: LeafKind) -> Result<Identity, CryptoError> {
        match kind {
            LeafKind::Classical => self.leaf(names),
            LeafKind::Falcon => self.falcon_leaf(names),
        }
    }

    fn falcon_ca_and_leaf(
        &self,
        names: &[&str],
    ) -> Result<(LocalCa, FalconCa, Identity), CryptoError> {
        let names = normalize_names(names)?;
        let _lock = self.lock()?;
        let ca = self.local_ca_locked()?;
        let falcon_ca = self.falcon_ca_locked()?;
        let (cert_path, key_path) = self.prefixed_leaf_paths("falcon-leaf", &names);
        let reason = match stored_leaf(&cert_path, &key_path, |identity| {
            self.check_falcon_leaf(&falcon_ca, identity, &names)
        })? {
            Ok(identity) => return Ok((ca, falcon_ca, identity)),
            Err(reason) => reason,
        };
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let leaf = falcon_ca.issue_leaf(self.falcon_level, &name_refs, self.leaf_validity)?;
        // Key first: an interruption leaves a mismatched pair, which the next call replaces.
        self.write_atomic(&key_path, leaf.key.to_pkcs8_pem().as_bytes(), 0o600)?;
        self.write_atomic(&cert_path, leaf.cert_pem().as_bytes(), 0o644)?;
        tracing::info!(
            names = ?names,
            cert = %cert_path.display(),
            reason = %reason,
            "issued a FALCON leaf certificate from the FALCON CA"
        );
        Ok((ca, falcon_ca, leaf.identity()))
    }

    fn check_falcon_leaf(
        &self,
        falcon_ca: &FalconCa,
        identity: &Identity,
        names: &[String],
    ) -> Result<(), String> {
        let leaf = identity
            .cert_chain
            .first()
            .ok_or("empty certificate chain")?;
        let public = crate::falcon::certificate_public_key(leaf).map_err(|e| e.to_string())?;
        if public.algorithm().level() != self.falcon_level {
            return Err(format!(
                "its key is {}, the store's level is {:?}",
                public.algorithm(),
                self.falcon_level
            ));
        }
        check_leaf_of(
            falcon_provider(),
            falcon_ca.cert(),
            identity,
            names,
            self.renew_before,
        )
    }

    fn falcon_ca_locked(&self) -> Result<FalconCa, CryptoError> {
        let (cert_path, key_path) = self.falcon_ca_paths();
        if !ca_files_present(
            &cert_path,
            &key_path,
            "FALCON CA",
            "FALCON leaf",
            "falcon-ca.pem",
        )? {
            return self.generate_falcon_ca("none stored yet");
        }
        let cert = read_certs(&cert_path)?.swap_remove(0);
        let key = FalconSecretKey::read_pkcs8_pem(&key_path)?;
        let ca = FalconCa::from_parts(cert, key).map_err(|e| match e {
            CryptoError::KeyMismatch { .. } => CryptoError::KeyMismatch {
                cert: cert_path.display().to_string(),
                key: key_path.display().to_string(),
            },
            other => file_err(&cert_path, format!("not a usable FALCON CA: {other}")),
        })?;
        let not_after = x509::not_after(ca.cert()).map_err(|e| file_err(&cert_path, e))?;
        let level = ca.key().algorithm().level();
        let replace = if level != self.falcon_level {
            Some(format!(
                "the stored FALCON CA is {level:?}, the store's level is {:?}",
                self.falcon_level
            ))
        } else if not_after < SystemTime::now() + self.leaf_validity + DAY {
            Some(format!(
                "the stored FALCON CA expires at {}, too soon to issue leaves",
                fmt_time(not_after)
            ))
        } else {
            None
        };
        match replace {
            Some(reason) => {
                tracing::warn!(cert = %cert_path.display(), "{reason}; generating a new FALCON CA");
                self.generate_falcon_ca(&reason)
            }
            None => Ok(ca),
        }
    }

    fn generate_falcon_ca(&self, reason: &str) -> Result<FalconCa, CryptoError> {
        let (cert_path, key_path) = self.falcon_ca_paths();
        let instance = new_instance_id()?;
        let ca = FalconCa::generate(
            self.falcon_level,
            &format!("{FALCON_CA_COMMON_NAME} {instance}"),
            CA_VALIDITY,
        )?;
        // Key first: an interruption leaves a key without a certificate, which is replaced.
        self.write_atomic(&key_path, ca.key().to_pkcs8_pem().as_bytes(), 0o600)?;
        self.write_atomic(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
        tracing::info!(
            cert = %cert_path.display(),
            reason = %reason,
            "generated the STOQ local FALCON CA; peers must trust this certificate"
        );
        Ok(ca)
    }

    fn ca_and_leaf(&self, names: &[&str]) -> Result<(LocalCa, Identity), CryptoError> {
        let names = normalize_names(names)?;
        let _lock = self.lock()?;
        let ca = self.local_ca_locked()?;
        let (cert_path, key_path) = self.leaf_paths_of(&names);
        let reason = match stored_leaf(&cert_path, &key_path, |identity| {
            ca.check_leaf(identity, &names, self.renew_before)
        })? {
            Ok(identity) => return Ok((ca, identity)),
            Err(reason) => reason,
        };
        let (cert_pem, key_pem, identity) = ca.issue(&names, self.leaf_validity)?;
        // Key first: an interruption leaves a mismatched pair, which the next call replaces.
        self.write_atomic(&key_path, key_pem.as_bytes(), 0o600)?;
        self.write_atomic(&cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(
            names = ?names,
            cert = %cert_path.display(),
            reason = %reason,
            "issued a leaf certificate from the local CA"
        );
        Ok((ca, identity))
    }

    fn local_ca_locked(&self) -> Result<LocalCa, CryptoError> {
        let (cert_path, key_path) = self.ca_paths();
        if !ca_files_present(&cert_path, &key_path, "CA", "leaf", "ca.pem")? {
            return self.generate_ca("none stored yet");
        }
        let ca = LocalCa::load(&cert_path, &key_path)?;
        if ca.not_after < SystemTime::now() + self.leaf_validity + DAY {
            let reason = format!(
                "the stored CA expires at {}, too soon to issue leaves",
                fmt_time(ca.not_after)
            );
            tracing::warn!(cert = %cert_path.display(), "{reason}; generating a new CA");
            return self.generate_ca(&reason);
        }
        Ok(ca)
    }

    fn generate_ca(&self, reason: &str) -> Result<LocalCa, CryptoError> {
        let (cert_path, key_path) = self.ca_paths();
        let ca = LocalCa::generate()?;
        // Key first: an interruption leaves a key without a certificate, which is replaced.
        self.write_atomic(&key_path, ca.issuer.key().serialize_pem().as_bytes(), 0o600)?;
        self.write_atomic(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
        tracing::info!(
            cert = %cert_path.display(),
            reason = %reason,
            "generated the STOQ local development CA; peers must trust this certificate"
        );
        Ok(ca)
    }

    /// An exclusive lock on the store, released when the returned file is dropped.
    fn lock(&self) -> Result<File, CryptoError> {
        let path = self.dir.join(".lock");
        let io_err = |source| CryptoError::Io {
            path: path.clone(),
            source,
        };
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        file.lock().map_err(io_err)?;
        Ok(file)
    }

    /// Writes `contents` to `path` atomically: a temporary file created with `mode` in the
    /// store directory, flushed to disk, then renamed over `path`.
    fn write_atomic(&self, path: &Path, contents: &[u8], mode: u32) -> Result<(), CryptoError> {
        let io_err = |source| CryptoError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".tmp-");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(mode));
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut tmp = builder
            .tempfile_in(&self.dir)
            .map_err(|source| CryptoError::Io {
                path: self.dir.clone(),
                source,
            })?;
        tmp.write_all(contents).map_err(io_err)?;
        tmp.as_file().sync_all().map_err(io_err)?;
        tmp.persist(path).map_err(|e| io_err(e.error))?;
        // Make the rename durable; best effort (not every platform can sync a directory).
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// The stored leaf at `cert_path`/`key_path` if it loads and `check` accepts it
/// (`Ok(Ok(identity))`), else why it must be (re)issued (`Ok(Err(reason))`); `Err` only when
/// the file system cannot say whether the leaf exists. Shared by the classical and the FALCON
/// leaves, which differ only in `check`.
fn stored_leaf(
    cert_path: &Path,
    key_path: &Path,
    check: impl FnOnce(&Identity) -> Result<(), String>,
) -> Result<Result<Identity, String>, CryptoError> {
    match cert_path.try_exists() {
        Ok(false) => Ok(Err("none stored yet".to_string())),
        Ok(true) => Ok(match load_identity(cert_path, key_path) {
            Ok(identity) => check(&identity).map(|()| identity),
            Err(e) => Err(e.to_string()),
        }),
        Err(source) => Err(CryptoError::Io {
            path: cert_path.to_path_buf(),
            source,
        }),
    }
}

/// Whether a CA (`what`: "CA", "FALCON CA") is stored: true when both files exist, false
/// when its certificate is missing (a new CA is to be generated; a key left alone by an
/// interrupted generation is logged and replaced). A certificate without its key is an
/// error naming the key file: no `leaf` could be issued, and replacing the CA silently would
/// break the peers that trust `cert_file`.
fn ca_files_present(
    cert_path: &Path,
    key_path: &Path,
    what: &str,
    leaf: &str,
    cert_file: &str,
) -> Result<bool, CryptoError> {
    let exists = |p: &Path| {
        p.try_exists().map_err(|source| CryptoError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let (cert_exists, key_exists) = (exists(cert_path)?, exists(key_path)?);
    if !cert_exists {
        if key_exists {
            tracing::warn!(
                key = %key_path.display(),
                "{what} key without its certificate (interrupted generation?); generating a new {what}"
            );
        }
        return Ok(false);
    }
    if !key_exists {
        return Err(file_err(
            key_path,
            format!(
                "missing, but the {what} certificate {} exists: no {leaf} can be issued without \
                 the {what}'s key; delete {} to let STOQ generate a new {what} (peers that trust \
                 the old one then need the new {cert_file})",
                cert_path.display(),
                cert_path.display()
            ),
        ));
    }
    Ok(true)
}

fn create_private_dir(dir: &Path) -> Result<(), CryptoError> {
    let io_err = |source| CryptoError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        dir = %dir.display(),
                        mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                        "certificate store directory is accessible to other users; 0700 is recommended"
                    );
                }
            }
            Ok(())
        }
        Ok(_) => Err(file_err(dir, "exists but is not a directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
                builder.mode(0o700);
                builder.create(dir).map_err(io_err)?;
                // The umask may only remove bits; make sure the owner has full access.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_err)?;
            }
            #[cfg(not(unix))]
            builder.create(dir).map_err(io_err)?;
            Ok(())
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Fresh TLS material for `names`, in memory only: a new local CA and a leaf it issued
/// (valid [`LEAF_VALIDITY`]), with the CA certificate as the only root. Nothing touches the
/// disk; meant for tests and benchmarks. Both endpoints of a connection must share the
/// same material (or at least its roots).
pub fn ephemeral_material(names: &[&str]) -> Result<TlsMaterial, CryptoError> {
    let ca = LocalCa::generate()?;
    let identity = ca.issue_leaf(names, LEAF_VALIDITY)?;
    Ok(TlsMaterial {
        identity: Some(identity),
        roots: vec![ca.cert],
        require_client_auth: false,
        identity_source: None,
    })
}
