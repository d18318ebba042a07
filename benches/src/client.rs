//! The client side of each workload: one run, returning per-run metric values and the
//! server's own reports.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::net::{Dialer, Session};
use crate::pattern;
use crate::scenario::{ColdVsPooled, Datagrams, Handshakes, Rpc, Transfer, Workload};
use crate::stats::percentile_sorted;
use crate::usage::cpu_time;
use crate::wire::{read_message, Header, Op, ReadOutcome, ServerRunReport};

/// Bytes per write on the sending side.
const CHUNK: usize = 64 * 1024;
const GIB: f64 = (1u64 << 30) as f64;

/// One run's results: `(metric key, value)` pairs and the server's reports.
#[derive(Debug, Default)]
pub(crate) struct RunData {
    pub values: Vec<(String, f64)>,
    pub server: Vec<ServerRunReport>,
}

impl RunData {
    fn push(&mut self, key: impl Into<String>, v: f64) {
        self.values.push((key.into(), v));
    }
}

/// What a run needs.
pub(crate) struct Ctx {
    pub dialer: Arc<dyn Dialer>,
    /// A session for `Begin`/`End`, connected before the measurement.
    pub control: Arc<dyn Session>,
    pub multiplexed: bool,
    pub seed: u64,
}

type RunResult = Result<RunData, String>;

fn e(context: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |err| format!("{context}: {err}")
}

pub(crate) async fn run(ctx: &Ctx, workload: &Workload) -> RunResult {
    match workload {
        Workload::Transfer(t) => transfer(ctx, t).await,
        Workload::Rpc(r) => rpc(ctx, r).await,
        Workload::Handshakes(h) => handshakes(ctx, h).await,
        Workload::ConnectColdVsPooled(c) => cold_vs_pooled(ctx, c).await,
        Workload::Datagrams(d) => datagrams(ctx, d).await,
    }
}

async fn begin(ctx: &Ctx, seed: u64) -> Result<(), String> {
    let (mut w, mut r) = ctx.control.open().await.map_err(e("control stream"))?;
    w.write_all(&Header::new(Op::Begin, seed, 0, 0).encode())
        .await
        .map_err(e("begin"))?;
    w.shutdown().await.map_err(e("begin"))?;
    let mut ack = [0u8; 8];
    r.read_exact(&mut ack).await.map_err(e("begin ack"))?;
    expect_end(&mut r).await
}

/// Reads the end of the server's side of a stream, so that the exchange is complete
/// before this side drops it (TCP drivers close with RST).
async fn expect_end<R: tokio::io::AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<(), String> {
    let mut extra = [0u8; 1];
    if r.read(&mut extra).await.map_err(e("end of stream"))? != 0 {
        return Err("unexpected bytes at the end of a stream".into());
    }
    Ok(())
}

async fn end(
    ctx: &Ctx,
    expected_datagrams: u64,
    drain: Duration,
) -> Result<ServerRunReport, String> {
    let (mut w, mut r) = ctx.control.open().await.map_err(e("control stream"))?;
    let h = Header::new(Op::End, 0, expected_datagrams, drain.as_millis() as u64);
    w.write_all(&h.encode()).await.map_err(e("end"))?;
    w.shutdown().await.map_err(e("end"))?;
    let mut json = Vec::new();
    (&mut r)
        .take(1 << 20)
        .read_to_end(&mut json)
        .await
        .map_err(e("server report"))?;
    serde_json::from_slice(&json).map_err(|err| format!("bad server report: {err}"))
}

fn check_server(report: &ServerRunReport) -> Result<(), String> {
    if report.errors > 0 {
        return Err(format!(
            "server saw {} errors; first: {}",
            report.errors,
            report.first_error.as_deref().unwrap_or("?")
        ));
    }
    Ok(())
}

async fn connect_all(ctx: &Ctx, n: usize) -> Result<Vec<Arc<dyn Session>>, String> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let d = ctx.dialer.clone();
        set.spawn(async move { d.connect().await });
    }
    let mut v = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        v.push(r.map_err(|err| err.to_string())?.map_err(e("connect"))?);
    }
    Ok(v)
}

async fn close_all(sessions: &[Arc<dyn Session>]) {
    for s in sessions {
        s.close().await;
    }
}

// ---------------------------------------------------------------------------------------

