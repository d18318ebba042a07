//! Stream contracts.

use std::time::Duration;

use futures_util::future::try_join_all;
use stoq_core::StreamError;

use crate::util::{drain_and_hash, payload, send_all, sha256, spawn_echo};
use crate::{ensure, ContractResult, Failure, Harness, Outcome};

pub async fn bidi_echo(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    spawn_echo(p.server.clone());
    let data = payload(1, 256 * 1024);
    let (mut send, mut recv) = p.client.open_bi().await?;
    let writer = {
        let data = data.clone();
        tokio::spawn(async move { send_all(&mut send, &data, 16 * 1024).await })
    };
    // Through AsyncRead, to prove the tokio interface works end to end.
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut recv, &mut back).await?;
    writer.await??;
    ensure!(
        back.len() == data.len(),
        "echoed {} of {} bytes",
        back.len(),
        data.len()
    );
    ensure!(back == data, "echoed bytes differ from sent bytes");
    Ok(Outcome::Passed)
}

pub async fn uni_streams(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    let data = payload(2, 100_000);
    // Client to server.
    let mut send = p.client.open_uni().await?;
    send_all(&mut send, &data, 10_000).await?;
    let mut recv = p.server.accept_uni().await?;
    ensure!(
        recv.id().is_unidirectional(),
        "accepted stream {} is not unidirectional",
        recv.id()
    );
    ensure!(
        recv.id().is_client_initiated(),
        "stream {} not client-initiated",
        recv.id()
    );
    let got = recv.read_to_end(1 << 20).await?;
    ensure!(
        got.as_deref() == Some(&data[..]),
        "client->server uni stream data differs"
    );
    // Server to client.
    let mut send = p.server.open_uni().await?;
    send_all(&mut send, &data, 10_000).await?;
    let mut recv = p.client.accept_uni().await?;
    ensure!(
        !recv.id().is_client_initiated(),
        "stream {} should be server-initiated",
        recv.id()
    );
    let got = recv.read_to_end(1 << 20).await?;
    ensure!(
        got.as_deref() == Some(&data[..]),
        "server->client uni stream data differs"
    );
    Ok(Outcome::Passed)
}

pub async fn concurrent_streams_1000(h: Harness) -> ContractResult {
    const STREAMS: usize = 1000;
    let mut cfg = h.config.clone();
    cfg.max_concurrent_bidi_streams = STREAMS as u64;
    let p = h
        .connect_with(cfg.clone(), cfg, crate::util::LOCALHOST_V6)
        .await?;
    spawn_echo(p.server.clone());
    // Open all streams first, so all 1,000 are open at once, then drive them concurrently.
    let mut streams = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        streams.push(p.client.open_bi().await?);
    }
    let tasks = streams
        .into_iter()
        .enumerate()
        .map(|(i, (mut send, mut recv))| {
            tokio::spawn(async move {
                let data = payload(1000 + i as u64, 1024 + i);
                send_all(&mut send, &data, 4096).await?;
                let back = recv.read_to_end(1 << 20).await?;
                if back.as_deref() != Some(&data[..]) {
                    return Err(Failure(format!("stream {i} echoed different data")));
                }
                Ok::<_, Failure>(())
            })
        });
    for r in try_join_all(tasks).await? {
        r?;
    }
    Ok(Outcome::Passed)
}

