//! Post-handshake FALCON authentication: mutual FALCON authentication on every engine,
//! including those whose TLS stack cannot carry a FALCON certificate (quiche's BoringSSL,
//! s2n-tls).
//!
//! The TLS handshake runs as usual (classical certificates, hybrid post-quantum key
//! exchange). Right after it, each side proves possession of its FALCON key **for this
//! connection**: it signs a transcript built from the TLS exporter (RFC 8446 section 7.5,
//! [`AUTH_EXPORTER_LABEL`], context = role byte ‖ ALPN) and sends its FALCON certificate
//! chain and the signature on a reserved stream. The peer checks the chain against its
//! FALCON trust anchors (and, on the client, against the server name it dialled), the
//! signature against the leaf's key, and answers with a one-byte verdict.
//!
//! # Wire format (version 1)
//!
//! Each side opens **its first unidirectional stream** for it, before any other stream:
//! client-initiated uni stream 2 ([`CLIENT_AUTH_STREAM`]), server-initiated uni stream 3
//! ([`SERVER_AUTH_STREAM`]). The peer's stream is identified by its ID, never by arrival
//! order. On it, in order:
//!
//! ```text
//! header  := "STQF" (4) | version u8 = 1 | body length u32 BE    (AUTH_HEADER_LEN = 9 bytes)
//! body    := scheme u16 BE                 FALCON TLS code point, e.g. 0xfedc falconpadded512
//!            | chain length u8 (1..=8)      leaf first
//!            | { cert length u32 BE | DER } per certificate
//!            | signature length u16 BE | signature
//! verdict := 0x01 (AUTH_ACCEPTED), sent only after the peer's message verified; then FIN
//! ```
//!
//! The body is at most [`MAX_AUTH_MESSAGE`] bytes; a longer announced length is refused
//! before anything more is read. The whole exchange is bounded by
//! [`FalconAuthConfig::timeout`] ([`DEFAULT_AUTH_TIMEOUT`]).
//!
//! # What is signed
//!
//! [`signed_transcript`]: [`AUTH_DOMAIN`] ‖ role of the signer (`0x00` client, `0x01`
//! server) ‖ ALPN length u16 ‖ ALPN ‖ exporter length u8 ‖ exporter, where the exporter is
//! [`AUTH_EXPORTER_LEN`] bytes of `export_keying_material(AUTH_EXPORTER_LABEL, role ‖ ALPN)`.
//! The exporter is unique to the TLS session, so a signature cannot be moved to another
//! connection; the role and ALPN are in both the exporter context and the transcript, so a
//! client's signature cannot be replayed as the server's, nor used under another protocol.
//!
//! # Failure
//!
//! The side that finds a problem closes the connection with
//! [`stoq_core::FALCON_AUTH_CLOSE_CODE`] and the reason
//! `"FALCON authentication failed: <failure>"`, and reports
//! [`ConnectionError::FalconAuth`] with the [`FalconAuthFailure`] kind. The peer sees
//! [`ConnectionError::ApplicationClosed`] with that code. A peer that sends nothing (for
//! instance one that does not use the mechanism) fails with
//! [`FalconAuthFailure::TimedOut`] after the timeout.
//!
//! # Nothing reaches the application unverified
//!
//! [`FalconAuthTransport::connect`] and [`FalconAuthTransport::accept`] hand out a
//! connection only once both directions are verified (this side verified the peer and the
//! peer's verdict arrived). Until then the application holds no handle, so the peer's
//! application streams and datagrams that arrive early stay queued in the engine and are
//! delivered only after verification (discarded with the connection if it fails). A peer
//! unidirectional stream other than the reserved one where the reserved one is expected is
//! **rejected** ([`FalconAuthFailure::Malformed`]). The reserved streams are hidden: the
//! application's first `open_uni`/`accept_uni` are streams 6 and 7.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::CertificateError;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use stoq_core::{
    Capabilities, Capability, Connection, ConnectionError, ConnectionHandle, ConnectionStats,
    DatagramError, EndpointStats, Error, FalconAuthFailure, Identity, RecvStream, SendStream, Side,
    StreamError, StreamId, Transport, FALCON_AUTH_CLOSE_CODE,
};
use tokio::sync::{mpsc, Mutex, Semaphore};

use super::keys::SigningKeyCache;
use super::{
    certificate_public_key, FalconAlgorithm, FalconLeaf, FalconPublicKey, FalconSecretKey,
};
use crate::config::root_store;
use crate::CryptoError;

/// The TLS exporter label both sides derive the signed value with.
pub const AUTH_EXPORTER_LABEL: &[u8] = b"EXPORTER-STOQ-FALCON-AUTH";

/// Bytes of exported keying material in the transcript.
pub const AUTH_EXPORTER_LEN: usize = 64;

/// The domain-separation prefix of every signed transcript (it ends in a NUL byte).
pub const AUTH_DOMAIN: &[u8] = b"STOQ FALCON post-handshake authentication v1\0";

/// The first four bytes of every authentication message.
pub const AUTH_MAGIC: [u8; 4] = *b"STQF";

/// The message format version this module writes and reads.
pub const AUTH_VERSION: u8 = 1;

/// Length of the message header: magic, version and body length.
pub const AUTH_HEADER_LEN: usize = 9;

/// The largest message body accepted (64 KiB): a FALCON-1024 leaf and signature need about
/// 5 KB, so this leaves room for intermediates while bounding what a peer can make us buffer.
pub const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// The most certificates a message may carry.
pub const MAX_CHAIN_LEN: usize = 8;

/// The verdict byte a side sends once the peer's message verified.
pub const AUTH_ACCEPTED: u8 = 0x01;

/// How long the whole exchange may take unless [`FalconAuthConfig::with_timeout`] says
/// otherwise.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's authentication stream: the first client-initiated unidirectional stream.
pub const CLIENT_AUTH_STREAM: StreamId = StreamId(2);

/// The server's authentication stream: the first server-initiated unidirectional stream.
pub const SERVER_AUTH_STREAM: StreamId = StreamId(3);