async fn upload(session: Arc<dyn Session>, seed: u64, bytes: u64) -> Result<(), String> {
    let (mut w, mut r) = session.open().await.map_err(e("open stream"))?;
    w.write_all(&Header::new(Op::Upload, seed, bytes, 0).encode())
        .await
        .map_err(e("upload header"))?;
    let mut buf = vec![0u8; CHUNK.min(bytes as usize)];
    let mut off = 0u64;
    while off < bytes {
        let n = CHUNK.min((bytes - off) as usize);
        pattern::fill(seed, off, &mut buf[..n]);
        w.write_all(&buf[..n]).await.map_err(e("upload"))?;
        off += n as u64;
    }
    w.shutdown().await.map_err(e("finishing upload"))?;
    let mut ack = [0u8; 16];
    r.read_exact(&mut ack).await.map_err(e("upload ack"))?;
    expect_end(&mut r).await?;
    let got = u64::from_be_bytes(ack[..8].try_into().expect("8"));
    let status = u64::from_be_bytes(ack[8..].try_into().expect("8"));
    if got != bytes || status != 0 {
        return Err(format!(
            "receiver verified {got} of {bytes} bytes (status {status})"
        ));
    }
    Ok(())
}

async fn transfer(ctx: &Ctx, t: &Transfer) -> RunResult {
    let sessions = connect_all(ctx, t.connections).await?;
    begin(ctx, ctx.seed).await?;
    let sem = Arc::new(Semaphore::new(t.concurrency));
    let cpu0 = cpu_time();
    let mut set = JoinSet::new();
    let mut i = 0u64;
    for s in &sessions {
        for _ in 0..t.streams_per_connection {
            let (s, sem) = (s.clone(), sem.clone());
            let seed = ctx.seed ^ (i << 32) ^ 0x7570;
            let bytes = t.bytes_per_stream;
            set.spawn(async move {
                let _permit = sem.acquire_owned().await.expect("never closed");
                upload(s, seed, bytes).await
            });
            i += 1;
        }
    }
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        if let Err(err) = r.map_err(|j| j.to_string()).and_then(|r| r) {
            first_err.get_or_insert(err);
        }
    }
    let client_cpu = (cpu_time() - cpu0).as_secs_f64();
    let report = end(ctx, 0, Duration::ZERO).await?;
    close_all(&sessions).await;
    if let Some(err) = first_err {
        return Err(err);
    }
    check_server(&report)?;
    let total = t.bytes_per_stream * i;
    if report.bytes_verified != total || report.streams_completed != i {
        return Err(format!(
            "receiver verified {} bytes on {} streams, expected {total} on {i}",
            report.bytes_verified, report.streams_completed
        ));
    }
    let gib = total as f64 / GIB;
    let mut d = RunData::default();
    d.push(
        "goodput_gbps",
        total as f64 * 8.0 / report.transfer_seconds.max(1e-9) / 1e9,
    );
    d.push("client_cpu_s_per_gib", client_cpu / gib);
    d.push("server_cpu_s_per_gib", report.cpu_seconds / gib);
    d.push("receiver_seconds", report.transfer_seconds);
    d.server.push(report);
    Ok(d)
}

// ---------------------------------------------------------------------------------------

/// One request on a new stream: header and request, FIN, then the whole response and the
/// end of the stream.
async fn rpc_on_new_stream(
    session: &dyn Session,
    message: &[u8],
    seed: u64,
    response: &mut [u8],
) -> Result<(), String> {
    let (mut w, mut r) = session.open().await.map_err(e("open stream"))?;
    w.write_all(message).await.map_err(e("request"))?;
    w.shutdown().await.map_err(e("finishing request"))?;
    match read_message(&mut r, response)
        .await
        .map_err(e("response"))?
    {
        ReadOutcome::Full => {}
        ReadOutcome::Eof => return Err("stream ended without a response".into()),
    }
    if let Err(at) = pattern::verify(!seed, 0, response) {
        return Err(format!("response differs at offset {at}"));
    }
    expect_end(&mut r).await
}

fn rpc_message(seed: u64, request: usize, response: usize) -> Vec<u8> {
    let mut m = Header::new(Op::Rpc, seed, request as u64, response as u64)
        .encode()
        .to_vec();
    let start = m.len();
    m.resize(start + request, 0);
    pattern::fill(seed, 0, &mut m[start..]);
    m
}

/// A persistent request/response stream (TCP drivers).
struct Persistent {
    w: crate::net::BoxWrite,
    r: crate::net::BoxRead,
    seed: u64,
    req: Vec<u8>,
    resp: Vec<u8>,
    off_req: u64,
    off_resp: u64,
}

