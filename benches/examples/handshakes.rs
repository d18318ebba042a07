//! Handshakes per second per backend and certificate kind, and the size of the server's
//! first flight (issue 7, item 6).
//!
//! For each backend (quinn, s2n, quiche, uring) and each certificate kind (Ed25519,
//! ECDSA P-256, ML-DSA-44, FALCON-512):
//!
//! * **Handshakes/s**: sequential full handshakes over IPv4 loopback. Each one binds a new
//!   client endpoint (so no TLS session ticket from an earlier connection can turn it into
//!   a resumption), connects, does one 8-byte echo round trip on a bidirectional stream,
//!   closes the connection and the client endpoint. Client and server run in **one
//!   process** (one multi-threaded tokio runtime); the server is one endpoint accepting in
//!   a loop. A warm-up, then `--runs` timed runs of `--duration` each; median [min-max].
//! * **First flight**: a new client endpoint dials the server through a counting UDP
//!   relay. The client's first flight is every client->server UDP payload byte before the
//!   server's first datagram. From then on the relay holds the client's datagrams for
//!   `--hold-ms`, so the server's first flight is every server->client byte it sent with
//!   only the client's first flight in hand (what QUIC's anti-amplification limit, 3x the
//!   bytes received from an unvalidated address, bounds). Then the held datagrams go on
//!   and the handshake completes. Median of `--flight-samples` handshakes.
//!
//! FALCON-512 is in the TLS handshake where the backend has `FalconInHandshake`; on
//! quiche (BoringSSL cannot carry it) the TLS handshake uses an ECDSA P-256 leaf and both
//! sides then authenticate with FALCON-512 leaves after the handshake
//! (`FalconAuthTransport`), labelled "post-handshake".
//!
//! ```sh
//! /work/bin/build-lock cargo build --release -p stoq-bench --example handshakes
//! /work/bin/bench-lock target/release/examples/handshakes --out benches/results
//! ```

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use stoq_core::{
    Backend, Capability, EndpointSpec, Identity, TlsMaterial, Transport, TransportConfig,
};
use stoq_crypto::falcon::post_handshake::{FalconAuthConfig, FalconAuthTransport};
use stoq_crypto::falcon::{FalconCa, FalconLevel};
use stoq_crypto::rustls::pki_types::PrivateKeyDer;
use tokio::net::UdpSocket;

#[derive(Parser, Debug)]
struct Args {
    /// Comma-separated backends (quinn, s2n, quiche, uring).
    #[arg(long, value_delimiter = ',', default_value = "quinn,s2n,quiche,uring")]
    backends: Vec<String>,
    /// Comma-separated certificate kinds (ed25519, p256, mldsa44, falcon512).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ed25519,p256,mldsa44,falcon512"
    )]
    certs: Vec<String>,
    /// Seconds per timed run.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Warm-up seconds before the timed runs.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Timed runs per cell.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Handshakes through the counting relay per cell.
    #[arg(long, default_value_t = 3)]
    flight_samples: usize,
    /// How long the relay holds the client's datagrams after the server's first one.
    #[arg(long, default_value_t = 150)]
    hold_ms: u64,
    /// Directory for handshakes.json and handshakes.md.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
}

const SERVER_NAME: &str = "localhost";
const PING: &[u8] = b"hs-bench";

fn backend(name: &str) -> Result<Arc<dyn Backend>, String> {
    Ok(match name {
        "quinn" => Arc::new(stoq_quinn::QuinnBackend),
        "s2n" => Arc::new(stoq_s2n::S2nBackend),
        "quiche" => Arc::new(stoq_quiche::QuicheBackend),
        "uring" => Arc::new(stoq_uring::UringBackend),
        other => return Err(format!("unknown backend {other}")),
    })
}

/// How one cell's two endpoints are set up.
#[derive(Clone)]
struct Setup {
    server: TlsMaterial,
    client: TlsMaterial,
    /// FALCON post-handshake authentication: (server config, client config).
    post: Option<(FalconAuthConfig, FalconAuthConfig)>,
    /// Human label of the mode, e.g. "in TLS handshake".
    mode: &'static str,
    /// The server's leaf certificate size (the one in the TLS handshake), bytes.
    leaf_bytes: usize,
}

