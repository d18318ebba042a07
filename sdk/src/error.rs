//! Phoenix's error type.

use std::net::SocketAddr;

use stoq_core::{ConnectionError, StreamError};
use stoq_crypto::CryptoError;

/// Everything that can go wrong in Phoenix.
///
/// Endpoint, connection and stream failures of the QUIC engine keep their STOQ types
/// ([`Core`](Self::Core), [`Connection`](Self::Connection), [`Stream`](Self::Stream)); the
/// other variants are Phoenix's own: addresses, message framing, multiplexed transfers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhoenixError {
    /// An endpoint-level error from STOQ core: configuration, TLS set-up, sockets, an
    /// unsupported feature.
    #[error(transparent)]
    Core(#[from] stoq_core::Error),
    /// Certificates or keys could not be created or loaded.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The connection failed or ended.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A stream was reset or stopped by the peer, or the connection under it was lost.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// No backend of that name is compiled into this build.
    #[error("no backend named {name:?} in this build; compiled in: {}", available.join(", "))]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// The backends that are compiled in.
        available: Vec<&'static str>,
    },
    /// An address string could not be understood (e.g. a missing or non-numeric port).
    #[error("bad address {input}: {why}")]
    BadAddress {
        /// The string as given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
    /// A host name could not be resolved to any address.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
    /// A message is larger than the limit: this side's own `max_message_size`
    /// (`max: Some(limit)`), or the peer's, which it signalled by stopping the stream
    /// (`max: None`, the peer's limit is not sent on the wire).
    #[error("message of {size} bytes exceeds the {} maximum message size", describe_max(*max))]
    MessageTooLarge {
        /// The message's size in bytes.
        size: u64,
        /// The limit, when known.
        max: Option<u64>,
    },
    /// A stream ended cleanly before the declared length arrived (the sender's framing is
    /// broken); nothing of the message is delivered.
    #[error("stream ended after {received} of {expected} declared bytes")]
    Truncated {
        /// The length the header declared.
        expected: u64,
        /// What arrived before the end of the stream.
        received: u64,
    },
    /// Bytes on a Phoenix stream do not follow Phoenix's framing.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A stream started with a kind byte this version of Phoenix does not know.
    #[error("unknown stream kind {0:#04x}")]
    UnknownKind(u8),
    /// A multiplexed transfer arrived completely but its SHA-256 differs from the one the
    /// sender declared.
    #[error("multiplexed transfer {transfer_id:#018x}: SHA-256 mismatch, payload corrupted")]
    HashMismatch {
        /// The transfer.
        transfer_id: u64,
    },
    /// Every lane of a multiplexed transfer ended, but chunks are missing.
    #[error("multiplexed transfer {transfer_id:#018x}: {missing} of {total} bytes never arrived")]
    MissingChunks {
        /// The transfer.
        transfer_id: u64,
        /// Bytes not covered by any chunk.
        missing: u64,
        /// The transfer's declared length.
        total: u64,
    },
    /// A multiplexed transfer saw no progress for too long (e.g. a lane never arrived).
    #[error("multiplexed transfer {transfer_id:#018x} stalled and was abandoned")]
    TransferStalled {
        /// The transfer.
        transfer_id: u64,
    },
    /// A multiplexed transfer was refused because unfinished transfers already hold too
    /// many bytes on this side.
    #[error("refused a {size}-byte transfer: {pending} bytes already pending, budget {budget}")]
    Overloaded {
        /// Bytes held by unfinished transfers.
        pending: u64,
        /// The refused transfer's size.
        size: u64,
        /// The budget.
        budget: u64,
    },
    /// The peer stopped a stream with an application code Phoenix has no better
    /// description for (see [`codes`](crate::codes)).
    #[error("the peer rejected the stream with code {code:#x}")]
    PeerRejected {
        /// The `STOP_SENDING` or `RESET_STREAM` code.
        code: u64,
    },
    /// An incoming message or transfer from `from` failed; nothing of it is delivered.
    /// Other messages keep arriving: this is not the end of the listener or connection.
    #[error("incoming message from {from} failed: {source}")]
    Incoming {
        /// The peer that sent it.
        from: SocketAddr,
        /// Why it failed.
        #[source]
        source: Box<PhoenixError>,
    },
    /// Options passed to a call are inconsistent (e.g. zero streams).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The listener or connection is closed: nothing more will arrive.
    #[error("closed: nothing more will arrive")]
    Closed,
    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// How long.
        after: std::time::Duration,
    },
}

fn describe_max(max: Option<u64>) -> String {
    match max {
        Some(m) => format!("{m}-byte"),
        None => "peer's".to_string(),
    }
}

impl PhoenixError {
    /// Whether this error concerns one incoming message only ([`PhoenixError::Incoming`]),
    /// so receiving can go on.
    pub fn is_incoming(&self) -> bool {
        matches!(self, PhoenixError::Incoming { .. })
    }

    /// The error under an [`Incoming`](PhoenixError::Incoming) wrapper, or `self`.
    pub fn root(&self) -> &PhoenixError {
        match self {
            PhoenixError::Incoming { source, .. } => source.root(),
            other => other,
        }
    }

    pub(crate) fn incoming(from: SocketAddr, source: PhoenixError) -> Self {
        PhoenixError::Incoming {
            from,
            source: Box::new(source),
        }
    }

    /// Maps a peer's `STOP_SENDING`/`RESET_STREAM` code on a message of `size` bytes.
    pub(crate) fn from_peer_code(code: u64, size: u64) -> Self {
        match code {
            crate::codes::MESSAGE_TOO_LARGE => PhoenixError::MessageTooLarge { size, max: None },
            code => PhoenixError::PeerRejected { code },
        }
    }

    /// Maps a stream error on a message of `size` bytes, turning a peer's stop into the
    /// Phoenix meaning of its code.
    pub(crate) fn from_send(e: StreamError, size: u64) -> Self {
        match e {
            StreamError::Stopped(code) => Self::from_peer_code(code, size),
            other => PhoenixError::Stream(other),
        }
    }
}
