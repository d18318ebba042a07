//! The quiche-direct driver: quiche 0.30 driven **without STOQ**, through Cloudflare's own
//! async driver, `tokio-quiche` 0.20 and its generic [`ApplicationOverQuic`] trait (not
//! HTTP/3), so that the `stoq-quiche` / `quiche-direct` ratio is STOQ's framework
//! overhead on quiche, as `quinn-direct` and `s2n-direct` give it for the other engines.
//!
//! **Same settings as `stoq-quiche`.** quiche's transport settings come from
//! [`stoq_quiche::config::engine_settings`] (the values `stoq-quiche` itself sets:
//! windows, 1452-byte UDP payload pinned, MTU discovery off, datagram queues, CUBIC,
//! pacing), translated field by field into tokio-quiche's [`QuicSettings`] by
//! [`quic_settings`], which also puts back quiche's own defaults where tokio-quiche's
//! differ (active migration), sends no Retry (stoq-quiche sends none) and uses the
//! connect timeout as handshake deadline (as stoq-quiche does). TLS is the very
//! BoringSSL context `stoq-quiche` builds from the bench's `TlsMaterial`
//! ([`stoq_quiche::config::ssl_context_builder`]: identity, roots, verification,
//! X25519MLKEM768 first; BoringSSL picks TLS_AES_128_GCM_SHA256 on AES hardware),
//! handed to tokio-quiche through its [`ConnectionHook`]. Sockets are bound by
//! `stoq_core::socket::bind_udp` (4 MiB buffers, as every row) with UDP GSO and GRO on.
//!
//! **What runs where.** tokio-quiche runs, per UDP socket, a packet-router task that owns
//! the receive half (`recvmsg` with GRO) and forwards each datagram batch by connection
//! ID over a channel to that connection's **IO worker task**, which owns the
//! `quiche::Connection`: it feeds packets to quiche, calls this module's `App`
//! callbacks (`process_reads` after packets arrived, `process_writes` on every loop
//! iteration), then gathers packets into GSO batches and sends them; it sleeps on
//! quiche's timer, new packets or `App`'s `wait_for_data`. A client needs one socket
//! per connection (tokio-quiche's rule), so each `connect` binds its own.
//!
//! **The adapter** (this module) exposes each stream as `AsyncWrite`/`AsyncRead` halves
//! so the workload code (`client.rs`, `server.rs`) runs unchanged, and keeps the
//! hand-over between the workload's tasks and the worker small:
//! * a write copies the caller's slice once into a `Bytes` and queues it on the stream
//!   (at most [`SEND_QUEUE`] bytes per stream, then the writer waits until half of it has
//!   gone to quiche); the worker hands queued chunks to quiche without copying
//!   (`stream_send_zc`; tokio-quiche's buffers are `Bytes`), as `stoq-quiche` does;
//! * the worker reads each readable stream with `stream_recv_buf` into chunks of a
//!   shared `BytesMut` (up to [`RECV_QUEUE`] bytes queued per stream; beyond that it
//!   leaves data in quiche, whose flow control then holds the peer back), and the reader
//!   copies them into its buffer: one copy more than `stoq-quiche`, whose reader copies
//!   straight out of quiche under the connection lock — the price of a driver that owns
//!   the connection in one task, which is tokio-quiche's design;
//! * each stream has its own lock, taken once per chunk on each side and never across a
//!   copy of payload; a stream with news is put once on the connection's to-do list and
//!   the worker is woken once (a `Notify`), however many chunks were queued meanwhile;
//! * datagrams go through small queues both ways; when quiche's send queue is full a
//!   datagram is dropped, as in `stoq-quiche`.
//!
//! Shutting down a write half sends the FIN without waiting for its acknowledgement, and
//! dropping it unfinished resets the stream; dropping a read half before the end sends
//! STOP_SENDING; dropping the last session handle closes the connection (code 0), as
//! quinn does. Left out because they are what STOQ adds: statistics, keying-material
//! export, close reasons and keep-alive (the bench uses none of them).
//!
//! **Reading the ratio.** `stoq-quiche` runs its own driver, so the ratio also holds the
//! two drivers' differences, not only the cost of STOQ's traits. tokio-quiche 0.20 with
//! CUBIC caps each GSO send at quiche's send quantum, which CUBIC leaves at the initial
//! window (10 packets, 14.5 KB; stoq-quiche sends up to 64 KiB at once); it receives
//! with one `recvmsg` per GRO batch, copied into a new buffer and passed over a channel
//! (stoq-quiche: `recvmmsg` into reused buffers); and it binds a socket and starts a
//! router task per client connection. On a 512 MiB bulk transfer here that was about
//! three times the `sendmsg` calls and five times the receive calls of stoq-quiche.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use stoq_core::{TlsMaterial, TransportConfig};
use stoq_quiche::config::{engine_settings, ssl_context_builder, Role};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, Notify};
use tokio_quiche::metrics::{DefaultMetrics, Metrics};
use tokio_quiche::quic::{
    connect_with_config, ConnectionHook, HandshakeInfo, QuicheConnection,
    SimpleConnectionIdGenerator,
};
use tokio_quiche::quiche::{self, CongestionControlAlgorithm, Shutdown};
use tokio_quiche::settings::{CertificateKind, Hooks, QuicSettings, TlsCertificatePaths};
use tokio_quiche::socket::{QuicListener, Socket, SocketCapabilities, SocketCapabilitiesBuilder};
use tokio_quiche::{ApplicationOverQuic, ConnectionParams, InitialQuicConnection, QuicResult};