/// How many incoming connections may be authenticating at once on one
/// [`FalconAuthTransport`] (more wait in the engine's accept queue).
const MAX_PENDING_AUTH: usize = 128;

fn role_byte(side: Side) -> u8 {
    match side {
        Side::Client => 0x00,
        Side::Server => 0x01,
    }
}

fn other_side(side: Side) -> Side {
    match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

/// The reserved stream of `side`.
pub fn auth_stream(side: Side) -> StreamId {
    match side {
        Side::Client => CLIENT_AUTH_STREAM,
        Side::Server => SERVER_AUTH_STREAM,
    }
}

/// The bytes `signer` signs: [`AUTH_DOMAIN`] ‖ role ‖ ALPN length u16 BE ‖ ALPN ‖ exporter
/// length u8 ‖ `exporter`. Pure: the same inputs give the same bytes, and any different
/// role, ALPN or exporter gives different bytes.
///
/// # Panics
/// If `alpn` is longer than 65,535 bytes or `exporter` than 255 (TLS allows neither).
pub fn signed_transcript(exporter: &[u8], signer: Side, alpn: &[u8]) -> Vec<u8> {
    let alpn_len = u16::try_from(alpn.len()).expect("an ALPN protocol is at most 255 bytes");
    let exporter_len = u8::try_from(exporter.len()).expect("exporter value too long");
    let mut out = Vec::with_capacity(AUTH_DOMAIN.len() + 4 + alpn.len() + exporter.len());
    out.extend_from_slice(AUTH_DOMAIN);
    out.push(role_byte(signer));
    out.extend_from_slice(&alpn_len.to_be_bytes());
    out.extend_from_slice(alpn);
    out.push(exporter_len);
    out.extend_from_slice(exporter);
    out
}

/// The exporter value `signer` signs on `conn`: [`AUTH_EXPORTER_LEN`] bytes exported with
/// [`AUTH_EXPORTER_LABEL`] and context role ‖ ALPN (the ALPN `conn` agreed, empty if none).
/// Both sides of a connection compute the same value for the same `signer`.
pub fn exporter_value(
    conn: &dyn Connection,
    signer: Side,
) -> Result<[u8; AUTH_EXPORTER_LEN], Error> {
    let alpn = conn.alpn().unwrap_or_default();
    let mut context = Vec::with_capacity(1 + alpn.len());
    context.push(role_byte(signer));
    context.extend_from_slice(&alpn);
    let mut out = [0u8; AUTH_EXPORTER_LEN];
    conn.export_keying_material(&mut out, AUTH_EXPORTER_LABEL, &context)?;
    Ok(out)
}

/// [`signed_transcript`] of [`exporter_value`] on `conn` for `signer`, with `conn`'s ALPN.
pub fn connection_transcript(conn: &dyn Connection, signer: Side) -> Result<Vec<u8>, Error> {
    let exporter = exporter_value(conn, signer)?;
    Ok(signed_transcript(
        &exporter,
        signer,
        &conn.alpn().unwrap_or_default(),
    ))
}

/// One side's authentication message: its certificate chain and its signature over the
/// connection's transcript. The codec checks structure only; verification is separate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthMessage {
    /// The signature's TLS 1.3 code point (a FALCON one, e.g. `0xfedc`, to be accepted).
    pub scheme: u16,
    /// Certificates, leaf first (1 to [`MAX_CHAIN_LEN`]).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The signature over [`signed_transcript`].
    pub signature: Vec<u8>,
}

fn malformed(detail: impl Into<String>) -> CryptoError {
    CryptoError::MalformedAuthMessage {
        detail: detail.into(),
    }
}

impl AuthMessage {
    /// The message as sent: header and body. Encodes any value, even ones
    /// [`decode`](Self::decode) refuses (tests build bad messages with it), except that
    /// lengths are truncated to their fields' widths.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.scheme.to_be_bytes());
        body.push(self.cert_chain.len() as u8);
        for cert in &self.cert_chain {
            body.extend_from_slice(&(cert.len() as u32).to_be_bytes());
            body.extend_from_slice(cert);
        }
        body.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        body.extend_from_slice(&self.signature);
        let mut out = Vec::with_capacity(AUTH_HEADER_LEN + body.len());
        out.extend_from_slice(&AUTH_MAGIC);
        out.push(AUTH_VERSION);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses a header and returns the body length it announces.
    /// [`CryptoError::MalformedAuthMessage`] for another magic or version,
    /// [`CryptoError::AuthMessageTooLarge`] above [`MAX_AUTH_MESSAGE`].
    pub fn parse_header(header: &[u8; AUTH_HEADER_LEN]) -> Result<usize, CryptoError> {
        if header[..4] != AUTH_MAGIC {
            return Err(malformed(
                "not a STOQ FALCON authentication message (wrong magic)",
            ));
        }
        if header[4] != AUTH_VERSION {
            return Err(malformed(format!(
                "version {} (this side speaks version {AUTH_VERSION})",
                header[4]
            )));
        }
        let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
        if len > MAX_AUTH_MESSAGE {
            return Err(CryptoError::AuthMessageTooLarge {
                size: len,
                max: MAX_AUTH_MESSAGE,
            });
        }
        Ok(len)
    }

    /// Parses a whole message (header and body, nothing after it).
    pub fn decode(bytes: &[u8]) -> Result<AuthMessage, CryptoError> {
        let header: &[u8; AUTH_HEADER_LEN] = bytes
            .get(..AUTH_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| malformed(format!("{} bytes, shorter than the header", bytes.len())))?;
        let len = Self::parse_header(header)?;
        let body = &bytes[AUTH_HEADER_LEN..];
        if body.len() != len {
            return Err(malformed(format!(
                "the header announces {len} body bytes, {} follow",
                body.len()
            )));
        }
        Self::decode_body(body)
    }

