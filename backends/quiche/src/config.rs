//! STOQ's [`TransportConfig`] and [`TlsMaterial`] as quiche `Config`s.
//!
//! TLS is configured in memory: a `boring::ssl::SslContextBuilder` gets the certificate
//! chain, the key and the trust roots as DER, and quiche takes it with
//! `Config::with_boring_ssl_ctx_builder` (quiche's default `boringssl-boring-crate`
//! feature), so no key ever touches the file system. Only these roots are trusted: a
//! context built this way does not load the system's default verify paths.

use boring::pkey::PKey;
use boring::ssl::{SslContextBuilder, SslMethod, SslSignatureAlgorithm, SslVerifyMode};
use boring::x509::X509;
use stoq_core::{
    Capability, CongestionAlgorithm, CongestionImplementation, Error, TlsMaterial, TransportConfig,
};

/// Key-exchange groups, most preferred first: the X25519 + ML-KEM-768 hybrid (as
/// rustls prefers it), then classical fallbacks. BoringSSL 0.20250701 (boring-sys 5.4)
/// knows `X25519MLKEM768` natively (`ssl/ssl_key_share.cc`).
pub const GROUPS: &str = "X25519MLKEM768:X25519:P-256:P-384";

/// Which side a TLS context serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Dials: verifies the server's certificate and name against the trust roots.
    Client,
    /// Accepts: presents the identity; verifies clients only if they must authenticate.
    Server,
}

/// The transport settings this backend gives quiche for a [`TransportConfig`], for
/// drivers that build their quiche configuration themselves (the benchmark's
/// `quiche-direct` row drives quiche through tokio-quiche, whose settings are plain
/// values): both then run identical engine settings. Settings not listed are quiche's
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineSettings {
    /// `set_max_idle_timeout`, in milliseconds.
    pub idle_timeout_ms: u64,
    /// `set_initial_max_data` and `set_max_connection_window`.
    pub connection_window: u64,
    /// `set_initial_max_stream_data_{bidi_local,bidi_remote,uni}` and
    /// `set_max_stream_window`.
    pub stream_window: u64,
    /// `set_initial_max_streams_bidi`.
    pub max_streams_bidi: u64,
    /// `set_initial_max_streams_uni`.
    pub max_streams_uni: u64,
    /// `set_max_recv_udp_payload_size`.
    pub max_recv_udp_payload: usize,
    /// `set_max_send_udp_payload_size`: the pinned payload without MTU discovery, its
    /// ceiling with it.
    pub max_send_udp_payload: usize,
    /// `discover_pmtu`.
    pub discover_pmtu: bool,
    /// `enable_dgram(true, receive queue, send queue)` when `Some((receive, send))`.
    pub datagram_queues: Option<(usize, usize)>,
    /// `set_cc_algorithm`.
    pub cc_algorithm: quiche::CongestionControlAlgorithm,
    /// `enable_pacing`.
    pub pacing: bool,
}

/// The quiche transport settings for `cfg`; a custom congestion controller (or STOQ's own
/// implementation) is refused with `Error::Unsupported`, as at bind.
pub fn engine_settings(cfg: &TransportConfig) -> Result<EngineSettings, Error> {
    let (max_send_udp_payload, discover_pmtu) = if cfg.mtu_discovery {
        (usize::from(cfg.max_udp_payload), true)
    } else {
        (usize::from(cfg.initial_max_udp_payload), false)
    };
    Ok(EngineSettings {
        idle_timeout_ms: u64::try_from(cfg.idle_timeout.as_millis()).unwrap_or(u64::MAX),
        connection_window: cfg.connection_receive_window,
        stream_window: cfg.stream_receive_window,
        max_streams_bidi: cfg.max_concurrent_bidi_streams,
        max_streams_uni: cfg.max_concurrent_uni_streams,
        // Datagrams larger than this are refused by the socket layer anyway.
        max_recv_udp_payload: usize::from(cfg.max_udp_payload),
        max_send_udp_payload,
        discover_pmtu,
        datagram_queues: cfg
            .datagrams
            .enabled
            .then_some((cfg.datagrams.receive_queue, cfg.datagrams.send_queue)),
        cc_algorithm: cc_algorithm(cfg)?,
        // quiche paces only with BBR (gcongestion); `SendInfo.at` is honoured by the driver.
        pacing: true,
    })
}

