//! One error model for every engine.
//!
//! Engine adapters translate their engine's errors into these types; applications never
//! see an engine-specific error. Every variant says what happened and, where it helps,
//! what to do about it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::Capability;

/// Why a connection ended (or never started).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer closed the connection with an application error code and reason
    /// (`CONNECTION_CLOSE` of type 0x1d).
    #[error(
        "closed by peer: application code {code}, reason {:?}",
        String::from_utf8_lossy(reason)
    )]
    ApplicationClosed {
        /// The application error code the peer sent.
        code: u64,
        /// The reason phrase the peer sent (may be empty).
        reason: Bytes,
    },
    /// This side closed the connection with [`Connection::close`](crate::Connection::close).
    #[error(
        "closed locally: application code {code}, reason {:?}",
        String::from_utf8_lossy(reason)
    )]
    LocallyClosed {
        /// The application error code this side sent.
        code: u64,
        /// The reason phrase this side sent.
        reason: Bytes,
    },
    /// The TLS handshake failed: an untrusted or mismatched certificate, no common ALPN
    /// protocol, no common cipher suite or key exchange. `alert` is the TLS alert number
    /// (RFC 8446 section 6), carried in QUIC as transport error `0x100 + alert`.
    #[error("TLS handshake failed (alert {alert}{}): {reason}", alert_name(*alert).map(|n| format!(" {n}")).unwrap_or_default())]
    Tls {
        /// The TLS alert number.
        alert: u8,
        /// What the engine reported, e.g. "invalid peer certificate: UnknownIssuer".
        reason: String,
    },
    /// The peer or this endpoint reported a QUIC transport error (RFC 9000 section 20.1)
    /// other than a TLS alert, e.g. a protocol violation or flow-control error.
    #[error("transport error {code:#x}: {reason}")]
    TransportError {
        /// The QUIC transport error code.
        code: u64,
        /// The reason phrase.
        reason: String,
    },
    /// No packet arrived from the peer within the idle timeout.
    #[error("idle timeout: no packet from the peer within the idle timeout")]
    TimedOut,
    /// Connecting did not complete within the configured connect timeout. Typical causes:
    /// nothing listens at the address, or a firewall drops the packets.
    #[error("connect to {addr} timed out after {after:?} (no listener, or packets are dropped)")]
    ConnectTimedOut {
        /// The address being dialled.
        addr: SocketAddr,
        /// How long STOQ waited.
        after: Duration,
    },
    /// The peer sent a stateless reset: it lost the connection's state.
    #[error("the peer reset the connection (stateless reset)")]
    Reset,
    /// The peer supports no QUIC version in common with this endpoint.
    #[error("no QUIC version in common with the peer")]
    VersionMismatch,
    /// The local endpoint was closed, which ended all its connections.
    #[error("the local endpoint was closed")]
    EndpointClosed,
    /// The peer could not be reached: the operating system reported an error for the
    /// path (e.g. no route, address family not supported by the socket).
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// An engine-internal failure that fits no other variant (should be rare; the text
    /// is the engine's own).
    #[error("engine error: {0}")]
    Engine(String),
    /// Post-handshake FALCON authentication of the peer failed on this side (see
    /// `stoq_crypto::falcon::post_handshake`). This side has closed the connection with
    /// [`FALCON_AUTH_CLOSE_CODE`], so the peer sees [`ConnectionError::ApplicationClosed`]
    /// with that code. `failure` says which check failed; `detail` is the full explanation.
    #[error("FALCON post-handshake authentication failed ({failure}): {detail}")]
    FalconAuth {
        /// Which check failed.
        failure: FalconAuthFailure,
        /// What exactly was wrong, e.g. the certificate's expiry date.
        detail: String,
    },
}

/// The application close code (`CONNECTION_CLOSE` of type 0x1d) a side sends when
/// post-handshake FALCON authentication of its peer fails: `0x4641_4c43` (ASCII "FALC").
///
/// The side that detected the failure reports [`ConnectionError::FalconAuth`]; its peer sees
/// [`ConnectionError::ApplicationClosed`] with this code and, where both engines have
/// [`Capability::CloseReason`], a reason starting with `"FALCON authentication failed"`.
/// Applications should not use this code for their own closes.
pub const FALCON_AUTH_CLOSE_CODE: u64 = 0x4641_4c43;