/// A CA and a `localhost` leaf of `alg`, both signed with `alg`, through rcgen.
fn rcgen_material(alg: &'static rcgen::SignatureAlgorithm) -> Result<TlsMaterial, String> {
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = rcgen::KeyPair::generate_for(alg).map_err(e)?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "STOQ handshake bench CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(e)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(alg).map_err(e)?;
    let mut leaf_params =
        rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(e)?;
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, SERVER_NAME);
    leaf_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(e)?;
    Ok(TlsMaterial {
        identity: Some(Identity {
            cert_chain: vec![leaf.der().clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into())),
        }),
        roots: vec![ca_cert.der().clone()],
        require_client_auth: false,
        identity_source: None,
    })
}

fn client_of(m: &TlsMaterial) -> TlsMaterial {
    TlsMaterial {
        identity: None,
        roots: m.roots.clone(),
        require_client_auth: false,
        identity_source: None,
    }
}

fn leaf_len(m: &TlsMaterial) -> usize {
    m.identity
        .as_ref()
        .and_then(|i| i.cert_chain.first())
        .map_or(0, |c| c.len())
}

fn setup(cert: &str, caps: stoq_core::Capabilities) -> Result<Setup, String> {
    let classical = |alg, mode| -> Result<Setup, String> {
        let server = rcgen_material(alg)?;
        Ok(Setup {
            client: client_of(&server),
            leaf_bytes: leaf_len(&server),
            server,
            post: None,
            mode,
        })
    };
    match cert {
        "ed25519" => classical(&rcgen::PKCS_ED25519, "in TLS handshake"),
        "p256" => classical(&rcgen::PKCS_ECDSA_P256_SHA256, "in TLS handshake"),
        "mldsa44" => classical(&rcgen::PKCS_ML_DSA_44, "in TLS handshake"),
        "falcon512" => {
            let day = Duration::from_secs(24 * 3600);
            let ca = FalconCa::generate(FalconLevel::L512, "STOQ handshake bench FALCON CA", day)
                .map_err(|e| e.to_string())?;
            let server_leaf = ca
                .issue_leaf(FalconLevel::L512, &[SERVER_NAME], day)
                .map_err(|e| e.to_string())?;
            if caps.contains(Capability::FalconInHandshake) {
                let server = TlsMaterial {
                    identity: Some(server_leaf.identity()),
                    roots: vec![ca.cert().clone()],
                    require_client_auth: false,
                    identity_source: None,
                };
                Ok(Setup {
                    client: client_of(&server),
                    leaf_bytes: leaf_len(&server),
                    server,
                    post: None,
                    mode: "in TLS handshake",
                })
            } else if caps.contains(Capability::FalconPostHandshake) {
                let client_leaf = ca
                    .issue_leaf(FalconLevel::L512, &["hs-bench-client"], day)
                    .map_err(|e| e.to_string())?;
                let anchors = vec![ca.cert().clone()];
                let sc = FalconAuthConfig::from_leaf(&server_leaf, &anchors)
                    .map_err(|e| e.to_string())?;
                let cc = FalconAuthConfig::from_leaf(&client_leaf, &anchors)
                    .map_err(|e| e.to_string())?;
                // The TLS handshake itself authenticates with an ECDSA P-256 leaf.
                let server = rcgen_material(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                Ok(Setup {
                    client: client_of(&server),
                    leaf_bytes: leaf_len(&server),
                    server,
                    post: Some((sc, cc)),
                    mode: "post-handshake, mutual (TLS: ECDSA P-256)",
                })
            } else {
                Err("the backend has neither FalconInHandshake nor FalconPostHandshake".into())
            }
        }
        other => Err(format!("unknown certificate kind {other}")),
    }
}

fn bind_server(b: &dyn Backend, s: &Setup) -> Result<Arc<dyn Transport>, String> {
    let spec = EndpointSpec::server(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        TransportConfig::default(),
        s.server.clone(),
    );
    let inner = b.bind(spec).map_err(|e| format!("server bind: {e}"))?;
    Ok(match &s.post {
        None => inner,
        Some((sc, _)) => {
            Arc::new(FalconAuthTransport::new(inner, sc.clone()).map_err(|e| e.to_string())?)
        }
    })
}

fn bind_client(b: &dyn Backend, s: &Setup, to: SocketAddr) -> Result<Arc<dyn Transport>, String> {
    let spec = EndpointSpec::client(to, TransportConfig::default(), s.client.clone());
    let inner = b.bind(spec).map_err(|e| format!("client bind: {e}"))?;
    Ok(match &s.post {
        None => inner,
        Some((_, cc)) => {
            Arc::new(FalconAuthTransport::new(inner, cc.clone()).map_err(|e| e.to_string())?)
        }
    })
}

/// Accepts forever; echoes the first bidirectional stream of each connection.
fn spawn_server(server: Arc<dyn Transport>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(conn) = server.accept().await {
            tokio::spawn(async move {
                if let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    if let Ok(Some(msg)) = recv.read_to_end(1024).await {
                        let _ = send.write_all(&msg).await;
                        let _ = send.finish().await;
                    }
                }
                conn.closed().await;
            });
        }
    })
}

