//! Building a Phoenix: defaults, every choice, and typed errors.

mod common;

use std::time::Duration;

use common::{builder, listen, material, phoenix, within, APP};
use phoenix::{
    CertSource, CongestionConfig, Phoenix, PhoenixError, TransportConfig, DEFAULT_CERT_NAMES,
};
use stoq_core::{CongestionAlgorithm, EndpointSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenix_new_needs_no_setup() {
    // The only test in this binary touching the environment: certificates go to a
    // temporary STOQ_HOME, never the user's home.
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("STOQ_HOME", home.path());

    let server = Phoenix::new("my-app").await.unwrap();
    assert_eq!(server.config().alpn, ["my-app"]);
    assert_eq!(server.app(), "my-app");
    assert_eq!(server.backend().name(), phoenix::DEFAULT_BACKEND);
    assert!(server.tls().identity.is_some() && !server.tls().roots.is_empty());
    assert!(home.path().join("certs").join("ca.pem").exists());

    let listener = server.listen("[::]:0").await.unwrap();
    let port = listener.local_addr().port();
    let client = Phoenix::new("my-app").await.unwrap();
    // The same store, so the same CA: the client trusts the server.
    within(30, client.send_data(&format!("localhost:{port}"), b"hello"))
        .await
        .unwrap();
    assert_eq!(
        &within(10, listener.next_message()).await.unwrap().bytes[..],
        b"hello"
    );

    // A different application name does not connect (ALPN mismatch).
    let other = Phoenix::new("other-app").await.unwrap();
    let err = within(30, other.connect(&format!("127.0.0.1:{port}")))
        .await
        .unwrap_err();
    match err {
        PhoenixError::Connection(e) => assert!(e.is_alpn_mismatch(), "{e:?}"),
        other => panic!("expected an ALPN mismatch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_backend_is_a_typed_error() {
    let err = builder()
        .backend("carrier-pigeon")
        .build()
        .await
        .unwrap_err();
    match &err {
        PhoenixError::UnknownBackend { name, available } => {
            assert_eq!(name, "carrier-pigeon");
            assert!(available.contains(&"quinn"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("carrier-pigeon"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_addresses_are_typed_errors() {
    let p = phoenix().await;
    for input in [
        "nohost:notaport",
        "localhost",
        "::1:80",
        "[::1]:99999",
        ":80",
    ] {
        let err = within(10, p.connect(input)).await.unwrap_err();
        match &err {
            PhoenixError::BadAddress { input: i, why } => {
                assert_eq!(i, input);
                assert!(!why.is_empty());
            }
            other => panic!("{input}: unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with(&format!("bad address {input}: ")),
            "{err}"
        );
        assert!(matches!(
            within(10, p.listen(input)).await.unwrap_err(),
            PhoenixError::BadAddress { .. }
        ));
        assert!(matches!(
            within(10, p.send_data(input, b"x")).await.unwrap_err(),
            PhoenixError::BadAddress { .. }
        ));
    }
    let err = within(10, p.connect("[::1]:0")).await.unwrap_err();
    assert!(matches!(err, PhoenixError::BadAddress { .. }), "{err:?}");
    let err = within(30, p.connect("no-such-host.invalid:443"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PhoenixError::Resolve { host, .. } if host == "no-such-host.invalid"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_invalid_config_file_is_a_typed_error() {
    let err = builder()
        .config_file("/nonexistent/phoenix.toml")
        .build()
        .await
        .unwrap_err();
    match &err {
        PhoenixError::Core(stoq_core::Error::ConfigFile { path, .. }) => {
            assert_eq!(path, std::path::Path::new("/nonexistent/phoenix.toml"))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("/nonexistent/phoenix.toml"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "idle_timeout = \"0s\"\n").unwrap();
    let err = builder().config_file(&bad).build().await.unwrap_err();
    assert!(
        matches!(&err, PhoenixError::Core(stoq_core::Error::Config { field, .. }) if field == "idle_timeout"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_congestion_and_backend_choices_apply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stoq.toml");
    std::fs::write(
        &path,
        "alpn = [\"from-file\"]\nidle_timeout = \"7s\"\n[congestion]\nalgorithm = \"cubic\"\n",
    )
    .unwrap();
    let p = Phoenix::builder()
        .tls(material())
        .config_file(&path)
        .build()
        .await
        .unwrap();
    assert_eq!(p.config().idle_timeout, Duration::from_secs(7));
    assert_eq!(p.config().alpn, ["from-file"]);
    assert_eq!(p.app(), "from-file");

    // The app name replaces the file's ALPN; the congestion choice replaces the file's.
    let server = builder()
        .config_file(&path)
        .congestion(CongestionConfig {
            algorithm: CongestionAlgorithm::NewReno,
            ..CongestionConfig::default()
        })
        .backend_impl(phoenix::backend("quinn").unwrap())
        .build()
        .await
        .unwrap();
    assert_eq!(server.config().alpn, [APP]);
    assert_eq!(
        server.config().congestion.algorithm,
        CongestionAlgorithm::NewReno
    );
    let (listener, target) = listen(&server).await;
    let client = builder()
        .config(TransportConfig {
            idle_timeout: Duration::from_secs(9),
            ..TransportConfig::default()
        })
        .backend("quinn")
        .build()
        .await
        .unwrap();
    assert_eq!(client.config().idle_timeout, Duration::from_secs(9));
    within(20, client.send_data(&target, b"configured"))
        .await
        .unwrap();
    assert_eq!(
        &within(10, listener.next_message()).await.unwrap().bytes[..],
        b"configured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplied_transport_is_used_for_dialing() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let config = TransportConfig {
        alpn: vec![APP.into()],
        ..TransportConfig::default()
    };
    let transport = phoenix::backend("quinn")
        .unwrap()
        .bind(EndpointSpec::client(
            listener.local_addr(),
            config,
            material(),
        ))
        .unwrap();
    let client = builder()
        .transport(transport.clone())
        .build()
        .await
        .unwrap();
    within(20, client.send_data(&target, b"through my endpoint"))
        .await
        .unwrap();
    assert_eq!(transport.stats().connected, 1);
    assert_eq!(
        &within(10, listener.next_message()).await.unwrap().bytes[..],
        b"through my endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_a_store_dir_and_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("certs");
    let server = builder().cert_store(&store_dir).build().await.unwrap();
    let (listener, target) = listen(&server).await;

    // A client trusting the store's CA through PEM files (no identity of its own).
    let store = stoq_crypto::CertStore::open(&store_dir).unwrap();
    let (ca, _) = store.ca_paths();
    let client = builder().pem_roots(&ca).build().await.unwrap();
    assert!(client.tls().identity.is_none());
    within(20, client.send_data(&target, b"pem")).await.unwrap();
    assert_eq!(
        &within(10, listener.next_message()).await.unwrap().bytes[..],
        b"pem"
    );

    // A server identity from PEM files.
    let (cert, key) = store.leaf_paths(&DEFAULT_CERT_NAMES).unwrap();
    let pem_server = builder()
        .pem_identity(&cert, &key)
        .pem_roots(&ca)
        .build()
        .await
        .unwrap();
    assert!(pem_server.tls().identity.is_some());
    let (l2, t2) = listen(&pem_server).await;
    within(20, client.send_data(&t2, b"pem server"))
        .await
        .unwrap();
    assert_eq!(
        &within(10, l2.next_message()).await.unwrap().bytes[..],
        b"pem server"
    );

    // Missing files are crypto errors naming the file.
    let missing = dir.path().join("missing.pem");
    let err = builder().pem_roots(&missing).build().await.unwrap_err();
    assert!(matches!(err, PhoenixError::Crypto(_)), "{err:?}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let err = builder()
        .certs(CertSource::Pem {
            identity: Some((missing.clone(), missing.clone())),
            roots: None,
        })
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, PhoenixError::Crypto(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_serialize_for_json() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    within(20, client.send_data(&target, &[5u8; 100_000]))
        .await
        .unwrap();
    within(10, listener.next_message()).await.unwrap();

    let stats = client.stats();
    assert_eq!(stats.backend, "quinn");
    assert_eq!(stats.total.transport.open_connections, 1);
    assert!(stats.total.transport.udp_bytes_sent > 100_000);
    let c = &stats.connections[0];
    assert!(c.rtt_ms > 0.0 && c.congestion_window > 0, "{c:?}");
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["total"]["sdk"]["messages_sent"], 1);
    assert_eq!(json["total"]["sdk"]["bytes_sent"], 100_000);
    assert_eq!(json["pool"]["misses"], 1);
    assert!(json["connections"][0]["transport"]["rtt"].is_object());
    assert!(json["total"]["sdk"]["goodput_bps"].as_f64().unwrap() > 0.0);

    // Dropped connections stay in the totals.
    client.close().await;
    let after = client.stats();
    assert!(after.connections.is_empty(), "{:?}", after.connections);
    assert_eq!(after.total.transport.retired_connections, 1);
    assert!(after.total.transport.udp_bytes_sent > 100_000);
    assert_eq!(after.total.sdk.messages_sent, 1);
}