impl Persistent {
    async fn open(
        session: &dyn Session,
        seed: u64,
        request: usize,
        response: usize,
    ) -> Result<Self, String> {
        let (mut w, r) = session.open().await.map_err(e("open stream"))?;
        w.write_all(&Header::new(Op::Rpc, seed, request as u64, response as u64).encode())
            .await
            .map_err(e("rpc header"))?;
        Ok(Persistent {
            w,
            r,
            seed,
            req: vec![0; request],
            resp: vec![0; response],
            off_req: 0,
            off_resp: 0,
        })
    }

    async fn round_trip(&mut self) -> Result<(), String> {
        pattern::fill(self.seed, self.off_req, &mut self.req);
        self.off_req += self.req.len() as u64;
        self.w.write_all(&self.req).await.map_err(e("request"))?;
        self.w.flush().await.map_err(e("request"))?;
        match read_message(&mut self.r, &mut self.resp)
            .await
            .map_err(e("response"))?
        {
            ReadOutcome::Full => {}
            ReadOutcome::Eof => return Err("connection ended without a response".into()),
        }
        if let Err(at) = pattern::verify(!self.seed, self.off_resp, &self.resp) {
            return Err(format!("response differs at offset {at}"));
        }
        self.off_resp += self.resp.len() as u64;
        Ok(())
    }

    async fn finish(mut self) -> Result<(), String> {
        self.w.shutdown().await.map_err(e("finishing"))?;
        expect_end(&mut self.r).await
    }
}

