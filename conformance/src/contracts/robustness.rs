//! Bad input and pluggability contracts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq_core::congestion::{
    AckEvent, CongestionController, CongestionControllerFactory, CongestionEvent, CongestionMetrics,
};
use stoq_core::{
    Capability, CongestionAlgorithm, CongestionConfig, CongestionImplementation, EndpointSpec,
    Error, TlsMaterial, TransportConfig,
};

use crate::util::{drain_and_hash, payload, send_all, sha256, spawn_echo, LOCALHOST_V6};
use crate::{ensure, ContractResult, Failure, Harness, Outcome, Pair};

/// Round-trips a message on a fresh stream, proving the connection still works.
async fn still_works(p: &Pair, what: &str) -> Result<(), Failure> {
    let (mut s, mut r) = p.client.open_bi().await?;
    s.write_all(what.as_bytes()).await?;
    s.finish().await?;
    let back = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(1024)).await??;
    ensure!(
        back.as_deref() == Some(what.as_bytes()),
        "{what}: echo failed: {back:?}"
    );
    Ok(())
}

/// Datagrams that are not valid QUIC packets for any connection.
fn garbage() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff; 1],
        payload(20, 1200).to_vec(),
        payload(21, 30).to_vec(),
        payload(22, 65_000).to_vec(),
    ];
    // Long header, version 1, Initial, truncated after the version.
    v.push(vec![0xc0, 0, 0, 0, 1]);
    // Long header with connection-ID lengths pointing past the end.
    v.push(vec![0xc0, 0, 0, 0, 1, 20, 1, 2, 3]);
    // An Initial of plausible shape (DCID 8, SCID 8, empty token, length 1150) whose
    // payload is random, so it fails authentication.
    let mut initial = vec![0xc3, 0, 0, 0, 1, 8];
    initial.extend_from_slice(&payload(23, 8));
    initial.push(8);
    initial.extend_from_slice(&payload(24, 8));
    initial.push(0); // token length
    initial.extend_from_slice(&[0x44, 0x7e]); // length 1150 (2-byte varint)
    initial.extend_from_slice(&payload(25, 1150));
    v.push(initial);
    // An unknown version (triggers version negotiation, not a crash).
    let mut unknown = vec![0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8];
    unknown.extend_from_slice(&payload(26, 8));
    unknown.push(0);
    unknown.resize(1200, 0);
    v.push(unknown);
    // Short headers with random connection IDs.
    for i in 0..20 {
        let mut p = payload(30 + i, 60 + i as usize * 37).to_vec();
        p[0] = 0x40 | (p[0] & 0x3f);
        v.push(p);
    }
    v
}

pub async fn malformed_packets_ignored(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    spawn_echo(p.server.clone());
    still_works(&p, "before").await?;
    let attacker = tokio::net::UdpSocket::bind(LOCALHOST_V6).await?;
    let server_addr = p.server_ep.local_addr()?;
    let client_port = p.client_ep.local_addr()?.port();
    let client_addr = std::net::SocketAddr::new(LOCALHOST_V6.ip(), client_port);
    for round in 0..5 {
        for d in garbage() {
            // Oversized sends may fail locally (EMSGSIZE); only delivery matters here.
            let _ = attacker.send_to(&d, server_addr).await;
            let _ = attacker.send_to(&d, client_addr).await;
        }
        still_works(&p, &format!("after garbage round {round}")).await?;
    }
    // The endpoint still accepts new connections.
    let client2 = h.client_endpoint(server_addr, h.config.clone())?;
    let accept = {
        let ep = p.server_ep.clone();
        tokio::spawn(async move { ep.accept().await })
    };
    let c2 = client2.connect(server_addr, "localhost").await?;
    let s2 = tokio::time::timeout(Duration::from_secs(10), accept).await???;
    spawn_echo(s2);
    let p2 = Pair {
        client_ep: client2,
        server_ep: p.server_ep.clone(),
        client: c2,
        server: p.server.clone(),
    };
    still_works(&p2, "new connection after garbage").await?;
    ensure!(
        p.client.close_reason().is_none(),
        "garbage closed the connection"
    );
    Ok(Outcome::Passed)
}