    /// Parses a body (what follows the header). [`CryptoError::MalformedAuthMessage`] for
    /// truncated fields, an empty or too long chain, an empty certificate or signature, or
    /// trailing bytes; [`CryptoError::AuthMessageTooLarge`] above [`MAX_AUTH_MESSAGE`].
    pub fn decode_body(body: &[u8]) -> Result<AuthMessage, CryptoError> {
        if body.len() > MAX_AUTH_MESSAGE {
            return Err(CryptoError::AuthMessageTooLarge {
                size: body.len(),
                max: MAX_AUTH_MESSAGE,
            });
        }
        let mut r = Reader(body);
        let scheme = u16::from_be_bytes(r.array("signature scheme")?);
        let [count] = r.array::<1>("chain length")?;
        let count = count as usize;
        if count == 0 || count > MAX_CHAIN_LEN {
            return Err(malformed(format!(
                "{count} certificates (1 to {MAX_CHAIN_LEN} allowed)"
            )));
        }
        let mut cert_chain = Vec::with_capacity(count);
        for i in 0..count {
            let len = u32::from_be_bytes(r.array("certificate length")?) as usize;
            if len == 0 {
                return Err(malformed(format!("certificate #{i} is empty")));
            }
            let der = r.take(len, "certificate")?;
            cert_chain.push(CertificateDer::from(der.to_vec()));
        }
        let len = u16::from_be_bytes(r.array("signature length")?) as usize;
        if len == 0 {
            return Err(malformed("the signature is empty"));
        }
        let signature = r.take(len, "signature")?.to_vec();
        if !r.0.is_empty() {
            return Err(malformed(format!(
                "{} trailing bytes after the signature",
                r.0.len()
            )));
        }
        Ok(AuthMessage {
            scheme,
            cert_chain,
            signature,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CryptoError> {
        if self.0.len() < n {
            return Err(malformed(format!(
                "truncated {what}: {n} bytes needed, {} left",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CryptoError> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }
}

/// The peer's FALCON identity, verified for this connection.
#[derive(Debug, Clone, PartialEq)]
pub struct FalconPeer {
    /// The chain the peer sent, leaf first (DER), verified up to a trust anchor.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's FALCON public key, which signed this connection's transcript.
    pub public_key: FalconPublicKey,
}

impl FalconPeer {
    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.cert_chain[0]
    }

    /// The leaf key's algorithm.
    pub fn algorithm(&self) -> FalconAlgorithm {
        self.public_key.algorithm()
    }
}

/// This side's FALCON identity and what it trusts, for post-handshake authentication.
/// Cheap to clone (verifiers and keys are shared).
#[derive(Clone)]
pub struct FalconAuthConfig {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<FalconSecretKey>,
    cache: Arc<SigningKeyCache>,
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    timeout: Duration,
}

impl fmt::Debug for FalconAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("FalconAuthConfig")
            .field("algorithm", &self.key.algorithm())
            .field("chain_len", &self.chain.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn verifier_err(e: impl fmt::Display) -> CryptoError {
    CryptoError::Rustls(rustls::Error::General(format!("FALCON trust anchors: {e}")))
}

impl FalconAuthConfig {
    /// This side presents `identity` (a FALCON leaf first, optional intermediates, and the
    /// leaf's FALCON PKCS#8 key, e.g. [`FalconLeaf::identity`]) and accepts peers whose
    /// FALCON chains lead to one of `trust_anchors` (FALCON CA certificates).
    ///
    /// Errors: [`CryptoError::NoIdentity`] for an empty chain, [`CryptoError::WrongAlgorithm`]
    /// / [`CryptoError::MalformedDer`] if the key or leaf is not FALCON,
    /// [`CryptoError::KeyMismatch`] if the key is not the leaf's, [`CryptoError::NoRoots`] /
    /// [`CryptoError::BadRoot`] for missing or unusable anchors. The identity's own dates
    /// are not checked here: the peer checks them.
    pub fn new(
        identity: &Identity,
        trust_anchors: &[CertificateDer<'static>],
    ) -> Result<FalconAuthConfig, CryptoError> {
        let leaf = identity.cert_chain.first().ok_or(CryptoError::NoIdentity)?;
        let key = match &*identity.key {
            PrivateKeyDer::Pkcs8(p) => FalconSecretKey::from_pkcs8_der(p.secret_pkcs8_der())?,
            _ => {
                return Err(CryptoError::WrongAlgorithm {
                    what: "FALCON authentication key",
                    found: "a SEC1 or PKCS#1 key".into(),
                    expected: "a FALCON PKCS#8 key".into(),
                })
            }
        };
        if &certificate_public_key(leaf)? != key.public_key() {
            return Err(CryptoError::KeyMismatch {
                cert: "the FALCON authentication leaf".into(),
                key: "the FALCON authentication key".into(),
            });
        }
        let roots = Arc::new(root_store(trust_anchors)?);
        let provider = super::falcon_provider();
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(verifier_err)?;
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(verifier_err)?;
        Ok(FalconAuthConfig {
            chain: identity.cert_chain.clone(),
            key: Arc::new(key),
            cache: Arc::default(),
            server_verifier,
            client_verifier,
            timeout: DEFAULT_AUTH_TIMEOUT,
        })
    }

    /// [`new`](Self::new) with a [`FalconLeaf`] (its certificate alone as the chain).
    pub fn from_leaf(
        leaf: &FalconLeaf,
        trust_anchors: &[CertificateDer<'static>],
    ) -> Result<FalconAuthConfig, CryptoError> {
        Self::new(&leaf.identity(), trust_anchors)
    }

    /// The same configuration with the exchange bounded by `timeout` instead of
    /// [`DEFAULT_AUTH_TIMEOUT`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The bound on the whole exchange; exceeding it is [`FalconAuthFailure::TimedOut`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The chain this side presents, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Runs the exchange on a freshly handshaken **client** connection `conn` (no stream
    /// opened yet): the server's chain must lead to a trust anchor and be valid for
    /// `server_name` (the name dialled). Returns the authenticated connection once both
    /// directions are verified. On failure the connection is closed with
    /// [`FALCON_AUTH_CLOSE_CODE`] and the error is [`ConnectionError::FalconAuth`]; if the
    /// connection ended otherwise (e.g. the server rejected this side), the error is what
    /// ended it, e.g. [`ConnectionError::ApplicationClosed`] with that code.
    pub async fn authenticate_client_side(
        &self,
        conn: ConnectionHandle,
        server_name: &str,
    ) -> Result<Arc<FalconAuthConnection>, ConnectionError> {
        let name = match ServerName::try_from(server_name.to_string()) {
            Ok(n) => n,
            Err(e) => {
                let failure = (
                    FalconAuthFailure::Local,
                    format!("server name {server_name:?} is not usable: {e}"),
                );
                return Err(self.fail(&conn, failure));
            }
        };
        self.run(conn, Side::Client, Some(name)).await
    }

    /// Runs the exchange on a freshly accepted **server** connection `conn` (no stream
    /// opened yet): the client's chain must lead to a trust anchor (any name). Results as
    /// [`authenticate_client_side`](Self::authenticate_client_side).
    pub async fn authenticate_server_side(
        &self,
        conn: ConnectionHandle,
    ) -> Result<Arc<FalconAuthConnection>, ConnectionError> {
        self.run(conn, Side::Server, None).await
    }

    async fn run(
        &self,
        conn: ConnectionHandle,
        side: Side,
        server_name: Option<ServerName<'static>>,
    ) -> Result<Arc<FalconAuthConnection>, ConnectionError> {
        if conn.side() != side {
            let failure = (
                FalconAuthFailure::Local,
                format!("a {:?} connection given to the {side:?} side", conn.side()),
            );
            return Err(self.fail(&conn, failure));
        }
        // The streams outlive the exchange so that, on failure, the connection is closed
        // before they are dropped: dropping an unfinished stream resets it, and a peer
        // seeing that reset before the close would report a malformed exchange instead of
        // this side's verdict.
        let mut streams = AuthStreams::default();
        let outcome = tokio::time::timeout(
            self.timeout,
            self.exchange(&conn, server_name.as_ref(), &mut streams),
        )
        .await;
        let failure = match outcome {
            Ok(Ok(peer)) => return Ok(Arc::new(FalconAuthConnection { inner: conn, peer })),
            Ok(Err(Fail::Ended(e))) => return Err(e),
            Ok(Err(Fail::Auth(kind, detail))) => (kind, detail),
            Err(_) => (
                FalconAuthFailure::TimedOut,
                format!(
                    "the peer did not complete FALCON authentication within {:?}",
                    self.timeout
                ),
            ),
        };
        let e = self.fail(&conn, failure);
        drop(streams);
        Err(e)
    }

    fn fail(
        &self,
        conn: &ConnectionHandle,
        (failure, detail): (FalconAuthFailure, String),
    ) -> ConnectionError {
        tracing::debug!(peer = %conn.remote_addr(), %failure, %detail, "FALCON post-handshake authentication failed");
        let reason = format!("FALCON authentication failed: {failure}");
        conn.close(FALCON_AUTH_CLOSE_CODE, reason.as_bytes());
        ConnectionError::FalconAuth { failure, detail }
    }

    async fn exchange(
        &self,
        conn: &ConnectionHandle,
        server_name: Option<&ServerName<'static>>,
        streams: &mut AuthStreams,
    ) -> Result<FalconPeer, Fail> {
        let side = conn.side();
        let peer_side = other_side(side);
        let transcript = connection_transcript(&**conn, side).map_err(local)?;
        let signature = self
            .key
            .sign_cached(&self.cache, &transcript)
            .map_err(local)?;
        let message = AuthMessage {
            scheme: self.key.algorithm().params().tls_scheme,
            cert_chain: self.chain.clone(),
            signature,
        }
        .encode();

        let send = streams
            .send
            .insert(conn.open_uni().await.map_err(Fail::Ended)?);
        if send.id() != auth_stream(side) {
            return Err(Fail::Auth(
                FalconAuthFailure::Local,
                format!(
                    "this side's first unidirectional stream is {}, not {}: FALCON \
                     authentication must run before any stream is opened",
                    send.id(),
                    auth_stream(side)
                ),
            ));
        }
        send.write_all(&message).await.map_err(stream_fail)?;

        let recv = streams
            .recv
            .insert(conn.accept_uni().await.map_err(Fail::Ended)?);
        if recv.id() != auth_stream(peer_side) {
            return Err(Fail::Auth(
                FalconAuthFailure::Malformed,
                format!(
                    "the peer opened stream {} where its authentication stream {} was expected",
                    recv.id(),
                    auth_stream(peer_side)
                ),
            ));
        }
        let mut header = [0u8; AUTH_HEADER_LEN];
        read_exact(recv, &mut header, "message header").await?;
        let len = AuthMessage::parse_header(&header).map_err(crypto_fail)?;
        let mut body = vec![0u8; len];
        read_exact(recv, &mut body, "message body").await?;
        let peer_message = AuthMessage::decode_body(&body).map_err(crypto_fail)?;
        let peer_transcript = connection_transcript(&**conn, peer_side).map_err(local)?;
        let peer = self
            .verify(&peer_message, &peer_transcript, server_name)
            .map_err(|(k, d)| Fail::Auth(k, d))?;

        send.write_all(&[AUTH_ACCEPTED])
            .await
            .map_err(stream_fail)?;
        send.finish().await.map_err(stream_fail)?;

        let mut verdict = [0u8; 1];
        read_exact(recv, &mut verdict, "verdict").await?;
        if verdict[0] != AUTH_ACCEPTED {
            return Err(Fail::Auth(
                FalconAuthFailure::Malformed,
                format!("unexpected verdict byte {:#04x}", verdict[0]),
            ));
        }
        let mut rest = [0u8; 1];
        match recv.read(&mut rest).await {
            Ok(0) => {}
            Ok(_) => {
                return Err(Fail::Auth(
                    FalconAuthFailure::Malformed,
                    "bytes after the verdict on the authentication stream".into(),
                ))
            }
            Err(e) => return Err(stream_fail(e)),
        }
        Ok(peer)
    }

    /// Checks a peer's message against `transcript` (the transcript the peer must have
    /// signed, see [`connection_transcript`]): the leaf's key is FALCON and of the
    /// message's algorithm, the chain leads to a trust anchor (and, when `server_name` is
    /// given, the leaf is a server certificate valid for it; otherwise a client
    /// certificate), and the signature verifies. Errors give the failed check.
    pub fn verify(
        &self,
        message: &AuthMessage,
        transcript: &[u8],
        server_name: Option<&ServerName<'_>>,
    ) -> Result<FalconPeer, (FalconAuthFailure, String)> {
        let leaf = message.cert_chain.first().ok_or_else(|| {
            (
                FalconAuthFailure::Malformed,
                "the message carries no certificate".to_string(),
            )
        })?;
        let public_key = certificate_public_key(leaf).map_err(|e| match e {
            CryptoError::MalformedDer { .. } => (FalconAuthFailure::Malformed, e.to_string()),
            _ => (FalconAuthFailure::WrongAlgorithm, e.to_string()),
        })?;
        let scheme = rustls::SignatureScheme::from(message.scheme);
        let algorithm = FalconAlgorithm::from_tls_scheme(scheme).ok_or_else(|| {
            (
                FalconAuthFailure::WrongAlgorithm,
                format!("signature scheme {scheme:?} is not a FALCON scheme"),
            )
        })?;
        if algorithm != public_key.algorithm() {
            return Err((
                FalconAuthFailure::WrongAlgorithm,
                format!(
                    "the message names {algorithm}, the certificate's key is {}",
                    public_key.algorithm()
                ),
            ));
        }
        let now = UnixTime::now();
        let intermediates = &message.cert_chain[1..];
        let chain_result = match server_name {
            Some(name) => self
                .server_verifier
                .verify_server_cert(leaf, intermediates, name, &[], now)
                .map(drop),
            None => self
                .client_verifier
                .verify_client_cert(leaf, intermediates, now)
                .map(drop),
        };
        chain_result.map_err(certificate_failure)?;
        public_key
            .verify_as(algorithm, transcript, &message.signature)
            .map_err(|e| {
                (
                    FalconAuthFailure::BadSignature,
                    format!("the transcript signature does not verify ({e})"),
                )
            })?;
        Ok(FalconPeer {
            cert_chain: message.cert_chain.clone(),
            public_key,
        })
    }
}

fn certificate_failure(e: rustls::Error) -> (FalconAuthFailure, String) {
    let kind = match &e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => FalconAuthFailure::CertificateExpired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                FalconAuthFailure::WrongName
            }
            CertificateError::BadEncoding => FalconAuthFailure::Malformed,
            _ => FalconAuthFailure::UntrustedCertificate,
        },
        _ => FalconAuthFailure::UntrustedCertificate,
    };
    (kind, format!("the peer's FALCON certificate: {e}"))
}

/// This side's and the peer's authentication streams, once opened.
#[derive(Default)]
struct AuthStreams {
    send: Option<SendStream>,
    recv: Option<RecvStream>,
}

/// Why an exchange stopped.
enum Fail {
    /// The connection ended (the error that ended it); nothing to close.
    Ended(ConnectionError),
    /// A check failed on this side: close with the code.
    Auth(FalconAuthFailure, String),
}

fn local(e: impl fmt::Display) -> Fail {
    Fail::Auth(FalconAuthFailure::Local, e.to_string())
}

fn crypto_fail(e: CryptoError) -> Fail {
    Fail::Auth(FalconAuthFailure::Malformed, e.to_string())
}

fn stream_fail(e: StreamError) -> Fail {
    match e {
        StreamError::ConnectionLost(e) => Fail::Ended(e),
        other => Fail::Auth(
            FalconAuthFailure::Malformed,
            format!("authentication stream: {other}"),
        ),
    }
}

async fn read_exact(recv: &mut RecvStream, buf: &mut [u8], what: &str) -> Result<(), Fail> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = recv.read(&mut buf[filled..]).await.map_err(stream_fail)?;
        if n == 0 {
            return Err(Fail::Auth(
                FalconAuthFailure::Malformed,
                format!(
                    "the authentication stream ended after {filled} of {} bytes of the {what}",
                    buf.len()
                ),
            ));
        }
        filled += n;
    }
    Ok(())
}

/// A connection whose peer passed post-handshake FALCON authentication. Everything is the
/// underlying connection's, except that the reserved authentication streams are gone
/// (consumed) and [`peer_identity`](Connection::peer_identity) is the peer's **verified
/// FALCON chain** (the TLS chain is [`tls_peer_identity`](Self::tls_peer_identity)).
#[derive(Debug)]
pub struct FalconAuthConnection {
    inner: ConnectionHandle,
    peer: FalconPeer,
}

impl FalconAuthConnection {
    /// The peer's verified FALCON identity.
    pub fn falcon_peer(&self) -> &FalconPeer {
        &self.peer
    }

    /// The certificate chain the peer presented in the TLS handshake (classical), if any.
    pub fn tls_peer_identity(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.inner.peer_identity()
    }

    /// The underlying connection.
    pub fn inner(&self) -> &ConnectionHandle {
        &self.inner
    }
}

#[async_trait]
impl Connection for FalconAuthConnection {
    async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        self.inner.open_bi().await
    }
    async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        self.inner.open_uni().await
    }
    async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        self.inner.accept_bi().await
    }
    async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        self.inner.accept_uni().await
    }
    fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        self.inner.send_datagram(data)
    }
    async fn recv_datagram(&self) -> Result<Bytes, DatagramError> {
        self.inner.recv_datagram().await
    }
    fn max_datagram_size(&self) -> Option<usize> {
        self.inner.max_datagram_size()
    }
    fn close(&self, code: u64, reason: &[u8]) {
        self.inner.close(code, reason)
    }
    async fn closed(&self) -> ConnectionError {
        self.inner.closed().await
    }
    fn close_reason(&self) -> Option<ConnectionError> {
        self.inner.close_reason()
    }
    fn stats(&self) -> ConnectionStats {
        self.inner.stats()
    }
    fn remote_addr(&self) -> SocketAddr {
        self.inner.remote_addr()
    }
    fn side(&self) -> Side {
        self.inner.side()
    }
    fn alpn(&self) -> Option<Vec<u8>> {
        self.inner.alpn()
    }
    /// The peer's verified FALCON chain, leaf first.
    fn peer_identity(&self) -> Option<Vec<CertificateDer<'static>>> {
        Some(self.peer.cert_chain.clone())
    }
    fn export_keying_material(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), Error> {
        self.inner.export_keying_material(out, label, context)
    }
    fn stable_id(&self) -> u64 {
        self.inner.stable_id()
    }
}