use crate::driver::SERVER_NAME;
use crate::net::{io_other, BoxRead, BoxWrite, Dialer, Session};
use crate::BenchError;

/// Bytes a stream's writer may queue ahead of quiche before it waits.
pub const SEND_QUEUE: usize = 1 << 20;
/// Bytes the worker reads out of quiche ahead of a stream's reader.
pub const RECV_QUEUE: usize = 1 << 20;
/// Largest chunk one `poll_write` queues (one allocation and copy each).
const MAX_WRITE: usize = 256 * 1024;
/// Largest chunk one read from quiche produces.
const READ_CHUNK: usize = 64 * 1024;
/// The shared receive buffer's size: chunks are split off it until it is used up, and
/// it is reused once every chunk of it has been consumed.
const READ_BUFFER: usize = 1 << 20;

/// Never read: tokio-quiche calls [`ConnectionHook::create_custom_ssl_context_builder`]
/// only when certificate paths are set, and the hook builds the context from the
/// `TlsMaterial` in memory instead.
const NO_FILES: TlsCertificatePaths<'static> = TlsCertificatePaths {
    cert: "",
    private_key: "",
    kind: CertificateKind::X509,
};

/// tokio-quiche's settings for `cfg`: the quiche transport settings `stoq-quiche` uses
/// ([`stoq_quiche::config::engine_settings`]), quiche's defaults where tokio-quiche's
/// differ, no Retry, and the connect timeout as handshake deadline.
pub fn quic_settings(cfg: &TransportConfig) -> Result<QuicSettings, BenchError> {
    let e = engine_settings(cfg)?;
    let mut s = QuicSettings::default();
    s.alpn = cfg.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    s.max_idle_timeout = Some(Duration::from_millis(e.idle_timeout_ms));
    s.initial_max_data = e.connection_window;
    s.max_connection_window = e.connection_window;
    s.initial_max_stream_data_bidi_local = e.stream_window;
    s.initial_max_stream_data_bidi_remote = e.stream_window;
    s.initial_max_stream_data_uni = e.stream_window;
    s.max_stream_window = e.stream_window;
    s.initial_max_streams_bidi = e.max_streams_bidi;
    s.initial_max_streams_uni = e.max_streams_uni;
    s.max_recv_udp_payload_size = e.max_recv_udp_payload;
    s.max_send_udp_payload_size = e.max_send_udp_payload;
    s.discover_path_mtu = e.discover_pmtu;
    match e.datagram_queues {
        Some((receive, send)) => {
            s.enable_dgram = true;
            s.dgram_recv_max_queue_len = receive;
            s.dgram_send_max_queue_len = send;
        }
        None => s.enable_dgram = false,
    }
    s.cc_algorithm = match e.cc_algorithm {
        CongestionControlAlgorithm::Reno => "reno",
        CongestionControlAlgorithm::CUBIC => "cubic",
        CongestionControlAlgorithm::Bbr2Gcongestion => "bbr2_gcongestion",
    }
    .into();
    s.enable_pacing = e.pacing;
    // quiche's default (tokio-quiche turns active migration off); the other knobs
    // tokio-quiche sets (hystart, initial window, GREASE, amplification factor, send
    // capacity factor, ACK delay settings, connection-ID limit) default to quiche's values.
    s.disable_active_migration = false;
    // stoq-quiche answers Initials without a Retry round trip and bounds handshakes by the
    // connect timeout.
    s.disable_client_ip_validation = true;
    s.handshake_timeout = Some(cfg.connect_timeout);
    // The TLS context sets the verification mode (the client verifies, the server not).
    s.verify_peer = false;
    Ok(s)
}

/// Hands tokio-quiche the BoringSSL context `stoq-quiche` builds for the same material.
/// tokio-quiche asks once per listener, and once per client connection (it makes a
/// client's quiche configuration per connection): about 30 us here, part of the row's
/// connect cost.
struct Tls {
    material: TlsMaterial,
    role: Role,
}

impl ConnectionHook for Tls {
    fn create_custom_ssl_context_builder(
        &self,
        _: TlsCertificatePaths<'_>,
    ) -> Option<boring::ssl::SslContextBuilder> {
        // Checked once in `hooks`, so this succeeds.
        ssl_context_builder(&self.material, self.role).ok()
    }
}

/// tokio-quiche hooks carrying `stoq-quiche`'s TLS context for `tls` and `role`.
fn hooks(tls: &TlsMaterial, role: Role) -> Result<Hooks, BenchError> {
    // Surface a bad certificate or key here rather than as a failed handshake.
    ssl_context_builder(tls, role)?;
    Ok(Hooks {
        connection_hook: Some(Arc::new(Tls {
            material: tls.clone(),
            role,
        })),
    })
}

/// UDP GSO and GRO on, as stoq-quiche's quinn-udp socket has them (no SO_TXTIME: on
/// loopback no qdisc would honour it, and stoq-quiche paces in user space).
fn capabilities(socket: &tokio::net::UdpSocket) -> SocketCapabilities {
    let mut b = SocketCapabilitiesBuilder::new(socket);
    let _ = b.gso();
    let _ = b.gro();
    b.finish()
}

fn bind_socket(
    bind: SocketAddr,
    cfg: &TransportConfig,
) -> Result<tokio::net::UdpSocket, BenchError> {
    let std = stoq_core::socket::bind_udp(bind, cfg)?;
    std.set_nonblocking(true)
        .map_err(|e| BenchError::io(format!("configuring UDP socket {bind}"), e))?;
    tokio::net::UdpSocket::from_std(std)
        .map_err(|e| BenchError::io(format!("registering UDP socket {bind}"), e))
}

