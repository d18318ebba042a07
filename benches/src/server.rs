//! The server process: binds one driver's listener, prints `LISTENING <addr>` on stdout,
//! serves the benchmark protocol ([`crate::wire`]) until its standard input closes.
//!
//! A CLI exposes it as a hidden subcommand, flattening [`ServerCli`]:
//!
//! ```ignore
//! Command::BenchServer(cli) => {
//!     // `--backend` is phoenix's global option; the runner passes it for STOQ drivers.
//!     let args = cli.into_args(|| phoenix::backend(&global.backend))?;
//!     stoq_bench::server_main(args).await?;
//! }
//! ```

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stoq_core::{Backend, Capability, EndpointSpec, TlsMaterial, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::driver::{bench_config, Driver, DriverKind, SERVER_NAME};
use crate::net::{quinn_endpoint, quinn_server_config};
use crate::pattern;
use crate::usage::cpu_time;
use crate::wire::{read_message, Header, Op, ReadOutcome, ServerRunReport, HEADER_LEN};
use crate::BenchError;

/// Bytes per read on the receiving side.
const READ_BUF: usize = 64 * 1024;

/// What the server process needs.
#[derive(Debug, Clone)]
pub struct ServerArgs {
    /// The driver to serve (for [`Driver::Stoq`], the backend itself).
    pub driver: Driver,
    /// Where to listen (`[::1]:0`: an ephemeral loopback port).
    pub bind: SocketAddr,
    /// The certificate store the client created ([`stoq_crypto::CertStore`]); the server
    /// uses its leaf for `localhost`.
    pub cert_dir: PathBuf,
}

/// The server's command-line arguments, for a CLI to flatten into a hidden subcommand.
///
/// [`run_matrix`](crate::run_matrix) invokes [`MatrixOptions::server_command`](crate::MatrixOptions)
/// followed by `--driver D --bind ADDR --cert-dir DIR`, plus `--backend NAME` for STOQ
/// drivers. `--backend` is not part of this struct because a CLI usually has it already
/// (phoenix's global `--backend`); a program without one declares it beside this struct.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerCli {
    /// Driver: stoq, quinn-direct, s2n-direct, quiche-direct, tcp or tls-tcp.
    #[arg(long)]
    pub driver: String,
    /// Address to listen on.
    #[arg(long, default_value = "[::1]:0")]
    pub bind: SocketAddr,
    /// Certificate store directory shared with the client.
    #[arg(long)]
    pub cert_dir: PathBuf,
}

impl ServerCli {
    /// The arguments as the runner passes them.
    pub(crate) fn to_args(
        driver: &Driver,
        bind: SocketAddr,
        cert_dir: &std::path::Path,
    ) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec![
            "--driver".into(),
            // SDK rows talk to the plain STOQ server of their backend.
            match driver.kind() {
                DriverKind::Sdk => DriverKind::Stoq.arg(),
                k => k.arg(),
            }
            .into(),
            "--bind".into(),
            bind.to_string().into(),
            "--cert-dir".into(),
            cert_dir.as_os_str().to_owned(),
        ];
        if let Some(b) = driver.backend_name() {
            v.extend(["--backend".into(), b.into()]);
        }
        v
    }

    /// Resolves the driver. `backend` is called only for `--driver stoq` and returns the
    /// backend named by `--backend` (phoenix: `|| phoenix::backend(&global.backend)`).
    pub fn into_args(
        self,
        backend: impl FnOnce() -> Result<Arc<dyn Backend>, stoq_core::Error>,
    ) -> Result<ServerArgs, BenchError> {
        let kind = DriverKind::from_arg(&self.driver).ok_or_else(|| {
            BenchError::Usage(format!(
                "unknown driver {:?}; expected stoq, quinn-direct, s2n-direct, quiche-direct, \
                 tcp or tls-tcp",
                self.driver
            ))
        })?;
        let driver = match kind {
            DriverKind::Stoq => Driver::Stoq(backend()?),
            DriverKind::Sdk => {
                return Err(BenchError::Usage(
                    "--driver sdk is client-only; its server is --driver stoq".into(),
                ))
            }
            DriverKind::QuinnDirect => Driver::QuinnDirect,
            DriverKind::S2nDirect => Driver::S2nDirect,
            DriverKind::QuicheDirect => Driver::QuicheDirect,
            DriverKind::KernelTcp => Driver::KernelTcp,
            DriverKind::TlsTcp => Driver::TlsTcp,
        };
        Ok(ServerArgs {
            driver,
            bind: self.bind,
            cert_dir: self.cert_dir,
        })
    }
}