/// Size of the large transfer: 64 MiB by default, `STOQ_CONFORMANCE_LARGE_MIB` overrides.
fn large_size() -> usize {
    std::env::var("STOQ_CONFORMANCE_LARGE_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(64)
        << 20
}

pub async fn large_transfer_hash(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    let data = payload(3, large_size());
    let want = sha256(&data);
    let receiver = {
        let server = p.server.clone();
        tokio::spawn(async move {
            let mut recv = server.accept_uni().await?;
            Ok::<_, Failure>(drain_and_hash(&mut recv).await?)
        })
    };
    let mut send = p.client.open_uni().await?;
    send_all(&mut send, &data, 64 * 1024).await?;
    let (n, hash) = receiver.await??;
    ensure!(
        n == data.len() as u64,
        "receiver got {n} of {} bytes",
        data.len()
    );
    ensure!(
        hash == want,
        "SHA-256 at the receiver differs from the sender's"
    );
    Ok(Outcome::Passed)
}

pub async fn drop_without_finish_resets(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    let mut send = p.client.open_uni().await?;
    send.write_all(&payload(4, 10_000)).await?;
    drop(send);
    let mut recv = p.server.accept_uni().await?;
    let mut total = 0;
    loop {
        match recv.read_chunk(usize::MAX).await {
            Ok(Some(c)) => total += c.len(),
            Ok(None) => {
                return Err(Failure(format!(
                    "dropped stream ended cleanly after {total} bytes: a truncated message looks complete"
                )))
            }
            Err(StreamError::Reset(code)) => {
                ensure!(
                    code == stoq_core::SendStream::DROP_RESET_CODE,
                    "reset with code {code}, expected {}",
                    stoq_core::SendStream::DROP_RESET_CODE
                );
                return Ok(Outcome::Passed);
            }
            Err(e) => return Err(Failure(format!("expected a reset, got {e}"))),
        }
    }
}

pub async fn finish_delivers_all_data(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    let data = payload(5, 8 << 20);
    let mut send = p.client.open_uni().await?;
    // Queue everything and finish without waiting for acknowledgements.
    send.write_chunk(data.clone()).await?;
    send.finish().await?;
    let mut recv = p.server.accept_uni().await?;
    let (n, hash) = drain_and_hash(&mut recv).await?;
    ensure!(
        n == data.len() as u64,
        "received {n} of {} bytes before the end",
        data.len()
    );
    ensure!(hash == sha256(&data), "data differs");
    let stopped = tokio::time::timeout(Duration::from_secs(10), send.stopped()).await?;
    ensure!(
        stopped == Ok(None),
        "stopped() after full delivery returned {stopped:?}"
    );
    Ok(Outcome::Passed)
}

pub async fn reset_code_reaches_peer(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    let mut send = p.client.open_uni().await?;
    send.write_all(b"partial").await?;
    send.reset(42)?;
    let mut recv = p.server.accept_uni().await?;
    loop {
        match recv.read_chunk(usize::MAX).await {
            Ok(Some(_)) => continue,
            Ok(None) => return Err(Failure("reset stream ended cleanly".into())),
            Err(StreamError::Reset(42)) => break,
            Err(e) => return Err(Failure(format!("expected Reset(42), got {e}"))),
        }
    }
    ensure!(
        send.write_all(b"more").await.is_err(),
        "writing after reset succeeded"
    );
    Ok(Outcome::Passed)
}

pub async fn stop_code_reaches_peer(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    let mut send = p.client.open_uni().await?;
    send.write_all(b"hello").await?;
    let mut recv = p.server.accept_uni().await?;
    recv.stop(43)?;
    let stopped = tokio::time::timeout(Duration::from_secs(10), send.stopped()).await?;
    ensure!(
        stopped == Ok(Some(43)),
        "stopped() returned {stopped:?}, expected Ok(Some(43))"
    );
    // Writes now fail with the code (possibly after a few were buffered).
    let chunk = payload(6, 64 * 1024);
    for _ in 0..64 {
        match send.write_chunk(chunk.clone()).await {
            Ok(()) => continue,
            Err(StreamError::Stopped(43)) => return Ok(Outcome::Passed),
            Err(e) => return Err(Failure(format!("expected Stopped(43), got {e}"))),
        }
    }
    Err(Failure("writes kept succeeding after STOP_SENDING".into()))
}

/// After `stop()`, reads fail with `ClosedStream` (never a clean end, never more data),
/// whatever was still in flight or buffered.
pub async fn reads_after_stop_fail(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    let mut send = p.client.open_uni().await?;
    send.write_all(&payload(7, 256 * 1024)).await?;
    send.finish().await?;
    let mut recv = p.server.accept_uni().await?;
    let first = recv.read_chunk(1024).await?;
    ensure!(first.is_some(), "no data before the stop");
    recv.stop(7)?;
    let mut buf = [0u8; 1024];
    match recv.read(&mut buf).await {
        Err(StreamError::ClosedStream) => {}
        other => return Err(Failure(format!("read after stop returned {other:?}"))),
    }
    match recv.read_chunk(usize::MAX).await {
        Err(StreamError::ClosedStream) => {}
        other => return Err(Failure(format!("read_chunk after stop returned {other:?}"))),
    }
    let mut sink = Vec::new();
    let r = tokio::io::AsyncReadExt::read_to_end(&mut recv, &mut sink).await;
    ensure!(
        r.is_err() && sink.is_empty(),
        "AsyncRead after stop returned {r:?} with {} bytes",
        sink.len()
    );
    Ok(Outcome::Passed)
}

/// Request/response on a new stream per request, many at once, with a stream limit far
/// below the number of requests: the pattern of an RPC client. The server answers before
/// it has read the request's end (as the benchmark's server does), so streams end in
/// every order; every request must complete, and stream credit must keep coming back.
pub async fn request_stream_churn(h: Harness) -> ContractResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const WORKERS: usize = 48;
    const PER_WORKER: usize = 250;
    const REQUEST: usize = 700;
    const RESPONSE: usize = 1100;
    const STEP_LIMIT: Duration = Duration::from_secs(5);
    let mut cfg = h.config.clone();
    // Far fewer than WORKERS x PER_WORKER (12,000): credit is returned about 375 times.
    cfg.max_concurrent_bidi_streams = 32;
    let p = h
        .connect_with(cfg.clone(), cfg, crate::util::LOCALHOST_V6)
        .await?;
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (server, served) = (p.server.clone(), served.clone());
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = server.accept_bi().await {
                let served = served.clone();
                tokio::spawn(async move {
                    let mut req = [0u8; REQUEST];
                    recv.read_exact(&mut req).await?;
                    let seed = u64::from_be_bytes(req[..8].try_into().expect("8 bytes"));
                    send.write_all(&payload(seed, RESPONSE)).await?;
                    // Only now the request's end, then the response's.
                    let rest = recv.read_to_end(16).await?;
                    if rest.is_none_or(|r| !r.is_empty()) {
                        return Err(std::io::Error::other("bytes after the request"));
                    }
                    send.shutdown().await?;
                    served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok::<_, std::io::Error>(())
                });
            }
        });
    }
    let workers = (0..WORKERS).map(|w| {
        let client = p.client.clone();
        tokio::spawn(async move {
            for i in 0..PER_WORKER {
                let seed = (w * PER_WORKER + i) as u64 + 1;
                let step = |what: &'static str| {
                    move |_| {
                        Failure(format!(
                            "worker {w} request {i}: {what} took over {} s",
                            STEP_LIMIT.as_secs()
                        ))
                    }
                };
                let (mut send, mut recv) = tokio::time::timeout(STEP_LIMIT, client.open_bi())
                    .await
                    .map_err(step("open_bi"))??;
                let mut req = payload(seed, REQUEST).to_vec();
                req[..8].copy_from_slice(&seed.to_be_bytes());
                tokio::time::timeout(STEP_LIMIT, async {
                    send.write_all(&req).await?;
                    send.shutdown().await
                })
                .await
                .map_err(step("sending the request"))??;
                let mut resp = vec![0u8; RESPONSE];
                tokio::time::timeout(STEP_LIMIT, recv.read_exact(&mut resp))
                    .await
                    .map_err(step("reading the response"))??;
                ensure!(
                    resp[..] == payload(seed, RESPONSE)[..],
                    "worker {w} request {i}: wrong response"
                );
                let mut end = [0u8; 1];
                let n = tokio::time::timeout(STEP_LIMIT, recv.read(&mut end))
                    .await
                    .map_err(step("reading the response's end"))??;
                ensure!(n == 0, "worker {w} request {i}: bytes after the response");
            }
            Ok::<_, Failure>(())
        })
    });
    for r in try_join_all(workers).await? {
        r?;
    }
    let want = WORKERS * PER_WORKER;
    // The server counts a request after its own end is queued; give the last ones a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while served.load(std::sync::atomic::Ordering::Relaxed) < want
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = served.load(std::sync::atomic::Ordering::Relaxed);
    ensure!(got == want, "server completed {got} of {want} requests");
    Ok(Outcome::Passed)
}