// ---------------------------------------------------------------------------------------
// State shared by a connection's worker (App) and its handles

/// How far a connection has come.
enum Phase {
    Handshaking,
    Established,
    Closed(String),
}

/// What a connection's handles and its worker share.
struct Conn {
    /// Wakes the worker (its `wait_for_data`).
    wake: Notify,
    /// Announces the end of the handshake or of the connection.
    phase_changed: Notify,
    /// Announces a stream to accept (or the end).
    accept_ready: Notify,
    /// Announces a received datagram (or the end).
    datagram_ready: Notify,
    state: Mutex<ConnState>,
    /// The next stream ID this side opens (client: 0, 4, 8, ...).
    next_stream: AtomicU64,
    /// The largest datagram payload, once established (0: none).
    max_datagram: AtomicUsize,
    /// Bounds of the datagram queues between handles and worker.
    datagram_queues: (usize, usize),
}

struct ConnState {
    phase: Phase,
    /// Streams with news for the worker.
    todo: Vec<Arc<Stream>>,
    datagrams_out: Vec<Bytes>,
    datagrams_in: VecDeque<Bytes>,
    /// Streams the peer opened, not yet accepted.
    accept: VecDeque<Arc<Stream>>,
    close_requested: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("not poisoned")
}

impl Conn {
    fn new(server: bool, cfg: &TransportConfig) -> Arc<Conn> {
        Arc::new(Conn {
            wake: Notify::new(),
            phase_changed: Notify::new(),
            accept_ready: Notify::new(),
            datagram_ready: Notify::new(),
            state: Mutex::new(ConnState {
                phase: Phase::Handshaking,
                todo: Vec::new(),
                datagrams_out: Vec::new(),
                datagrams_in: VecDeque::new(),
                accept: VecDeque::new(),
                close_requested: false,
            }),
            next_stream: AtomicU64::new(if server { 1 } else { 0 }),
            max_datagram: AtomicUsize::new(0),
            datagram_queues: (
                cfg.datagrams.receive_queue.max(1),
                cfg.datagrams.send_queue.max(1),
            ),
        })
    }

    /// Waits for the handshake: `false` if the connection ended first.
    async fn established(&self) -> bool {
        loop {
            let notified = self.phase_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match lock(&self.state).phase {
                Phase::Handshaking => {}
                Phase::Established => return true,
                Phase::Closed(_) => return false,
            }
            notified.await;
        }
    }