/// One full handshake from a new client endpoint, an echo round trip, then close.
async fn one_handshake(b: &dyn Backend, s: &Setup, to: SocketAddr) -> Result<(), String> {
    let client = bind_client(b, s, to)?;
    let r = async {
        let conn = client
            .connect(to, SERVER_NAME)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("open: {e}"))?;
        send.write_all(PING)
            .await
            .map_err(|e| format!("write: {e}"))?;
        send.finish().await.map_err(|e| format!("finish: {e}"))?;
        let echo = recv
            .read_to_end(1024)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if echo.as_deref() != Some(PING) {
            return Err(format!("bad echo {echo:?}"));
        }
        conn.close(0, b"");
        Ok(())
    }
    .await;
    // The client endpoint's teardown (draining) is not part of the handshake: it runs in
    // the background, at most `MAX_CLOSING` at once.
    let permit = CLOSING.acquire().await.map_err(|e| e.to_string())?;
    permit.forget();
    tokio::spawn(async move {
        client.close(0, b"").await;
        CLOSING.add_permits(1);
    });
    r
}

const MAX_CLOSING: usize = 256;
static CLOSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CLOSING);

/// Sequential handshakes for `d`; returns (handshakes, seconds).
async fn run_for(
    b: &dyn Backend,
    s: &Setup,
    to: SocketAddr,
    d: Duration,
) -> Result<(u64, f64), String> {
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < d {
        tokio::time::timeout(Duration::from_secs(10), one_handshake(b, s, to))
            .await
            .map_err(|_| "handshake timed out (10 s)".to_string())??;
        n += 1;
    }
    Ok((n, t0.elapsed().as_secs_f64()))
}

#[derive(Debug, Clone, Default)]
struct Flight {
    server_datagram_sizes: Vec<usize>,
    client_datagram_sizes: Vec<usize>,
    client_first: u64,
    client_first_datagrams: u64,
    server_first: u64,
    server_first_datagrams: u64,
}

/// A UDP relay between one client and `server` that measures the first flights (see the
/// module docs). Returns the relay's address, the counts (sent when the held datagrams are
/// released) and the relay task (abort it when done).
async fn counting_relay(
    server: SocketAddr,
    hold: Duration,
) -> Result<
    (
        SocketAddr,
        tokio::sync::oneshot::Receiver<Flight>,
        tokio::task::JoinHandle<()>,
    ),
    String,