/// Signature schemes this backend accepts from the peer, most preferred first. BoringSSL's
/// default list leaves Ed25519 out, so a peer with an Ed25519 certificate (which the
/// rustls-based backends accept) failed the handshake with `handshake_failure`; this is
/// BoringSSL's default list with Ed25519 and ML-DSA added.
const VERIFY_ALGORITHMS: &[SslSignatureAlgorithm] = &[
    SslSignatureAlgorithm::ECDSA_SECP256R1_SHA256,
    SslSignatureAlgorithm::RSA_PSS_RSAE_SHA256,
    SslSignatureAlgorithm::RSA_PKCS1_SHA256,
    SslSignatureAlgorithm::ECDSA_SECP384R1_SHA384,
    SslSignatureAlgorithm::RSA_PSS_RSAE_SHA384,
    SslSignatureAlgorithm::RSA_PKCS1_SHA384,
    SslSignatureAlgorithm::RSA_PSS_RSAE_SHA512,
    SslSignatureAlgorithm::RSA_PKCS1_SHA512,
    SslSignatureAlgorithm::ED25519,
    SslSignatureAlgorithm::ML_DSA_44,
    SslSignatureAlgorithm::ML_DSA_65,
    SslSignatureAlgorithm::ML_DSA_87,
];

/// The BoringSSL context this backend gives quiche for `tls` and `role`: identity, trust
/// roots, verification mode and the key-exchange groups ([`GROUPS`]). Public for drivers
/// that create quiche configurations themselves (the benchmark's `quiche-direct` row).
pub fn ssl_context_builder(tls: &TlsMaterial, role: Role) -> Result<SslContextBuilder, Error> {
    let mut ctx = ssl_context(tls, role)?;
    ctx.set_curves_list(GROUPS)
        .map_err(|e| Error::Tls(format!("BoringSSL rejected the groups {GROUPS}: {e}")))?;
    ctx.set_verify_algorithm_prefs(VERIFY_ALGORITHMS)
        .map_err(|e| Error::Tls(format!("BoringSSL rejected the signature algorithms: {e}")))?;
    Ok(ctx)
}

/// Builds the quiche configuration for connections of `role`.
pub(crate) fn quiche_config(
    cfg: &TransportConfig,
    tls: &TlsMaterial,
    role: Role,
) -> Result<quiche::Config, Error> {
    let ctx = ssl_context_builder(tls, role)?;
    let mut c = quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, ctx)
        .map_err(|e| Error::Tls(format!("quiche rejected the TLS context: {e}")))?;
    let alpn: Vec<&[u8]> = cfg.alpn.iter().map(|p| p.as_bytes()).collect();
    c.set_application_protos(&alpn)
        .map_err(|e| Error::config("alpn", format!("quiche rejected it: {e}")))?;

    let s = engine_settings(cfg)?;
    c.set_max_idle_timeout(s.idle_timeout_ms);
    c.set_initial_max_data(s.connection_window);
    c.set_max_connection_window(s.connection_window);
    c.set_initial_max_stream_data_bidi_local(s.stream_window);
    c.set_initial_max_stream_data_bidi_remote(s.stream_window);
    c.set_initial_max_stream_data_uni(s.stream_window);
    c.set_max_stream_window(s.stream_window);
    c.set_initial_max_streams_bidi(s.max_streams_bidi);
    c.set_initial_max_streams_uni(s.max_streams_uni);
    c.set_max_recv_udp_payload_size(s.max_recv_udp_payload);
    c.discover_pmtu(s.discover_pmtu);
    c.set_max_send_udp_payload_size(s.max_send_udp_payload);
    if let Some((receive, send)) = s.datagram_queues {
        c.enable_dgram(true, receive, send);
    }
    c.set_cc_algorithm(s.cc_algorithm);
    c.enable_pacing(s.pacing);
    Ok(c)
}

/// The engine congestion controller for `cfg`, or the typed refusal STOQ's contracts
/// expect: quiche 0.30 has no pluggable congestion control (its
/// `CongestionControlAlgorithm` is a closed enum of Reno, CUBIC and BBRv2), so neither a
/// user controller nor STOQ's own implementations can run inside it.
pub(crate) fn cc_algorithm(
    cfg: &TransportConfig,
) -> Result<quiche::CongestionControlAlgorithm, Error> {
    if cfg.congestion.custom.is_some()
        || cfg.congestion.implementation == CongestionImplementation::Stoq
    {
        return Err(Error::Unsupported(Capability::CustomCongestionControl));
    }
    Ok(match cfg.congestion.algorithm {
        CongestionAlgorithm::NewReno => quiche::CongestionControlAlgorithm::Reno,
        CongestionAlgorithm::Cubic => quiche::CongestionControlAlgorithm::CUBIC,
        CongestionAlgorithm::Bbr => quiche::CongestionControlAlgorithm::Bbr2Gcongestion,
        other => {
            return Err(Error::config(
                "congestion.algorithm",
                format!("{other:?} has no quiche implementation"),
            ))
        }
    })
}