    fn closed_error(reason: &str) -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, reason.to_string())
    }

    /// Opens a bidirectional stream (registered with the worker at once).
    fn open_bi(self: &Arc<Self>) -> io::Result<(SendHalf, RecvHalf)> {
        if let Phase::Closed(r) = &lock(&self.state).phase {
            return Err(Self::closed_error(r));
        }
        let id = self.next_stream.fetch_add(4, Relaxed);
        let stream = Stream::new(id, self.clone());
        stream.touch(&mut lock(&stream.st));
        Ok(halves(stream))
    }

    /// Waits for a stream the peer opened; `None` once the connection has ended.
    async fn accept_bi(&self) -> Option<(SendHalf, RecvHalf)> {
        loop {
            let notified = self.accept_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if let Some(s) = st.accept.pop_front() {
                    return Some(halves(s));
                }
                if let Phase::Closed(_) = st.phase {
                    return None;
                }
            }
            notified.await;
        }
    }

    fn send_datagram(&self, data: Bytes) -> io::Result<()> {
        let max = self.max_datagram.load(Relaxed);
        if data.len() > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("datagram of {} bytes exceeds the maximum {max}", data.len()),
            ));
        }
        let mut st = lock(&self.state);
        if let Phase::Closed(r) = &st.phase {
            return Err(Self::closed_error(r));
        }
        // A full queue drops the datagram, as quiche's own full send queue does.
        if st.datagrams_out.len() < self.datagram_queues.1 {
            st.datagrams_out.push(data);
            if st.datagrams_out.len() == 1 {
                drop(st);
                self.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Waits for a datagram; `None` once the connection has ended.
    async fn recv_datagram(&self) -> Option<Bytes> {
        loop {
            let notified = self.datagram_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if let Some(d) = st.datagrams_in.pop_front() {
                    return Some(d);
                }
                if let Phase::Closed(_) = st.phase {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Asks the worker to close the connection (application close, code 0).
    fn close(&self) {
        let mut st = lock(&self.state);
        if !st.close_requested && !matches!(st.phase, Phase::Closed(_)) {
            st.close_requested = true;
            drop(st);
            self.wake.notify_one();
        }
    }
}

/// One stream's shared state.
struct Stream {
    id: u64,
    conn: Arc<Conn>,
    st: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    /// On the connection's to-do list.
    queued: bool,
    /// Known to the worker.
    registered: bool,
    // Send half (writer -> worker).
    out: VecDeque<Bytes>,
    out_bytes: usize,
    fin: bool,
    writer_gone: bool,
    send_error: Option<String>,
    writer: Option<Waker>,
    // Receive half (worker -> reader).
    input: VecDeque<Bytes>,
    input_bytes: usize,
    eof: bool,
    recv_error: Option<String>,
    /// The worker stopped reading because `input` was full.
    blocked: bool,
    reader_gone: bool,
    reader: Option<Waker>,
}

impl StreamState {
    /// Ends both halves with `reason` (the connection is gone).
    fn fail(&mut self, reason: &str) {
        if self.send_error.is_none() && !self.fin {
            self.send_error = Some(reason.to_string());
        }
        if !self.eof && self.recv_error.is_none() {
            self.recv_error = Some(reason.to_string());
        }
        self.out.clear();
        self.out_bytes = 0;
        self.wake_both();
    }

    fn wake_both(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
}

impl Stream {
    fn new(id: u64, conn: Arc<Conn>) -> Arc<Stream> {
        Arc::new(Stream {
            id,
            conn,
            st: Mutex::new(StreamState::default()),
        })
    }

    /// Puts the stream on the worker's to-do list (once) and wakes the worker. Called with
    /// the stream's lock held (lock order: stream, then connection).
    fn touch(self: &Arc<Self>, st: &mut StreamState) {
        if st.queued {
            return;
        }
        let mut c = lock(&self.conn.state);
        if let Phase::Closed(r) = &c.phase {
            let r = r.clone();
            drop(c);
            st.fail(&r);
            return;
        }
        st.queued = true;
        c.todo.push(self.clone());
        drop(c);
        self.conn.wake.notify_one();
    }
}

fn halves(stream: Arc<Stream>) -> (SendHalf, RecvHalf) {
    (
        SendHalf(stream.clone()),
        RecvHalf {
            stream,
            current: Bytes::new(),
        },
    )
}

/// A stream's sending half.
pub(crate) struct SendHalf(Arc<Stream>);

impl AsyncWrite for SendHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let s = &self.0;
        {
            let mut st = lock(&s.st);
            if let Some(e) = &st.send_error {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, e.clone())));
            }
            if st.fin {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "write after shutdown",
                )));
            }
            if st.out_bytes >= SEND_QUEUE {
                st.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // The one copy of the payload on the sending side, outside any lock.
        let chunk = Bytes::copy_from_slice(&buf[..buf.len().min(MAX_WRITE)]);
        let n = chunk.len();
        let mut st = lock(&s.st);
        st.out_bytes += n;
        st.out.push_back(chunk);
        s.touch(&mut st);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Queues the FIN; does not wait for its acknowledgement.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let s = &self.0;
        let mut st = lock(&s.st);
        if let Some(e) = &st.send_error {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, e.clone())));
        }
        if !st.fin {
            st.fin = true;
            s.touch(&mut st);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for SendHalf {
    fn drop(&mut self) {
        let s = &self.0;
        let mut st = lock(&s.st);
        if !st.fin && st.send_error.is_none() {
            // Unfinished: reset, as STOQ's handles do.
            st.writer_gone = true;
            s.touch(&mut st);
        }
    }
}

/// A stream's receiving half; `current` is the chunk being copied out.
pub(crate) struct RecvHalf {
    stream: Arc<Stream>,
    current: Bytes,
}

impl AsyncRead for RecvHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.current.is_empty() {
            let mut st = lock(&this.stream.st);
            match st.input.pop_front() {
                Some(chunk) => {
                    st.input_bytes -= chunk.len();
                    if st.blocked && st.input_bytes <= RECV_QUEUE / 2 {
                        // The worker left data in quiche: room again.
                        st.blocked = false;
                        this.stream.touch(&mut st);
                    }
                    drop(st);
                    this.current = chunk;
                }
                None if st.eof => return Poll::Ready(Ok(())),
                None => {
                    if let Some(e) = &st.recv_error {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            e.clone(),
                        )));
                    }
                    st.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        let n = this.current.len().min(buf.remaining());
        buf.put_slice(&this.current[..n]);
        this.current.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl Drop for RecvHalf {
    fn drop(&mut self) {
        let s = &self.stream;
        let mut st = lock(&s.st);
        st.reader_gone = true;
        st.input.clear();
        st.input_bytes = 0;
        if !st.eof && st.recv_error.is_none() {
            // Unread: STOP_SENDING.
            s.touch(&mut st);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The worker side: tokio-quiche's ApplicationOverQuic

/// The worker's view of one stream.
struct Local {
    stream: Arc<Stream>,
    /// On the active-send list.
    active: bool,
    /// Nothing more to hand to quiche (FIN or reset sent, or the send half failed).
    send_done: bool,
    /// Nothing more to take from quiche (end, reset, or reading stopped).
    recv_done: bool,
}

/// The application tokio-quiche's IO worker runs for one connection: moves stream data
/// and datagrams between quiche and the handles' queues (see the module documentation).
pub(crate) struct App {
    conn: Arc<Conn>,
    server: bool,
    established: bool,
    streams: HashMap<u64, Local>,
    /// Streams with data or a FIN quiche has not taken yet, oldest first.
    active: Vec<u64>,
    /// quiche refused stream data for want of connection send capacity this round.
    send_blocked: bool,
    /// The lowest peer-opened stream ID not seen yet.
    peer_next: u64,
    read_buf: BytesMut,
    chunks: Vec<Bytes>,
    datagram_buf: Vec<u8>,
    todo: Vec<Arc<Stream>>,
    datagrams_out: Vec<Bytes>,
}

impl App {
    fn new(conn: Arc<Conn>, server: bool) -> App {
        App {
            conn,
            server,
            established: false,
            streams: HashMap::new(),
            active: Vec::new(),
            send_blocked: false,
            peer_next: if server { 0 } else { 1 },
            read_buf: BytesMut::new(),
            chunks: Vec::new(),
            datagram_buf: vec![0; 64 * 1024],
            todo: Vec::new(),
            datagrams_out: Vec::new(),
        }
    }

    /// Reads what quiche has for stream `id` into its queue, up to [`RECV_QUEUE`].
    fn read_stream(&mut self, qconn: &mut QuicheConnection, id: u64) {
        let Some(local) = self.streams.get_mut(&id) else {
            // A stream this side has finished with: discard anything late.
            let _ = qconn.stream_shutdown(id, Shutdown::Read, 0);
            return;
        };
        if local.recv_done {
            return;
        }
        let stream = local.stream.clone();
        let mut queued = {
            let st = lock(&stream.st);
            if st.reader_gone {
                drop(st);
                let _ = qconn.stream_shutdown(id, Shutdown::Read, 0);
                local.recv_done = true;
                return;
            }
            st.input_bytes
        };
        let (mut eof, mut error, mut blocked) = (false, None, false);
        loop {
            if queued >= RECV_QUEUE {
                blocked = true;
                break;
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK {
                self.read_buf.reserve(READ_BUFFER);
            }
            let want = READ_CHUNK.min(RECV_QUEUE - queued);
            match qconn.stream_recv_buf(id, (&mut self.read_buf).limit(want)) {
                Ok((n, fin)) => {
                    if n > 0 {
                        self.chunks.push(self.read_buf.split().freeze());
                        queued += n;
                    }
                    if fin {
                        eof = true;
                        break;
                    }
                    if n == 0 {
                        break;
                    }
                }
                Err(quiche::Error::Done) => break,
                Err(quiche::Error::StreamReset(code)) => {
                    error = Some(format!("stream reset by the peer (code {code})"));
                    break;
                }
                Err(e) => {
                    error = Some(format!("quiche: {e}"));
                    break;
                }
            }
        }
        if eof || error.is_some() {
            local.recv_done = true;
        }
        let mut st = lock(&stream.st);
        for c in self.chunks.drain(..) {
            st.input_bytes += c.len();
            st.input.push_back(c);
        }
        st.eof |= eof;
        if st.recv_error.is_none() {
            st.recv_error = error;
        }
        st.blocked = blocked;
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }

    /// Hands stream `id`'s queued data, FIN or reset to quiche, as far as quiche takes
    /// them. Returns whether the stream still has something quiche did not take.
    fn push_stream(&mut self, qconn: &mut QuicheConnection, id: u64) -> bool {
        let Some(local) = self.streams.get_mut(&id) else {
            return false;
        };
        if local.send_done {
            local.active = false;
            return false;
        }
        let stream = local.stream.clone();
        let mut st = lock(&stream.st);
        let mut fin_sent = false;
        let mut failed = None;
        if st.writer_gone && !st.fin {
            let _ = qconn.stream_shutdown(id, Shutdown::Write, 0);
            st.out.clear();
            st.out_bytes = 0;
            local.send_done = true;
        }
        while let Some(front) = st.out.pop_front() {
            let fin = st.fin && st.out.is_empty();
            let len = front.len();
            // A clone is a reference count: quiche consumes the buffer even when it
            // takes none of it.
            match qconn.stream_send_zc(id, front.clone(), fin) {
                Ok((n, rest)) => {
                    st.out_bytes -= n;
                    if let Some(rest) = rest {
                        st.out.push_front(rest);
                        break;
                    }
                    if n < len {
                        st.out.push_front(front.slice(n..));
                        break;
                    }
                    fin_sent = fin;
                }
                Err(quiche::Error::Done) => {
                    // No send capacity left on the connection (quiche returns Done only
                    // then): no other stream can send either.
                    self.send_blocked = true;
                    st.out.push_front(front);
                    break;
                }
                Err(quiche::Error::StreamLimit) => {
                    st.out.push_front(front);
                    break;
                }
                Err(quiche::Error::StreamStopped(code)) => {
                    failed = Some(format!("stream stopped by the peer (code {code})"));
                    break;
                }
                Err(e) => {
                    failed = Some(format!("quiche: {e}"));
                    break;
                }
            }
        }
        if failed.is_none() && !local.send_done && st.fin && st.out.is_empty() && !fin_sent {
            // The FIN alone (its data went earlier).
            match qconn.stream_send(id, &[], true) {
                Ok(_) => fin_sent = true,
                Err(quiche::Error::Done) | Err(quiche::Error::StreamLimit) => {}
                Err(quiche::Error::StreamStopped(code)) => {
                    failed = Some(format!("stream stopped by the peer (code {code})"));
                }
                Err(e) => failed = Some(format!("quiche: {e}")),
            }
        }
        if let Some(e) = failed {
            st.send_error = Some(e);
            st.out.clear();
            st.out_bytes = 0;
            local.send_done = true;
        }
        if fin_sent {
            local.send_done = true;
        }
        // Half empty: the writer can queue several chunks before it waits again.
        if st.out_bytes <= SEND_QUEUE / 2 || local.send_done {
            if let Some(w) = st.writer.take() {
                w.wake();
            }
        }
        let more = !local.send_done && (!st.out.is_empty() || st.fin);
        local.active = more;
        more
    }

    /// Forgets a stream both of whose halves are done.
    fn retire(&mut self, id: u64) {
        if self
            .streams
            .get(&id)
            .is_some_and(|l| l.send_done && l.recv_done && !l.active)
        {
            self.streams.remove(&id);
        }
    }

    /// Ends every handle: the connection is over.
    fn shut(&mut self, reason: String) {
        let (todo, accept) = {
            let mut c = lock(&self.conn.state);
            if matches!(c.phase, Phase::Closed(_)) {
                return;
            }
            c.phase = Phase::Closed(reason.clone());
            c.datagrams_out.clear();
            (std::mem::take(&mut c.todo), std::mem::take(&mut c.accept))
        };
        for s in todo.iter().chain(accept.iter()) {
            lock(&s.st).fail(&reason);
        }
        for (_, l) in self.streams.drain() {
            lock(&l.stream.st).fail(&reason);
        }
        self.conn.phase_changed.notify_waiters();
        self.conn.accept_ready.notify_waiters();
        self.conn.datagram_ready.notify_waiters();
    }
}

fn close_reason(qconn: &QuicheConnection) -> String {
    if let Some(e) = qconn.peer_error() {
        format!(
            "closed by the peer (code {}{})",
            e.error_code,
            if e.is_app { ", application" } else { "" }
        )
    } else if let Some(e) = qconn.local_error() {
        format!("closed locally (code {})", e.error_code)
    } else if qconn.is_timed_out() {
        "idle timeout".into()
    } else {
        "connection closed".into()
    }
}

impl ApplicationOverQuic for App {
    fn on_conn_established(
        &mut self,
        qconn: &mut QuicheConnection,
        _handshake_info: &HandshakeInfo,
    ) -> QuicResult<()> {
        self.established = true;
        self.conn
            .max_datagram
            .store(qconn.dgram_max_writable_len().unwrap_or(0), Relaxed);
        lock(&self.conn.state).phase = Phase::Established;
        self.conn.phase_changed.notify_waiters();
        Ok(())
    }

    fn should_act(&self) -> bool {
        self.established
    }

    fn wait_for_data(
        &mut self,
        _qconn: &mut QuicheConnection,
    ) -> impl Future<Output = QuicResult<()>> + Send {
        let conn = &self.conn;
        async move {
            conn.wake.notified().await;
            Ok(())
        }
    }

    fn process_reads(&mut self, qconn: &mut QuicheConnection) -> QuicResult<()> {
        for id in qconn.readable() {
            // A stream the peer opened (client-initiated bidirectional on the server):
            // streams below `id` exist too, and are accepted in order.
            let peer_bidi = id & 3 == u64::from(!self.server);
            if peer_bidi && id >= self.peer_next {
                let mut new = Vec::new();
                for n in (self.peer_next..=id).step_by(4) {
                    let stream = Stream::new(n, self.conn.clone());
                    lock(&stream.st).registered = true;
                    self.streams.insert(
                        n,
                        Local {
                            stream: stream.clone(),
                            active: false,
                            send_done: false,
                            recv_done: false,
                        },
                    );
                    new.push(stream);
                }
                self.peer_next = id + 4;
                lock(&self.conn.state).accept.extend(new);
                self.conn.accept_ready.notify_waiters();
            }
            self.read_stream(qconn, id);
            self.retire(id);
        }
        while let Ok(n) = qconn.dgram_recv(&mut self.datagram_buf) {
            self.chunks
                .push(Bytes::copy_from_slice(&self.datagram_buf[..n]));
        }
        if !self.chunks.is_empty() {
            let mut c = lock(&self.conn.state);
            for d in self.chunks.drain(..) {
                // A full queue drops its oldest datagram.
                if c.datagrams_in.len() >= self.conn.datagram_queues.0 {
                    c.datagrams_in.pop_front();
                }
                c.datagrams_in.push_back(d);
            }
            drop(c);
            self.conn.datagram_ready.notify_waiters();
        }
        Ok(())
    }

    fn process_writes(&mut self, qconn: &mut QuicheConnection) -> QuicResult<()> {
        let close = {
            let mut c = lock(&self.conn.state);
            std::mem::swap(&mut c.todo, &mut self.todo);
            std::mem::swap(&mut c.datagrams_out, &mut self.datagrams_out);
            std::mem::take(&mut c.close_requested)
        };
        let mut todo = std::mem::take(&mut self.todo);
        for s in todo.drain(..) {
            let id = s.id;
            let (activate, read) = {
                let mut st = lock(&s.st);
                st.queued = false;
                if !st.registered {
                    st.registered = true;
                    self.streams.insert(
                        id,
                        Local {
                            stream: s.clone(),
                            active: false,
                            send_done: false,
                            recv_done: false,
                        },
                    );
                }
                let Some(local) = self.streams.get_mut(&id) else {
                    // Done with already.
                    continue;
                };
                let mut read = false;
                if !local.recv_done {
                    if st.reader_gone {
                        drop(st);
                        let _ = qconn.stream_shutdown(id, Shutdown::Read, 0);
                        local.recv_done = true;
                        st = lock(&s.st);
                    } else if !st.blocked {
                        read = qconn.stream_readable(id);
                    }
                }
                let activate = !local.send_done
                    && !local.active
                    && (!st.out.is_empty() || st.fin || st.writer_gone);
                (activate, read)
            };
            if read {
                self.read_stream(qconn, id);
            }
            if activate {
                if let Some(l) = self.streams.get_mut(&id) {
                    l.active = true;
                }
                self.active.push(id);
            }
            self.retire(id);
        }
        self.todo = todo;
        if !self.active.is_empty() {
            let mut active = std::mem::take(&mut self.active);
            self.send_blocked = false;
            active.retain(|&id| {
                if self.send_blocked {
                    return true;
                }
                let more = self.push_stream(qconn, id);
                if !more {
                    self.retire(id);
                }
                more
            });
            self.active = active;
        }
        for d in self.datagrams_out.drain(..) {
            // Err(Done): quiche's queue is full and the datagram dropped.
            let _ = qconn.dgram_send(&d);
        }
        if close {
            let _ = qconn.close(true, 0, b"bench done");
        }
        Ok(())
    }

    fn on_conn_close<M: Metrics>(
        &mut self,
        qconn: &mut QuicheConnection,
        _metrics: &M,
        _connection_result: &QuicResult<()>,
    ) {
        self.shut(close_reason(qconn));
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // A failed handshake never reaches `on_conn_close`.
        self.shut("connection ended".into());
    }
}

// ---------------------------------------------------------------------------------------
// Client

/// Dials one server: one UDP socket and one tokio-quiche client connection per `connect`.
///
/// tokio-quiche's tasks (each connection's packet router and IO worker) run on a runtime
/// of the dialer's own, shut down when the dialer is dropped (the matrix drops it when a
/// cell fails or the row ends). Two reasons: tokio-quiche 0.20's client packet router
/// never ends after its connection closes (it waits for a packet that never comes, and
/// keeps its socket: about 5,800 sockets after one `handshakes` cell), and, intermittently
/// after a connect that timed out mid-handshake, a client IO worker sends in a tight loop
/// that fails every write while its memory grows by about 100 MB/s. Dropping the runtime
/// drops those tasks and frees what they hold, so a runaway fails one cell (through the
/// matrix's memory limit) instead of the whole matrix.
pub(crate) struct QuicheDialer {
    addr: SocketAddr,
    cfg: TransportConfig,
    settings: QuicSettings,
    hooks: Hooks,
    /// `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for QuicheDialer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Dropping a runtime blocks, which is not allowed on a runtime thread.
            rt.shutdown_background();
        }
    }
}

impl QuicheDialer {
    pub(crate) fn new(
        addr: SocketAddr,
        tls: &TlsMaterial,
        cfg: &TransportConfig,
    ) -> Result<Self, BenchError> {
        // Two workers, as the matrix's own runtime has on this 2-core machine.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quiche-direct")
            .enable_all()
            .build()
            .map_err(|e| BenchError::io("starting the quiche-direct client runtime", e))?;
        Ok(QuicheDialer {
            addr,
            cfg: cfg.clone(),
            settings: quic_settings(cfg)?,
            hooks: hooks(tls, Role::Client)?,
            runtime: Some(runtime),
        })
    }

    /// Dials on the dialer's runtime (see the type's documentation).
    async fn dial(&self) -> io::Result<Arc<Conn>> {
        let runtime = self.runtime.as_ref().expect("present until drop");
        let (addr, cfg) = (self.addr, self.cfg.clone());
        let (settings, hooks) = (self.settings.clone(), self.hooks.clone());
        runtime
            .spawn(async move { Self::dial_here(addr, cfg, settings, hooks).await })
            .await
            .map_err(io_other)?
    }

    async fn dial_here(
        addr: SocketAddr,
        cfg: TransportConfig,
        settings: QuicSettings,
        hooks: Hooks,
    ) -> io::Result<Arc<Conn>> {
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        let udp = bind_socket(bind, &cfg).map_err(io_other)?;
        udp.connect(addr).await?;
        let capabilities = capabilities(&udp);
        let mut socket: Socket<Arc<tokio::net::UdpSocket>, Arc<tokio::net::UdpSocket>> =
            udp.try_into()?;
        socket.capabilities = capabilities;
        let params = ConnectionParams::new_client(settings, Some(NO_FILES), hooks);
        let conn = Conn::new(false, &cfg);
        let app = App::new(conn.clone(), false);
        connect_with_config(socket, Some(SERVER_NAME), &params, app)
            .await
            .map_err(io_other)?;
        if !conn.established().await {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "quiche connection ended during the handshake",
            ));
        }
        Ok(conn)
    }
}

#[async_trait]
impl Dialer for QuicheDialer {
    async fn connect(&self) -> io::Result<Arc<dyn Session>> {
        let conn = tokio::time::timeout(self.cfg.connect_timeout, self.dial())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "quiche connect timed out"))??;
        Ok(Arc::new(QuicheSession(conn)))
    }

    async fn shutdown(&self) {}
}