> {
    let front = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| e.to_string())?;
    let back = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| e.to_string())?;
    let addr = front.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut f = Flight::default();
        let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
        let mut client: Option<SocketAddr> = None;
        let mut held: VecDeque<Vec<u8>> = VecDeque::new();
        // false until the server's first datagram; then holding until `release`.
        let mut holding = false;
        let mut released = false;
        let release = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(release);
        loop {
            tokio::select! {
                r = front.recv_from(&mut a) => {
                    let Ok((n, from)) = r else { break };
                    client = Some(from);
                    if !holding {
                        f.client_first += n as u64;
                        f.client_first_datagrams += 1;
                        f.client_datagram_sizes.push(n);
                        let _ = back.send_to(&a[..n], server).await;
                    } else if !released {
                        held.push_back(a[..n].to_vec());
                    } else {
                        let _ = back.send_to(&a[..n], server).await;
                    }
                }
                r = back.recv_from(&mut b) => {
                    let Ok((n, _)) = r else { break };
                    if !holding {
                        holding = true;
                        release.as_mut().reset(tokio::time::Instant::now() + hold);
                    }
                    if !released {
                        f.server_first += n as u64;
                        f.server_first_datagrams += 1;
                        f.server_datagram_sizes.push(n);
                    }
                    if let Some(c) = client {
                        let _ = front.send_to(&b[..n], c).await;
                    }
                }
                () = &mut release, if holding && !released => {
                    released = true;
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(std::mem::take(&mut f));
                    }
                    while let Some(d) = held.pop_front() {
                        let _ = back.send_to(&d, server).await;
                    }
                }
            }
        }
    });
    Ok((addr, rx, task))
}

async fn measure_flight(
    b: &dyn Backend,
    s: &Setup,
    server: SocketAddr,
    hold: Duration,
) -> Result<Flight, String> {
    let (relay, counts, task) = counting_relay(server, hold).await?;
    let r = tokio::time::timeout(Duration::from_secs(10), one_handshake(b, s, relay)).await;
    task.abort();
    r.map_err(|_| "handshake through the relay timed out".to_string())??;
    counts
        .await
        .map_err(|_| "the relay saw no server datagram".to_string())
}

#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(mut v: Vec<f64>) -> Spread {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Spread {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

fn cert_label(c: &str) -> &'static str {
    match c {
        "ed25519" => "Ed25519",
        "p256" => "ECDSA P-256",
        "mldsa44" => "ML-DSA-44",
        "falcon512" => "FALCON-512",
        _ => "?",
    }
}

async fn cell(args: &Args, bname: &str, cert: &str) -> Value {
    let mut out = json!({ "backend": bname, "cert": cert_label(cert) });
    let r: Result<Value, String> = async {
        let b = backend(bname)?;
        let s = setup(cert, b.capabilities())?;
        out["mode"] = json!(s.mode);
        out["server_leaf_bytes"] = json!(s.leaf_bytes);
        let server = bind_server(&*b, &s)?;
        let addr = server.local_addr().map_err(|e| e.to_string())?;
        let accept = spawn_server(server.clone());
        let result = async {
            // First flights through the counting relay.
            let mut flights = Vec::new();
            for _ in 0..args.flight_samples {
                flights.push(measure_flight(&*b, &s, addr, Duration::from_millis(args.hold_ms)).await?);
            }
            // Warm-up, then the timed runs.
            run_for(&*b, &s, addr, Duration::from_secs_f64(args.warmup)).await?;
            let mut rates = Vec::new();
            let mut counts = Vec::new();
            for _ in 0..args.runs {
                let (n, secs) = run_for(&*b, &s, addr, Duration::from_secs_f64(args.duration)).await?;
                rates.push(n as f64 / secs);
                counts.push(n);
            }
            Ok::<_, String>((flights, rates, counts))
        }
        .await;
        accept.abort();
        // Bounded: closing thousands of server-side connections is not what is measured.
        let _ = tokio::time::timeout(Duration::from_secs(2), server.close(0, b"")).await;
        let (flights, rates, counts) = result?;
        let sp = spread(rates.clone());
        let cf = spread(flights.iter().map(|f| f.client_first as f64).collect());
        let sf = spread(flights.iter().map(|f| f.server_first as f64).collect());
        let samples: Vec<Value> = flights
            .iter()
            .map(|f| {
                json!({
                    "client_first_bytes": f.client_first,
                    "client_first_datagrams": f.client_first_datagrams,
                    "server_first_bytes": f.server_first,
                    "server_first_datagrams": f.server_first_datagrams,
                    "client_datagram_sizes": f.client_datagram_sizes,
                    "server_datagram_sizes": f.server_datagram_sizes,
                })
            })
            .collect();
        Ok(json!({
            "handshakes_per_s": { "median": sp.median, "min": sp.min, "max": sp.max, "runs": rates, "handshakes": counts },
            "client_first_flight_bytes": cf.median,
            "server_first_flight_bytes": sf.median,
            "server_to_client_ratio": sf.median / cf.median,
            "exceeds_3x_client": sf.median > 3.0 * cf.median,
            "flight_samples": samples,
        }))
    }
    .await;
    match r {
        Ok(v) => {
            for (k, val) in v.as_object().into_iter().flatten() {
                out[k] = val.clone();
            }
        }
        Err(e) => out["error"] = json!(e),
    }
    out
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": kernel,
    })
}

