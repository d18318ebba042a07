//! Whole messages and application streams over real loopback connections.

mod common;

use common::{builder, listen, payload, phoenix, within};
use phoenix::framing::{encode_message_header, StreamKind};
use phoenix::{PhoenixError, StreamError};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_data_round_trip_and_reply() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    let conn = within(20, client.connect(&target)).await.unwrap();

    let sizes = [0usize, 1, 1000, 3 * 1024 * 1024];
    for (i, &n) in sizes.iter().enumerate() {
        let data = payload(i as u64, n);
        within(30, conn.send_data(&data)).await.unwrap();
        let msg = within(30, listener.next_message()).await.unwrap();
        assert_eq!(msg.bytes.len(), n);
        assert_eq!(&msg.bytes[..], &data[..], "message {i} differs");
        assert_eq!(msg.from.ip(), "::1".parse::<std::net::IpAddr>().unwrap());
        // Reply on the connection the message came in on.
        let reply = msg.connection().expect("reply handle");
        within(30, reply.send_data(format!("got {n}").as_bytes()))
            .await
            .unwrap();
        let back = within(30, conn.recv_message()).await.unwrap();
        assert_eq!(&back.bytes[..], format!("got {n}").as_bytes());
    }

    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    let c = client.stats();
    assert_eq!(c.total.sdk.messages_sent, 4);
    assert_eq!(c.total.sdk.messages_received, 4);
    assert_eq!(c.total.sdk.bytes_sent, total);
    assert!(c.total.sdk.goodput_bps > 0.0);
    assert_eq!(c.connections.len(), 1);
    assert_eq!(c.connections[0].sdk.messages_sent, 4);
    assert!(c.total.transport.app_bytes_sent >= total);
    let s = server.stats();
    assert_eq!(s.total.sdk.messages_received, 4);
    assert_eq!(s.total.sdk.bytes_received, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_peer_limit_is_refused_on_both_sides() {
    let server = builder().max_message_size(64 * 1024).build().await.unwrap();
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    // Larger than the server's stream receive window (8 MiB): the sender cannot get it
    // all acknowledged before the receiver reads the header and refuses.
    let size = 16 * 1024 * 1024;
    let err = within(30, client.send_data(&target, &payload(1, size)))
        .await
        .unwrap_err();
    match err {
        PhoenixError::MessageTooLarge { size: s, max: None } => assert_eq!(s, size as u64),
        other => panic!("expected MessageTooLarge from the peer, got {other:?}"),
    }
    let err = within(10, listener.next_message()).await.unwrap_err();
    assert!(err.is_incoming(), "{err:?}");
    match err.root() {
        PhoenixError::MessageTooLarge { size: s, max } => {
            assert_eq!((*s, *max), (size as u64, Some(64 * 1024)));
        }
        other => panic!("unexpected {other:?}"),
    }
    // The connection survives: a message within the limit goes through.
    within(10, client.send_data(&target, b"small"))
        .await
        .unwrap();
    assert_eq!(
        &within(10, listener.next_message()).await.unwrap().bytes[..],
        b"small"
    );
    assert_eq!(server.stats().total.sdk.receive_errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_own_limit_is_refused_before_sending() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = builder().max_message_size(1024).build().await.unwrap();
    let err = within(10, client.send_data(&target, &[7u8; 2048]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PhoenixError::MessageTooLarge {
                size: 2048,
                max: Some(1024)
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("2048"), "{err}");
    within(10, client.send_data(&target, b"next"))
        .await
        .unwrap();
    assert_eq!(
        &within(10, listener.next_message()).await.unwrap().bytes[..],
        b"next"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_message_is_an_error_not_a_truncated_message() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    let conn = within(20, client.connect(&target)).await.unwrap();

    // A sender that declares 1 MiB, sends 100 KiB and resets.
    let mut send = conn.connection().open_uni().await.unwrap();
    send.write_all(&encode_message_header(StreamKind::Message, 1 << 20))
        .await
        .unwrap();
    send.write_all(&payload(3, 100 * 1024)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    send.reset(77).unwrap();

    let err = within(10, listener.next_message()).await.unwrap_err();
    match err {
        PhoenixError::Incoming { from, source } => {
            assert!(from.ip().is_loopback(), "{from}");
            assert!(
                matches!(*source, PhoenixError::Stream(StreamError::Reset(77))),
                "{source:?}"
            );
        }
        other => panic!("expected an incoming reset, got {other:?}"),
    }

    // Dropping a stream without finishing it resets it too (code 0).
    {
        let mut send = conn.connection().open_uni().await.unwrap();
        send.write_all(&encode_message_header(StreamKind::Message, 10))
            .await
            .unwrap();
        send.write_all(b"12345").await.unwrap();
        // Let the bytes leave first: a stream reset before any byte arrived promised
        // nothing and is ignored.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let err = within(10, listener.next_message()).await.unwrap_err();
    assert!(
        matches!(err.root(), PhoenixError::Stream(StreamError::Reset(0))),
        "{err:?}"
    );

    // Receiving goes on.
    within(10, conn.send_data(b"after the reset"))
        .await
        .unwrap();
    assert_eq!(
        &within(10, listener.next_message()).await.unwrap().bytes[..],
        b"after the reset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_or_long_stream_is_an_error() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    let conn = within(20, client.connect(&target)).await.unwrap();

    // FIN after 500 of 1000 declared bytes.
    let mut send = conn.connection().open_uni().await.unwrap();
    send.write_all(&encode_message_header(StreamKind::Message, 1000))
        .await
        .unwrap();
    send.write_all(&[1u8; 500]).await.unwrap();
    send.finish().await.unwrap();
    let err = within(10, listener.next_message()).await.unwrap_err();
    assert!(
        matches!(
            err.root(),
            PhoenixError::Truncated {
                expected: 1000,
                received: 500
            }
        ),
        "{err:?}"
    );

    // More bytes than declared.
    let mut send = conn.connection().open_uni().await.unwrap();
    send.write_all(&encode_message_header(StreamKind::Message, 4))
        .await
        .unwrap();
    send.write_all(b"12345678").await.unwrap();
    send.finish().await.unwrap();
    let err = within(10, listener.next_message()).await.unwrap_err();
    assert!(matches!(err.root(), PhoenixError::Malformed(_)), "{err:?}");

    // An unknown kind byte.
    let mut send = conn.connection().open_uni().await.unwrap();
    send.write_all(&[0xEE, 1, 2, 3]).await.unwrap();
    send.finish().await.unwrap();
    let err = within(10, listener.next_message()).await.unwrap_err();
    assert!(
        matches!(err.root(), PhoenixError::UnknownKind(0xEE)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_messages_share_a_connection() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    let conn = within(20, client.connect(&target)).await.unwrap();
    let accepted = within(10, listener.accept()).await.unwrap();
    assert_eq!(accepted.side(), phoenix::Side::Server);

    // Server: echo every application stream.
    let echo = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = accepted.accept_stream().await {
                tokio::spawn(async move {
                    tokio::io::copy(&mut recv, &mut send).await.unwrap();
                    send.shutdown().await.unwrap();
                    let _ = send.stopped().await;
                });
            }
        })
    };

    let data = payload(9, 256 * 1024);
    let (mut send, mut recv) = within(10, conn.open_stream()).await.unwrap();
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            send.write_all(&data).await.unwrap();
            send.shutdown().await.unwrap();
            send
        })
    };
    // A message in the middle of the stream does not disturb it.
    within(10, conn.send_data(b"side message")).await.unwrap();
    let back = within(20, recv.read_to_end(usize::MAX))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, data);
    drop(writer.await.unwrap());
    assert_eq!(
        &within(10, listener.next_message()).await.unwrap().bytes[..],
        b"side message"
    );
    echo.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_messages_stream_ends_when_the_listener_closes() {
    use futures_util::StreamExt;
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    for i in 0..3u8 {
        within(10, client.send_data(&target, &[i; 10]))
            .await
            .unwrap();
    }
    let got: Vec<_> = within(10, listener.incoming_messages().take(3).collect()).await;
    // Each message has its own stream, and QUIC streams are independent: arrival order
    // is not send order, so compare as a set.
    let mut got: Vec<u8> = got.into_iter().map(|m| m.unwrap().bytes[0]).collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2]);

    // A message queued before the close is still delivered, then the stream ends.
    // (`send_data` returns once the server's QUIC stack acknowledged the bytes; under load
    // the server application may take a moment more to queue the message, so wait for it.)
    within(10, client.send_data(&target, b"last"))
        .await
        .unwrap();
    within(10, async {
        while server.stats().total.sdk.messages_received < 4 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await;
    let conn = within(10, client.connect(&target)).await.unwrap();
    within(10, listener.close()).await;
    let rest: Vec<_> = within(10, listener.incoming_messages().collect()).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(&rest[0].as_ref().unwrap().bytes[..], b"last");
    assert!(matches!(
        within(10, listener.next_message()).await,
        Err(PhoenixError::Closed)
    ));
    assert!(matches!(
        within(10, listener.accept()).await,
        Err(PhoenixError::Closed)
    ));
    // The client learns that the server closed the connection.
    let reason = within(10, conn.closed()).await;
    assert!(
        matches!(
            reason,
            phoenix::ConnectionError::ApplicationClosed { code: 0, .. }
        ),
        "{reason:?}"
    );
    let err = within(10, conn.recv_message()).await.unwrap_err();
    assert!(matches!(err, PhoenixError::Connection(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_closes_the_connection() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    let conn = within(20, client.connect(&target)).await.unwrap();
    within(10, conn.send_data(b"hello")).await.unwrap();
    let msg = within(10, listener.next_message()).await.unwrap();
    let raw = conn.connection().clone();
    assert!(client.pool().remove(&conn));
    drop(conn);
    assert!(common::eventually(5, || raw.close_reason().is_some()).await);
    // The server side sees the close; its listener lets go of the connection.
    let server_side = msg.connection().expect("the listener holds it while open");
    within(10, server_side.closed()).await;
    drop(server_side);
    // Nothing more arrives from it.
    let more = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        listener.next_message(),
    )
    .await;
    assert!(more.is_err(), "{more:?}");
    assert!(common::eventually(5, || listener.connections().is_empty()).await);
}