pub async fn invalid_config_rejected(h: Harness) -> ContractResult {
    let bind = |cfg: TransportConfig, tls: TlsMaterial| {
        h.server.bind(EndpointSpec::server(LOCALHOST_V6, cfg, tls))
    };
    let field_of = |r: Result<_, Error>| match r {
        Err(Error::Config { field, .. }) => Ok(field),
        Err(e) => Err(Failure(format!("expected Error::Config, got {e}"))),
        Ok(_) => Err(Failure("invalid config was accepted".into())),
    };
    let mut cfg = h.config.clone();
    cfg.alpn.clear();
    ensure!(
        field_of(bind(cfg, h.tls.clone()))? == "alpn",
        "wrong field for empty alpn"
    );
    let mut cfg = h.config.clone();
    cfg.idle_timeout = Duration::ZERO;
    ensure!(
        field_of(bind(cfg, h.tls.clone()))? == "idle_timeout",
        "wrong field for zero idle timeout"
    );
    let mut cfg = h.config.clone();
    cfg.stream_receive_window = cfg.connection_receive_window + 1;
    ensure!(
        field_of(bind(cfg, h.tls.clone()))? == "stream_receive_window",
        "wrong field for oversized stream window"
    );
    // A server without an identity cannot accept.
    let no_identity = TlsMaterial {
        identity: None,
        ..h.tls.clone()
    };
    match bind(h.config.clone(), no_identity) {
        Err(Error::Tls(_)) | Err(Error::Config { .. }) => {}
        Err(e) => return Err(Failure(format!("server without identity: unexpected {e}"))),
        Ok(_) => return Err(Failure("server without identity was bound".into())),
    }
    // A key that does not belong to the certificate.
    let other = stoq_crypto::ephemeral_material(&["localhost"])?;
    let mut mismatched = h.tls.clone();
    if let (Some(id), Some(other_id)) = (mismatched.identity.as_mut(), other.identity) {
        id.key = other_id.key;
    }
    match bind(h.config.clone(), mismatched) {
        Err(Error::Tls(msg)) => ensure!(!msg.is_empty(), "empty TLS error"),
        Err(e) => return Err(Failure(format!("mismatched key: unexpected {e}"))),
        Ok(_) => {
            return Err(Failure(
                "a certificate with the wrong key was accepted".into(),
            ))
        }
    }
    // A client without trust roots cannot verify anyone.
    let r = h.client.bind(EndpointSpec::client(
        LOCALHOST_V6,
        h.config.clone(),
        TlsMaterial::default(),
    ));
    ensure!(
        matches!(r, Err(Error::Config { .. }) | Err(Error::Tls(_))),
        "client without roots: {:?}",
        r.err()
    );
    Ok(Outcome::Passed)
}

/// Moves `len` bytes client to server with `cfg` on both sides, checking the hash.
async fn transfer_with(h: &Harness, cfg: TransportConfig, len: usize) -> Result<Pair, Failure> {
    let p = h.connect_with(cfg.clone(), cfg, LOCALHOST_V6).await?;
    let data = payload(40, len);
    let receiver = {
        let server = p.server.clone();
        tokio::spawn(async move {
            let mut r = server.accept_uni().await?;
            Ok::<_, Failure>(drain_and_hash(&mut r).await?)
        })
    };
    let mut s = p.client.open_uni().await?;
    send_all(&mut s, &data, 64 * 1024).await?;
    let (n, hash) = receiver.await??;
    ensure!(
        n == len as u64 && hash == sha256(&data),
        "transfer corrupted ({n} bytes)"
    );
    tokio::time::timeout(Duration::from_secs(10), s.stopped()).await??;
    Ok(p)
}

