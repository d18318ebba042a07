//! The tower adapter: real request/response through tower's layers.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{listen, phoenix, within};
use phoenix::{serve_requests, ConnectionError, PhoenixError};
use tower::{Service, ServiceBuilder, ServiceExt};

/// A server answering `upper(request)`, sleeping first for requests starting with "slow",
/// and counting the requests it is handling at once.
async fn server() -> (
    phoenix::Phoenix,
    phoenix::Listener,
    String,
    Arc<AtomicUsize>,
) {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let peak = Arc::new(AtomicUsize::new(0));
    let current = Arc::new(AtomicUsize::new(0));
    let l = listener.clone();
    let (p, c) = (peak.clone(), current.clone());
    tokio::spawn(serve_requests(l, move |req: Bytes| {
        let (p, c) = (p.clone(), c.clone());
        async move {
            let now = c.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            if req.starts_with(b"slow") {
                tokio::time::sleep(Duration::from_secs(3)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.fetch_sub(1, Ordering::SeqCst);
            Bytes::from(req.to_ascii_uppercase())
        }
    }));
    (server, listener, target, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_through_timeout_and_concurrency_limit_layers() {
    let (server, _listener, target, peak) = server().await;
    let client = phoenix().await;
    let conn = within(20, client.connect(&target)).await.unwrap();
    let svc = ServiceBuilder::new()
        .timeout(Duration::from_secs(10))
        .concurrency_limit(4)
        .service(conn.service());

    let calls = (0..24).map(|i| {
        let svc = svc.clone();
        async move {
            let req = Bytes::from(format!("request number {i}"));
            let resp = svc.oneshot(req).await.unwrap();
            assert_eq!(resp, Bytes::from(format!("REQUEST NUMBER {i}")));
        }
    });
    within(60, futures_util::future::join_all(calls)).await;
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&peak),
        "concurrency limit not honoured: {peak}"
    );

    // A large request and response.
    let big = Bytes::from(vec![b'a'; 3 * 1024 * 1024]);
    let resp = within(60, svc.clone().oneshot(big.clone())).await.unwrap();
    assert_eq!(resp.len(), big.len());
    assert!(resp.iter().all(|&b| b == b'A'));

    assert_eq!(client.stats().total.sdk.requests_sent, 25);
    assert!(
        common::eventually(10, || server.stats().total.sdk.requests_served == 25).await,
        "{:?}",
        server.stats().total.sdk
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_layer_fires_for_a_slow_handler() {
    let (_server, _listener, target, _) = server().await;
    let client = phoenix().await;
    let conn = within(20, client.connect(&target)).await.unwrap();
    let mut svc = ServiceBuilder::new()
        .timeout(Duration::from_millis(200))
        .service(conn.service());
    let err = within(
        10,
        svc.ready()
            .await
            .unwrap()
            .call(Bytes::from_static(b"slow please")),
    )
    .await
    .unwrap_err();
    assert!(
        err.is::<tower::timeout::error::Elapsed>(),
        "expected a timeout, got {err}"
    );
    // The connection is still usable after an abandoned call.
    let resp = within(
        10,
        svc.ready()
            .await
            .unwrap()
            .call(Bytes::from_static(b"quick")),
    )
    .await
    .unwrap();
    assert_eq!(resp, Bytes::from_static(b"QUICK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_ready_fails_once_the_connection_is_closed() {
    let (_server, _listener, target, _) = server().await;
    let client = phoenix().await;
    let conn = within(20, client.connect(&target)).await.unwrap();
    let mut svc = conn.service();
    within(10, svc.ready()).await.unwrap();
    conn.close(3, b"going away");
    let err = within(10, svc.ready()).await.unwrap_err();
    assert!(
        matches!(
            err,
            PhoenixError::Connection(ConnectionError::LocallyClosed { code: 3, .. })
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_responses_and_requests_are_refused() {
    let (_server, _listener, target, _) = server().await;
    let client = phoenix().await;
    let conn = within(20, client.connect(&target)).await.unwrap();
    let mut svc = conn.service().with_max_response_size(10);
    let err = within(
        10,
        svc.ready()
            .await
            .unwrap()
            .call(Bytes::from_static(b"eleven byte")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PhoenixError::MessageTooLarge { max: Some(10), .. }),
        "{err:?}"
    );

    // A server with a small limit refuses a large request.
    let small = common::builder()
        .max_message_size(1000)
        .build()
        .await
        .unwrap();
    let (l, t) = listen(&small).await;
    let conn_small = within(20, client.connect(&t)).await.unwrap();
    let served = tokio::spawn(async move {
        let c = l.accept().await.unwrap();
        serve_requests(&c, |r: Bytes| async move { r }).await
    });
    let err = within(
        10,
        conn_small.service().oneshot(Bytes::from(vec![0u8; 4000])),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PhoenixError::MessageTooLarge { max: None, .. }),
        "{err:?}"
    );
    let ok = within(
        10,
        conn_small.service().oneshot(Bytes::from_static(b"fits")),
    )
    .await
    .unwrap();
    assert_eq!(ok, Bytes::from_static(b"fits"));
    conn_small.close(0, b"");
    within(10, served).await.unwrap().unwrap();
}