/// One incoming connection whose authentication failed, as
/// [`FalconAuthTransport::accept_attempt`] reports it.
#[derive(Debug, Clone)]
pub struct AuthRejection {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// Why: [`ConnectionError::FalconAuth`] if this side rejected the peer, otherwise what
    /// ended the connection (e.g. [`ConnectionError::ApplicationClosed`] with
    /// [`FALCON_AUTH_CLOSE_CODE`] when the peer rejected this side).
    pub error: ConnectionError,
}

/// The result of one incoming connection's authentication.
pub type AuthAttempt = Result<Arc<FalconAuthConnection>, AuthRejection>;

enum AcceptItem {
    Attempt(AuthAttempt),
    Fatal(Error),
}

struct AcceptState {
    rx: mpsc::Receiver<AcceptItem>,
    task: tokio::task::JoinHandle<()>,
}

/// A decorator that adds post-handshake FALCON authentication to any [`Transport`]:
/// [`connect`](Transport::connect) and [`accept`](Transport::accept) return a connection
/// ([`FalconAuthConnection`]) only after both sides verified each other's FALCON identity.
///
/// Incoming connections authenticate concurrently (up to 128 at once, in tasks of the
/// runtime that first calls `accept`); `accept` returns them in the order they complete
/// and, as the trait promises for failed handshakes, skips failed ones (logged, counted in
/// [`auth_failures`](Self::auth_failures); [`accept_attempt`](Self::accept_attempt)
/// reports them instead). Everything else is the wrapped transport's; `name` and
/// `capabilities` are its own.
pub struct FalconAuthTransport {
    inner: Arc<dyn Transport>,
    config: Arc<FalconAuthConfig>,
    accept: Mutex<Option<AcceptState>>,
    failures: Arc<AtomicU64>,
}