/// Which check of post-handshake FALCON authentication failed (in
/// [`ConnectionError::FalconAuth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FalconAuthFailure {
    /// The peer did not complete its part of the exchange within the time limit: it sent
    /// nothing (e.g. it does not use the mechanism), too little, or never confirmed.
    TimedOut,
    /// What the peer sent is not a well-formed authentication message: not one at all,
    /// an unknown version, truncated, larger than the limit, trailing bytes, an unexpected
    /// verdict, or an application stream where the authentication stream must be.
    Malformed,
    /// The peer's certificate does not chain to a trusted FALCON anchor (unknown issuer,
    /// a certificate signature that does not verify, unusable chain).
    UntrustedCertificate,
    /// The peer's certificate is expired or not yet valid.
    CertificateExpired,
    /// The peer's certificate is not valid for the expected name (the server name dialled).
    WrongName,
    /// The peer's certificate key is not a FALCON key, or the message names another
    /// algorithm than the certificate's key.
    WrongAlgorithm,
    /// The peer's signature does not verify over this connection's transcript: tampered,
    /// or made for another connection, role or ALPN.
    BadSignature,
    /// This side could not run the exchange (keying-material export or signing failed, or
    /// streams were opened before authentication).
    Local,
}

impl FalconAuthFailure {
    /// A stable snake_case name for reports, and the suffix of the close reason.
    pub const fn name(self) -> &'static str {
        match self {
            FalconAuthFailure::TimedOut => "timed_out",
            FalconAuthFailure::Malformed => "malformed",
            FalconAuthFailure::UntrustedCertificate => "untrusted_certificate",
            FalconAuthFailure::CertificateExpired => "certificate_expired",
            FalconAuthFailure::WrongName => "wrong_name",
            FalconAuthFailure::WrongAlgorithm => "wrong_algorithm",
            FalconAuthFailure::BadSignature => "bad_signature",
            FalconAuthFailure::Local => "local",
        }
    }
}

impl std::fmt::Display for FalconAuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl ConnectionError {
    /// Whether this is a TLS failure caused by no common application protocol
    /// (TLS alert 120, `no_application_protocol`).
    pub fn is_alpn_mismatch(&self) -> bool {
        matches!(self, ConnectionError::Tls { alert: 120, .. })
    }

    /// Whether this is a TLS failure authenticating the peer: alerts 42 to 49 (bad,
    /// unsupported, revoked, expired or unknown certificate, illegal parameter, unknown
    /// CA, access denied), 51 `decrypt_error` (a certificate or handshake signature that
    /// does not verify; rustls reports a chain signed by a same-named but different CA
    /// this way) and 116 `certificate_required`.
    pub fn is_certificate_error(&self) -> bool {
        matches!(
            self,
            ConnectionError::Tls {
                alert: 42..=49 | 51 | 116,
                ..
            }
        )
    }

    /// Whether the connection ended because post-handshake FALCON authentication failed:
    /// this side's [`ConnectionError::FalconAuth`], or a close with
    /// [`FALCON_AUTH_CLOSE_CODE`] by either side.
    pub fn is_falcon_auth_failure(&self) -> bool {
        match self {
            ConnectionError::FalconAuth { .. } => true,
            ConnectionError::ApplicationClosed { code, .. }
            | ConnectionError::LocallyClosed { code, .. } => *code == FALCON_AUTH_CLOSE_CODE,
            _ => false,
        }
    }

    /// Builds the right variant from a QUIC transport error code (RFC 9000 section 20.1):
    /// codes `0x100..=0x1ff` are TLS alerts.
    pub fn from_transport_code(code: u64, reason: impl Into<String>) -> Self {
        if (0x100..=0x1ff).contains(&code) {
            ConnectionError::Tls {
                alert: (code - 0x100) as u8,
                reason: reason.into(),
            }
        } else {
            ConnectionError::TransportError {
                code,
                reason: reason.into(),
            }
        }
    }
}