/// Runs the server: binds, prints `LISTENING <addr>` (one line on stdout), serves until
/// standard input reaches its end (the parent closed it or exited), then closes the
/// endpoint. Must run inside a tokio runtime.
pub async fn server_main(args: ServerArgs) -> Result<(), BenchError> {
    let tls = stoq_crypto::CertStore::open(&args.cert_dir)?.material(&[SERVER_NAME])?;
    let server = Server::bind(&args.driver, args.bind, &tls).await?;
    let addr = server.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "LISTENING {addr}")
            .and_then(|_| out.flush())
            .map_err(|e| BenchError::io("writing to stdout", e))?;
    }
    let state = Arc::new(State::new());
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 256];
        while let Ok(n) = stdin.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let result = tokio::select! {
        r = server.serve(state) => r,
        _ = stdin_closed => Ok(()),
    };
    server.close().await;
    result
}

/// A bound listener of one driver.
pub(crate) enum Server {
    Stoq(Arc<dyn Transport>),
    Quinn(quinn::Endpoint),
    /// s2n-quic's server (taken and dropped by `close`) and its address.
    S2n(tokio::sync::Mutex<Option<s2n_quic::Server>>, SocketAddr),
    /// quiche through tokio-quiche.
    #[cfg(feature = "quiche-direct")]
    Quiche(crate::quiche_direct::QuicheServer),
    Tcp(TcpListener, Option<tokio_rustls::TlsAcceptor>),
}

impl Server {
    pub(crate) async fn bind(
        driver: &Driver,
        bind: SocketAddr,
        tls: &TlsMaterial,
    ) -> Result<Server, BenchError> {
        let config = bench_config();
        Ok(match driver {
            Driver::Stoq(backend) => {
                Server::Stoq(backend.bind(EndpointSpec::server(bind, config, tls.clone()))?)
            }
            // An SDK row's server is its backend's plain STOQ server.
            Driver::Sdk(f) => Server::Stoq(f.backend().bind(EndpointSpec::server(
                bind,
                config,
                tls.clone(),
            ))?),
            Driver::QuinnDirect => Server::Quinn(quinn_endpoint(
                bind,
                &config,
                Some(quinn_server_config(tls, &config)?),
            )?),
            Driver::S2nDirect => {
                let server = crate::s2n_direct::server(bind, tls, &config)?;
                let addr = server
                    .local_addr()
                    .map_err(|e| BenchError::io("reading local address", e))?;
                Server::S2n(tokio::sync::Mutex::new(Some(server)), addr)
            }
            #[cfg(feature = "quiche-direct")]
            Driver::QuicheDirect => Server::Quiche(crate::quiche_direct::QuicheServer::bind(
                bind, tls, &config,
            )?),
            #[cfg(not(feature = "quiche-direct"))]
            Driver::QuicheDirect => return Err(crate::driver::quiche_direct_missing()),
            Driver::KernelTcp | Driver::TlsTcp => {
                let listener = TcpListener::bind(bind)
                    .await
                    .map_err(|e| BenchError::io(format!("binding TCP {bind}"), e))?;
                let acceptor = if matches!(driver, Driver::TlsTcp) {
                    let sc = stoq_crypto::server_config(tls, &config.alpn)?;
                    Some(tokio_rustls::TlsAcceptor::from(Arc::new(sc)))
                } else {
                    None
                };
                Server::Tcp(listener, acceptor)
            }
        })
    }