/// A client connection; dropping it closes the connection.
struct QuicheSession(Arc<Conn>);

#[async_trait]
impl Session for QuicheSession {
    async fn open(&self) -> io::Result<(BoxWrite, BoxRead)> {
        let (w, r) = self.0.open_bi()?;
        Ok((Box::new(w), Box::new(r)))
    }

    fn send_datagram(&self, data: Bytes) -> io::Result<()> {
        self.0.send_datagram(data)
    }

    fn max_datagram_size(&self) -> Option<usize> {
        Some(self.0.max_datagram.load(Relaxed)).filter(|&m| m > 0)
    }

    async fn close(&self) {
        self.0.close();
    }
}

impl Drop for QuicheSession {
    fn drop(&mut self) {
        self.0.close();
    }
}

// ---------------------------------------------------------------------------------------
// Server

type Accepted = io::Result<InitialQuicConnection<tokio::net::UdpSocket, DefaultMetrics>>;

/// A tokio-quiche listener: its connection stream (taken and dropped by `close`) and
/// address.
pub(crate) struct QuicheServer {
    incoming: tokio::sync::Mutex<Option<mpsc::Receiver<Accepted>>>,
    addr: SocketAddr,
    cfg: TransportConfig,
}

/// A server connection being served.
pub(crate) struct ServerConn(Arc<Conn>);

