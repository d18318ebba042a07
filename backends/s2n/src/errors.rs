//! s2n-quic's errors in STOQ's error model, and the CONNECTION_CLOSE formatter.

use s2n_quic::connection::Error as S2nConnError;
use s2n_quic::stream::Error as S2nStreamError;
use s2n_quic_core::connection::close::{ConnectionClose, Context, Formatter};
use s2n_quic_core::{application, transport};
use stoq_core::{ConnectionError, StreamError};

/// Maps why s2n-quic ended a connection to STOQ's [`ConnectionError`].
///
/// s2n-quic carries no reason phrase for application closes (neither sent nor received),
/// so `reason` is always empty for [`ConnectionError::ApplicationClosed`] and
/// [`ConnectionError::LocallyClosed`].
pub(crate) fn connection_error(e: S2nConnError) -> ConnectionError {
    match e {
        S2nConnError::Closed { initiator, .. } => {
            if initiator.is_remote() {
                // The peer closed with transport NO_ERROR (what s2n-quic sends when the
                // last handle of a connection is dropped) or, during the handshake, with
                // APPLICATION_ERROR in place of an application close.
                ConnectionError::TransportError {
                    code: 0,
                    reason: "the peer closed the connection without an error".into(),
                }
            } else {
                ConnectionError::LocallyClosed {
                    code: 0,
                    reason: bytes::Bytes::new(),
                }
            }
        }
        S2nConnError::Transport { code, reason, .. } => {
            let reason = if reason.is_empty() {
                transport::Error::new(code.as_varint())
                    .description()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("transport error {:#x}", code.as_u64()))
            } else {
                reason.to_string()
            };
            ConnectionError::from_transport_code(code.as_u64(), reason)
        }
        S2nConnError::Application {
            error, initiator, ..
        } => {
            let code = u64::from(error);
            if initiator.is_remote() {
                ConnectionError::ApplicationClosed {
                    code,
                    reason: bytes::Bytes::new(),
                }
            } else {
                ConnectionError::LocallyClosed {
                    code,
                    reason: bytes::Bytes::new(),
                }
            }
        }
        S2nConnError::StatelessReset { .. } => ConnectionError::Reset,
        S2nConnError::IdleTimerExpired { .. } => ConnectionError::TimedOut,
        // Only reachable while connecting; `connect` reports it as `ConnectTimedOut`.
        S2nConnError::MaxHandshakeDurationExceeded { .. } => ConnectionError::TimedOut,
        S2nConnError::NoValidPath { .. } => {
            ConnectionError::Unreachable("no valid network path to the peer".into())
        }
        S2nConnError::EndpointClosing { .. } => ConnectionError::EndpointClosed,
        other => ConnectionError::Engine(other.to_string()),
    }
}

/// Maps a stream error of a *receive* stream.
pub(crate) fn recv_error(
    e: S2nStreamError,
    lost: impl FnOnce(S2nConnError) -> ConnectionError,
) -> StreamError {
    match e {
        S2nStreamError::StreamReset { error, .. } => StreamError::Reset(u64::from(error)),
        S2nStreamError::ConnectionError { error, .. } => StreamError::ConnectionLost(lost(error)),
        _ => StreamError::ClosedStream,
    }
}

/// Maps a stream error of a *send* stream. s2n-quic reports a peer's STOP_SENDING as a
/// reset of the send stream carrying the peer's code (it answers STOP_SENDING with
/// RESET_STREAM, `s2n-quic-transport/src/stream/send_stream.rs` `on_stop_sending`), and a
/// local reset the same way; `locally_reset` tells them apart.
pub(crate) fn send_error(
    e: S2nStreamError,
    locally_reset: bool,
    lost: impl FnOnce(S2nConnError) -> ConnectionError,
) -> StreamError {
    match e {
        S2nStreamError::StreamReset { .. } if locally_reset => StreamError::ClosedStream,
        S2nStreamError::StreamReset { error, .. } => StreamError::Stopped(u64::from(error)),
        S2nStreamError::ConnectionError { error, .. } => StreamError::ConnectionLost(lost(error)),
        _ => StreamError::ClosedStream,
    }
}

/// An application error code s2n-quic can carry (a QUIC varint); larger codes saturate.
pub(crate) fn app_code(code: u64) -> application::Error {
    /// The largest QUIC variable-length integer (RFC 9000 section 16).
    const VARINT_MAX: u64 = (1 << 62) - 1;
    application::Error::new(code.min(VARINT_MAX)).expect("clamped to the varint range")
}

/// How STOQ endpoints format CONNECTION_CLOSE frames.
///
/// s2n-quic's default (`Production`) replaces every TLS alert with `handshake_failure`
/// (`s2n-quic-core/src/connection/close.rs`, `Production::format_transport_error`), so a
/// client could not tell "no common ALPN" (alert 120) from a certificate problem; its
/// `Development` formatter keeps codes but sends application close codes in Initial and
/// Handshake packets, which RFC 9000 section 10.2.3 forbids. This formatter keeps transport
/// codes (including TLS alerts, which RFC 9001 section 4.8 allows) with s2n-quic's static
/// reason strings, sends application codes in 1-RTT packets, and replaces application
/// closes in Initial/Handshake packets with APPLICATION_ERROR without a reason, as the RFC
/// requires.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoqCloseFormatter;

impl Formatter for StoqCloseFormatter {
    fn format_transport_error(
        &self,
        _context: &Context,
        error: transport::Error,
    ) -> ConnectionClose<'_> {
        error.into()
    }

    fn format_application_error(
        &self,
        _context: &Context,
        error: application::Error,
    ) -> ConnectionClose<'_> {
        error.into()
    }

    fn format_early_transport_error(
        &self,
        _context: &Context,
        error: transport::Error,
    ) -> ConnectionClose<'_> {
        error.into()
    }

    fn format_early_application_error(
        &self,
        _context: &Context,
        _error: application::Error,
    ) -> ConnectionClose<'_> {
        transport::Error::APPLICATION_ERROR.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s2n_quic_core::endpoint::Location;

    #[test]
    fn application_closes_carry_the_code_and_no_reason() {
        let e = S2nConnError::application(7u32.into());
        // `application` constructs a locally initiated close.
        assert_eq!(
            connection_error(e),
            ConnectionError::LocallyClosed {
                code: 7,
                reason: bytes::Bytes::new()
            }
        );
        assert_eq!(
            connection_error(S2nConnError::idle_timer_expired()),
            ConnectionError::TimedOut
        );
        assert_eq!(
            connection_error(S2nConnError::stateless_reset()),
            ConnectionError::Reset
        );
        assert!(matches!(
            connection_error(S2nConnError::closed(Location::Local)),
            ConnectionError::LocallyClosed { code: 0, .. }
        ));
        assert_eq!(
            connection_error(S2nConnError::endpoint_closing()),
            ConnectionError::EndpointClosed
        );
    }

    #[test]
    fn early_application_close_is_generic() {
        let f = StoqCloseFormatter;
        let addr = s2n_quic_core::inet::SocketAddress::default();
        let ctx = Context::new(&addr);
        let early = f.format_early_application_error(&ctx, 9u32.into());
        assert_eq!(
            early.error_code,
            transport::Error::APPLICATION_ERROR.code.as_varint()
        );
        assert!(early.reason.is_none());
        let tls = s2n_quic_core::crypto::tls::Error::NO_APPLICATION_PROTOCOL;
        let frame = f.format_early_transport_error(&ctx, transport::Error::from(tls));
        assert_eq!(frame.error_code.as_u64(), 0x178);
    }
}