impl fmt::Debug for FalconAuthTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FalconAuthTransport")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for FalconAuthTransport {
    fn drop(&mut self) {
        if let Some(state) = self.accept.get_mut().take() {
            state.task.abort();
        }
    }
}

impl FalconAuthTransport {
    /// Wraps `inner`. Fails with [`Error::Unsupported`]`(FalconPostHandshake)` if `inner`
    /// does not declare [`Capability::FalconPostHandshake`] (the mechanism needs
    /// unidirectional streams and the TLS exporter).
    pub fn new(
        inner: Arc<dyn Transport>,
        config: FalconAuthConfig,
    ) -> Result<FalconAuthTransport, Error> {
        inner
            .capabilities()
            .require(Capability::FalconPostHandshake)?;
        Ok(FalconAuthTransport {
            inner,
            config: Arc::new(config),
            accept: Mutex::new(None),
            failures: Arc::default(),
        })
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &Arc<dyn Transport> {
        &self.inner
    }

    /// The authentication configuration.
    pub fn config(&self) -> &FalconAuthConfig {
        &self.config
    }

    /// How many connections failed authentication on this endpoint so far (either
    /// direction, dialled or accepted).
    pub fn auth_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// [`connect`](Transport::connect) with the concrete connection type. Errors: the
    /// wrapped transport's, or [`Error::Connection`] with [`ConnectionError::FalconAuth`]
    /// (this side rejected the server) or the error that ended the connection (e.g.
    /// [`ConnectionError::ApplicationClosed`] with [`FALCON_AUTH_CLOSE_CODE`]: the server
    /// rejected this side).
    pub async fn connect_authenticated(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Arc<FalconAuthConnection>, Error> {
        let conn = self.inner.connect(addr, server_name).await?;
        self.config
            .authenticate_client_side(conn, server_name)
            .await
            .map_err(|e| {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Error::Connection(e)
            })
    }

    /// The next incoming connection whose authentication completed, successful or not, in
    /// completion order. `Err` only for endpoint-level errors of the wrapped `accept`
    /// (e.g. [`Error::EndpointClosed`]).
    pub async fn accept_attempt(&self) -> Result<AuthAttempt, Error> {
        let mut guard = self.accept.lock().await;
        let state = guard.get_or_insert_with(|| self.start_accepting());
        match state.rx.recv().await {
            Some(AcceptItem::Attempt(a)) => Ok(a),
            Some(AcceptItem::Fatal(e)) => Err(e),
            None => Err(Error::EndpointClosed),
        }
    }

    /// [`accept`](Transport::accept) with the concrete connection type: the next
    /// authenticated connection (failed ones are skipped).
    pub async fn accept_authenticated(&self) -> Result<Arc<FalconAuthConnection>, Error> {
        loop {
            if let Ok(conn) = self.accept_attempt().await? {
                return Ok(conn);
            }
        }
    }

    fn start_accepting(&self) -> AcceptState {
        let (tx, rx) = mpsc::channel(MAX_PENDING_AUTH);
        let inner = self.inner.clone();
        let config = self.config.clone();
        let failures = self.failures.clone();
        let slots = Arc::new(Semaphore::new(MAX_PENDING_AUTH));
        let task = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                match inner.accept().await {
                    Ok(conn) => {
                        let (config, failures, tx) = (config.clone(), failures.clone(), tx.clone());
                        tokio::spawn(async move {
                            let remote_addr = conn.remote_addr();
                            let attempt =
                                config.authenticate_server_side(conn).await.map_err(|error| {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                    tracing::warn!(peer = %remote_addr, %error, "incoming connection failed FALCON authentication");
                                    AuthRejection { remote_addr, error }
                                });
                            let _ = tx.send(AcceptItem::Attempt(attempt)).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(AcceptItem::Fatal(e)).await;
                        return;
                    }
                }
            }
        });
        AcceptState { rx, task }
    }
}

#[async_trait]
impl Transport for FalconAuthTransport {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<ConnectionHandle, Error> {
        Ok(self.connect_authenticated(addr, server_name).await?)
    }