    pub(crate) fn local_addr(&self) -> Result<SocketAddr, BenchError> {
        match self {
            Server::Stoq(t) => Ok(t.local_addr()?),
            Server::Quinn(e) => e
                .local_addr()
                .map_err(|e| BenchError::io("reading local address", e)),
            Server::S2n(_, addr) => Ok(*addr),
            #[cfg(feature = "quiche-direct")]
            Server::Quiche(q) => Ok(q.local_addr()),
            Server::Tcp(l, _) => l
                .local_addr()
                .map_err(|e| BenchError::io("reading local address", e)),
        }
    }

    pub(crate) async fn serve(&self, state: Arc<State>) -> Result<(), BenchError> {
        match self {
            Server::Stoq(transport) => {
                let datagrams = transport.capabilities().contains(Capability::Datagrams);
                loop {
                    let conn = transport.accept().await?;
                    state.conns.fetch_add(1, Relaxed);
                    let state = state.clone();
                    if datagrams {
                        let (conn, state) = (conn.clone(), state.clone());
                        tokio::spawn(async move {
                            while let Ok(d) = conn.recv_datagram().await {
                                state.datagram(&d);
                            }
                        });
                    }
                    tokio::spawn(async move {
                        while let Ok((send, recv)) = conn.accept_bi().await {
                            tokio::spawn(handle_stream(send, recv, state.clone(), false));
                        }
                    });
                }
            }
            Server::Quinn(endpoint) => {
                while let Some(incoming) = endpoint.accept().await {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let Ok(conn) = incoming.await else {
                            return;
                        };
                        state.conns.fetch_add(1, Relaxed);
                        {
                            let (conn, state) = (conn.clone(), state.clone());
                            tokio::spawn(async move {
                                while let Ok(d) = conn.read_datagram().await {
                                    state.datagram(&d);
                                }
                            });
                        }
                        while let Ok((send, recv)) = conn.accept_bi().await {
                            tokio::spawn(handle_stream(send, recv, state.clone(), false));
                        }
                    });
                }
                Ok(())
            }
            Server::S2n(server, _) => {
                let mut server = server.lock().await;
                let Some(server) = server.as_mut() else {
                    return Ok(());
                };
                while let Some(conn) = server.accept().await {
                    state.conns.fetch_add(1, Relaxed);
                    let state = state.clone();
                    let (handle, mut acceptor) = conn.split();
                    {
                        let (handle, state) = (handle.clone(), state.clone());
                        tokio::spawn(async move {
                            while let Some(d) = crate::s2n_direct::recv_datagram(&handle).await {
                                state.datagram(&d);
                            }
                        });
                    }
                    tokio::spawn(async move {
                        while let Ok(Some(stream)) = acceptor.accept_bidirectional_stream().await {
                            let (recv, send) = stream.split();
                            let send = crate::s2n_direct::FinishOnShutdown(send);
                            tokio::spawn(handle_stream(send, recv, state.clone(), false));
                        }
                        drop(handle);
                    });
                }
                Ok(())
            }
            #[cfg(feature = "quiche-direct")]
            Server::Quiche(server) => {
                server
                    .run(|conn| {
                        let state = state.clone();
                        tokio::spawn(async move {
                            if !conn.established().await {
                                return;
                            }
                            state.conns.fetch_add(1, Relaxed);
                            let conn = Arc::new(conn);
                            {
                                let (conn, state) = (conn.clone(), state.clone());
                                tokio::spawn(async move {
                                    while let Some(d) = conn.recv_datagram().await {
                                        state.datagram(&d);
                                    }
                                });
                            }
                            while let Some((send, recv)) = conn.accept_bi().await {
                                tokio::spawn(handle_stream(send, recv, state.clone(), false));
                            }
                        });
                    })
                    .await;
                Ok(())
            }
            Server::Tcp(listener, acceptor) => loop {
                let (tcp, _) = listener
                    .accept()
                    .await
                    .map_err(|e| BenchError::io("accepting a TCP connection", e))?;
                let state = state.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move { serve_tcp(tcp, acceptor, state).await });
            },
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Server::Stoq(t) => t.close(0, b"server done").await,
            Server::Quinn(e) => {
                e.close(0u32.into(), b"server done");
                let _ = tokio::time::timeout(Duration::from_secs(2), e.wait_idle()).await;
            }
            // Dropping s2n-quic's server stops accepting; the process exits next.
            Server::S2n(server, _) => drop(server.lock().await.take()),
            #[cfg(feature = "quiche-direct")]
            Server::Quiche(server) => server.close().await,
            Server::Tcp(..) => {}
        }
    }
}

