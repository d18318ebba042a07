//! Datagram (RFC 9221) contracts.

use std::time::Duration;

use bytes::Bytes;
use stoq_core::{Capability, DatagramError};

use crate::util::{payload, LOCALHOST_V6};
use crate::{ensure, ContractResult, Failure, Harness, Outcome, Pair};

/// When the backend lacks datagrams: sending must say `Unsupported`.
fn unsupported(p: &Pair) -> ContractResult {
    let r = p.client.send_datagram(Bytes::from_static(b"x"));
    ensure!(
        matches!(r, Err(DatagramError::Unsupported(Capability::Datagrams))),
        "backend lacks datagrams but send_datagram returned {r:?}"
    );
    ensure!(
        p.client.max_datagram_size().is_none(),
        "max_datagram_size is Some without datagrams"
    );
    Ok(Outcome::Unsupported(Capability::Datagrams))
}

pub async fn datagram_round_trip(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    if !h.capabilities().contains(Capability::Datagrams) {
        return unsupported(&p);
    }
    let server = p.server.clone();
    tokio::spawn(async move {
        while let Ok(d) = server.recv_datagram().await {
            let _ = server.send_datagram(d);
        }
    });
    // Datagrams are unreliable even on loopback (buffers can overflow), so each one is
    // retried a few times; every one of them must come back at least once.
    for i in 0..20u64 {
        let d = payload(100 + i, 100 + i as usize * 50);
        let mut echoed = false;
        for _attempt in 0..5 {
            p.client.send_datagram(d.clone())?;
            match tokio::time::timeout(Duration::from_millis(500), p.client.recv_datagram()).await {
                Ok(Ok(back)) if back == d => {
                    echoed = true;
                    break;
                }
                Ok(Ok(_)) => continue, // a late echo of an earlier retry
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => continue,
            }
        }
        ensure!(echoed, "datagram {i} never came back in 5 attempts");
    }
    let stats = p.client.stats();
    ensure!(
        stats.datagram_bytes_sent > 0 && stats.datagram_bytes_received > 0,
        "datagram counters not updated: {stats:?}"
    );
    Ok(Outcome::Passed)
}

pub async fn oversized_datagram_rejected(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    if !h.capabilities().contains(Capability::Datagrams) {
        return unsupported(&p);
    }
    let max = p
        .client
        .max_datagram_size()
        .ok_or_else(|| Failure("max_datagram_size is None with datagrams enabled".into()))?;
    ensure!(
        max >= 1000,
        "max_datagram_size {max} is implausibly small for a 1452 B path"
    );
    ensure!(
        max < 1452,
        "max_datagram_size {max} ignores QUIC overhead on a 1452 B path"
    );
    let r = p.client.send_datagram(payload(8, max + 1));
    ensure!(
        r == Err(DatagramError::TooLarge { size: max + 1, max }),
        "oversized datagram gave {r:?}"
    );
    let r = p.client.send_datagram(payload(8, 100_000));
    ensure!(
        matches!(r, Err(DatagramError::TooLarge { size: 100_000, .. })),
        "100 kB datagram gave {r:?}"
    );
    p.client.send_datagram(payload(8, max))?;
    let got = tokio::time::timeout(Duration::from_secs(5), p.server.recv_datagram()).await??;
    ensure!(
        got.len() == max,
        "a max-size datagram arrived with {} bytes",
        got.len()
    );
    ensure!(
        p.client.close_reason().is_none(),
        "rejecting a datagram closed the connection"
    );
    Ok(Outcome::Passed)
}

pub async fn datagrams_disabled_rejected(h: Harness) -> ContractResult {
    let mut server_cfg = h.config.clone();
    server_cfg.datagrams.enabled = false;
    let p = h
        .connect_with(h.config.clone(), server_cfg, LOCALHOST_V6)
        .await?;
    if !h.capabilities().contains(Capability::Datagrams) {
        return unsupported(&p);
    }
    // The server did not advertise datagram support, so the client may not send any.
    ensure!(
        p.client.max_datagram_size().is_none(),
        "client may send datagrams to a server that disabled them"
    );
    let r = p.client.send_datagram(Bytes::from_static(b"nope"));
    ensure!(r == Err(DatagramError::Disabled), "client send gave {r:?}");
    let r = p.server.send_datagram(Bytes::from_static(b"nope"));
    ensure!(r == Err(DatagramError::Disabled), "server send gave {r:?}");
    let r = tokio::time::timeout(Duration::from_secs(1), p.server.recv_datagram()).await;
    ensure!(
        matches!(r, Ok(Err(DatagramError::Disabled))),
        "server recv_datagram with datagrams disabled did not fail at once"
    );
    Ok(Outcome::Passed)
}
