//! quiche's errors in STOQ's error model.

use bytes::Bytes;
use stoq_core::{ConnectionError, Side};

use crate::connection::QConn;

/// Why `conn` ended, if it has: the peer's `CONNECTION_CLOSE` (quiche `peer_error()`),
/// one quiche sent itself (`local_error()`: protocol violations and TLS alerts, which
/// are transport errors `0x100 + alert`), the idle timeout (`is_timed_out()`), or a
/// plain close. Application closes this side made are recorded by the caller before
/// quiche sees them, so a local application error here is unexpected but still mapped.
pub(crate) fn close_error(conn: &mut QConn, side: Side) -> Option<ConnectionError> {
    if let Some(e) = conn.peer_error() {
        return Some(if e.is_app {
            ConnectionError::ApplicationClosed {
                code: e.error_code,
                reason: Bytes::copy_from_slice(&e.reason),
            }
        } else {
            let reason = if e.reason.is_empty() {
                "closed by the peer".to_string()
            } else {
                format!("closed by the peer: {}", String::from_utf8_lossy(&e.reason))
            };
            ConnectionError::from_transport_code(e.error_code, reason)
        });
    }
    if let Some(e) = conn.local_error() {
        let (is_app, code, reason) = (e.is_app, e.error_code, e.reason.clone());
        if is_app {
            return Some(ConnectionError::LocallyClosed {
                code,
                reason: Bytes::from(reason),
            });
        }
        let mut text = if reason.is_empty() {
            quiche_error_name(code).to_string()
        } else {
            String::from_utf8_lossy(&reason).into_owned()
        };
        if (0x100..=0x1ff).contains(&code) {
            // A TLS alert this side raised. On a client that is almost always the
            // certificate check: say why BoringSSL rejected the chain.
            let ssl: &mut boring::ssl::SslRef = conn.as_mut();
            if let Err(v) = ssl.verify_result() {
                text = format!("invalid peer certificate: {}", v.error_string());
            } else if side == Side::Client && code == 0x178 {
                text = "no application protocol in common with the server".into();
            } else if text.is_empty() || text == quiche_error_name(code) {
                text = "TLS handshake failed locally".into();
            }
        }
        return Some(ConnectionError::from_transport_code(code, text));
    }
    if conn.is_timed_out() {
        return Some(ConnectionError::TimedOut);
    }
    if conn.is_closed() {
        return Some(ConnectionError::Engine(
            "quiche closed the connection without an error".into(),
        ));
    }
    None
}

/// A name for a QUIC transport error code quiche raised locally (RFC 9000 section 20.1).
fn quiche_error_name(code: u64) -> &'static str {
    match code {
        0x0 => "no error",
        0x1 => "internal error",
        0x2 => "connection refused",
        0x3 => "flow control error",
        0x4 => "stream limit error",
        0x5 => "stream state error",
        0x6 => "final size error",
        0x7 => "frame encoding error",
        0x8 => "transport parameter error",
        0x9 => "connection ID limit error",
        0xa => "protocol violation",
        0xb => "invalid token",
        0xd => "crypto buffer exceeded",
        0xe => "key update error",
        0xf => "AEAD limit reached",
        0x10 => "no viable path",
        0x100..=0x1ff => "TLS alert",
        _ => "transport error",
    }
}

/// An unexpected quiche error on a connection that has not (yet) ended.
pub(crate) fn engine(e: quiche::Error) -> ConnectionError {
    ConnectionError::Engine(format!("quiche: {e:?}"))
}