/// `der` re-encoded as a PKCS#8 v1 `PrivateKeyInfo` when it is a v2 one (with the public
/// key); None when it is not PKCS#8 v2.
fn pkcs8_v1(der: &[u8]) -> Option<Vec<u8>> {
    use pkcs8::der::{Decode, Encode};
    let mut info = pkcs8::PrivateKeyInfo::from_der(der).ok()?;
    info.public_key?;
    info.public_key = None;
    info.to_der().ok()
}

fn tls_err(what: &str) -> impl Fn(boring::error::ErrorStack) -> Error + '_ {
    move |e| Error::Tls(format!("{what}: {e}"))
}

/// A BoringSSL context with the identity, roots and verification mode for `role`.
fn ssl_context(tls: &TlsMaterial, role: Role) -> Result<SslContextBuilder, Error> {
    let mut b = SslContextBuilder::new(SslMethod::tls())
        .map_err(tls_err("creating a BoringSSL context"))?;
    let identity = tls.identity.as_ref();
    if identity.is_some_and(|id| stoq_crypto::falcon::is_falcon_key(&id.key)) {
        // BoringSSL knows no FALCON signature scheme: it could neither sign the handshake
        // with this key nor verify a FALCON peer.
        return Err(Error::Unsupported(stoq_core::Capability::FalconInHandshake));
    }
    if role == Role::Server && identity.is_none() {
        return Err(Error::Tls(
            "a server endpoint needs an identity (certificate chain and private key)".into(),
        ));
    }
    if let Some(id) = identity {
        let (leaf, rest) = id
            .cert_chain
            .split_first()
            .ok_or_else(|| Error::Tls("the certificate chain is empty".into()))?;
        let leaf = X509::from_der(leaf).map_err(tls_err("parsing the leaf certificate"))?;
        b.set_certificate(&leaf)
            .map_err(tls_err("using the leaf certificate"))?;
        for (i, der) in rest.iter().enumerate() {
            let cert = X509::from_der(der)
                .map_err(|e| Error::Tls(format!("parsing chain certificate {}: {e}", i + 1)))?;
            b.add_extra_chain_cert(cert)
                .map_err(tls_err("adding a chain certificate"))?;
        }
        // PKCS#8, SEC1 and PKCS#1 are all detected (d2i_AutoPrivateKey). BoringSSL refuses
        // PKCS#8 v2 (RFC 5958, public key included), which is how rcgen/aws-lc-rs write
        // Ed25519 keys: such a key is re-encoded as v1 (the same secret without the public
        // key) and parsed again.
        let key = PKey::private_key_from_der(id.key.secret_der())
            .or_else(|e| match pkcs8_v1(id.key.secret_der()) {
                Some(v1) => PKey::private_key_from_der(&v1),
                None => Err(e),
            })
            .map_err(tls_err("parsing the private key"))?;
        b.set_private_key(&key)
            .map_err(tls_err("using the private key"))?;
        b.check_private_key().map_err(|e| {
            Error::Tls(format!(
                "the private key does not belong to the leaf certificate: {e}"
            ))
        })?;
    }
    for (i, der) in tls.roots.iter().enumerate() {
        let root =
            X509::from_der(der).map_err(|e| Error::Tls(format!("parsing trust root {i}: {e}")))?;
        b.cert_store_mut()
            .add_cert(root)
            .map_err(|e| Error::Tls(format!("adding trust root {i}: {e}")))?;
    }
    match role {
        Role::Client => {
            if tls.roots.is_empty() {
                return Err(Error::config(
                    "tls.roots",
                    "an endpoint that dials needs at least one trust root",
                ));
            }
            // The server name is checked too: quiche sets it as SNI and as the
            // expected host (X509_VERIFY_PARAM_set1_host) when dialling.
            b.set_verify(SslVerifyMode::PEER);
        }
        Role::Server if tls.require_client_auth => {
            if tls.roots.is_empty() {
                return Err(Error::config(
                    "tls.roots",
                    "requiring client certificates needs at least one trust root",
                ));
            }
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        Role::Server => b.set_verify(SslVerifyMode::NONE),
    }
    Ok(b)
}