async fn serve_tcp(tcp: TcpStream, acceptor: Option<tokio_rustls::TlsAcceptor>, state: Arc<State>) {
    let _ = tcp.set_nodelay(true);
    match acceptor {
        None => {
            let (r, w) = tcp.into_split();
            handle_stream(w, r, state, true).await;
        }
        Some(acceptor) => {
            // A failed TLS handshake is not a connection the benchmark asked for.
            if let Ok(tls) = acceptor.accept(tcp).await {
                let (r, w) = tokio::io::split(tls);
                handle_stream(w, r, state, true).await;
            }
        }
    }
}

/// Serves one stream. `tcp_connection`: the stream is a whole TCP connection, counted as
/// an accepted connection unless it carries a control operation.
async fn handle_stream<W, R>(mut w: W, mut r: R, state: Arc<State>, tcp_connection: bool)
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    let mut buf = [0u8; HEADER_LEN];
    let header = match read_message(&mut r, &mut buf).await {
        Ok(ReadOutcome::Full) => Header::decode(&buf),
        // A connection that only did the handshake (the handshakes scenario).
        Ok(ReadOutcome::Eof) | Err(_) => {
            if tcp_connection {
                state.conns.fetch_add(1, Relaxed);
            }
            return;
        }
    };
    let header = match header {
        Ok(h) => h,
        Err(e) => {
            state.error(format!("bad stream header: {e}"));
            return;
        }
    };
    if tcp_connection && !matches!(header.op, Op::Begin | Op::End) {
        state.conns.fetch_add(1, Relaxed);
    }
    let result = match header.op {
        Op::Begin => match drain_request(&mut r).await {
            Ok(()) => {
                state.begin(header.seed);
                w.write_all(&[0u8; 8]).await
            }
            Err(e) => Err(e),
        },
        Op::End => match drain_request(&mut r).await {
            Ok(()) => {
                let report = state.end(header.a, Duration::from_millis(header.b)).await;
                let json = serde_json::to_vec(&report).expect("report serialises");
                w.write_all(&json).await
            }
            Err(e) => Err(e),
        },
        Op::Upload => receive_upload(&mut w, &mut r, header.seed, &state).await,
        Op::Rpc => {
            serve_rpc(
                &mut w,
                &mut r,
                header.seed,
                header.a as usize,
                header.b as usize,
                &state,
            )
            .await
        }
    };
    let result = match result {
        Ok(()) => w.shutdown().await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        state.error(format!("{:?} stream: {e}", header.op));
    }
}

/// Reads a control request to its end (the client finishes it right after the header).
/// Dropping an unfinished receive half makes some engines (s2n-quic) send STOP_SENDING,
/// which could race the response; consuming the FIN first avoids that on every transport.
async fn drain_request<R: AsyncRead + Unpin + Send>(r: &mut R) -> std::io::Result<()> {
    let mut extra = [0u8; 64];
    match r.read(&mut extra).await? {
        0 => Ok(()),
        n => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{n} unexpected bytes after a control header"),
        )),
    }
}