impl ServerConn {
    /// Waits for the handshake: `false` if the connection ended first.
    pub(crate) async fn established(&self) -> bool {
        self.0.established().await
    }

    /// The next stream the client opened; `None` once the connection has ended.
    pub(crate) async fn accept_bi(&self) -> Option<(SendHalf, RecvHalf)> {
        self.0.accept_bi().await
    }

    /// The next datagram; `None` once the connection has ended.
    pub(crate) async fn recv_datagram(&self) -> Option<Bytes> {
        self.0.recv_datagram().await
    }
}

impl QuicheServer {
    /// Listens on `bind` with `stoq-quiche`'s settings and TLS context for `tls`.
    pub(crate) fn bind(
        bind: SocketAddr,
        tls: &TlsMaterial,
        cfg: &TransportConfig,
    ) -> Result<QuicheServer, BenchError> {
        let socket = bind_socket(bind, cfg)?;
        let addr = socket
            .local_addr()
            .map_err(|e| BenchError::io("reading local address", e))?;
        let capabilities = capabilities(&socket);
        let listener = QuicListener {
            socket,
            cid_generator: Arc::new(SimpleConnectionIdGenerator),
            capabilities,
        };
        let params =
            ConnectionParams::new_server(quic_settings(cfg)?, NO_FILES, hooks(tls, Role::Server)?);
        let stream = tokio_quiche::listen_with_capabilities([listener], params, DefaultMetrics)
            .map_err(|e| {
                BenchError::io(format!("starting the tokio-quiche listener on {addr}"), e)
            })?
            .pop()
            .expect("one listener per socket");
        Ok(QuicheServer {
            incoming: tokio::sync::Mutex::new(Some(stream.into_inner())),
            addr,
            cfg: cfg.clone(),
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts connections, starting each one's worker, and hands them to `serve` until
    /// the listener is closed.
    pub(crate) async fn run(&self, mut serve: impl FnMut(ServerConn)) {
        let mut incoming = self.incoming.lock().await;
        let Some(incoming) = incoming.as_mut() else {
            return;
        };
        while let Some(accepted) = incoming.recv().await {
            // An Initial that did not become a connection (refused, malformed).
            let Ok(initial) = accepted else { continue };
            let conn = Conn::new(true, &self.cfg);
            let _ = initial.start(App::new(conn.clone(), true));
            serve(ServerConn(conn));
        }
    }

    /// Stops accepting; connections end with the process.
    pub(crate) async fn close(&self) {
        drop(self.incoming.lock().await.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_stoq_quiches_with_quiches_defaults() {
        let cfg = crate::bench_config();
        let s = quic_settings(&cfg).unwrap();
        assert_eq!(s.alpn, vec![b"stoq-bench".to_vec()]);
        assert_eq!(s.max_send_udp_payload_size, 1452);
        assert_eq!(s.max_recv_udp_payload_size, 1452);
        assert!(!s.discover_path_mtu);
        assert_eq!(s.cc_algorithm, "cubic");
        assert!(s.enable_dgram);
        assert_eq!(s.initial_max_data, cfg.connection_receive_window);
        assert_eq!(s.max_stream_window, cfg.stream_receive_window);
        assert_eq!(s.initial_max_streams_bidi, cfg.max_concurrent_bidi_streams);
        assert_eq!(s.max_idle_timeout, Some(Duration::from_secs(60)));
        assert!(s.enable_pacing);
        assert!(s.disable_client_ip_validation);
        assert!(!s.disable_active_migration);
        // tokio-quiche's defaults that must equal quiche's own (what stoq-quiche runs).
        assert!(s.enable_hystart && s.grease);
        assert_eq!(s.initial_congestion_window_packets, 10);
        assert_eq!(s.max_amplification_factor, 3);
        assert_eq!(s.send_capacity_factor, 1.0);
        assert_eq!((s.ack_delay_exponent, s.max_ack_delay), (3, 25));
        assert_eq!(s.active_connection_id_limit, 2);
        assert!(!s.enable_relaxed_loss_threshold && !s.enable_send_streams_blocked);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_and_datagrams_cross_a_quiche_direct_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = stoq_crypto::ephemeral_material(&[SERVER_NAME]).unwrap();
        let cfg = crate::bench_config();
        let server = QuicheServer::bind("[::1]:0".parse().unwrap(), &tls, &cfg).unwrap();
        let addr = server.local_addr();
        let server = Arc::new(server);
        let (dgram_tx, mut dgram_rx) = mpsc::unbounded_channel();
        let serving = {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .run(|conn| {
                        let dgram_tx = dgram_tx.clone();
                        tokio::spawn(async move {
                            assert!(conn.established().await);
                            let conn = Arc::new(conn);
                            {
                                let conn = conn.clone();
                                tokio::spawn(async move {
                                    while let Some(d) = conn.recv_datagram().await {
                                        let _ = dgram_tx.send(d);
                                    }
                                });
                            }
                            // Echo each stream back, then finish it.
                            while let Some((mut w, mut r)) = conn.accept_bi().await {
                                tokio::spawn(async move {
                                    let mut all = Vec::new();
                                    r.read_to_end(&mut all).await.unwrap();
                                    w.write_all(&all).await.unwrap();
                                    w.shutdown().await.unwrap();
                                });
                            }
                        });
                    })
                    .await
            })
        };
        let dialer = QuicheDialer::new(addr, &tls, &cfg).unwrap();
        let session = dialer.connect().await.unwrap();
        assert!(session.max_datagram_size().unwrap() >= 1200);
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (session, payload) = (session.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                let (mut w, mut r) = session.open().await.unwrap();
                let reader = tokio::spawn(async move {
                    let mut back = Vec::new();
                    r.read_to_end(&mut back).await.unwrap();
                    back
                });
                w.write_all(&payload).await.unwrap();
                w.shutdown().await.unwrap();
                assert!(reader.await.unwrap() == payload);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        session.send_datagram(Bytes::from_static(b"ping")).unwrap();
        let d = tokio::time::timeout(Duration::from_secs(5), dgram_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&d[..], b"ping");
        session.close().await;
        serving.abort();
    }
}
