//! The transport configuration every backend honours.
//!
//! Deserialisable from TOML (or any serde format). Unknown fields are rejected so a typo
//! never passes silently; [`TransportConfig::validate`] checks ranges and names the field.
//! Durations are written as human-readable strings ("30s", "250ms").

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::congestion::CongestionControllerFactory;
use crate::Error;

/// Largest value a QUIC variable-length integer can hold (RFC 9000 section 16).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Configuration of one endpoint and the connections it makes or accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Application protocols offered (client) or accepted (server), most preferred first.
    /// A handshake without a protocol in common fails with TLS alert 120.
    pub alpn: Vec<String>,
    /// Close a connection when no packet arrived for this long (negotiated: the smaller
    /// of both sides' values applies).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Send a PING this often when otherwise idle, keeping the connection (and NAT
    /// bindings) alive. `None` disables keep-alive. Must be shorter than `idle_timeout`.
    #[serde(with = "humantime_serde")]
    pub keep_alive_interval: Option<Duration>,
    /// Give up on `connect` after this long (handshake included).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Streams the peer may have open towards us at once, bidirectional.
    pub max_concurrent_bidi_streams: u64,
    /// Streams the peer may have open towards us at once, unidirectional.
    pub max_concurrent_uni_streams: u64,
    /// Flow-control window per stream, in bytes (how much the peer may send ahead of
    /// what the application has read on one stream).
    pub stream_receive_window: u64,
    /// Flow-control window for the whole connection, in bytes.
    pub connection_receive_window: u64,
    /// Bytes this side buffers for sending before writes wait. Engines scope it
    /// differently: quinn across all streams of a connection, s2n-quic per stream; each
    /// backend documents its mapping.
    pub send_window: u64,
    /// `SO_SNDBUF` of the UDP socket, in bytes; `None` leaves the OS default.
    pub socket_send_buffer: Option<usize>,
    /// `SO_RCVBUF` of the UDP socket, in bytes; `None` leaves the OS default.
    pub socket_receive_buffer: Option<usize>,
    /// Largest UDP payload sent before path-MTU discovery raises it (1200..=65527).
    pub initial_max_udp_payload: u16,
    /// Probe for a larger path MTU (RFC 8899). Disable to pin the payload size, as the
    /// benchmarks do (loopback's 64 KiB MTU would otherwise inflate results).
    pub mtu_discovery: bool,
    /// Upper bound for path-MTU discovery, in bytes of UDP payload.
    pub max_udp_payload: u16,
    /// Datagram (RFC 9221) settings.
    pub datagrams: DatagramConfig,
    /// Congestion control.
    pub congestion: CongestionConfig,
    /// Use UDP generic segmentation offload when the platform supports it.
    pub gso: bool,
    /// Use UDP generic receive offload when the platform supports it.
    pub gro: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            alpn: vec!["stoq".to_string()],
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: None,
            connect_timeout: Duration::from_secs(10),
            max_concurrent_bidi_streams: 1024,
            max_concurrent_uni_streams: 1024,
            // Windows sized for ~10 Gbit/s at 1 ms RTT (bandwidth-delay product 1.25 MB)
            // with headroom; the loopback bulk benchmark stops improving beyond these.
            stream_receive_window: 8 * 1024 * 1024,
            connection_receive_window: 32 * 1024 * 1024,
            send_window: 32 * 1024 * 1024,
            socket_send_buffer: Some(4 * 1024 * 1024),
            socket_receive_buffer: Some(4 * 1024 * 1024),
            initial_max_udp_payload: 1452,
            mtu_discovery: false,
            max_udp_payload: 1452,
            datagrams: DatagramConfig::default(),
            congestion: CongestionConfig::default(),
            gso: true,
            gro: true,
        }
    }
}

/// Datagram (RFC 9221) settings.
///
/// Queue limits count datagrams (as s2n-quic and quiche do; quinn's byte limits are
/// derived as count times `max_udp_payload`). Which datagram is dropped when a queue is
/// full is the engine's choice (quinn drops the oldest, s2n-quic and quiche the newest);
/// datagrams are unreliable either way.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatagramConfig {
    /// Advertise and accept datagrams.
    pub enabled: bool,
    /// Received datagrams queued for `recv_datagram` before further ones are dropped.
    pub receive_queue: usize,
    /// Outgoing datagrams queued for sending before further ones are dropped.
    pub send_queue: usize,
}

impl Default for DatagramConfig {
    fn default() -> Self {
        DatagramConfig {
            enabled: true,
            receive_queue: 1024,
            send_queue: 1024,
        }
    }
}

