//! quinn's errors in STOQ's error model. Public for engines that drive quinn-proto
//! themselves (stoq-uring's direct engine builds quinn's error values from quinn-proto's
//! and maps them here, so both engines report the same errors).

use std::sync::Mutex;

use bytes::Bytes;
use stoq_core::{ConnectionError, DatagramError, Error, StreamError};

/// The code and reason this side closed with, remembered because quinn reports a local
/// close only as `LocallyClosed` without them.
pub type LocalClose = Mutex<Option<(u64, Bytes)>>;

/// A quinn connection error as STOQ's, with `local`'s code and reason for a local close.
pub fn connection_error(e: quinn::ConnectionError, local: &LocalClose) -> ConnectionError {
    use quinn::ConnectionError as Q;
    match e {
        Q::VersionMismatch => ConnectionError::VersionMismatch,
        Q::TransportError(t) => {
            ConnectionError::from_transport_code(u64::from(t.code), t.reason.clone())
        }
        Q::ConnectionClosed(c) => ConnectionError::from_transport_code(
            u64::from(c.error_code),
            String::from_utf8_lossy(&c.reason).into_owned(),
        ),
        Q::ApplicationClosed(c) => ConnectionError::ApplicationClosed {
            code: c.error_code.into_inner(),
            reason: c.reason,
        },
        Q::Reset => ConnectionError::Reset,
        Q::TimedOut => ConnectionError::TimedOut,
        Q::LocallyClosed => {
            let (code, reason) = local
                .lock()
                .expect("close lock poisoned")
                .clone()
                .unwrap_or((0, Bytes::new()));
            ConnectionError::LocallyClosed { code, reason }
        }
        Q::CidsExhausted => ConnectionError::Engine("connection IDs exhausted".into()),
    }
}

/// A failure to start a connection attempt as STOQ's error.
pub fn connect_error(e: quinn::ConnectError) -> Error {
    use quinn::ConnectError as Q;
    match e {
        Q::EndpointStopping => Error::EndpointClosed,
        Q::InvalidServerName(name) => {
            Error::InvalidAddress(format!("{name:?} is not a valid DNS name or IP address"))
        }
        Q::InvalidRemoteAddress(addr) => Error::InvalidAddress(format!(
            "{addr} cannot be dialled from this endpoint (port 0, or an address family the \
             socket does not support)"
        )),
        Q::NoDefaultClientConfig => Error::config("tls.roots", "this endpoint cannot dial"),
        Q::UnsupportedVersion => Error::config("version", "unsupported QUIC version"),
        Q::CidsExhausted => {
            Error::Connection(ConnectionError::Engine("connection IDs exhausted".into()))
        }
    }
}

/// A stream write error as STOQ's.
pub fn write_error(e: quinn::WriteError, local: &LocalClose) -> StreamError {
    use quinn::WriteError as Q;
    match e {
        Q::Stopped(code) => StreamError::Stopped(code.into_inner()),
        Q::ConnectionLost(c) => StreamError::ConnectionLost(connection_error(c, local)),
        Q::ClosedStream => StreamError::ClosedStream,
        Q::ZeroRttRejected => {
            StreamError::ConnectionLost(ConnectionError::Engine("0-RTT data rejected".into()))
        }
    }
}

/// A stream read error as STOQ's.
pub fn read_error(e: quinn::ReadError, local: &LocalClose) -> StreamError {
    use quinn::ReadError as Q;
    match e {
        Q::Reset(code) => StreamError::Reset(code.into_inner()),
        Q::ConnectionLost(c) => StreamError::ConnectionLost(connection_error(c, local)),
        Q::ClosedStream => StreamError::ClosedStream,
        // STOQ only issues ordered reads.
        Q::IllegalOrderedRead => StreamError::ClosedStream,
        Q::ZeroRttRejected => {
            StreamError::ConnectionLost(ConnectionError::Engine("0-RTT data rejected".into()))
        }
    }
}

/// A datagram send error as STOQ's, `size` being the datagram's and `max` the
/// connection's limit at the time.
pub fn datagram_error(
    e: quinn::SendDatagramError,
    size: usize,
    max: Option<usize>,
    local: &LocalClose,
) -> DatagramError {
    use quinn::SendDatagramError as Q;
    match e {
        Q::UnsupportedByPeer | Q::Disabled => DatagramError::Disabled,
        Q::TooLarge => DatagramError::TooLarge {
            size,
            max: max.unwrap_or(0),
        },
        Q::ConnectionLost(c) => DatagramError::ConnectionLost(connection_error(c, local)),
    }
}
