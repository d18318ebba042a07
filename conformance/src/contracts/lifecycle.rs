//! Connection lifecycle contracts: close, endpoint close, idle timeout, keep-alive,
//! stats, unreachable peers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use stoq_core::{Capability, ConnectionError, Error};

use crate::util::{drain_and_hash, payload, send_all, LOCALHOST_V6};
use crate::{ensure, ContractResult, Failure, Harness, Outcome};

pub async fn close_code_and_reason(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    // Make sure the server has seen a stream so the close races nothing in the handshake.
    let mut s = p.client.open_uni().await?;
    s.write_all(b"x").await?;
    s.finish().await?;
    let _ = p.server.accept_uni().await?;
    p.client.close(7, b"goodbye");
    // Without `CloseReason` an engine sends (or reports) the code alone. The closing
    // client records what it really sent; the server sees the reason only when the client
    // sent it and the server's engine reports it.
    let client_sends = h.client.capabilities().contains(Capability::CloseReason);
    let server_reports = h.server.capabilities().contains(Capability::CloseReason);
    let with_reason = client_sends && server_reports;
    let phrase = |present: bool| {
        if present {
            Bytes::from_static(b"goodbye")
        } else {
            Bytes::new()
        }
    };
    let server_saw = tokio::time::timeout(Duration::from_secs(10), p.server.closed()).await?;
    ensure!(
        server_saw
            == ConnectionError::ApplicationClosed {
                code: 7,
                reason: phrase(with_reason)
            },
        "server saw {server_saw}"
    );
    let client_saw = tokio::time::timeout(Duration::from_secs(10), p.client.closed()).await?;
    ensure!(
        client_saw
            == ConnectionError::LocallyClosed {
                code: 7,
                reason: phrase(client_sends)
            },
        "client saw {client_saw}"
    );
    ensure!(
        p.client.close_reason() == Some(client_saw.clone()),
        "close_reason() disagrees with closed()"
    );
    // Operations after close fail with the reason instead of hanging.
    match p.client.open_bi().await {
        Err(e) => ensure!(e == client_saw, "open_bi after close failed with {e}"),
        Ok(_) => return Err(Failure("open_bi succeeded on a closed connection".into())),
    }
    if with_reason {
        Ok(Outcome::Passed)
    } else {
        Ok(Outcome::Unsupported(Capability::CloseReason))
    }
}

pub async fn server_endpoint_dials(h: Harness) -> ContractResult {
    let a = h.server_endpoint(LOCALHOST_V6, h.config.clone())?;
    let b = h.server_endpoint(LOCALHOST_V6, h.config.clone())?;
    let b_addr = b.local_addr()?;
    // Both endpoints are bound by the server backend, so its capability decides.
    if !h.server.capabilities().contains(Capability::DialFromServer) {
        let r = a.connect(b_addr, "localhost").await;
        ensure!(
            matches!(r, Err(Error::Unsupported(Capability::DialFromServer))),
            "backend lacks dial_from_server but connect from a server endpoint gave {:?}",
            r.map(|c| c.stable_id())
        );
        return Ok(Outcome::Unsupported(Capability::DialFromServer));
    }
    let accept = tokio::spawn(async move { b.accept().await });
    let conn = a.connect(b_addr, "localhost").await?;
    let peer = tokio::time::timeout(Duration::from_secs(10), accept).await???;
    ensure!(
        peer.remote_addr().port() == a.local_addr()?.port(),
        "the dial did not come from the server endpoint's own socket ({} vs {})",
        peer.remote_addr(),
        a.local_addr()?
    );
    let mut s = conn.open_uni().await?;
    s.write_all(b"peer to peer").await?;
    s.finish().await?;
    let got = peer.accept_uni().await?.read_to_end(64).await?;
    ensure!(
        got.as_deref() == Some(&b"peer to peer"[..]),
        "data differs: {got:?}"
    );
    Ok(Outcome::Passed)
}

pub async fn endpoint_close_reaches_peers(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    p.server_ep.close(9, b"shutting down").await;
    let saw = tokio::time::timeout(Duration::from_secs(10), p.client.closed()).await?;
    ensure!(
        matches!(saw, ConnectionError::ApplicationClosed { code: 9, .. }),
        "client saw {saw}"
    );
    let r = tokio::time::timeout(Duration::from_secs(5), p.server_ep.accept()).await?;
    ensure!(
        matches!(r, Err(Error::EndpointClosed)),
        "accept after close returned {:?}",
        r.map(|c| c.stable_id())
    );
    Ok(Outcome::Passed)
}

pub async fn idle_timeout_closes_both(h: Harness) -> ContractResult {
    let mut cfg = h.config.clone();
    cfg.idle_timeout = Duration::from_secs(1);
    cfg.keep_alive_interval = None;
    let p = h.connect_with(cfg.clone(), cfg, LOCALHOST_V6).await?;
    let start = Instant::now();
    let (c, s) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(p.client.closed(), p.server.closed())
    })
    .await?;
    ensure!(c == ConnectionError::TimedOut, "client closed with {c}");
    ensure!(s == ConnectionError::TimedOut, "server closed with {s}");
    ensure!(
        start.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the 1 s idle timeout",
        start.elapsed()
    );
    Ok(Outcome::Passed)
}