/// Congestion-control algorithms STOQ knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CongestionAlgorithm {
    /// NewReno (RFC 9002 section 7).
    NewReno,
    /// CUBIC (RFC 9438), the default.
    #[default]
    Cubic,
    /// BBR: the engine's own version with `implementation = "engine"`, STOQ's BBRv3
    /// ([`crate::congestion::Bbr`], draft-ietf-ccwg-bbr-06) with `implementation = "stoq"`.
    Bbr,
}

impl CongestionAlgorithm {
    /// The snake_case name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            CongestionAlgorithm::NewReno => "new_reno",
            CongestionAlgorithm::Cubic => "cubic",
            CongestionAlgorithm::Bbr => "bbr",
        }
    }
}

/// Whose implementation of the algorithm runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CongestionImplementation {
    /// The engine's built-in implementation (fastest; differs between engines).
    #[default]
    Engine,
    /// STOQ's implementation from [`crate::congestion`], run inside the engine through
    /// the backend's adapter (identical behaviour on every engine that has
    /// [`Capability::CustomCongestionControl`](crate::Capability)).
    Stoq,
}

/// Congestion-control choice.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CongestionConfig {
    /// The algorithm.
    pub algorithm: CongestionAlgorithm,
    /// Whose implementation runs.
    pub implementation: CongestionImplementation,
    /// A user-supplied controller. When set it overrides `algorithm` and
    /// `implementation`; backends without
    /// [`Capability::CustomCongestionControl`](crate::Capability) refuse it with
    /// [`Error::Unsupported`] when the endpoint is bound.
    #[serde(skip)]
    pub custom: Option<Arc<dyn CongestionControllerFactory>>,
}

impl std::fmt::Debug for CongestionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CongestionConfig")
            .field("algorithm", &self.algorithm)
            .field("implementation", &self.implementation)
            .field("custom", &self.custom.as_ref().map(|c| c.name()))
            .finish()
    }
}

impl CongestionConfig {
    /// A config that runs a user-supplied controller.
    pub fn custom(factory: Arc<dyn CongestionControllerFactory>) -> Self {
        CongestionConfig {
            custom: Some(factory),
            ..CongestionConfig::default()
        }
    }

    /// The STOQ controller factory this config asks the adapter to run, if any: the
    /// custom one, or STOQ's own implementation of `algorithm` when `implementation` is
    /// [`CongestionImplementation::Stoq`]. `Ok(None)` means "use the engine's own".
    pub fn stoq_factory(&self) -> Result<Option<Arc<dyn CongestionControllerFactory>>, Error> {
        if let Some(custom) = &self.custom {
            return Ok(Some(custom.clone()));
        }
        match self.implementation {
            CongestionImplementation::Engine => Ok(None),
            CongestionImplementation::Stoq => {
                crate::congestion::builtin_factory(self.algorithm).map(Some)
            }
        }
    }
}

