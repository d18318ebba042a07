//! Network tiers: classify a path by measured goodput and RTT, and size the transport's
//! windows and buffers for it.
//!
//! | tier | goodput | RTT |
//! |---|---|---|
//! | [`Home`](NetworkTier::Home) | below 100 Mbit/s | **or** above 50 ms |
//! | [`Standard`](NetworkTier::Standard) | 100 Mbit/s to below 1 Gbit/s | up to 50 ms |
//! | [`Performance`](NetworkTier::Performance) | 1 Gbit/s to below 10 Gbit/s (or faster with RTT of 1 ms or more) | up to 50 ms |
//! | [`Enterprise`](NetworkTier::Enterprise) | 10 Gbit/s or more | **and** below 1 ms |
//!
//! A long RTT puts a path in `Home` whatever its rate: with tens of milliseconds of delay
//! the flow-control windows, not the link, limit a single connection, and small buffers
//! keep memory modest. `Enterprise` needs both a fast link and a data-centre RTT.
//!
//! Each tier's [`TierProfile`] sizes the receive windows to at least the bandwidth-delay
//! product of the tier's worst case (its top rate at its longest RTT), so one connection
//! can fill the path:
//!
//! | tier | stream window | connection window | send window | socket buffers |
//! |---|---|---|---|---|
//! | Home | 2 MiB | 8 MiB | 8 MiB | 2 MiB |
//! | Standard | 8 MiB | 32 MiB | 32 MiB | 4 MiB |
//! | Performance | 16 MiB | 64 MiB | 64 MiB | 8 MiB |
//! | Enterprise | 32 MiB | 128 MiB | 128 MiB | 16 MiB |
//!
//! (Home: 100 Mbit/s x 160 ms = 2 MB per stream. Standard is STOQ's default configuration:
//! 1 Gbit/s x 50 ms = 6.25 MB. Performance: 10 Gbit/s x 10 ms = 12.5 MB. Enterprise
//! links are short but bursty at 10 Gbit/s and above, so the windows double again.)
//! The kernel caps socket buffers at `net.core.{r,w}mem_max` for unprivileged processes.
//!
//! Profiles apply to connections made *after* the tier is set (windows are endpoint
//! settings): [`Phoenix::probe`](crate::Phoenix::probe) measures and records the tier, or
//! [`PhoenixBuilder::tier`](crate::PhoenixBuilder::tier) fixes it without probing.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stoq_core::TransportConfig;

/// Bytes a probe sends by default (4 MiB): enough to leave slow start on a LAN, little
/// enough to take well under a second on a home link.
pub const DEFAULT_PROBE_BYTES: u64 = 4 * 1024 * 1024;

/// Measures the path to `conn`'s peer (three pings, then a [`DEFAULT_PROBE_BYTES`]
/// probe the peer's Phoenix discards) and classifies it. Records nothing; use
/// [`Phoenix::probe`](crate::Phoenix::probe) to apply the tier to new connections.
pub async fn probe(conn: &crate::PhoenixConnection) -> Result<ProbeReport, crate::PhoenixError> {
    conn.measure(DEFAULT_PROBE_BYTES).await
}

/// Below this goodput a path is `Home` (100 Mbit/s).
pub const HOME_BELOW_BPS: f64 = 100e6;
/// Above this RTT a path is `Home` whatever its goodput (50 ms).
pub const HOME_ABOVE_RTT: Duration = Duration::from_millis(50);
/// Below this goodput a path is `Standard` (1 Gbit/s).
pub const STANDARD_BELOW_BPS: f64 = 1e9;
/// Below this goodput a path is `Performance` (10 Gbit/s).
pub const PERFORMANCE_BELOW_BPS: f64 = 10e9;
/// `Enterprise` needs an RTT below this (1 ms).
pub const ENTERPRISE_BELOW_RTT: Duration = Duration::from_millis(1);

/// A class of network path, from measured goodput and RTT (thresholds in the
/// [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkTier {
    /// Consumer broadband or Wi-Fi, or any long-RTT path.
    Home,
    /// Office networks and good broadband, up to 1 Gbit/s.
    Standard,
    /// Fast LANs and cloud links, 1 to 10 Gbit/s.
    Performance,
    /// Data-centre fabric: 10 Gbit/s or more at sub-millisecond RTT.
    Enterprise,
}

impl NetworkTier {
    /// Every tier, slowest first.
    pub const ALL: [NetworkTier; 4] = [
        NetworkTier::Home,
        NetworkTier::Standard,
        NetworkTier::Performance,
        NetworkTier::Enterprise,
    ];

