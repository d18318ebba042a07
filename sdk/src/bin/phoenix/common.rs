//! Options every command shares, and building a [`phoenix::Phoenix`] from them.

use std::path::PathBuf;

use crate::CliError;

/// Global options.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Backend (QUIC engine).
    #[arg(long, global = true, default_value = phoenix::DEFAULT_BACKEND)]
    pub backend: String,
    /// Application name: the ALPN both sides must agree on.
    #[arg(long, global = true, default_value = "phoenix")]
    pub app: String,
    /// Transport configuration file (TOML).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Give up connecting after this long (overrides the config file), e.g. "2s".
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub connect_timeout: Option<std::time::Duration>,
    /// PEM file of CA certificates to trust (default: STOQ's local CA).
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// PEM certificate chain to present (with --key; default: a leaf from STOQ's local CA).
    #[arg(long, global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Write a qlog-style JSON Lines trace of every connection's congestion controller
    /// (window, ssthresh, pacing rate, bytes in flight, RTT, losses) to this file. Runs
    /// STOQ's implementation of the configured algorithm through the backend's adapter, so
    /// it needs a backend that hosts STOQ controllers (quinn, s2n, uring; quiche refuses).
    #[arg(long, global = true)]
    pub cc_trace: Option<PathBuf>,
    /// Async runtime threads: 0 runs everything (application, QUIC engine, I/O) on the main
    /// thread (tokio's current-thread runtime: no cross-thread wake-ups); N > 0 starts a
    /// multi-threaded runtime with N workers; unset, one worker per CPU.
    #[arg(long, global = true)]
    pub worker_threads: Option<usize>,
}

/// Checks a file argument up front, so a missing file is reported as bad input with its
/// name rather than as a failure deep inside TLS setup.
pub fn existing_file(path: &std::path::Path, what: &str) -> Result<(), CliError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(CliError::input(format!(
            "{what} {} is not a regular file",
            path.display()
        ))),
        Err(e) => Err(CliError::input(format!("{what} {}: {e}", path.display()))),
    }
}

impl Global {
    /// With `--cc-trace`, makes `config` run its congestion controller through a
    /// [`stoq_core::congestion::TracingFactory`] writing to that file.
    pub fn apply_cc_trace(&self, config: &mut stoq_core::TransportConfig) -> Result<(), CliError> {
        let Some(path) = &self.cc_trace else {
            return Ok(());
        };
        let inner = match config.congestion.stoq_factory()? {
            Some(f) => f,
            None => stoq_core::congestion::builtin_factory(config.congestion.algorithm)?,
        };
        // Unbuffered: each event is one line written at once, so the trace is complete
        // however the process ends.
        let file = std::fs::File::create(path).map_err(|e| {
            CliError::input(format!("congestion trace file {}: {e}", path.display()))
        })?;
        config.congestion = stoq_core::CongestionConfig::custom(std::sync::Arc::new(
            stoq_core::congestion::TracingFactory::new(inner, Box::new(file)),
        ));
        Ok(())
    }

    /// A Phoenix configured from the global options.
    pub async fn phoenix(&self) -> Result<phoenix::Phoenix, CliError> {
        let mut b = phoenix::Phoenix::builder()
            .app_name(self.app.clone())
            .backend(self.backend.clone());
        let mut config = match &self.config {
            Some(path) => {
                existing_file(path, "config file")?;
                stoq_core::TransportConfig::from_toml_file(path)?
            }
            None => stoq_core::TransportConfig::default(),
        };
        if let Some(t) = self.connect_timeout {
            config.connect_timeout = t;
        }
        self.apply_cc_trace(&mut config)?;
        b = b.config(config);
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            existing_file(cert, "certificate file")?;
            existing_file(key, "key file")?;
            b = b.pem_identity(cert.clone(), key.clone());
        }
        if let Some(ca) = &self.ca {
            existing_file(ca, "CA file")?;
            b = b.pem_roots(ca.clone());
        }
        b.build().await.map_err(CliError::from)
    }
}

impl From<phoenix::PhoenixError> for CliError {
    fn from(e: phoenix::PhoenixError) -> Self {
        use phoenix::PhoenixError as P;
        match e {
            P::Core(inner) => CliError::from(inner),
            P::Crypto(_) => CliError::input(e.to_string()),
            P::BadAddress { .. }
            | P::Resolve { .. }
            | P::UnknownBackend { .. }
            | P::InvalidOptions(_) => CliError::input(e.to_string()),
            other => CliError::failed(other.to_string()),
        }
    }
}