/// The RFC 8446 names of the alerts STOQ users meet most.
fn alert_name(alert: u8) -> Option<&'static str> {
    Some(match alert {
        10 => "unexpected_message",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        80 => "internal_error",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => return None,
    })
}

/// An error on one stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer abandoned sending with `RESET_STREAM` and this code; data after the last
    /// byte read may be missing, so the stream did NOT end cleanly.
    #[error("stream reset by peer with code {0}")]
    Reset(u64),
    /// The peer asked this side to stop sending (`STOP_SENDING`) with this code.
    #[error("peer stopped the stream with code {0}")]
    Stopped(u64),
    /// The connection ended; the stream cannot make progress.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
    /// The stream was already finished, reset or stopped by this side.
    #[error("stream already closed by this side")]
    ClosedStream,
    /// A stream operation the backend cannot perform.
    #[error("unsupported: {0}")]
    Unsupported(Capability),
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> io::Error {
        let kind = match e {
            StreamError::Reset(_) | StreamError::Stopped(_) => io::ErrorKind::ConnectionReset,
            StreamError::ConnectionLost(ConnectionError::TimedOut) => io::ErrorKind::TimedOut,
            StreamError::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
            StreamError::ClosedStream => io::ErrorKind::NotConnected,
            StreamError::Unsupported(_) => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, e)
    }
}

impl StreamError {
    /// Recovers a `StreamError` carried inside an `io::Error` produced by a STOQ stream's
    /// `AsyncRead`/`AsyncWrite` implementation.
    pub fn from_io(e: &io::Error) -> Option<&StreamError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<StreamError>())
    }
}

/// An error sending or receiving a datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The datagram is larger than [`Connection::max_datagram_size`](crate::Connection::max_datagram_size).
    #[error("datagram of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The size of the rejected datagram.
        size: usize,
        /// The current maximum.
        max: usize,
    },
    /// Datagrams are disabled locally ([`TransportConfig::datagrams`](crate::TransportConfig))
    /// or the peer did not advertise support for them.
    #[error("datagrams are disabled locally or not supported by the peer")]
    Disabled,
    /// The backend has no datagram support at all.
    #[error("unsupported: {0}")]
    Unsupported(Capability),
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
}

/// The error type of endpoint-level operations (binding, configuration, connecting).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid. `field` names it (dotted path as in the TOML
    /// file), `reason` says why.
    #[error("invalid configuration `{field}`: {reason}")]
    Config {
        /// The configuration field, e.g. `idle_timeout` or `congestion.algorithm`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration file could not be read or parsed.
    #[error("configuration file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong (includes line and column for parse errors).
        reason: String,
    },
    /// Certificates or keys are missing, malformed or do not match.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What STOQ was doing, e.g. "binding `[::]:4433`".
        context: String,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// A connection failed or ended.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A stream operation failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A datagram operation failed.
    #[error(transparent)]
    Datagram(#[from] DatagramError),
    /// The backend lacks the capability needed for the request.
    #[error("unsupported by this backend: {0}")]
    Unsupported(Capability),
    /// The endpoint was closed; it accepts and dials nothing more.
    #[error("the endpoint is closed")]
    EndpointClosed,
    /// The address or server name is not usable, e.g. an invalid DNS name for SNI, or an
    /// IPv6 peer for an IPv4-only socket.
    #[error("invalid address or server name: {0}")]
    InvalidAddress(String),
}

impl Error {
    /// Shorthand for [`Error::Config`].
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_codes_map_to_tls_alerts() {
        let e = ConnectionError::from_transport_code(0x178, "peer has no ALPN in common");
        assert!(e.is_alpn_mismatch());
        assert!(e.to_string().contains("no_application_protocol"));
        let e = ConnectionError::from_transport_code(0x130, "UnknownIssuer");
        assert!(e.is_certificate_error());
        let e = ConnectionError::from_transport_code(0xa, "protocol violation");
        assert_eq!(
            e,
            ConnectionError::TransportError {
                code: 0xa,
                reason: "protocol violation".into()
            }
        );
    }

    #[test]
    fn stream_error_survives_io_error_round_trip() {
        let io: io::Error = StreamError::Reset(7).into();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(StreamError::from_io(&io), Some(&StreamError::Reset(7)));
    }
}
