//! quiche (BoringSSL) against quinn (rustls): the keying-material exporter must derive
//! the same bytes on both stacks (the proof that the export is RFC 8446 section 7.5),
//! the TLS parameters are the ones STOQ asks for, and a selection of contracts holds
//! with either engine on either side.

use std::sync::Arc;

use stoq_conformance::{util::LOCALHOST_V6, Harness, Outcome};
use stoq_core::{Backend, EndpointSpec, TransportConfig};
use stoq_quiche::{QuicheBackend, QuicheTransport};
use stoq_quinn::QuinnBackend;

fn quiche() -> Arc<dyn Backend> {
    Arc::new(QuicheBackend)
}

fn quinn() -> Arc<dyn Backend> {
    Arc::new(QuinnBackend)
}

/// Exports a few values on both sides of a connection from `client` to `server`.
async fn exports_agree(client: Arc<dyn Backend>, server: Arc<dyn Backend>) {
    let h = Harness::pair(client.clone(), server.clone());
    let p = h.connect().await.expect("connect");
    for (label, context, len) in [
        (&b"EXPORTER-stoq test"[..], &b"ctx"[..], 32),
        (b"EXPORTER-Channel-Binding", b"", 32),
        (
            b"EXPORTER-stoq falcon binding",
            b"some longer context value",
            64,
        ),
        (b"x", b"", 1),
    ] {
        let mut a = vec![0u8; len];
        let mut b = vec![0u8; len];
        p.client
            .export_keying_material(&mut a, label, context)
            .expect("client export");
        p.server
            .export_keying_material(&mut b, label, context)
            .expect("server export");
        assert_eq!(
            a,
            b,
            "{} client and {} server exported different bytes for label {:?}",
            client.name(),
            server.name(),
            String::from_utf8_lossy(label)
        );
        // Not all zeros (an export that filled nothing); only asked of exports long enough
        // that real output is all zeros with negligible probability (a 1-byte export is 0
        // once in 256 connections).
        if len >= 16 {
            assert!(a.iter().any(|&x| x != 0));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_matches_rustls_quiche_client_quinn_server() {
    exports_agree(quiche(), quinn()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_matches_rustls_quinn_client_quiche_server() {
    exports_agree(quinn(), quiche()).await;
}

/// The hybrid post-quantum group and AES-128-GCM are negotiated, quiche to quiche and
/// quiche to quinn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_x25519mlkem768_and_aes128gcm() {
    for server in [quiche(), quinn()] {
        let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
        let cfg = TransportConfig::default();
        let srv = server
            .bind(EndpointSpec::server(LOCALHOST_V6, cfg.clone(), tls.clone()))
            .unwrap();
        let addr = srv.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let c = srv.accept().await;
            (srv, c)
        });
        let client = QuicheTransport::bind(EndpointSpec::client(addr, cfg, tls)).unwrap();
        let conn = client.dial(addr, "localhost").await.expect("dial");
        let (cipher, group) = conn.tls_parameters();
        println!("quiche -> {}: {cipher:?} {group:?}", server.name());
        assert_eq!(cipher.as_deref(), Some("TLS_AES_128_GCM_SHA256"));
        assert_eq!(group.as_deref(), Some("X25519MLKEM768"));
        let (_srv, accepted) = accept.await.unwrap();
        accepted.expect("accept");
    }
}

/// Contracts that involve both engines' wire behaviour, run with quiche on one side and
/// quinn on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_across_engines() {
    const CONTRACTS: &[&str] = &[
        "handshake_alpn",
        "alpn_mismatch_fails",
        "untrusted_certificate_fails",
        "wrong_server_name_fails",
        "ipv4_and_ipv6",
        "peer_identity",
        "bidi_echo",
        "uni_streams",
        "drop_without_finish_resets",
        "finish_delivers_all_data",
        "reset_code_reaches_peer",
        "stop_code_reaches_peer",
        "close_code_and_reason",
        "idle_timeout_closes_both",
        "keep_alive_prevents_idle_timeout",
        "datagram_round_trip",
        "oversized_datagram_rejected",
        "datagrams_disabled_rejected",
        "keying_material_export",
        "falcon_mutual_auth_post_handshake",
        "falcon_post_handshake_failures_close",
    ];
    let mut failures = Vec::new();
    for (client, server) in [(quiche(), quinn()), (quinn(), quiche())] {
        for name in CONTRACTS {
            let c = stoq_conformance::contract(name).expect("contract exists");
            let h = Harness::pair(client.clone(), server.clone());
            let label = format!("{name} ({} -> {})", client.name(), server.name());
            match stoq_conformance::run_contract(c, h).await {
                Ok(Outcome::Passed) => println!("passed      {label}"),
                Ok(Outcome::Unsupported(cap)) => println!("unsupported {label}: {cap}"),
                Err(f) => {
                    println!("FAILED      {label}: {f}");
                    failures.push(format!("{label}: {f}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
