//! What an engine can do, as a small set type.
//!
//! Hand-written rather than `bitflags` because every capability needs a stable name for
//! reports (`phoenix conformance`) and a doc comment saying what it promises, and an enum
//! gives both with `Error::Unsupported(Capability)` naming exactly one missing feature.

use std::fmt;

/// One feature a backend may or may not provide.
///
/// A backend that lacks a capability returns [`Error::Unsupported`](crate::Error) with it
/// when asked for the feature; the conformance suite checks exactly that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Capability {
    /// Unreliable datagrams (RFC 9221): `send_datagram` / `recv_datagram`.
    Datagrams,
    /// 0-RTT early data on resumed connections.
    ZeroRtt,
    /// Connection migration to a new client address (RFC 9000 section 9).
    Migration,
    /// A user-supplied [`CongestionController`](crate::congestion::CongestionController)
    /// drives the engine's sending.
    CustomCongestionControl,
    /// The engine paces packets at the rate a custom controller's `pacing_rate` returns.
    PacingHonored,
    /// TLS exporter (RFC 5705 / RFC 8446 section 7.5) via `export_keying_material`.
    KeyingMaterialExport,
    /// UDP generic segmentation offload on send.
    Gso,
    /// UDP generic receive offload.
    Gro,
    /// Endpoints bind and dial IPv6 addresses.
    Ipv6,
    /// Endpoints bind and dial IPv4 addresses.
    Ipv4,
    /// The peer's certificate chain is available after the handshake.
    PeerIdentity,
    /// Stream send priorities.
    StreamPriority,
    /// Keep-alive pings at a configured interval.
    KeepAlive,
    /// FALCON certificates carried inside the TLS handshake.
    FalconInHandshake,
    /// FALCON authentication right after the handshake on a reserved stream
    /// (`stoq_crypto::falcon::post_handshake`): the engine has unidirectional streams with
    /// RFC 9000 stream IDs and [`KeyingMaterialExport`](Capability::KeyingMaterialExport).
    FalconPostHandshake,
    /// `close(code, reason)` sends the reason phrase and the peer's phrase is reported
    /// (s2n-quic sends the code only).
    CloseReason,
    /// An endpoint bound as a server can also dial from the same socket.
    DialFromServer,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 17] = [
        Capability::Datagrams,
        Capability::ZeroRtt,
        Capability::Migration,
        Capability::CustomCongestionControl,
        Capability::PacingHonored,
        Capability::KeyingMaterialExport,
        Capability::Gso,
        Capability::Gro,
        Capability::Ipv6,
        Capability::Ipv4,
        Capability::PeerIdentity,
        Capability::StreamPriority,
        Capability::KeepAlive,
        Capability::FalconInHandshake,
        Capability::FalconPostHandshake,
        Capability::CloseReason,
        Capability::DialFromServer,
    ];

    /// A stable snake_case name for reports and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::Datagrams => "datagrams",
            Capability::ZeroRtt => "zero_rtt",
            Capability::Migration => "migration",
            Capability::CustomCongestionControl => "custom_congestion_control",
            Capability::PacingHonored => "pacing_honored",
            Capability::KeyingMaterialExport => "keying_material_export",
            Capability::Gso => "gso",
            Capability::Gro => "gro",
            Capability::Ipv6 => "ipv6",
            Capability::Ipv4 => "ipv4",
            Capability::PeerIdentity => "peer_identity",
            Capability::StreamPriority => "stream_priority",
            Capability::KeepAlive => "keep_alive",
            Capability::FalconInHandshake => "falcon_in_handshake",
            Capability::FalconPostHandshake => "falcon_post_handshake",
            Capability::CloseReason => "close_reason",
            Capability::DialFromServer => "dial_from_server",
        }
    }

    const fn bit(self) -> u64 {
        1 << (self as u64)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Capability`] values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u64);

impl Capabilities {
    /// The empty set.
    pub const fn empty() -> Self {
        Capabilities(0)
    }

    /// A set holding exactly `caps`.
    pub const fn from_slice(caps: &[Capability]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < caps.len() {
            bits |= caps[i].bit();
            i += 1;
        }
        Capabilities(bits)
    }

    /// Whether `cap` is in the set.
    pub const fn contains(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }

    /// The set with `cap` added.
    #[must_use]
    pub const fn with(self, cap: Capability) -> Self {
        Capabilities(self.0 | cap.bit())
    }

    /// The set with `cap` removed.
    #[must_use]
    pub const fn without(self, cap: Capability) -> Self {
        Capabilities(self.0 & !cap.bit())
    }

    /// `Ok(())` if `cap` is present, otherwise [`Error::Unsupported`](crate::Error::Unsupported).
    pub fn require(self, cap: Capability) -> Result<(), crate::Error> {
        if self.contains(cap) {
            Ok(())
        } else {
            Err(crate::Error::Unsupported(cap))
        }
    }

    /// The capabilities in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter()
            .fold(Capabilities::empty(), Capabilities::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let caps = Capabilities::from_slice(&[Capability::Datagrams, Capability::Gso]);
        assert!(caps.contains(Capability::Datagrams));
        assert!(!caps.contains(Capability::ZeroRtt));
        assert!(caps.require(Capability::Gso).is_ok());
        assert!(matches!(
            caps.require(Capability::ZeroRtt),
            Err(crate::Error::Unsupported(Capability::ZeroRtt))
        ));
        let caps = caps.without(Capability::Gso).with(Capability::Ipv6);
        assert_eq!(
            caps.iter().collect::<Vec<_>>(),
            vec![Capability::Datagrams, Capability::Ipv6]
        );
    }

    #[test]
    fn all_is_complete_and_bits_are_distinct() {
        let all: Capabilities = Capability::ALL.into_iter().collect();
        assert_eq!(all.iter().count(), Capability::ALL.len());
    }
}
