//! The contracts. Each is an `async fn(Harness) -> ContractResult`.

use std::time::Duration;

use crate::Contract;

mod datagrams;
mod falcon_post;
mod handshake;
mod impaired;
mod lifecycle;
mod robustness;
mod streams;

macro_rules! contract {
    ($module:ident :: $name:ident, $limit:expr, $desc:expr) => {
        Contract {
            name: stringify!($name),
            description: $desc,
            run: |h| Box::pin($module::$name(h)),
            limit: Duration::from_secs($limit),
        }
    };
}

/// Every contract, in the order reports list them.
pub static CONTRACTS: &[Contract] = &[
    contract!(handshake::handshake_alpn, 30,
        "the handshake completes with the agreed ALPN, visible on both sides"),
    contract!(handshake::alpn_mismatch_fails, 30,
        "no ALPN in common fails the handshake with TLS alert 120 on the client"),
    contract!(handshake::untrusted_certificate_fails, 30,
        "a server certificate from an untrusted CA fails the handshake with a certificate error"),
    contract!(handshake::wrong_server_name_fails, 30,
        "a certificate not valid for the dialled server name fails with a certificate error"),
    contract!(handshake::ipv4_and_ipv6, 30,
        "endpoints connect over 127.0.0.1 and over ::1"),
    contract!(handshake::peer_identity, 30,
        "the client sees the server's certificate chain"),
    contract!(streams::bidi_echo, 30,
        "a bidirectional stream carries data both ways and ends cleanly"),
    contract!(streams::uni_streams, 30,
        "unidirectional streams work in both directions"),
    contract!(streams::concurrent_streams_1000, 120,
        "1,000 concurrent bidirectional streams on one connection each echo their own data"),
    contract!(streams::request_stream_churn, 120,
        "12,000 requests on a new stream each, 48 at once, under a limit of 32 streams: every one completes"),
    contract!(streams::large_transfer_hash, 180,
        "a large transfer arrives byte-exact (SHA-256 checked at the receiver)"),
    contract!(streams::drop_without_finish_resets, 30,
        "dropping a send stream without finish() resets it; the peer never sees a clean end"),
    contract!(streams::finish_delivers_all_data, 60,
        "finish() delivers all queued data before the end of stream; stopped() then reports success"),
    contract!(streams::reset_code_reaches_peer, 30,
        "reset(code) reaches the peer's reader as that code"),
    contract!(streams::stop_code_reaches_peer, 30,
        "stop(code) reaches the peer's writer as that code"),
    contract!(streams::reads_after_stop_fail, 30,
        "after stop(), every read fails with ClosedStream: a stopped stream never looks ended cleanly"),
    contract!(lifecycle::close_code_and_reason, 30,
        "close(code, reason) reaches the peer; closed() resolves on both sides"),
    contract!(lifecycle::server_endpoint_dials, 30,
        "a server endpoint dials another from its own socket, or connect says Unsupported"),
    contract!(lifecycle::endpoint_close_reaches_peers, 30,
        "closing an endpoint closes its connections with the code and stops accept()"),
    contract!(lifecycle::idle_timeout_closes_both, 30,
        "an idle connection is closed on both sides by the idle timeout"),
    contract!(lifecycle::keep_alive_prevents_idle_timeout, 30,
        "keep-alive keeps an otherwise idle connection open past the idle timeout"),
    contract!(datagrams::datagram_round_trip, 30,
        "datagrams round-trip between client and server"),
    contract!(datagrams::oversized_datagram_rejected, 30,
        "a datagram over max_datagram_size() is rejected with DatagramError::TooLarge"),
    contract!(datagrams::datagrams_disabled_rejected, 30,
        "with datagrams disabled, sending one fails with DatagramError::Disabled"),
    contract!(lifecycle::stats_agree_with_application, 60,
        "stats are monotonic and agree with the bytes the application moved"),
    contract!(lifecycle::connect_no_listener_times_out, 30,
        "connecting to a port with no listener fails within the configured timeout"),
    contract!(handshake::keying_material_export, 30,
        "both sides export the same keying material for the same label and context"),
    contract!(handshake::falcon_mutual_auth_in_handshake, 60,
        "FALCON-512 certificates authenticate server and client inside the TLS 1.3 handshake"),
    contract!(handshake::falcon_bad_certificates_fail, 60,
        "an untrusted, expired, misnamed or tampered FALCON certificate fails with a certificate error"),
    contract!(falcon_post::falcon_mutual_auth_post_handshake, 60,
        "FALCON-512 certificates authenticate both sides right after the handshake; streams and datagrams work afterwards"),
    contract!(falcon_post::falcon_post_handshake_failures_close, 120,
        "a wrong exporter, role or ALPN, a tampered signature, a wrong OID, a bad certificate or no FALCON at all: typed error, distinct close code at the peer"),
    contract!(impaired::impaired_path_delivers_intact, 120,
        "3 % loss, reordering, duplication and jitter both ways: data arrives byte-exact under every built-in controller"),
    contract!(impaired::corrupted_packets_are_dropped, 120,
        "corrupted packets are dropped, never delivered: data arrives byte-exact"),
    contract!(impaired::blackhole_is_survived, 120,
        "a 2-second blackhole mid-transfer is survived without the connection closing"),
    contract!(robustness::malformed_packets_ignored, 30,
        "malformed UDP packets sent to an endpoint are dropped; it keeps serving"),
    contract!(robustness::handshake_flood_spares_connections, 90,
        "1,200 handshakes then closes (8 at once) leave a live connection on the same endpoints working; closed ones leave both endpoints"),
    contract!(robustness::invalid_config_rejected, 30,
        "invalid configuration is refused at bind time with a typed error naming the field"),
    contract!(robustness::stoq_congestion_controllers, 120,
        "STOQ's NewReno, CUBIC and BBRv3 run inside the engine and move data"),
    contract!(robustness::custom_congestion_controller, 60,
        "a user-supplied congestion controller drives the engine, or bind says Unsupported"),
    contract!(robustness::custom_pacing_rate_is_honoured, 60,
        "a backend claiming pacing_honored sends no faster than the controller's pacing rate"),
];