pub async fn keep_alive_prevents_idle_timeout(h: Harness) -> ContractResult {
    let mut cfg = h.config.clone();
    cfg.idle_timeout = Duration::from_secs(1);
    cfg.keep_alive_interval = Some(Duration::from_millis(250));
    if !h.capabilities().contains(Capability::KeepAlive) {
        let r = h.client.bind(stoq_core::EndpointSpec::client(
            LOCALHOST_V6,
            cfg,
            h.tls.clone(),
        ));
        ensure!(
            matches!(r, Err(Error::Unsupported(Capability::KeepAlive))),
            "backend lacks keep-alive but binding with keep_alive_interval did not say Unsupported"
        );
        return Ok(Outcome::Unsupported(Capability::KeepAlive));
    }
    let mut server_cfg = cfg.clone();
    server_cfg.keep_alive_interval = None;
    let p = h.connect_with(cfg, server_cfg, LOCALHOST_V6).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure!(
        p.client.close_reason().is_none(),
        "keep-alive did not prevent the idle timeout: {:?}",
        p.client.close_reason()
    );
    ensure!(p.server.close_reason().is_none(), "server side timed out");
    let mut s = p.client.open_uni().await?;
    s.write_all(b"still here").await?;
    s.finish().await?;
    let got = p.server.accept_uni().await?.read_to_end(64).await?;
    ensure!(
        got.as_deref() == Some(&b"still here"[..]),
        "stream after idle period failed"
    );
    Ok(Outcome::Passed)
}

pub async fn stats_agree_with_application(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    let before = p.client.stats();
    let data = payload(7, 2 << 20);
    let receiver = {
        let server = p.server.clone();
        tokio::spawn(async move {
            let mut r = server.accept_uni().await?;
            Ok::<_, Failure>(drain_and_hash(&mut r).await?)
        })
    };
    let mut send = p.client.open_uni().await?;
    send_all(&mut send, &data, 32 * 1024).await?;
    let (n, _) = receiver.await??;
    ensure!(n == data.len() as u64, "receiver got {n} bytes");
    tokio::time::timeout(Duration::from_secs(10), send.stopped()).await??;
    let after = p.client.stats();
    let server = p.server.stats();
    ensure!(
        after.app_bytes_sent == data.len() as u64,
        "client app_bytes_sent {} != {} written",
        after.app_bytes_sent,
        data.len()
    );
    ensure!(
        server.app_bytes_received == data.len() as u64,
        "server app_bytes_received {} != {} read",
        server.app_bytes_received,
        data.len()
    );
    ensure!(
        after.udp_bytes_sent >= after.app_bytes_sent,
        "UDP bytes sent {} < application bytes {}",
        after.udp_bytes_sent,
        after.app_bytes_sent
    );
    ensure!(
        server.udp_bytes_received >= data.len() as u64,
        "server UDP bytes received {} < application bytes",
        server.udp_bytes_received
    );
    for (name, a, b) in [
        (
            "udp_bytes_sent",
            before.udp_bytes_sent,
            after.udp_bytes_sent,
        ),
        (
            "udp_bytes_received",
            before.udp_bytes_received,
            after.udp_bytes_received,
        ),
        (
            "udp_datagrams_sent",
            before.udp_datagrams_sent,
            after.udp_datagrams_sent,
        ),
        (
            "udp_datagrams_received",
            before.udp_datagrams_received,
            after.udp_datagrams_received,
        ),
        ("packets_lost", before.packets_lost, after.packets_lost),
        (
            "app_bytes_sent",
            before.app_bytes_sent,
            after.app_bytes_sent,
        ),
    ] {
        ensure!(a <= b, "{name} went down from {a} to {b}");
    }
    ensure!(
        after.udp_datagrams_sent > before.udp_datagrams_sent,
        "udp_datagrams_sent did not grow"
    );
    ensure!(!after.rtt.is_zero(), "rtt is zero after a transfer");
    ensure!(after.congestion_window > 0, "congestion window is zero");
    ensure!(
        after.path_mtu >= 1200,
        "path MTU {} below QUIC's minimum",
        after.path_mtu
    );
    Ok(Outcome::Passed)
}

pub async fn connect_no_listener_times_out(h: Harness) -> ContractResult {
    // Find a port with no listener: bind, note the port, release it.
    let port = {
        let s = std::net::UdpSocket::bind(LOCALHOST_V6)?;
        s.local_addr()?.port()
    };
    let addr = std::net::SocketAddr::new(LOCALHOST_V6.ip(), port);
    let mut cfg = h.config.clone();
    cfg.connect_timeout = Duration::from_secs(1);
    let client = h.client_endpoint(addr, cfg)?;
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), client.connect(addr, "localhost"))
        .await
        .map_err(|_| Failure("connect to a dead port hung past 5 s with a 1 s timeout".into()))?;
    let took = start.elapsed();
    match r {
        Err(Error::Connection(
            ConnectionError::ConnectTimedOut { .. }
            | ConnectionError::TimedOut
            | ConnectionError::Unreachable(_),
        )) => {}
        Err(e) => return Err(Failure(format!("unexpected error kind: {e}"))),
        Ok(_) => return Err(Failure("connected to a port with no listener".into())),
    }
    ensure!(
        took < Duration::from_millis(2500),
        "failing took {took:?} with a 1 s timeout"
    );
    Ok(Outcome::Passed)
}