/// For a pair that lacks `cap` on at least one side: binding that side with `cfg` must be
/// refused with `Error::Unsupported(cap)`.
fn expect_unsupported_bind(h: &Harness, cfg: TransportConfig, cap: Capability) -> ContractResult {
    let r = if !h.server.capabilities().contains(cap) {
        h.server
            .bind(EndpointSpec::server(LOCALHOST_V6, cfg, h.tls.clone()))
    } else {
        h.client
            .bind(EndpointSpec::client(LOCALHOST_V6, cfg, h.tls.clone()))
    };
    match r {
        Err(Error::Unsupported(c)) if c == cap => Ok(Outcome::Unsupported(cap)),
        Err(e) => Err(Failure(format!(
            "backend lacks {cap} but bind failed with {e}"
        ))),
        Ok(_) => Err(Failure(format!(
            "backend lacks {cap} but bind did not say Unsupported"
        ))),
    }
}

pub async fn stoq_congestion_controllers(h: Harness) -> ContractResult {
    for algorithm in [
        CongestionAlgorithm::NewReno,
        CongestionAlgorithm::Cubic,
        CongestionAlgorithm::Bbr,
    ] {
        let mut cfg = h.config.clone();
        cfg.congestion = CongestionConfig {
            algorithm,
            implementation: CongestionImplementation::Stoq,
            custom: None,
        };
        if !h
            .capabilities()
            .contains(Capability::CustomCongestionControl)
        {
            return expect_unsupported_bind(&h, cfg, Capability::CustomCongestionControl);
        }
        let p = transfer_with(&h, cfg, 8 << 20).await?;
        ensure!(
            p.client.stats().congestion_window > 0,
            "{algorithm:?}: zero window"
        );
    }
    Ok(Outcome::Passed)
}

/// A controller with a fixed window that counts the events it sees.
#[derive(Debug, Clone)]
struct Recording {
    window: u64,
    sent: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    in_flight: u64,
}

impl CongestionController for Recording {
    fn name(&self) -> &str {
        "recording-fixed-window"
    }
    fn on_packet_sent(&mut self, _now: Instant, bytes: u64, _app_limited: bool) {
        self.sent.fetch_add(bytes, Relaxed);
        self.in_flight += bytes;
    }
    fn on_ack(&mut self, ack: &AckEvent) {
        self.acked.fetch_add(ack.bytes, Relaxed);
        self.in_flight = self.in_flight.saturating_sub(ack.bytes);
    }
    fn on_congestion_event(&mut self, e: &CongestionEvent) {
        self.in_flight = self.in_flight.saturating_sub(e.lost_bytes);
    }
    fn on_packet_discarded(&mut self, bytes: u64) {
        self.in_flight = self.in_flight.saturating_sub(bytes);
    }
    fn on_mtu_update(&mut self, _max_datagram_size: u16) {}
    fn window(&self) -> u64 {
        self.window
    }
    fn initial_window(&self) -> u64 {
        self.window
    }
    fn metrics(&self) -> CongestionMetrics {
        CongestionMetrics::new(self.window, self.in_flight)
    }
    fn clone_box(&self) -> Box<dyn CongestionController> {
        Box::new(self.clone())
    }
}

struct RecordingFactory {
    sent: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
}

/// A distinctive window no engine would pick by itself.
const FIXED_WINDOW: u64 = 77_777;

impl CongestionControllerFactory for RecordingFactory {
    fn name(&self) -> &str {
        "recording-fixed-window"
    }
    fn build(&self, _now: Instant, _mtu: u16) -> Box<dyn CongestionController> {
        Box::new(Recording {
            window: FIXED_WINDOW,
            sent: self.sent.clone(),
            acked: self.acked.clone(),
            in_flight: 0,
        })
    }
}