struct WorkerOut {
    latencies_us: Vec<u32>,
    error: Option<String>,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// How long after an RPC run's end its workers may take to finish their last request.
const RPC_GRACE: Duration = Duration::from_secs(10);

async fn rpc(ctx: &Ctx, p: &Rpc) -> RunResult {
    let session = ctx.dialer.connect().await.map_err(e("connect"))?;
    begin(ctx, ctx.seed).await?;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let deadline = t0 + p.duration;
    let mut set = JoinSet::new();
    for worker in 0..p.concurrency as u64 {
        let session = session.clone();
        let seed = ctx.seed ^ (worker << 40) ^ 0x7270;
        let (request, response) = (p.request_bytes, p.response_bytes);
        let multiplexed = ctx.multiplexed;
        set.spawn(async move {
            let mut out = WorkerOut {
                latencies_us: Vec::new(),
                error: None,
            };
            if multiplexed {
                let message = rpc_message(seed, request, response);
                let mut resp = vec![0u8; response];
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if let Err(err) = rpc_on_new_stream(&*session, &message, seed, &mut resp).await
                    {
                        out.error = Some(err);
                        break;
                    }
                    out.latencies_us.push(micros(t.elapsed()));
                }
            } else {
                let result = async {
                    let mut stream = Persistent::open(&*session, seed, request, response).await?;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        stream.round_trip().await?;
                        out.latencies_us.push(micros(t.elapsed()));
                    }
                    stream.finish().await
                }
                .await;
                out.error = result.err();
            }
            out
        });
    }
    let mut lat = Vec::new();
    let mut first_err = None;
    // A request whose answer never comes would otherwise hold the run until the
    // connection's idle timeout, and the control session (idle as long) would then fail
    // first and hide the cause.
    let grace = deadline + RPC_GRACE;
    loop {
        let r = match tokio::time::timeout_at(grace.into(), set.join_next()).await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(_) => {
                let stuck = set.len();
                set.abort_all();
                return Err(format!(
                    "{stuck} of {} workers still waited for a response {} s after the run's end",
                    p.concurrency,
                    RPC_GRACE.as_secs()
                ));
            }
        };
        match r {
            Ok(out) => {
                lat.extend(out.latencies_us);
                if let Some(err) = out.error {
                    first_err.get_or_insert(err);
                }
            }
            Err(j) => {
                first_err.get_or_insert(j.to_string());
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let client_cpu = (cpu_time() - cpu0).as_secs_f64();
    let report = end(ctx, 0, Duration::ZERO).await;
    session.close().await;
    // A worker's own failure says more than what the control session saw after it.
    if let Some(err) = first_err {
        return Err(err);
    }
    let report = report?;
    check_server(&report)?;
    let n = lat.len() as u64;
    if report.requests_served != n {
        return Err(format!(
            "server answered {} requests, client completed {n}",
            report.requests_served
        ));
    }
    if n == 0 {
        return Err("no request completed".into());
    }
    lat.sort_unstable();
    let mut d = RunData::default();
    d.push("requests_per_s", n as f64 / elapsed);
    d.push(
        "latency_p50_us",
        percentile_sorted(&lat, 50.0).unwrap_or(0) as f64,
    );
    d.push(
        "latency_p99_us",
        percentile_sorted(&lat, 99.0).unwrap_or(0) as f64,
    );
    d.push("client_cpu_us_per_request", client_cpu * 1e6 / n as f64);
    d.push(
        "server_cpu_us_per_request",
        report.cpu_seconds * 1e6 / n as f64,
    );
    d.server.push(report);
    Ok(d)
}

// ---------------------------------------------------------------------------------------

async fn handshakes(ctx: &Ctx, h: &Handshakes) -> RunResult {
    let mut d = RunData::default();
    for &level in &h.concurrency {
        begin(ctx, ctx.seed).await?;
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        let deadline = t0 + h.duration;
        let started = Arc::new(AtomicU64::new(0));
        let mut set = JoinSet::new();
        for _ in 0..level {
            let (dialer, started) = (ctx.dialer.clone(), started.clone());
            let max = h.max_per_level;
            set.spawn(async move {
                let mut out = WorkerOut {
                    latencies_us: Vec::new(),
                    error: None,
                };
                while Instant::now() < deadline && started.fetch_add(1, Relaxed) < max {
                    let t = Instant::now();
                    match dialer.connect().await {
                        Ok(s) => {
                            out.latencies_us.push(micros(t.elapsed()));
                            s.close().await;
                        }
                        Err(err) => {
                            out.error = Some(format!("handshake: {err}"));
                            break;
                        }
                    }
                }
                out
            });
        }
        let mut lat = Vec::new();
        let mut first_err = None;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(out) => {
                    lat.extend(out.latencies_us);
                    if let Some(err) = out.error {
                        first_err.get_or_insert(err);
                    }
                }
                Err(j) => {
                    first_err.get_or_insert(j.to_string());
                }
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let client_cpu = (cpu_time() - cpu0).as_secs_f64();
        // Let the server finish the last handshakes before it reports.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let report = end(ctx, 0, Duration::ZERO).await?;
        if let Some(err) = first_err {
            return Err(err);
        }
        check_server(&report)?;
        let n = lat.len() as f64;
        if n == 0.0 {
            return Err("no handshake completed".into());
        }
        lat.sort_unstable();
        d.push(format!("handshakes_per_s_c{level}"), n / elapsed);
        d.push(
            format!("handshake_p50_ms_c{level}"),
            percentile_sorted(&lat, 50.0).unwrap_or(0) as f64 / 1e3,
        );
        d.push(
            format!("client_cpu_ms_per_handshake_c{level}"),
            client_cpu * 1e3 / n,
        );
        d.push(
            format!("server_cpu_ms_per_handshake_c{level}"),
            report.cpu_seconds * 1e3 / n,
        );
        d.push(
            format!("server_accepted_share_c{level}"),
            report.connections_accepted as f64 / n,
        );
        d.server.push(report);
    }
    Ok(d)
}

// ---------------------------------------------------------------------------------------

async fn cold_vs_pooled(ctx: &Ctx, c: &ColdVsPooled) -> RunResult {
    let session = ctx.dialer.connect().await.map_err(e("connect"))?;
    begin(ctx, ctx.seed).await?;
    let seed = ctx.seed ^ 0x706f;
    let message = rpc_message(seed, 1, 1);
    let mut resp = [0u8; 1];
    let mut pooled = Vec::with_capacity(c.pooled_iterations);
    // Connect calls alone: a pooled connect is a `connect` that hits the pool (only for
    // dialers with a pool); a cold connect is a new connection's handshake.
    let mut pooled_connect = Vec::new();
    if ctx.dialer.pooled() {
        for _ in 0..c.pooled_iterations {
            let t = Instant::now();
            let s = ctx.dialer.connect().await.map_err(e("pooled connect"))?;
            pooled_connect.push(nanos(t.elapsed()));
            rpc_on_new_stream(&*s, &message, seed, &mut resp).await?;
            pooled.push(micros(t.elapsed()));
        }
    } else if ctx.multiplexed {
        for _ in 0..c.pooled_iterations {
            let t = Instant::now();
            rpc_on_new_stream(&*session, &message, seed, &mut resp).await?;
            pooled.push(micros(t.elapsed()));
        }
    } else {
        let mut stream = Persistent::open(&*session, seed, 1, 1).await?;
        for _ in 0..c.pooled_iterations {
            let t = Instant::now();
            stream.round_trip().await?;
            pooled.push(micros(t.elapsed()));
        }
        stream.finish().await?;
    }
    session.close().await;
    let mut cold = Vec::with_capacity(c.cold_iterations);
    let mut cold_connect = Vec::with_capacity(c.cold_iterations);
    for _ in 0..c.cold_iterations {
        let t = Instant::now();
        let s = ctx.dialer.connect().await.map_err(e("connect"))?;
        cold_connect.push(nanos(t.elapsed()));
        rpc_on_new_stream(&*s, &message, seed, &mut resp).await?;
        cold.push(micros(t.elapsed()));
        // Closing makes the next connect cold for pooled dialers too (the pool evicts a
        // closed connection on lookup).
        s.close().await;
    }
    let report = end(ctx, 0, Duration::ZERO).await?;
    check_server(&report)?;
    let expected = (c.pooled_iterations + c.cold_iterations) as u64;
    if report.requests_served != expected {
        return Err(format!(
            "server answered {} round trips, expected {expected}",
            report.requests_served
        ));
    }
    pooled.sort_unstable();
    cold.sort_unstable();
    let p = percentile_sorted(&pooled, 50.0).unwrap_or(0) as f64 / 1e3;
    let k = percentile_sorted(&cold, 50.0).unwrap_or(0) as f64 / 1e3;
    let mut d = RunData::default();
    d.push("cold_ms", k);
    d.push("pooled_ms", p);
    d.push("cold_over_pooled", if p > 0.0 { k / p } else { f64::NAN });
    d.push(
        "cold_p99_ms",
        percentile_sorted(&cold, 99.0).unwrap_or(0) as f64 / 1e3,
    );
    d.push(
        "pooled_p99_ms",
        percentile_sorted(&pooled, 99.0).unwrap_or(0) as f64 / 1e3,
    );
    cold_connect.sort_unstable();
    let cc = percentile_sorted(&cold_connect, 50.0).unwrap_or(0) as f64 / 1e6;
    d.push("cold_connect_ms", cc);
    if !pooled_connect.is_empty() {
        pooled_connect.sort_unstable();
        let pc = percentile_sorted(&pooled_connect, 50.0).unwrap_or(0) as f64 / 1e3;
        d.push("pooled_connect_us", pc);
        d.push(
            "connect_cold_over_pooled",
            if pc > 0.0 { cc * 1e3 / pc } else { f64::NAN },
        );
    }
    d.server.push(report);
    Ok(d)
}

// ---------------------------------------------------------------------------------------

fn datagram(seed: u64, seq: u64, size: usize) -> Bytes {
    let mut v = vec![0u8; size];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    pattern::fill(seed ^ seq, 8, &mut v[8..]);
    Bytes::from(v)
}

async fn datagrams(ctx: &Ctx, p: &Datagrams) -> RunResult {
    let session = ctx.dialer.connect().await.map_err(e("connect"))?;
    match session.max_datagram_size() {
        Some(max) if max >= p.size => {}
        other => {
            session.close().await;
            return Err(format!(
                "datagrams of {} bytes do not fit (max {other:?})",
                p.size
            ));
        }
    }
    begin(ctx, ctx.seed).await?;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut send_err = None;
    'outer: loop {
        let elapsed = t0.elapsed();
        if elapsed >= p.duration {
            break;
        }
        let target = (p.rate_per_second as f64 * elapsed.as_secs_f64()) as u64;
        while sent < target {
            if let Err(err) = session.send_datagram(datagram(ctx.seed, sent, p.size)) {
                send_err = Some(format!("send_datagram: {err}"));
                break 'outer;
            }
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let send_secs = t0.elapsed().as_secs_f64();
    let client_cpu = (cpu_time() - cpu0).as_secs_f64();
    let report = end(ctx, sent, p.drain).await?;
    session.close().await;
    if let Some(err) = send_err {
        return Err(err);
    }
    check_server(&report)?;
    let received = report.datagrams_received;
    let mut d = RunData::default();
    d.push(
        "delivered_share_pct",
        if sent > 0 {
            100.0 * received as f64 / sent as f64
        } else {
            0.0
        },
    );
    d.push(
        "delivered_per_s",
        received as f64 / report.datagram_seconds.max(1e-3),
    );
    d.push("offered_per_s", sent as f64 / send_secs);
    d.push(
        "delivered_mbps",
        report.datagram_bytes as f64 * 8.0 / report.datagram_seconds.max(1e-3) / 1e6,
    );
    d.push(
        "client_cpu_s_per_gib",
        client_cpu / ((sent * p.size as u64) as f64 / GIB).max(1e-12),
    );
    d.push(
        "server_cpu_s_per_gib",
        report.cpu_seconds / (report.datagram_bytes as f64 / GIB).max(1e-12),
    );
    d.server.push(report);
    Ok(d)
}