    /// The tier for a measured goodput (bits per second) and RTT.
    pub fn classify(goodput_bps: f64, rtt: Duration) -> NetworkTier {
        if goodput_bps.is_nan() || goodput_bps < HOME_BELOW_BPS || rtt > HOME_ABOVE_RTT {
            NetworkTier::Home
        } else if goodput_bps < STANDARD_BELOW_BPS {
            NetworkTier::Standard
        } else if goodput_bps < PERFORMANCE_BELOW_BPS || rtt >= ENTERPRISE_BELOW_RTT {
            NetworkTier::Performance
        } else {
            NetworkTier::Enterprise
        }
    }

    /// The transport settings for this tier.
    pub fn profile(self) -> TierProfile {
        const MIB: u64 = 1024 * 1024;
        let (stream, conn, socket) = match self {
            NetworkTier::Home => (2 * MIB, 8 * MIB, 2 * MIB),
            NetworkTier::Standard => (8 * MIB, 32 * MIB, 4 * MIB),
            NetworkTier::Performance => (16 * MIB, 64 * MIB, 8 * MIB),
            NetworkTier::Enterprise => (32 * MIB, 128 * MIB, 16 * MIB),
        };
        TierProfile {
            stream_receive_window: stream,
            connection_receive_window: conn,
            send_window: conn,
            socket_send_buffer: socket as usize,
            socket_receive_buffer: socket as usize,
        }
    }

    /// The lower-case name (`home`, `standard`, `performance`, `enterprise`).
    pub fn name(self) -> &'static str {
        match self {
            NetworkTier::Home => "home",
            NetworkTier::Standard => "standard",
            NetworkTier::Performance => "performance",
            NetworkTier::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for NetworkTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NetworkTier {
    type Err = crate::PhoenixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetworkTier::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                crate::PhoenixError::InvalidOptions(format!(
                    "unknown network tier {s:?}; expected home, standard, performance or enterprise"
                ))
            })
    }
}

/// Transport settings for a [`NetworkTier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierProfile {
    /// [`TransportConfig::stream_receive_window`].
    pub stream_receive_window: u64,
    /// [`TransportConfig::connection_receive_window`].
    pub connection_receive_window: u64,
    /// [`TransportConfig::send_window`].
    pub send_window: u64,
    /// [`TransportConfig::socket_send_buffer`].
    pub socket_send_buffer: usize,
    /// [`TransportConfig::socket_receive_buffer`].
    pub socket_receive_buffer: usize,
}

impl TierProfile {
    /// Writes the profile's values into `config`.
    pub fn apply(&self, config: &mut TransportConfig) {
        config.stream_receive_window = self.stream_receive_window;
        config.connection_receive_window = self.connection_receive_window;
        config.send_window = self.send_window;
        config.socket_send_buffer = Some(self.socket_send_buffer);
        config.socket_receive_buffer = Some(self.socket_receive_buffer);
    }
}

/// What a probe measured.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ProbeReport {
    /// Probe payload bytes sent.
    pub probe_bytes: u64,
    /// From opening the probe stream to the peer's acknowledgement of its last byte, ms.
    pub elapsed_ms: f64,
    /// `probe_bytes * 8 / elapsed`, bits per second.
    pub goodput_bps: f64,
    /// The RTT used for classification, ms: the connection's smoothed RTT after the
    /// probe, or a ping round trip where the engine reports none.
    pub rtt_ms: f64,
    /// The best of the ping round trips, ms.
    pub ping_ms: f64,
    /// The resulting tier.
    pub tier: NetworkTier,
}

/// Where the tier in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TierSource {
    /// Set with [`PhoenixBuilder::tier`](crate::PhoenixBuilder::tier); probing is skipped.
    Override,
    /// Measured by [`Phoenix::probe`](crate::Phoenix::probe).
    Probe,
}

/// The tier in force, as [`stats`](crate::Phoenix::stats) reports it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TierReport {
    /// The tier.
    pub tier: NetworkTier,
    /// Where it came from.
    pub source: TierSource,
    /// The settings new connections get.
    pub profile: TierProfile,
    /// The measurement, for a probed tier.
    pub probe: Option<ProbeReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_valid_configs_and_grow_with_the_tier() {
        let mut last = 0;
        for t in NetworkTier::ALL {
            let mut cfg = TransportConfig::default();
            t.profile().apply(&mut cfg);
            cfg.validate().unwrap();
            assert!(cfg.stream_receive_window > last);
            last = cfg.stream_receive_window;
            assert_eq!(t.name().parse::<NetworkTier>().unwrap(), t);
        }
        // Standard is STOQ's default configuration.
        let d = TransportConfig::default();
        let p = NetworkTier::Standard.profile();
        assert_eq!(p.stream_receive_window, d.stream_receive_window);
        assert_eq!(p.connection_receive_window, d.connection_receive_window);
    }
}