pub async fn custom_congestion_controller(h: Harness) -> ContractResult {
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut cfg = h.config.clone();
    cfg.congestion = CongestionConfig::custom(Arc::new(RecordingFactory {
        sent: sent.clone(),
        acked: acked.clone(),
    }));
    if !h
        .capabilities()
        .contains(Capability::CustomCongestionControl)
    {
        return expect_unsupported_bind(&h, cfg, Capability::CustomCongestionControl);
    }
    let len = 4 << 20;
    let p = transfer_with(&h, cfg, len).await?;
    let stats = p.client.stats();
    ensure!(
        stats.congestion_window == FIXED_WINDOW,
        "engine reports window {} instead of the custom controller's {FIXED_WINDOW}",
        stats.congestion_window
    );
    let (sent, acked) = (sent.load(Relaxed), acked.load(Relaxed));
    ensure!(
        sent >= len as u64,
        "controller saw {sent} bytes sent, less than {len}"
    );
    ensure!(
        acked >= len as u64,
        "controller saw {acked} bytes acknowledged, less than {len}"
    );
    Ok(Outcome::Passed)
}

/// [`custom_pacing_rate_is_honoured`]'s controller paces at [`PACED_FAST`] until it has
/// seen [`PACED_STEP`] bytes acknowledged, then at [`PACED_SLOW`]: both far below what any
/// engine sends on loopback unpaced, and a pacer that kept the first rate would finish
/// too early.
const PACED_FAST: u64 = 2_000_000;
/// See [`PACED_FAST`].
const PACED_SLOW: u64 = 1_000_000;
/// See [`PACED_FAST`].
const PACED_STEP: u64 = 400_000;
/// Bytes moved in [`custom_pacing_rate_is_honoured`]: 0.2 s at [`PACED_FAST`], then 1 s at
/// [`PACED_SLOW`].
const PACED_LEN: usize = 1_400_000;
/// The controller's window: far above [`PACED_LEN`], so the window never limits the
/// sender and only pacing can hold it to the rate.
const PACED_WINDOW: u64 = 16 << 20;

/// A controller with a huge fixed window and a pacing rate that steps down once.
#[derive(Debug, Clone, Default)]
struct SteppedRate {
    acked: u64,
}

impl CongestionController for SteppedRate {
    fn name(&self) -> &str {
        "stepped-rate"
    }
    fn on_packet_sent(&mut self, _now: Instant, _bytes: u64, _app_limited: bool) {}
    fn on_ack(&mut self, ack: &AckEvent) {
        self.acked += ack.bytes;
    }
    fn on_congestion_event(&mut self, _e: &CongestionEvent) {}
    fn on_packet_discarded(&mut self, _bytes: u64) {}
    fn on_mtu_update(&mut self, _max_datagram_size: u16) {}
    fn window(&self) -> u64 {
        PACED_WINDOW
    }
    fn initial_window(&self) -> u64 {
        PACED_WINDOW
    }
    fn pacing_rate(&self) -> Option<u64> {
        Some(if self.acked < PACED_STEP {
            PACED_FAST
        } else {
            PACED_SLOW
        })
    }
    fn metrics(&self) -> CongestionMetrics {
        CongestionMetrics::new(PACED_WINDOW, 0).with_pacing_rate(self.pacing_rate())
    }
    fn clone_box(&self) -> Box<dyn CongestionController> {
        Box::new(self.clone())
    }
}

struct SteppedRateFactory;

impl CongestionControllerFactory for SteppedRateFactory {
    fn name(&self) -> &str {
        "stepped-rate"
    }
    fn build(&self, _now: Instant, _mtu: u16) -> Box<dyn CongestionController> {
        Box::new(SteppedRate::default())
    }
}