fn markdown(doc: &Value) -> String {
    let mut s = String::new();
    let m = &doc["machine"];
    let _ = writeln!(s, "# Handshakes per second and server first flight\n");
    let _ = writeln!(
        s,
        "Machine: {} ({} CPUs), Linux {}. Command: `{}`. Wall time {:.0} s.\n",
        m["cpu"].as_str().unwrap_or(""),
        m["cpus"],
        m["kernel"].as_str().unwrap_or(""),
        doc["command"].as_str().unwrap_or(""),
        doc["wall_seconds"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(s, "{}\n", doc["method"].as_str().unwrap_or(""));
    let _ = writeln!(
        s,
        "| backend | certificate | FALCON mode / note | handshakes/s median [min-max] | client 1st flight B | server 1st flight B | ratio | > 3x? | leaf B |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for c in doc["cells"].as_array().into_iter().flatten() {
        let b = c["backend"].as_str().unwrap_or("");
        let cert = c["cert"].as_str().unwrap_or("");
        if let Some(e) = c["error"].as_str() {
            let _ = writeln!(
                s,
                "| {b} | {cert} | not available: {} | – | – | – | – | – | – |",
                e.replace('|', "\\|")
            );
            continue;
        }
        let h = &c["handshakes_per_s"];
        let _ = writeln!(
            s,
            "| {b} | {cert} | {} | {:.0} [{:.0}-{:.0}] | {} | {} | {:.2} | {} | {} |",
            c["mode"].as_str().unwrap_or(""),
            h["median"].as_f64().unwrap_or(0.0),
            h["min"].as_f64().unwrap_or(0.0),
            h["max"].as_f64().unwrap_or(0.0),
            c["client_first_flight_bytes"],
            c["server_first_flight_bytes"],
            c["server_to_client_ratio"].as_f64().unwrap_or(0.0),
            if c["exceeds_3x_client"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            c["server_leaf_bytes"],
        );
    }
    s
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let t0 = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cells = rt.block_on(async {
        let mut cells = Vec::new();
        for b in &args.backends {
            for c in &args.certs {
                let v = cell(&args, b, c).await;
                eprintln!("{v}");
                cells.push(v);
            }
        }
        cells
    });
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let doc = json!({
        "command": command,
        "machine": machine(),
        "wall_seconds": t0.elapsed().as_secs_f64(),
        "settings": {
            "duration_s": args.duration, "warmup_s": args.warmup, "runs": args.runs,
            "flight_samples": args.flight_samples, "hold_ms": args.hold_ms,
        },
        "method": format!(
            "Client and server in one process (one multi-threaded tokio runtime), IPv4 loopback. \
             Each handshake: a new client endpoint, connect, an 8-byte echo on a bidirectional \
             stream, close. Sequential. {} s warm-up, then {} runs of {} s each; median [min-max]. \
             First flight: UDP payload bytes through a counting relay; the client's first flight \
             is what it sent before the server's first datagram, the server's is everything it \
             sent while the relay held the client's next datagrams ({} ms); median of {} \
             handshakes. '> 3x?': server first flight above 3x the client's (RFC 9000 8.1 \
             anti-amplification limit). TLS 1.3, X25519MLKEM768 preferred, default transport \
             settings.",
            args.warmup, args.runs, args.duration, args.hold_ms, args.flight_samples
        ),
        "cells": cells,
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("handshakes.json"),
        serde_json::to_string_pretty(&doc)?,
    )?;
    let md = markdown(&doc);
    std::fs::write(args.out.join("handshakes.md"), &md)?;
    print!("{md}");
    Ok(())
}