async fn receive_upload<W, R>(w: &mut W, r: &mut R, seed: u64, state: &State) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    let mut buf = vec![0u8; READ_BUF];
    let mut off = 0u64;
    let mut first = None;
    let mut last = None;
    let mut error = None;
    loop {
        match r.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = Some(now);
                if error.is_none() {
                    if let Err(at) = pattern::verify(seed, off, &buf[..n]) {
                        error = Some(format!("upload payload differs at offset {at}"));
                    }
                }
                off += n as u64;
            }
            Err(e) => {
                error = Some(format!("upload stream failed after {off} bytes: {e}"));
                break;
            }
        }
    }
    let ok = error.is_none();
    state.upload_done(off, first, last, error);
    let mut ack = [0u8; 16];
    ack[..8].copy_from_slice(&off.to_be_bytes());
    ack[8..].copy_from_slice(&(!ok as u64).to_be_bytes());
    w.write_all(&ack).await
}

async fn serve_rpc<W, R>(
    w: &mut W,
    r: &mut R,
    seed: u64,
    request: usize,
    response: usize,
    state: &State,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin + Send,
    R: AsyncRead + Unpin + Send,
{
    if request == 0 || request > 1 << 24 || response > 1 << 24 {
        return Err(std::io::Error::other(format!(
            "unreasonable rpc sizes {request}/{response}"
        )));
    }
    let mut req = vec![0u8; request];
    let mut resp = vec![0u8; response];
    let (mut in_off, mut out_off) = (0u64, 0u64);
    loop {
        match read_message(r, &mut req).await? {
            ReadOutcome::Eof => return Ok(()),
            ReadOutcome::Full => {}
        }
        if let Err(at) = pattern::verify(seed, in_off, &req) {
            return Err(std::io::Error::other(format!(
                "request payload differs at offset {at}"
            )));
        }
        in_off += request as u64;
        pattern::fill(!seed, out_off, &mut resp);
        out_off += response as u64;
        w.write_all(&resp).await?;
        w.flush().await?;
        state.request_done(request as u64);
    }
}

/// What the server counts between `Begin` and `End`.
pub(crate) struct State {
    epoch: Instant,
    window: Mutex<Window>,
    conns: AtomicU64,
    requests: AtomicU64,
    request_bytes: AtomicU64,
    errors: AtomicU64,
    dgram_seed: AtomicU64,
    dgram_ok: AtomicU64,
    dgram_bytes: AtomicU64,
    dgram_bad: AtomicU64,
    dgram_dup: AtomicU64,
    dgram_first_ns: AtomicU64,
    dgram_last_ns: AtomicU64,
    dgram_seen: Mutex<HashSet<u64>>,
}

struct Window {
    begun: Instant,
    cpu0: Duration,
    bytes: u64,
    streams: u64,
    first_error: Option<String>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl State {
    pub(crate) fn new() -> State {
        State {
            epoch: Instant::now(),
            window: Mutex::new(Window {
                begun: Instant::now(),
                cpu0: cpu_time(),
                bytes: 0,
                streams: 0,
                first_error: None,
                first: None,
                last: None,
            }),
            conns: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            request_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dgram_seed: AtomicU64::new(0),
            dgram_ok: AtomicU64::new(0),
            dgram_bytes: AtomicU64::new(0),
            dgram_bad: AtomicU64::new(0),
            dgram_dup: AtomicU64::new(0),
            dgram_first_ns: AtomicU64::new(u64::MAX),
            dgram_last_ns: AtomicU64::new(0),
            dgram_seen: Mutex::new(HashSet::new()),
        }
    }

    fn begin(&self, seed: u64) {
        let mut w = self.window.lock().expect("not poisoned");
        *w = Window {
            begun: Instant::now(),
            cpu0: cpu_time(),
            bytes: 0,
            streams: 0,
            first_error: None,
            first: None,
            last: None,
        };
        for c in [
            &self.conns,
            &self.requests,
            &self.request_bytes,
            &self.errors,
            &self.dgram_ok,
            &self.dgram_bytes,
            &self.dgram_bad,
            &self.dgram_dup,
            &self.dgram_last_ns,
        ] {
            c.store(0, Relaxed);
        }
        self.dgram_first_ns.store(u64::MAX, Relaxed);
        self.dgram_seed.store(seed, Relaxed);
        self.dgram_seen.lock().expect("not poisoned").clear();
    }

    async fn end(&self, expected_datagrams: u64, drain: Duration) -> ServerRunReport {
        if expected_datagrams > 0 {
            // Wait for stragglers: until all arrived, nothing arrived for 100 ms, or the
            // drain time is up.
            let start = Instant::now();
            let mut last_count = self.dgram_received();
            let mut last_progress = Instant::now();
            while self.dgram_received() < expected_datagrams && start.elapsed() < drain {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let c = self.dgram_received();
                if c != last_count {
                    last_count = c;
                    last_progress = Instant::now();
                } else if last_progress.elapsed() > Duration::from_millis(100) {
                    break;
                }
            }
        }
        let w = self.window.lock().expect("not poisoned");
        let secs = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let (f, l) = (
            self.dgram_first_ns.load(Relaxed),
            self.dgram_last_ns.load(Relaxed),
        );
        ServerRunReport {
            bytes_verified: w.bytes + self.request_bytes.load(Relaxed),
            streams_completed: w.streams,
            requests_served: self.requests.load(Relaxed),
            connections_accepted: self.conns.load(Relaxed),
            errors: self.errors.load(Relaxed),
            first_error: w.first_error.clone(),
            transfer_seconds: secs(w.first, w.last),
            datagrams_received: self.dgram_ok.load(Relaxed),
            datagram_bytes: self.dgram_bytes.load(Relaxed),
            datagrams_bad: self.dgram_bad.load(Relaxed),
            datagrams_duplicate: self.dgram_dup.load(Relaxed),
            datagram_seconds: if l >= f && f != u64::MAX {
                (l - f) as f64 / 1e9
            } else {
                0.0
            },
            cpu_seconds: (cpu_time().saturating_sub(w.cpu0)).as_secs_f64(),
            wall_seconds: w.begun.elapsed().as_secs_f64(),
        }
    }

    fn dgram_received(&self) -> u64 {
        self.dgram_ok.load(Relaxed) + self.dgram_bad.load(Relaxed) + self.dgram_dup.load(Relaxed)
    }

    fn error(&self, e: String) {
        self.errors.fetch_add(1, Relaxed);
        let mut w = self.window.lock().expect("not poisoned");
        w.first_error.get_or_insert(e);
    }

    fn upload_done(
        &self,
        bytes: u64,
        first: Option<Instant>,
        last: Option<Instant>,
        error: Option<String>,
    ) {
        if let Some(e) = error {
            self.error(e);
            return;
        }
        let mut w = self.window.lock().expect("not poisoned");
        w.bytes += bytes;
        w.streams += 1;
        if let Some(f) = first {
            w.first = Some(w.first.map_or(f, |x| x.min(f)));
        }
        if let Some(l) = last {
            w.last = Some(w.last.map_or(l, |x| x.max(l)));
        }
    }

    fn request_done(&self, bytes: u64) {
        self.requests.fetch_add(1, Relaxed);
        self.request_bytes.fetch_add(bytes, Relaxed);
    }

    fn datagram(&self, d: &Bytes) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let ok = d.len() >= 8 && {
            let seq = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
            let seed = self.dgram_seed.load(Relaxed) ^ seq;
            if pattern::verify(seed, 8, &d[8..]).is_err() {
                false
            } else if !self.dgram_seen.lock().expect("not poisoned").insert(seq) {
                self.dgram_dup.fetch_add(1, Relaxed);
                return;
            } else {
                true
            }
        };
        if ok {
            self.dgram_ok.fetch_add(1, Relaxed);
            self.dgram_bytes.fetch_add(d.len() as u64, Relaxed);
            self.dgram_first_ns.fetch_min(now, Relaxed);
            self.dgram_last_ns.fetch_max(now, Relaxed);
        } else {
            self.dgram_bad.fetch_add(1, Relaxed);
            self.error(format!("datagram of {} bytes failed verification", d.len()));
        }
    }
}