impl TransportConfig {
    /// Parses a TOML document and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, Error> {
        let cfg: TransportConfig = toml::from_str(text).map_err(|e| Error::ConfigFile {
            path: "<string>".into(),
            reason: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a TOML file; errors name the file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let cfg: TransportConfig = toml::from_str(&text).map_err(|e| Error::ConfigFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value's range and the relations between them; the error names the
    /// first offending field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.alpn.is_empty() {
            return Err(Error::config("alpn", "at least one protocol is required"));
        }
        for p in &self.alpn {
            if p.is_empty() || p.len() > 255 {
                return Err(Error::config(
                    "alpn",
                    format!("protocol {p:?} must be 1 to 255 bytes long"),
                ));
            }
        }
        if self.idle_timeout.is_zero() {
            return Err(Error::config("idle_timeout", "must be greater than zero"));
        }
        // quinn, s2n-quic and quiche all encode the idle timeout in milliseconds as a varint.
        if self.idle_timeout > Duration::from_secs(24 * 3600) {
            return Err(Error::config("idle_timeout", "must be at most 24h"));
        }
        if let Some(k) = self.keep_alive_interval {
            if k.is_zero() || k >= self.idle_timeout {
                return Err(Error::config(
                    "keep_alive_interval",
                    "must be greater than zero and shorter than idle_timeout",
                ));
            }
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::config(
                "connect_timeout",
                "must be greater than zero",
            ));
        }
        for (field, v) in [
            (
                "max_concurrent_bidi_streams",
                self.max_concurrent_bidi_streams,
            ),
            (
                "max_concurrent_uni_streams",
                self.max_concurrent_uni_streams,
            ),
        ] {
            // RFC 9000 section 4.6: stream counts above 2^60 are a protocol error.
            if v > 1 << 60 {
                return Err(Error::config(field, "must be at most 2^60"));
            }
        }
        for (field, v) in [
            ("stream_receive_window", self.stream_receive_window),
            ("connection_receive_window", self.connection_receive_window),
            ("send_window", self.send_window),
        ] {
            if v == 0 || v > VARINT_MAX {
                return Err(Error::config(field, "must be between 1 and 2^62-1 bytes"));
            }
        }
        if self.stream_receive_window > self.connection_receive_window {
            return Err(Error::config(
                "stream_receive_window",
                "must not exceed connection_receive_window",
            ));
        }
        for (field, v) in [
            ("socket_send_buffer", self.socket_send_buffer),
            ("socket_receive_buffer", self.socket_receive_buffer),
        ] {
            if v == Some(0) {
                return Err(Error::config(
                    field,
                    "must be greater than zero (or absent)",
                ));
            }
        }
        // RFC 9000 section 14: 1200 is the minimum; 65527 the largest UDP payload over IPv6.
        if !(1200..=65527).contains(&self.initial_max_udp_payload) {
            return Err(Error::config(
                "initial_max_udp_payload",
                "must be between 1200 and 65527",
            ));
        }
        if self.max_udp_payload < self.initial_max_udp_payload || self.max_udp_payload > 65527 {
            return Err(Error::config(
                "max_udp_payload",
                "must be between initial_max_udp_payload and 65527",
            ));
        }
        if self.datagrams.enabled {
            for (field, v) in [
                ("datagrams.receive_queue", self.datagrams.receive_queue),
                ("datagrams.send_queue", self.datagrams.send_queue),
            ] {
                if v == 0 {
                    return Err(Error::config(
                        field,
                        "must be greater than zero when datagrams are enabled",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips_through_toml() {
        let cfg = TransportConfig::default();
        cfg.validate().unwrap();
        let text = toml::to_string(&cfg).unwrap();
        let back = TransportConfig::from_toml_str(&text).unwrap();
        assert_eq!(back.idle_timeout, cfg.idle_timeout);
        assert_eq!(back.alpn, cfg.alpn);
    }

    #[test]
    fn partial_file_takes_defaults() {
        let cfg = TransportConfig::from_toml_str(
            r#"
            alpn = ["perf", "hq-interop"]
            idle_timeout = "5s"
            keep_alive_interval = "1s"
            [congestion]
            algorithm = "new_reno"
            implementation = "stoq"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.alpn, ["perf", "hq-interop"]);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(5));
        assert_eq!(cfg.keep_alive_interval, Some(Duration::from_secs(1)));
        assert_eq!(cfg.congestion.algorithm, CongestionAlgorithm::NewReno);
        assert!(cfg.congestion.stoq_factory().unwrap().is_some());
        assert_eq!(cfg.gso, TransportConfig::default().gso);
    }

    #[test]
    fn stoq_bbr_is_stoq_s_own_bbrv3() {
        let cfg = TransportConfig::from_toml_str(
            r#"
            [congestion]
            algorithm = "bbr"
            implementation = "stoq"
            "#,
        )
        .unwrap();
        let factory = cfg.congestion.stoq_factory().unwrap().unwrap();
        assert_eq!(factory.name(), "bbr");
        // The engine's own BBR needs no STOQ factory.
        let engine = CongestionConfig {
            algorithm: CongestionAlgorithm::Bbr,
            ..CongestionConfig::default()
        };
        assert!(engine.stoq_factory().unwrap().is_none());
    }

    #[test]
    fn unknown_field_is_a_typed_error_naming_it() {
        let err = TransportConfig::from_toml_str("idle_timeot = \"5s\"").unwrap_err();
        match err {
            Error::ConfigFile { reason, .. } => assert!(reason.contains("idle_timeot"), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        assert!(matches!(
            TransportConfig::from_toml_str("idle_timeout = \"soon\""),
            Err(Error::ConfigFile { .. })
        ));
        assert!(matches!(
            TransportConfig::from_toml_str("alpn = []"),
            Err(Error::Config { field, .. }) if field == "alpn"
        ));
        assert!(matches!(
            TransportConfig::from_toml_str("idle_timeout = \"0s\""),
            Err(Error::Config { field, .. }) if field == "idle_timeout"
        ));
        assert!(matches!(
            TransportConfig::from_toml_str("keep_alive_interval = \"60s\""),
            Err(Error::Config { field, .. }) if field == "keep_alive_interval"
        ));
        assert!(matches!(
            TransportConfig::from_toml_str("initial_max_udp_payload = 1000"),
            Err(Error::Config { field, .. }) if field == "initial_max_udp_payload"
        ));
        assert!(matches!(
            TransportConfig::from_toml_str("stream_receive_window = 1_000_000_000"),
            Err(Error::Config { field, .. }) if field == "stream_receive_window"
        ));
        assert!(matches!(
            TransportConfig::from_toml_str("[congestion]\nalgorithm = \"vegas\""),
            Err(Error::ConfigFile { .. })
        ));
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = TransportConfig::from_toml_file("/nonexistent/stoq.toml").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/stoq.toml"), "{err}");
    }
}
