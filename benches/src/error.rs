//! The crate's error type.

use std::io;

/// Anything that stops a benchmark (a failed run is recorded in the results instead).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A STOQ error (binding, connecting, streams).
    #[error(transparent)]
    Stoq(#[from] stoq_core::Error),
    /// Certificates or TLS configuration.
    #[error(transparent)]
    Crypto(#[from] stoq_crypto::CryptoError),
    /// A scenario file that does not parse or holds invalid values.
    #[error("scenario {name}: {reason}")]
    Scenario {
        /// The scenario's name or file.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Invalid options or arguments.
    #[error("{0}")]
    Usage(String),
    /// The peer broke the benchmark protocol, or a measurement failed verification.
    #[error("{0}")]
    Protocol(String),
    /// The server process failed to start or died.
    #[error("server process: {0}")]
    Server(String),
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        BenchError::Io {
            context: context.into(),
            source,
        }
    }
}