/// A backend claiming [`Capability::PacingHonored`] sends no faster than the controller's
/// `pacing_rate`, although the window would allow the whole transfer at once, and follows
/// the rate when it changes. The check is a lower bound on the transfer's duration (10 %
/// allowance for bursts), so a slow machine cannot fail it; an unpaced engine moves the
/// bytes in milliseconds here, and one that kept the first rate in about 0.7 s.
pub async fn custom_pacing_rate_is_honoured(h: Harness) -> ContractResult {
    let mut cfg = h.config.clone();
    cfg.congestion = CongestionConfig::custom(Arc::new(SteppedRateFactory));
    if !h
        .capabilities()
        .contains(Capability::CustomCongestionControl)
    {
        return expect_unsupported_bind(&h, cfg, Capability::CustomCongestionControl);
    }
    if !h.client.capabilities().contains(Capability::PacingHonored) {
        // Hosting a controller without honouring its rate is allowed; the claim is what
        // this contract holds backends to.
        return Ok(Outcome::Unsupported(Capability::PacingHonored));
    }
    let started = Instant::now();
    transfer_with(&h, cfg, PACED_LEN).await?;
    let took = started.elapsed();
    let paced = PACED_STEP as f64 / PACED_FAST as f64
        + (PACED_LEN as u64 - PACED_STEP) as f64 / PACED_SLOW as f64;
    let floor = Duration::from_secs_f64(0.9 * paced);
    ensure!(
        took >= floor,
        "{PACED_LEN} bytes paced at {PACED_FAST} then {PACED_SLOW} B/s arrived in {took:?}, \
         under {floor:?}: the engine did not hold to the controller's pacing rate"
    );
    Ok(Outcome::Passed)
}

/// Handshakes per worker in [`handshake_flood_spares_connections`]: enough to churn the
/// endpoints' connection tables (over a thousand connections come and go; a quiche race
/// that hit about one close in a hundred needed this many to show) while staying a few
/// seconds long.
const FLOOD_PER_WORKER: usize = 150;
/// Concurrent dialling workers in the flood.
const FLOOD_WORKERS: usize = 8;
/// How long closed flood connections may take to leave both endpoints (draining lasts
/// three PTOs, well under a second on loopback).
const FLOOD_SETTLE: Duration = Duration::from_secs(5);

pub async fn handshake_flood_spares_connections(h: Harness) -> ContractResult {
    let p = h.connect().await?;
    spawn_echo(p.server.clone());
    still_works(&p, "before the flood").await?;
    let server_addr = p.server_ep.local_addr()?;
    // The server accepts every flood connection and waits for streams on it, as a real
    // server does; the clients close right after the handshake.
    let acceptor = {
        let ep = p.server_ep.clone();
        tokio::spawn(async move {
            while let Ok(conn) = ep.accept().await {
                tokio::spawn(async move { while conn.accept_bi().await.is_ok() {} });
            }
        })
    };
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..FLOOD_WORKERS {
        let ep = p.client_ep.clone();
        workers.spawn(async move {
            for i in 0..FLOOD_PER_WORKER {
                let c = ep
                    .connect(server_addr, "localhost")
                    .await
                    .map_err(|e| Failure(format!("flood worker {w}, handshake {i}: {e}")))?;
                c.close(0, b"flood");
            }
            Ok::<(), Failure>(())
        });
    }
    let result = async {
        while let Some(r) = workers.join_next().await {
            r.map_err(|e| Failure(format!("flood worker panicked: {e}")))??;
        }
        // The long-lived connection on the same two endpoints must not have noticed.
        for round in 0..3 {
            still_works(&p, &format!("after the flood, round {round}")).await?;
        }
        ensure!(
            p.client.close_reason().is_none() && p.server.close_reason().is_none(),
            "the flood closed the long-lived connection"
        );
        // Every closed flood connection leaves both endpoints (none lingers until its
        // idle timeout, which would mean its close never reached the peer).
        let deadline = Instant::now() + FLOOD_SETTLE;
        loop {
            let (c, s) = (p.client_ep.stats(), p.server_ep.stats());
            if c.open_connections == 1 && s.open_connections == 1 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{} s after the flood the client endpoint still has {} open connections and \
                 the server {} (1 expected: the long-lived one)",
                FLOOD_SETTLE.as_secs(),
                c.open_connections,
                s.open_connections
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Outcome::Passed)
    }
    .await;
    acceptor.abort();
    result
}
