//! Connection pooling over real loopback connections.

mod common;

use std::time::Duration;

use common::{builder, eventually, listen, phoenix, within};
use phoenix::{ConnectionError, PoolConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_connect_reuses_the_live_connection() {
    let server = phoenix().await;
    let (_listener, target) = listen(&server).await;
    let client = phoenix().await;

    let a = within(20, client.connect(&target)).await.unwrap();
    let b = within(20, client.connect(&target)).await.unwrap();
    assert_eq!(a.stable_id(), b.stable_id());
    assert_eq!(a.id(), b.id());
    assert_eq!(a, b);

    // send_data through the Phoenix goes over the same pooled connection.
    within(20, client.send_data(&target, b"via the pool"))
        .await
        .unwrap();
    let s = client.pool().stats();
    assert_eq!(
        (s.hits, s.misses, s.evictions, s.open),
        (2, 1, 0, 1),
        "{s:?}"
    );
    assert_eq!(a.stats().sdk.messages_sent, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connection_is_evicted_and_replaced() {
    let server = phoenix().await;
    let (_listener, target) = listen(&server).await;
    let client = phoenix().await;

    let first = within(20, client.connect(&target)).await.unwrap();
    first.close(0, b"done with it");
    within(10, first.closed()).await;

    let second = within(20, client.connect(&target)).await.unwrap();
    assert_ne!(first.id(), second.id());
    assert!(second.is_open());
    within(20, second.send_data(b"still works")).await.unwrap();
    let s = client.pool().stats();
    assert_eq!(s.misses, 2, "{s:?}");
    assert_eq!(s.evicted_dead, 1, "{s:?}");
    assert_eq!(s.open, 1, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_evicts_least_recently_used() {
    let server = phoenix().await;
    let (_la, a) = listen(&server).await;
    let (_lb, b) = listen(&server).await;
    let (_lc, c) = listen(&server).await;
    let client = builder()
        .pool(PoolConfig {
            max_connections: 2,
            idle_timeout: None,
        })
        .build()
        .await
        .unwrap();

    let conn_a = within(20, client.connect(&a)).await.unwrap();
    let conn_b = within(20, client.connect(&b)).await.unwrap();
    // Touch A so B is the least recently used.
    tokio::time::sleep(Duration::from_millis(5)).await;
    within(20, client.connect(&a)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let conn_c = within(20, client.connect(&c)).await.unwrap();

    let s = client.pool().stats();
    assert_eq!((s.evicted_lru, s.open), (1, 2), "{s:?}");
    match conn_b.close_reason() {
        Some(ConnectionError::LocallyClosed { code: 0, .. }) => {}
        other => panic!("B should be closed with code 0, got {other:?}"),
    }
    assert!(conn_a.is_open() && conn_c.is_open());
    // B is dialled anew.
    let again = within(20, client.connect(&b)).await.unwrap();
    assert_ne!(again.id(), conn_b.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_evicts_unused_connections() {
    let server = phoenix().await;
    let (_l1, idle_target) = listen(&server).await;
    let (_l2, held_target) = listen(&server).await;
    let client = builder()
        .pool(PoolConfig {
            max_connections: 8,
            idle_timeout: Some(Duration::from_millis(300)),
        })
        .build()
        .await
        .unwrap();

    let idle = within(20, client.connect(&idle_target)).await.unwrap();
    within(20, idle.send_data(b"used once")).await.unwrap();
    let raw = idle.connection().clone();
    drop(idle);
    // A connection the application still holds is in use, however quiet.
    let held = within(20, client.connect(&held_target)).await.unwrap();

    assert!(
        eventually(10, || client.pool().stats().evicted_idle == 1).await,
        "{:?}",
        client.pool().stats()
    );
    match raw.close_reason() {
        Some(ConnectionError::LocallyClosed { code: 0, .. }) => {}
        other => panic!("idle connection should be closed with code 0, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(held.is_open());
    let s = client.pool().stats();
    assert_eq!((s.evicted_idle, s.open), (1, 1), "{s:?}");
}