    async fn accept(&self) -> Result<ConnectionHandle, Error> {
        Ok(self.accept_authenticated().await?)
    }

    fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.inner.local_addr()
    }

    fn stats(&self) -> EndpointStats {
        self.inner.stats()
    }

    async fn close(&self, code: u64, reason: &[u8]) {
        self.inner.close(code, reason).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> AuthMessage {
        AuthMessage {
            scheme: 0xfedc,
            cert_chain: vec![
                CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]),
                CertificateDer::from(vec![0x30, 0x01, 9]),
            ],
            signature: vec![7u8; 666],
        }
    }

    #[test]
    fn codec_round_trips() {
        let m = message();
        let bytes = m.encode();
        assert_eq!(&bytes[..4], b"STQF");
        assert_eq!(bytes[4], AUTH_VERSION);
        assert_eq!(AuthMessage::decode(&bytes).unwrap(), m);
        let header: [u8; AUTH_HEADER_LEN] = bytes[..AUTH_HEADER_LEN].try_into().unwrap();
        assert_eq!(
            AuthMessage::parse_header(&header).unwrap(),
            bytes.len() - AUTH_HEADER_LEN
        );
    }

    fn is_malformed(r: Result<AuthMessage, CryptoError>) -> bool {
        matches!(r, Err(CryptoError::MalformedAuthMessage { .. }))
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        let good = message().encode();
        // Every truncation fails, none panics.
        for n in 0..good.len() {
            assert!(is_malformed(AuthMessage::decode(&good[..n])), "prefix {n}");
        }
        // Trailing bytes (after the body, and inside a consistent body).
        let mut long = good.clone();
        long.push(0);
        assert!(is_malformed(AuthMessage::decode(&long)));
        let mut body = good[AUTH_HEADER_LEN..].to_vec();
        body.push(0);
        assert!(is_malformed(AuthMessage::decode_body(&body)));
        // Wrong magic, wrong version.
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(is_malformed(AuthMessage::decode(&bad)));
        let mut bad = good.clone();
        bad[4] = 2;
        assert!(is_malformed(AuthMessage::decode(&bad)));
        // Empty chain, too long a chain, empty certificate, empty signature.
        for m in [
            AuthMessage {
                cert_chain: vec![],
                ..message()
            },
            AuthMessage {
                cert_chain: vec![CertificateDer::from(vec![1]); MAX_CHAIN_LEN + 1],
                ..message()
            },
            AuthMessage {
                cert_chain: vec![CertificateDer::from(Vec::new())],
                ..message()
            },
            AuthMessage {
                signature: vec![],
                ..message()
            },
        ] {
            assert!(is_malformed(AuthMessage::decode(&m.encode())), "{m:?}");
        }
        // A certificate length pointing past the end.
        let mut bad = good.clone();
        bad[AUTH_HEADER_LEN + 3..AUTH_HEADER_LEN + 7].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(is_malformed(AuthMessage::decode(&bad)));
        // Arbitrary bytes never panic.
        for seed in 0u8..=255 {
            let junk: Vec<u8> = (0..64u8)
                .map(|i| i.wrapping_mul(seed).wrapping_add(seed))
                .collect();
            assert!(AuthMessage::decode(&junk).is_err());
            let _ = AuthMessage::decode_body(&junk);
        }
    }

    #[test]
    fn oversized_messages_are_refused_from_the_header() {
        let mut header = [0u8; AUTH_HEADER_LEN];
        header[..4].copy_from_slice(&AUTH_MAGIC);
        header[4] = AUTH_VERSION;
        header[5..].copy_from_slice(&((MAX_AUTH_MESSAGE + 1) as u32).to_be_bytes());
        assert!(matches!(
            AuthMessage::parse_header(&header),
            Err(CryptoError::AuthMessageTooLarge { size, max }) if size == MAX_AUTH_MESSAGE + 1 && max == MAX_AUTH_MESSAGE
        ));
        header[5..].copy_from_slice(&(MAX_AUTH_MESSAGE as u32).to_be_bytes());
        assert_eq!(
            AuthMessage::parse_header(&header).unwrap(),
            MAX_AUTH_MESSAGE
        );
        let big = vec![0u8; MAX_AUTH_MESSAGE + 1];
        assert!(matches!(
            AuthMessage::decode_body(&big),
            Err(CryptoError::AuthMessageTooLarge { .. })
        ));
    }

    #[test]
    fn transcript_binds_role_alpn_and_exporter() {
        let exporter = [5u8; AUTH_EXPORTER_LEN];
        let base = signed_transcript(&exporter, Side::Client, b"proto");
        assert!(base.starts_with(AUTH_DOMAIN));
        assert_eq!(base, signed_transcript(&exporter, Side::Client, b"proto"));
        assert_ne!(base, signed_transcript(&exporter, Side::Server, b"proto"));
        assert_ne!(base, signed_transcript(&exporter, Side::Client, b"proto2"));
        assert_ne!(base, signed_transcript(&exporter, Side::Client, b""));
        let mut other = exporter;
        other[63] ^= 1;
        assert_ne!(base, signed_transcript(&other, Side::Client, b"proto"));
        // Length prefixes: moving a byte between ALPN and exporter changes the transcript.
        assert_ne!(
            signed_transcript(&[1, 2], Side::Client, b"a"),
            signed_transcript(&[2], Side::Client, b"a\x01")
        );
    }

    mod verification {
        use std::time::{Duration, SystemTime};

        use super::super::*;
        use crate::falcon::{FalconCa, FalconLevel};

        const DAY: Duration = Duration::from_secs(24 * 3600);

        struct Setup {
            ca: FalconCa,
            server: FalconAuthConfig,
            client_leaf: FalconLeaf,
        }

        fn setup() -> Setup {
            let ca = FalconCa::generate(FalconLevel::L512, "unit CA", DAY).unwrap();
            let server_leaf = ca
                .issue_leaf(FalconLevel::L512, &["localhost"], DAY)
                .unwrap();
            let client_leaf = ca.issue_leaf(FalconLevel::L512, &["client"], DAY).unwrap();
            let server = FalconAuthConfig::from_leaf(&server_leaf, &[ca.cert().clone()]).unwrap();
            Setup {
                ca,
                server,
                client_leaf,
            }
        }

        fn signed(
            leaf_cert: &CertificateDer<'static>,
            key: &FalconSecretKey,
            transcript: &[u8],
        ) -> AuthMessage {
            AuthMessage {
                scheme: key.algorithm().params().tls_scheme,
                cert_chain: vec![leaf_cert.clone()],
                signature: key.sign(transcript).unwrap(),
            }
        }

        fn kind(r: Result<FalconPeer, (FalconAuthFailure, String)>) -> FalconAuthFailure {
            r.expect_err("verification should fail").0
        }

        #[test]
        fn a_signature_is_bound_to_role_alpn_and_exporter() {
            let s = setup();
            let exporter = [9u8; AUTH_EXPORTER_LEN];
            let t = signed_transcript(&exporter, Side::Client, b"alpn");
            let m = signed(&s.client_leaf.cert, &s.client_leaf.key, &t);
            let peer = s.server.verify(&m, &t, None).unwrap();
            assert_eq!(peer.leaf(), &s.client_leaf.cert);
            assert_eq!(peer.algorithm(), FalconAlgorithm::FalconPadded512);
            // The same signature checked against another role, ALPN or exporter fails.
            let mut other = exporter;
            other[0] ^= 1;
            for wrong in [
                signed_transcript(&exporter, Side::Server, b"alpn"),
                signed_transcript(&exporter, Side::Client, b"other"),
                signed_transcript(&other, Side::Client, b"alpn"),
            ] {
                assert_eq!(
                    kind(s.server.verify(&m, &wrong, None)),
                    FalconAuthFailure::BadSignature
                );
            }
            // A tampered signature fails.
            let mut tampered = m.clone();
            tampered.signature[100] ^= 0x40;
            assert_eq!(
                kind(s.server.verify(&tampered, &t, None)),
                FalconAuthFailure::BadSignature
            );
        }

        #[test]
        fn certificates_are_checked() {
            let s = setup();
            let t = signed_transcript(&[1u8; AUTH_EXPORTER_LEN], Side::Server, b"alpn");
            let name = ServerName::try_from("localhost").unwrap();
            let now = SystemTime::now();
            let key = FalconSecretKey::generate(FalconLevel::L512);
            let cert =
                |names: &[&str], nb, na| s.ca.issue_for(key.public_key(), names, nb, na).unwrap();
            let client =
                FalconAuthConfig::from_leaf(&s.client_leaf, &[s.ca.cert().clone()]).unwrap();

            let good = cert(&["localhost"], now - DAY, now + DAY);
            client
                .verify(&signed(&good, &key, &t), &t, Some(&name))
                .unwrap();

            let expired = cert(&["localhost"], now - 3 * DAY, now - 2 * DAY);
            assert_eq!(
                kind(client.verify(&signed(&expired, &key, &t), &t, Some(&name))),
                FalconAuthFailure::CertificateExpired
            );
            let other_name = cert(&["other.example"], now - DAY, now + DAY);
            assert_eq!(
                kind(client.verify(&signed(&other_name, &key, &t), &t, Some(&name))),
                FalconAuthFailure::WrongName
            );
            let other_ca = FalconCa::generate(FalconLevel::L512, "other CA", DAY).unwrap();
            let untrusted = other_ca
                .issue_for(key.public_key(), &["localhost"], now - DAY, now + DAY)
                .unwrap();
            assert_eq!(
                kind(client.verify(&signed(&untrusted, &key, &t), &t, Some(&name))),
                FalconAuthFailure::UntrustedCertificate
            );
            let mut tampered = good.to_vec();
            let at = tampered.len() - 10;
            tampered[at] ^= 1;
            let tampered = CertificateDer::from(tampered);
            assert_eq!(
                kind(client.verify(&signed(&tampered, &key, &t), &t, Some(&name))),
                FalconAuthFailure::UntrustedCertificate
            );
            // Another algorithm named in the message than the certificate's key.
            for scheme in [
                0x0403,
                FalconAlgorithm::FalconPadded1024.params().tls_scheme,
            ] {
                let m = AuthMessage {
                    scheme,
                    ..signed(&good, &key, &t)
                };
                assert_eq!(
                    kind(client.verify(&m, &t, Some(&name))),
                    FalconAuthFailure::WrongAlgorithm
                );
            }
            // A classical (non-FALCON) certificate.
            let classical = crate::ephemeral_material(&["localhost"]).unwrap();
            let m = AuthMessage {
                cert_chain: classical.identity.unwrap().cert_chain,
                ..signed(&good, &key, &t)
            };
            assert_eq!(
                kind(client.verify(&m, &t, Some(&name))),
                FalconAuthFailure::WrongAlgorithm
            );
        }

        #[test]
        fn config_refuses_unusable_identities() {
            let s = setup();
            let anchors = [s.ca.cert().clone()];
            let other = FalconSecretKey::generate(FalconLevel::L512);
            let mismatched = Identity {
                cert_chain: vec![s.client_leaf.cert.clone()],
                key: Arc::new(other.to_private_key_der()),
            };
            assert!(matches!(
                FalconAuthConfig::new(&mismatched, &anchors),
                Err(CryptoError::KeyMismatch { .. })
            ));
            assert!(matches!(
                FalconAuthConfig::from_leaf(&s.client_leaf, &[]),
                Err(CryptoError::NoRoots)
            ));
            let classical = crate::ephemeral_material(&["localhost"]).unwrap();
            assert!(FalconAuthConfig::new(classical.identity.as_ref().unwrap(), &anchors).is_err());
        }
    }
}
