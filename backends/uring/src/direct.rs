//! The direct engine: quinn-proto driven by this crate, without quinn's async glue.
//!
//! quinn's glue talks to its socket through [`quinn::AsyncUdpSocket`], which lends its own
//! buffers: a transmit must be copied into a send slot the kernel reads after `try_send`
//! returns, and a receive copied out of the provided-buffer ring into quinn's buffer, which
//! quinn copies again into a `BytesMut` for quinn-proto. This engine removes both extra
//! copies: quinn-proto writes each transmit straight into a buffer of the send pool, which
//! the `SendMsg` sends from, and each receive is copied once, from the ring buffer into the
//! `BytesMut` quinn-proto takes (as quinn does from its own buffer).
//!
//! Structure: one driver task per endpoint owns the I/O. Everything else (the quinn-proto
//! [`proto::Endpoint`] and every [`proto::Connection`] with the wakers of the tasks that
//! wait on it) is one [`State`] under one mutex, shared by the driver and the application's
//! handles. A handle's call (a stream write, a close) changes quinn-proto's state under the
//! lock, marks the connection dirty and wakes the driver (only if it is not running:
//! [`DriverWake`]). A stream write that finds the lock busy, or data quinn-proto cannot
//! take yet, goes to the connection's write-behind buffer ([`Outbox`]) instead, which the
//! driver empties into quinn-proto. Each turn of the driver:
//! 1. takes every completed receive from the ring and routes it through quinn-proto (the
//!    endpoint, then the connection);
//! 2. runs the timers that expired;
//! 3. for each dirty connection, forwards its endpoint events, wakes the tasks its events
//!    concern, moves its outbox into quinn-proto, and asks it for transmits into send
//!    buffers until it has none (or its turn's budget is spent, or its STOQ controller's
//!    pacing rate holds it); with GSO a transmit carries up to 64 KiB;
//! 4. submits every send of the turn with one `io_uring_enter`;
//! 5. takes another turn at once if work is left or a deadline is nearer than a timer can
//!    wait ([`SHORT_WAIT`], quinn-proto's pacer), up to [`TURNS_PER_POLL`]; otherwise
//!    sleeps until the next receive, the earliest timer, or a handle's call.
//!
//! Compared with quinn's glue (a task per connection plus an endpoint task, linked by
//! channels) this makes one task and no channel per endpoint; the price is that all
//! connections of an endpoint share one lock and the driver's one thread.
//!
//! Handles keep a connection alive: a connection whose last handle (the connection or one
//! of its streams) is dropped is closed with code 0, as quinn does, and forgotten once
//! quinn-proto has drained it. The endpoint runs while the transport or any connection
//! handle lives.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use quinn_proto::{
    self as proto, ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Event, StreamEvent,
    StreamId, VarInt,
};
use stoq_core::pki_types::CertificateDer;
use stoq_core::{
    Capabilities, Connection, ConnectionCounters, ConnectionError, ConnectionHandle as Handle,
    ConnectionStats, DatagramError, EndpointRole, EndpointSpec, EndpointStats, Error, RecvStream,
    RecvStreamBackend, SendStream, SendStreamBackend, Side, StreamError, Transport,
};
use stoq_quinn::errors::{self as qerr, LocalClose};
use stoq_quinn::pacing::ConnectionPacer;
use stoq_quinn::session;
use tokio::io::ReadBuf;
use tokio::sync::Notify;
use tokio::time::Sleep;
use tracing::{debug, warn};

use crate::socket::UringSocket;
use crate::UringOptions;

/// How long [`Transport::close`] waits for peers to be told.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Established incoming connections waiting for `accept`; beyond this an incoming
/// connection is closed as soon as it is established (quinn's glue makes its accept loop
/// wait instead; here nothing may block the driver).
const ACCEPT_QUEUE: usize = 1024;
/// Receive completions taken per turn of the driver before the connections get their turn.
const RECV_BUDGET: usize = 64;
/// How long the driver waits before it polls the ring again after repeated receive
/// errors.
const RECV_RETRY: Duration = Duration::from_millis(10);
/// Transmits (GSO batches) one connection may build per turn before the others' turn.
const TRANSMIT_BUDGET: usize = 64;
/// Turns the driver takes in one poll when work is left at the end of a turn (a budget
/// was spent, a timer is already due) before it yields to the worker's other tasks. A
/// task that wakes itself is queued behind them and, on a multi-threaded runtime, makes
/// tokio wake a parked worker to steal it (an eventfd write and that worker's
/// `epoll_wait`): 1.1k of the client's system calls per GiB when each such turn yielded
/// (`benches/syscalls.sh`, one connection).
const TURNS_PER_POLL: usize = 4;
/// A deadline at most this far ahead is waited for by another turn of the driver rather
/// than by a timer (see `turn`): 940 pacing delays per GiB on a 1 GiB upload were this
/// short, and each cost a tokio timer that fired after up to a millisecond plus a wake-up
/// of the runtime's parked I/O driver when the next timer was registered.
const SHORT_WAIT: Duration = Duration::from_micros(100);
/// Application close code for incoming connections refused because `accept` is behind.
const ACCEPT_QUEUE_FULL: u32 = 0x5354_0001;

/// Binds a direct-engine endpoint (see the module documentation).
pub(crate) fn bind(spec: EndpointSpec, options: &UringOptions) -> Result<DirectTransport, Error> {
    let configs = stoq_quinn::quinn_configs(&spec)?;
    let io = UringSocket::bind_for(spec.bind, &spec.config, options, true)?;
    let endpoint = proto::Endpoint::new(
        Arc::new(configs.endpoint),
        configs.server.map(Arc::new),
        !io.fragments(),
        None,
    );
    let wake = Arc::new(DriverWake::default());
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            ep: endpoint,
            conns: HashMap::new(),
            by_handle: HashMap::new(),
            dirty: Vec::new(),
            accept_queue: VecDeque::new(),
            wake: wake.clone(),
            transport_alive: true,
            closing: false,
            scratch: Vec::new(),
            responses: Vec::new(),
            next_id: 0,
            ids: Vec::new(),
        }),
        io,
        accept: Notify::new(),
        idle: Notify::new(),
        counters: Counters::default(),
        pending: Mutex::new(Vec::new()),
        wake,
        datagrams: spec.config.datagrams.enabled,
        handshake_timeout: spec.config.connect_timeout,
        send_window: spec.config.send_window,
        server: spec.role == EndpointRole::Server,
    });
    // The guard exists before the task first runs: a runtime that shuts down before
    // polling it still ends the endpoint's connections.
    tokio::spawn(drive(DriverGuard {
        shared: shared.clone(),
        finished: false,
    }));
    Ok(DirectTransport {
        shared,
        client: configs.client,
        connect_timeout: spec.config.connect_timeout,
    })
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    handshake_failures: AtomicU64,
    connected: AtomicU64,
}

/// What the driver and every handle share.
struct Shared {
    state: Mutex<State>,
    io: Arc<UringSocket>,
    /// Notified when an established connection joins the accept queue, or the endpoint
    /// closes.
    accept: Notify,
    /// Notified, once the endpoint is closing, when every connection has drained.
    idle: Notify,
    counters: Counters,
    datagrams: bool,
    handshake_timeout: Duration,
    server: bool,
    /// `TransportConfig::send_window`, which sizes each connection's [`Outbox`].
    send_window: u64,
    /// Connections whose [`Outbox`] got data while the state lock was busy (each once:
    /// [`OutboxInner::listed`]); the driver takes them at its next turn.
    pending: Mutex<Vec<u64>>,
    /// Wakes the driver; also in [`State::wake`] for handles that hold the state lock.
    wake: Arc<DriverWake>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    ep: proto::Endpoint,
    /// Every connection, by this engine's id. quinn-proto reuses the handle of a drained
    /// connection, which handles may still hold: they hold the id.
    conns: HashMap<u64, Conn>,
    /// The ids of the connections quinn-proto still knows (not drained).
    by_handle: HashMap<ConnectionHandle, u64>,
    /// Connections with work for the driver (each once: [`Conn::dirty`]).
    dirty: Vec<u64>,
    accept_queue: VecDeque<u64>,
    /// Wakes the driver, for handles that gave it work.
    wake: Arc<DriverWake>,
    /// The transport handle is alive; when it is gone and no connection is left, the
    /// driver ends.
    transport_alive: bool,
    /// `Transport::close` was called: no new connections.
    closing: bool,
    /// quinn-proto's response buffer for datagrams the endpoint answers itself.
    scratch: Vec<u8>,
    /// Endpoint responses found while receiving, sent after (the receive runs under the
    /// socket's lock).
    responses: Vec<(proto::Transmit, Vec<u8>)>,
    next_id: u64,
    /// A turn's list of connections to visit (timers due, then the dirty ones), kept so
    /// its allocation is reused from turn to turn.
    ids: Vec<u64>,
}

impl State {
    /// Queues connection `id` for the driver and wakes it (a handle gave it work).
    fn mark(&mut self, id: u64) {
        self.queue(id);
        self.wake.kick();
    }

    /// Queues connection `id` for the driver's next visit (the driver's own call).
    fn queue(&mut self, id: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }
}

/// How handles wake the driver task.
///
/// A task woken while it runs is queued again behind the worker's other tasks when its
/// poll returns, and on a multi-threaded runtime tokio then wakes a parked worker to steal
/// it (an eventfd write or futex wake, and that worker's next park): a writer that marks
/// its connection during every turn of the driver cost that once per turn. So a handle
/// only wakes the driver while it is not running; while it runs, the handle sets `work`,
/// which the driver reads after it clears `running` and before it returns (both sides
/// store, then load, sequentially consistent: at least one sees the other).
#[derive(Default)]
struct DriverWake {
    waker: AtomicWaker,
    /// The driver task is being polled.
    running: AtomicBool,
    /// A handle gave the driver work since its current turn began.
    work: AtomicBool,
}

impl DriverWake {
    /// Hands the driver the work queued just before (in [`State::dirty`] or
    /// [`Shared::pending`]).
    fn kick(&self) {
        self.work.store(true, SeqCst);
        if !self.running.load(SeqCst) {
            self.waker.wake();
        }
    }
}

/// Tasks waiting for something of one connection, woken with `notify_waiters` (a waiter
/// enables its `Notified` before it looks, so no notification is lost).
#[derive(Debug, Default)]
struct ConnNotify {
    /// A stream of that direction may be opened (index: `Dir as usize`).
    available: [Notify; 2],
    /// The peer opened a stream of that direction.
    incoming: [Notify; 2],
    datagram: Notify,
    /// Established, or failed.
    connected: Notify,
    closed: Notify,
}

/// Stream data the application wrote that is not in quinn-proto yet: the connection's
/// write-behind buffer, which the driver empties into quinn-proto.
///
/// Two costs of writing straight into quinn-proto under the state lock, measured on a
/// 1 GiB upload (`benches/syscalls.sh`, `perf record -e syscalls:sys_enter_futex
/// --call-graph dwarf`), are avoided here:
/// * The driver holds the lock for a whole turn, while quinn-proto builds and encrypts
///   the turn's transmits; a writer on another thread that waited for it slept on a
///   futex and was woken by the driver's unlock (3.6k of the client's calls per GiB). A
///   writer that finds the lock busy queues its data here and returns at once.
/// * A sender faster than the path keeps quinn-proto's send buffer full; quinn-proto
///   reports a stream writable as soon as any room frees, so the writer was woken (and
///   parked again) about once per turn. Data quinn-proto refuses is queued here instead;
///   a writer whose stream has data queued waits only when the outbox is full, and is
///   woken once its own queue is at most half the limit (so a single bulk writer sleeps
///   while the driver moves half the outbox into quinn-proto).
///
/// Each stream's bytes keep their order: a write that gets the lock moves its stream's
/// queued data first and queues behind it if quinn-proto does not take it all. A stream
/// with nothing queued never waits for the outbox: when it is full (another stream held
/// back by its flow control may fill it) its writer goes to quinn-proto under the lock as
/// before. A write's errors (the peer's STOP_SENDING, a reset or finish of this side, the
/// connection's end) are recorded here by whoever learns them under the state lock, so a
/// queued write fails as a direct one would; data queued on a stream that is stopped or
/// reset is discarded, as quinn-proto discards its unsent data.
struct Outbox {
    inner: Mutex<OutboxInner>,
    /// [`OutboxInner::bytes`], readable without the lock (the driver's check per turn).
    bytes: AtomicUsize,
    /// The most bytes queued at once over the connection's streams: an eighth of its
    /// send window (`TransportConfig::send_window`), 4 MiB by default.
    limit: usize,
}

#[derive(Default)]
struct OutboxInner {
    /// Queued data per stream, in write order.
    streams: HashMap<StreamId, Queued>,
    /// Bytes queued over all streams.
    bytes: usize,
    /// What a write on the stream returns instead of queueing: the first such error,
    /// kept until its send half is dropped.
    refused: HashMap<StreamId, StreamError>,
    /// Streams whose send half the application holds (only their errors are kept in
    /// `refused`, so a stop that arrives after the half was dropped leaves nothing).
    open: HashSet<StreamId>,
    /// Where the next drain of every stream starts ([`drain_outbox`]: round robin).
    rotation: usize,
    /// The queues a drain takes out, kept for its allocation.
    scratch: Vec<(StreamId, Queued)>,
    /// Why the connection ended, once it did: every write fails with it.
    ended: Option<ConnectionError>,
    /// In [`Shared::pending`].
    listed: bool,
}

/// One stream's queued data.
#[derive(Default)]
struct Queued {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    /// Finish the stream once the chunks are in quinn-proto.
    fin: bool,
    /// The stream's writer, waiting for its queue to shrink to half the limit.
    waiter: Option<Waker>,
}

/// What [`Outbox::queue`] did.
enum Queueing {
    /// This many bytes were queued.
    Queued(usize),
    /// The outbox is full and the stream has nothing queued: write under the lock.
    Full,
    /// The outbox is full and the stream's queue is long: its writer is registered.
    Wait,
    /// Writes on the stream fail with this.
    Refused(StreamError),
}

impl OutboxInner {
    /// Records `e` for writes on stream `id` if its send half is open and no error is
    /// recorded yet (a direct write reports the first: after a finish, a later
    /// STOP_SENDING does not turn `ClosedStream` into `Stopped`).
    fn refuse(&mut self, id: StreamId, e: StreamError) {
        if self.open.contains(&id) {
            self.refused.entry(id).or_insert(e);
        }
    }
}

impl Outbox {
    fn new(send_window: u64) -> Outbox {
        Outbox {
            inner: Mutex::default(),
            bytes: AtomicUsize::new(0),
            limit: usize::try_from(send_window / 8)
                .unwrap_or(usize::MAX)
                .clamp(64 * 1024, 4 << 20),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutboxInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues data for stream `id`: `take(room)` gives at most `room` bytes. See
    /// [`Queueing`]; with `Wait`, `cx` is woken when the queue has shrunk.
    fn queue(&self, cx: &Context<'_>, id: StreamId, take: impl FnOnce(usize) -> Bytes) -> Queueing {
        let mut o = self.lock();
        if let Some(e) = &o.ended {
            return Queueing::Refused(StreamError::ConnectionLost(e.clone()));
        }
        if let Some(e) = o.refused.get(&id) {
            return Queueing::Refused(e.clone());
        }
        let room = self.limit.saturating_sub(o.bytes);
        if room == 0 {
            return match o.streams.get_mut(&id) {
                Some(q) => {
                    q.waiter = Some(cx.waker().clone());
                    Queueing::Wait
                }
                None => Queueing::Full,
            };
        }
        let chunk = take(room);
        let n = chunk.len();
        if n == 0 {
            // No entry without bytes: the driver looks for queues by the byte count.
            return Queueing::Queued(0);
        }
        let q = o.streams.entry(id).or_default();
        q.chunks.push_back(chunk);
        q.bytes += n;
        o.bytes += n;
        self.bytes.store(o.bytes, Relaxed);
        Queueing::Queued(n)
    }

    /// Refuses further writes on stream `id` with `e`, discarding what it queued. With
    /// `replace`, `e` replaces an error recorded before (a local reset is what a direct
    /// write reports from then on).
    fn refuse(&self, id: StreamId, e: StreamError, replace: bool) {
        let mut o = self.lock();
        if let Some(q) = o.streams.remove(&id) {
            o.bytes -= q.bytes;
            self.bytes.store(o.bytes, Relaxed);
            if let Some(w) = q.waiter {
                w.wake();
            }
        }
        if replace {
            o.refused.remove(&id);
        }
        o.refuse(id, e);
    }

    /// The connection ended: every write fails with `e`, queued data is discarded.
    fn end(&self, e: Option<ConnectionError>) {
        let mut o = self.lock();
        if o.ended.is_none() {
            o.ended = e;
        }
        for (_, q) in o.streams.drain() {
            if let Some(w) = q.waiter {
                w.wake();
            }
        }
        o.bytes = 0;
        self.bytes.store(0, Relaxed);
    }

    /// Whether stream `id` has data queued.
    fn holds(&self, id: StreamId) -> bool {
        self.bytes.load(Relaxed) > 0 && self.lock().streams.contains_key(&id)
    }
}

/// Moves queued data of `conn` into quinn-proto (only stream `only`'s if given), as much
/// as it takes, finishing streams whose data is all in, and wakes writers whose queue
/// shrank to half the limit. True if anything moved. A stream it leaves data on is
/// blocked in quinn-proto, which reports it writable later. Called under the state lock.
///
/// The queues are taken out of the outbox while quinn-proto takes their data, so a
/// writer on another thread appends meanwhile without waiting for the outbox's lock; what
/// it appends goes back behind what is left.
fn drain_outbox(
    conn: &mut proto::Connection,
    outbox: &Outbox,
    local_close: &LocalClose,
    only: Option<StreamId>,
) -> bool {
    if outbox.bytes.load(Relaxed) == 0 {
        return false;
    }
    let mut taken = {
        let mut o = outbox.lock();
        let mut taken = std::mem::take(&mut o.scratch);
        match only {
            Some(id) => taken.extend(o.streams.remove(&id).map(|q| (id, q))),
            None => {
                taken.extend(o.streams.drain());
                // Round robin: each drain starts one stream further, so a stream whose
                // writer outruns the path cannot take all the room quinn-proto frees
                // before the others get any.
                if taken.len() > 1 {
                    taken.sort_unstable_by_key(|(id, _)| VarInt::from(*id).into_inner());
                    o.rotation = o.rotation.wrapping_add(1);
                    let first = o.rotation % taken.len();
                    taken.rotate_left(first);
                }
            }
        }
        taken
    };
    let mut moved = 0;
    let mut failed: Vec<(StreamId, StreamError)> = Vec::new();
    for (id, q) in &mut taken {
        let mut stream = conn.send_stream(*id);
        while let Some(front) = q.chunks.front_mut() {
            let len = front.len();
            // quinn-proto takes the `Bytes` without copying (and advances it). After a
            // partial write the next call reports `Blocked`, which registers the stream
            // for quinn-proto's `Writable` event.
            match stream.write_chunks(std::slice::from_mut(front)) {
                Ok(_) => {
                    q.bytes -= len - front.len();
                    moved += len - front.len();
                    if front.is_empty() {
                        q.chunks.pop_front();
                    }
                }
                Err(proto::WriteError::Blocked) => break,
                Err(e) => {
                    failed.push((*id, write_error_with(e, local_close)));
                    break;
                }
            }
        }
        if q.fin && q.chunks.is_empty() {
            // Stopped: harmless, as in `poll_finish`; closed: reset meanwhile. (No write
            // can be queued after the finish: `poll_finish` refused them.)
            let _ = stream.finish();
        }
    }
    let mut o = outbox.lock();
    o.bytes -= moved;
    for (id, mut q) in taken.drain(..) {
        if let Some(newer) = o.streams.remove(&id) {
            q.chunks.extend(newer.chunks);
            q.bytes += newer.bytes;
            q.waiter = newer.waiter.or(q.waiter);
        }
        if let Some(at) = failed.iter().position(|(f, _)| *f == id) {
            let (_, e) = failed.swap_remove(at);
            o.bytes -= q.bytes;
            o.refuse(id, e);
            if let Some(w) = q.waiter.take() {
                w.wake();
            }
            continue;
        }
        if q.bytes <= outbox.limit / 2 {
            if let Some(w) = q.waiter.take() {
                w.wake();
            }
        }
        if !q.chunks.is_empty() {
            o.streams.insert(id, q);
        }
    }
    o.scratch = taken;
    outbox.bytes.store(o.bytes, Relaxed);
    moved > 0
}

/// One connection and the tasks waiting on it.
struct Conn {
    conn: proto::Connection,
    /// quinn-proto's handle (valid while not drained).
    ch: ConnectionHandle,
    notify: Arc<ConnNotify>,
    outbox: Arc<Outbox>,
    local_close: Arc<LocalClose>,
    readers: HashMap<StreamId, Waker>,
    writers: HashMap<StreamId, Waker>,
    stopped: HashMap<StreamId, Waker>,
    /// Why the connection ended, once it did.
    error: Option<proto::ConnectionError>,
    connected: bool,
    /// An incoming connection not yet in the accept queue.
    incoming: bool,
    /// Closed by the handshake timeout unless established by then.
    handshake_deadline: Option<Instant>,
    /// Live handles: the connection's and its streams'.
    refs: usize,
    dirty: bool,
    timer: Option<Instant>,
    pacer: Option<ConnectionPacer>,
    /// The pacer holds the next transmit until then.
    paced_until: Option<Instant>,
    /// The send pool ran dry during this connection's turn.
    wants_buffer: bool,
    drained: bool,
    id: u64,
}

impl Conn {
    fn new(
        conn: proto::Connection,
        ch: ConnectionHandle,
        id: u64,
        incoming: bool,
        deadline: Option<Instant>,
        send_window: u64,
    ) -> Conn {
        Conn {
            conn,
            ch,
            notify: Arc::default(),
            outbox: Arc::new(Outbox::new(send_window)),
            local_close: Arc::default(),
            readers: HashMap::new(),
            writers: HashMap::new(),
            stopped: HashMap::new(),
            error: None,
            connected: false,
            incoming,
            handshake_deadline: deadline,
            refs: 0,
            dirty: false,
            timer: None,
            pacer: ConnectionPacer::take_built(),
            paced_until: None,
            wants_buffer: false,
            drained: false,
            id,
        }
    }

    /// After a call into quinn-proto that may have built a controller for a new path.
    fn adopt_controllers(&mut self) {
        if let Some(p) = &self.pacer {
            p.adopt_built();
        }
    }

    /// The connection ended: remember why and wake everyone waiting on it.
    fn terminate(&mut self, reason: proto::ConnectionError) {
        if self.error.is_none() {
            self.error = Some(reason);
        }
        self.outbox.end(self.error());
        for (_, w) in self.readers.drain() {
            w.wake();
        }
        for (_, w) in self.writers.drain() {
            w.wake();
        }
        for (_, w) in self.stopped.drain() {
            w.wake();
        }
        let n = &self.notify;
        for i in 0..2 {
            n.available[i].notify_waiters();
            n.incoming[i].notify_waiters();
        }
        n.datagram.notify_waiters();
        n.connected.notify_waiters();
        n.closed.notify_waiters();
    }

    fn close(&mut self, code: VarInt, reason: &[u8]) {
        {
            let mut local = self
                .local_close
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if local.is_none() && self.error.is_none() {
                *local = Some((code.into_inner(), Bytes::copy_from_slice(reason)));
            }
        }
        self.conn
            .close(Instant::now(), code, Bytes::copy_from_slice(reason));
        self.terminate(proto::ConnectionError::LocallyClosed);
    }

    fn error(&self) -> Option<ConnectionError> {
        self.error
            .clone()
            .map(|e| qerr::connection_error(e, &self.local_close))
    }

    /// The next instant the driver must look at this connection.
    fn next_wake(&self) -> Option<Instant> {
        [self.timer, self.paced_until, self.handshake_deadline]
            .into_iter()
            .flatten()
            .min()
    }
}

fn wake(map: &mut HashMap<StreamId, Waker>, id: StreamId) {
    if let Some(w) = map.remove(&id) {
        w.wake();
    }
}

/// The driver task (see the module documentation). Ends when the transport handle and
/// every connection are gone.
async fn drive(mut guard: DriverGuard) {
    let mut sleep: Option<Pin<Box<Sleep>>> = None;
    let shared = guard.shared.clone();
    let wake = &shared.wake;
    poll_fn(|cx| {
        wake.waker.register(cx.waker());
        wake.running.store(true, SeqCst);
        for _ in 0..TURNS_PER_POLL {
            wake.work.store(false, SeqCst);
            match turn(&shared, cx, &mut sleep) {
                Turn::Done => return Poll::Ready(()),
                Turn::Again => {}
                Turn::Wait => {
                    wake.running.store(false, SeqCst);
                    if !wake.work.load(SeqCst) {
                        return Poll::Pending;
                    }
                    wake.running.store(true, SeqCst);
                }
            }
        }
        wake.running.store(false, SeqCst);
        // Let the worker's other tasks run; this task runs again after them.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    guard.finished = true;
    debug!("uring direct engine driver ended");
}

/// Ends every connection if the driver stops before its endpoint is done: it panicked
/// (tokio drops a task's future after catching its panic), or its runtime shut down,
/// before or after first polling it. Without it, handles would wait for a driver that no
/// longer runs.
struct DriverGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Also the path of every runtime shutdown with a live endpoint, hence not a
        // warning (a panic is reported by tokio itself).
        debug!("uring direct engine driver stopped early; its connections are ended");
        let mut st = self.shared.lock();
        st.closing = true;
        for c in st.conns.values_mut() {
            c.terminate(proto::ConnectionError::TransportError(
                proto::TransportError {
                    code: proto::TransportErrorCode::INTERNAL_ERROR,
                    frame: None,
                    reason: "the endpoint's io_uring driver task ended".into(),
                },
            ));
            c.drained = true;
        }
        drop(st);
        self.shared.accept.notify_waiters();
        self.shared.idle.notify_waiters();
    }
}

/// What the driver does after a turn.
enum Turn {
    /// The endpoint is done: the driver ends.
    Done,
    /// Work is left (a budget was spent, a timer is already due): another turn now.
    Again,
    /// Everything is done until the next receive, timer or handle's call, each of which
    /// wakes the task.
    Wait,
}

/// One turn of the driver.
fn turn(shared: &Shared, cx: &mut Context<'_>, sleep: &mut Option<Pin<Box<Sleep>>>) -> Turn {
    let io = &shared.io;
    let mut st = shared.lock();
    // Connections whose writers queued data while the lock was busy.
    let pending = std::mem::take(
        &mut *shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    for id in pending {
        if let Some(c) = st.conns.get_mut(&id) {
            c.outbox.lock().listed = false;
            if !c.dirty {
                c.dirty = true;
                st.dirty.push(id);
            }
        }
    }
    let now = Instant::now();
    let mut again = false;
    let mut retry: Option<Instant> = None;

    // 1. Receives.
    {
        let State {
            ep,
            conns,
            by_handle,
            dirty,
            scratch,
            responses,
            closing,
            transport_alive,
            next_id,
            ..
        } = &mut *st;
        let accepting = shared.server && !*closing && *transport_alive;
        let mut on_datagram = |meta: quinn::udp::RecvMeta, payload: &[u8]| {
            let ecn = meta.ecn.map(proto_ecn);
            let mut data = BytesMut::from(payload);
            while !data.is_empty() {
                let segment = data.split_to(meta.stride.min(data.len()));
                scratch.clear();
                match ep.handle(now, meta.addr, meta.dst_ip, ecn, segment, scratch) {
                    Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                        let id = by_handle.get(&ch).copied();
                        if let Some(c) = id.and_then(|id| conns.get_mut(&id)) {
                            c.conn.handle_event(event);
                            c.adopt_controllers();
                            if !c.dirty {
                                c.dirty = true;
                                dirty.push(c.id);
                            }
                        }
                    }
                    Some(DatagramEvent::NewConnection(incoming)) => {
                        scratch.clear();
                        if !accepting {
                            let t = ep.refuse(incoming, scratch);
                            responses.push((t, std::mem::take(scratch)));
                            continue;
                        }
                        match ep.accept(incoming, now, scratch, None) {
                            Ok((ch, conn)) => {
                                *next_id += 1;
                                let id = *next_id;
                                // `None` (no deadline) for a timeout beyond what `Instant`
                                // can represent.
                                let deadline = now.checked_add(shared.handshake_timeout);
                                let mut c =
                                    Conn::new(conn, ch, id, true, deadline, shared.send_window);
                                c.dirty = true;
                                conns.insert(id, c);
                                by_handle.insert(ch, id);
                                dirty.push(id);
                            }
                            Err(e) => {
                                shared.counters.handshake_failures.fetch_add(1, Relaxed);
                                debug!(error = %e.cause, "incoming connection not accepted");
                                if let Some(t) = e.response {
                                    responses.push((t, std::mem::take(scratch)));
                                }
                            }
                        }
                        stoq_quinn::pacing::forget_unclaimed();
                    }
                    Some(DatagramEvent::Response(t)) => {
                        responses.push((t, std::mem::take(scratch)));
                    }
                    None => {}
                }
            }
        };
        // Until the ring has nothing more (which registers this task for the next
        // completion) or the turn's budget is spent (then the task runs again at once).
        let mut taken = 0;
        let mut errors = 0;
        loop {
            match io.poll_recv_direct(cx, RECV_BUDGET - taken, &mut on_datagram) {
                Poll::Ready(Ok(n)) => {
                    taken += n;
                    if taken >= RECV_BUDGET {
                        again = true;
                        break;
                    }
                }
                Poll::Ready(Err(e)) => {
                    warn!(error = %e, "uring direct engine: receive failed");
                    errors += 1;
                    if errors > 1 {
                        // Failing again at once: look again after a pause rather than
                        // spin (the other work of the turn goes on).
                        retry = Some(now + RECV_RETRY);
                        break;
                    }
                }
                Poll::Pending => break,
            }
        }
    }
    let responses: Vec<(proto::Transmit, Vec<u8>)> = std::mem::take(&mut st.responses);
    for (t, buf) in responses {
        send_copy(io, &t, &buf);
    }

    // 2. Timers, pacing holds, handshake deadlines.
    let mut ids = std::mem::take(&mut st.ids);
    ids.extend(
        st.conns
            .iter()
            .filter(|(_, c)| c.next_wake().is_some_and(|t| t <= now))
            .map(|(id, _)| *id),
    );
    for id in ids.drain(..) {
        let c = st.conns.get_mut(&id).expect("listed above");
        if c.timer.is_some_and(|t| t <= now) {
            c.timer = None;
            c.conn.handle_timeout(now);
            c.adopt_controllers();
        }
        if c.paced_until.is_some_and(|t| t <= now) {
            c.paced_until = None;
        }
        if c.handshake_deadline.is_some_and(|t| t <= now) {
            c.handshake_deadline = None;
            if !c.connected && c.error.is_none() {
                debug!("incoming handshake timed out");
                c.incoming = false;
                c.conn
                    .close(now, 0u32.into(), Bytes::from_static(b"handshake timed out"));
                c.terminate(proto::ConnectionError::TimedOut);
                shared.counters.handshake_failures.fetch_add(1, Relaxed);
            }
        }
        st.queue(id);
    }

    // 3. Dirty connections.
    let mut wants_buffer = false;
    // The dirty list is swapped out (connections that stay dirty go onto the emptied one
    // for the next turn).
    std::mem::swap(&mut ids, &mut st.dirty);
    for id in ids.drain(..) {
        let more = drive_conn(shared, &mut st, id, now);
        again |= more;
        if st.conns.get(&id).is_some_and(|c| c.wants_buffer) {
            wants_buffer = true;
        }
    }
    st.ids = ids;

    // quinn-proto forgot drained connections (and may reuse their handles); forget those
    // nobody holds.
    let State {
        conns, by_handle, ..
    } = &mut *st;
    by_handle.retain(|_, id| conns.get(id).is_some_and(|c| !c.drained));
    st.conns.retain(|_, c| !(c.drained && c.refs == 0));
    if st.closing && st.conns.values().all(|c| c.drained) {
        // `Transport::close` waits for this.
        shared.idle.notify_waiters();
    }
    let done = !st.transport_alive && st.conns.is_empty();
    let next = st
        .conns
        .values()
        .filter_map(Conn::next_wake)
        .chain(retry)
        .min();
    drop(st);

    // 4. One submission for the whole turn, without the lock: on loopback the kernel
    // runs the receiver's side of each send inside this call, and the application's
    // tasks may meanwhile queue more data.
    io.submit();
    if done {
        return Turn::Done;
    }

    // 5. Sleep until the next receive (registered above), timer, or call.
    if wants_buffer && io.poll_send_buffer(cx).is_ready() {
        again = true;
    }
    if again {
        return Turn::Again;
    }
    // A deadline closer than tokio's timer can wait (it rounds up to the next
    // millisecond) is almost always quinn-proto's pacer asking for a few microseconds:
    // the next turn, after this one's submission, finds it due.
    if next.is_some_and(|at| at.saturating_duration_since(Instant::now()) < SHORT_WAIT) {
        return Turn::Again;
    }
    if let Some(at) = next {
        let at = tokio::time::Instant::from_std(at);
        if let Some(s) = sleep.as_mut() {
            if s.deadline() != at {
                s.as_mut().reset(at);
            }
        } else {
            *sleep = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        if sleep.as_mut().expect("set").as_mut().poll(cx).is_ready() {
            return Turn::Again;
        }
    }
    Turn::Wait
}

fn proto_ecn(e: quinn::udp::EcnCodepoint) -> EcnCodepoint {
    use quinn::udp::EcnCodepoint as U;
    match e {
        U::Ect0 => EcnCodepoint::Ect0,
        U::Ect1 => EcnCodepoint::Ect1,
        U::Ce => EcnCodepoint::Ce,
    }
}

fn udp_ecn(e: EcnCodepoint) -> quinn::udp::EcnCodepoint {
    use quinn::udp::EcnCodepoint as U;
    match e {
        EcnCodepoint::Ect0 => U::Ect0,
        EcnCodepoint::Ect1 => U::Ect1,
        EcnCodepoint::Ce => U::Ce,
    }
}

/// Sends a transmit quinn-proto wrote into a buffer of its own (endpoint responses).
fn send_copy(io: &UringSocket, t: &proto::Transmit, data: &[u8]) {
    let Some(mut buf) = io.take_send_buffer() else {
        debug!("no send buffer for an endpoint response; dropped");
        return;
    };
    buf.extend_from_slice(&data[..t.size.min(data.len())]);
    io.send_buffer(
        buf,
        t.destination,
        t.ecn.map(udp_ecn),
        t.segment_size,
        t.src_ip,
    );
}

/// Gives one connection its turn; true if it has more to send than its budget allowed.
fn drive_conn(shared: &Shared, st: &mut State, id: u64, now: Instant) -> bool {
    let io = &shared.io;
    let State {
        ep,
        conns,
        accept_queue,
        dirty,
        closing,
        transport_alive,
        ..
    } = st;
    let Some(c) = conns.get_mut(&id) else {
        return false;
    };
    // Whether an incoming connection that becomes established can still be accepted.
    let accepting = !*closing && *transport_alive;
    let ch = c.ch;
    c.dirty = false;
    c.wants_buffer = false;
    let mut more = false;
    let max_segments = io.max_segments();
    let mut transmits = 0;
    loop {
        forward_events(shared, ep, accept_queue, accepting, ch, c);
        if c.drained {
            break;
        }
        if transmits == 0 {
            // Once per visit: quinn-proto makes room in its send buffer only as ACKs
            // arrive (handled before), not as it transmits.
            drain_outbox(&mut c.conn, &c.outbox, &c.local_close, None);
        }
        if transmits >= TRANSMIT_BUDGET {
            more = true;
            break;
        }
        if let Some(at) = c.pacer.as_ref().and_then(|p| p.ready_at(now)) {
            c.paced_until = Some(at);
            break;
        }
        let Some(mut buf) = io.take_send_buffer() else {
            c.wants_buffer = true;
            break;
        };
        // A STOQ pacer's transmit is at most its burst (64 KiB trains would beat a low
        // rate and queue at a slow bottleneck).
        let segments = match c
            .pacer
            .as_ref()
            .and_then(ConnectionPacer::max_transmit_bytes)
        {
            Some(bytes) => (bytes / usize::from(c.conn.current_mtu())).clamp(1, max_segments),
            None => max_segments,
        };
        match c.conn.poll_transmit(now, segments, &mut buf) {
            Some(t) => {
                transmits += 1;
                if let Some(p) = &c.pacer {
                    p.charge(t.size);
                }
                buf.truncate(t.size);
                io.send_buffer(
                    buf,
                    t.destination,
                    t.ecn.map(udp_ecn),
                    t.segment_size,
                    t.src_ip,
                );
            }
            None => {
                io.return_send_buffer(buf);
                forward_events(shared, ep, accept_queue, accepting, ch, c);
                break;
            }
        }
    }
    c.timer = c.conn.poll_timeout();
    if more || c.wants_buffer {
        // Back on the list for the next turn (the driver wakes itself, or is woken by a
        // send completion).
        c.dirty = true;
        dirty.push(id);
    }
    more
}

/// Forwards a connection's endpoint events to the endpoint (and its answers back) and
/// wakes the tasks its application events concern.
fn forward_events(
    shared: &Shared,
    ep: &mut proto::Endpoint,
    accept_queue: &mut VecDeque<u64>,
    accepting: bool,
    ch: ConnectionHandle,
    c: &mut Conn,
) {
    while let Some(event) = c.conn.poll_endpoint_events() {
        if event.is_drained() {
            c.drained = true;
        }
        if let Some(answer) = ep.handle_event(ch, event) {
            c.conn.handle_event(answer);
        }
    }
    while let Some(event) = c.conn.poll() {
        match event {
            Event::HandshakeDataReady => {}
            Event::Connected => {
                c.connected = true;
                c.handshake_deadline = None;
                c.notify.connected.notify_waiters();
                if c.incoming {
                    c.incoming = false;
                    if !accepting {
                        // The transport was dropped or closed during the handshake:
                        // nobody can accept this connection, and a queue entry would
                        // keep it (and the endpoint) alive for ever.
                        c.close(0u32.into(), b"");
                    } else if accept_queue.len() >= ACCEPT_QUEUE {
                        warn!("accept queue full; closing an incoming connection");
                        c.close(ACCEPT_QUEUE_FULL.into(), b"accept queue full");
                    } else {
                        shared.counters.accepted.fetch_add(1, Relaxed);
                        // The queued entry holds the connection until `accept` takes it.
                        c.refs += 1;
                        accept_queue.push_back(c.id);
                        shared.accept.notify_waiters();
                    }
                }
            }
            Event::ConnectionLost { reason } => {
                if c.incoming && !c.connected {
                    shared.counters.handshake_failures.fetch_add(1, Relaxed);
                    warn!(error = %reason, "incoming handshake failed");
                }
                c.terminate(reason);
            }
            Event::Stream(StreamEvent::Opened { dir }) => {
                c.notify.incoming[dir as usize].notify_waiters();
            }
            Event::Stream(StreamEvent::Available { dir }) => {
                c.notify.available[dir as usize].notify_waiters();
            }
            Event::Stream(StreamEvent::Readable { id }) => wake(&mut c.readers, id),
            Event::Stream(StreamEvent::Writable { id }) => wake(&mut c.writers, id),
            Event::Stream(StreamEvent::Finished { id }) => wake(&mut c.stopped, id),
            Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                c.outbox
                    .refuse(id, StreamError::Stopped(error_code.into_inner()), false);
                wake(&mut c.stopped, id);
                wake(&mut c.writers, id);
            }
            Event::DatagramReceived => c.notify.datagram.notify_waiters(),
            Event::DatagramsUnblocked => {}
        }
    }
}

/// A reference to one connection, counted in [`Conn::refs`]; the last one dropped closes
/// the connection (code 0) if it is still open.
struct ConnRef {
    shared: Arc<Shared>,
    id: u64,
    notify: Arc<ConnNotify>,
    outbox: Arc<Outbox>,
}

impl ConnRef {
    /// A new reference to connection `id`, which must be in `st`.
    fn new(shared: &Arc<Shared>, st: &mut State, id: u64) -> ConnRef {
        let c = st.conns.get_mut(&id).expect("a live connection");
        c.refs += 1;
        ConnRef {
            shared: shared.clone(),
            id,
            notify: c.notify.clone(),
            outbox: c.outbox.clone(),
        }
    }

    /// Runs `f` on the connection under the lock, then hands it to the driver.
    fn with<R>(&self, f: impl FnOnce(&mut Conn) -> R) -> R {
        let mut st = self.shared.lock();
        let c = st
            .conns
            .get_mut(&self.id)
            .expect("a referenced connection is kept");
        let r = f(c);
        st.mark(self.id);
        r
    }

    /// Runs `f` on the connection under the lock; hands it to the driver if `f` set its
    /// flag (it queued something to send).
    fn access<R>(&self, f: impl FnOnce(&mut Conn, &mut bool) -> R) -> R {
        self.access_locked(self.shared.lock(), f)
    }

    /// [`ConnRef::access`] if the lock is free now; `None` if another thread holds it.
    fn try_access<R>(&self, f: impl FnOnce(&mut Conn, &mut bool) -> R) -> Option<R> {
        let st = match self.shared.state.try_lock() {
            Ok(st) => st,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(self.access_locked(st, f))
    }

    /// [`ConnRef::access`] with the lock taken.
    fn access_locked<R>(
        &self,
        mut st: MutexGuard<'_, State>,
        f: impl FnOnce(&mut Conn, &mut bool) -> R,
    ) -> R {
        let c = st
            .conns
            .get_mut(&self.id)
            .expect("a referenced connection is kept");
        let mut send = false;
        let r = f(c, &mut send);
        if send {
            st.mark(self.id);
        }
        r
    }

    /// Hands the driver data queued in the connection's [`Outbox`] while the lock was
    /// busy.
    fn queued(&self) {
        let list = !std::mem::replace(&mut self.outbox.lock().listed, true);
        if list {
            self.shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self.id);
        }
        self.shared.wake.kick();
    }

    /// Runs `f` on the connection under the lock without waking the driver (reads).
    fn peek<R>(&self, f: impl FnOnce(&mut Conn) -> R) -> R {
        let mut st = self.shared.lock();
        let c = st
            .conns
            .get_mut(&self.id)
            .expect("a referenced connection is kept");
        f(c)
    }

    fn clone_ref(&self) -> ConnRef {
        let mut st = self.shared.lock();
        ConnRef::new(&self.shared, &mut st, self.id)
    }
}

impl Drop for ConnRef {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let Some(c) = st.conns.get_mut(&self.id) else {
            return;
        };
        c.refs -= 1;
        if c.refs == 0 && c.error.is_none() {
            c.close(0u32.into(), b"");
        }
        st.mark(self.id);
    }
}

/// An endpoint of the direct engine.
pub struct DirectTransport {
    shared: Arc<Shared>,
    client: Option<quinn::ClientConfig>,
    connect_timeout: Duration,
}

impl fmt::Debug for DirectTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectTransport")
            .field("local_addr", &self.shared.io.bound_addr())
            .finish_non_exhaustive()
    }
}

impl Drop for DirectTransport {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.transport_alive = false;
        // Established connections nobody accepted are closed as quinn's glue closes them.
        for id in std::mem::take(&mut st.accept_queue) {
            if let Some(c) = st.conns.get_mut(&id) {
                c.refs -= 1;
                if c.refs == 0 && c.error.is_none() {
                    c.close(0u32.into(), b"");
                }
            }
            st.mark(id);
        }
        st.wake.kick();
    }
}

#[async_trait]
impl Transport for DirectTransport {
    fn name(&self) -> &str {
        crate::NAME
    }

    fn capabilities(&self) -> Capabilities {
        crate::CAPABILITIES
    }

    async fn connect(&self, addr: SocketAddr, server_name: &str) -> Result<Handle, Error> {
        let client = self
            .client
            .clone()
            .ok_or_else(|| Error::config("tls.roots", "this endpoint has no trust roots"))?;
        let conn = {
            let mut st = self.shared.lock();
            if st.closing {
                return Err(Error::EndpointClosed);
            }
            let started = st.ep.connect(Instant::now(), client, addr, server_name);
            let (ch, conn) = match started {
                Ok(x) => x,
                Err(e) => {
                    stoq_quinn::pacing::forget_unclaimed();
                    return Err(qerr::connect_error(e));
                }
            };
            st.next_id += 1;
            let id = st.next_id;
            st.conns.insert(
                id,
                Conn::new(conn, ch, id, false, None, self.shared.send_window),
            );
            st.by_handle.insert(ch, id);
            let r = ConnRef::new(&self.shared, &mut st, id);
            st.mark(id);
            DirectConnection::new(r, id, self.shared.datagrams)
        };
        // Dropping `conn` (on error or timeout) closes the attempt.
        let timeout = self.connect_timeout;
        let established = tokio::time::timeout(timeout, async {
            loop {
                let notified = conn.r.notify.connected.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(result) = conn.r.peek(|c| {
                    if let Some(e) = c.error() {
                        Some(Err(e))
                    } else if c.connected {
                        Some(Ok(()))
                    } else {
                        None
                    }
                }) {
                    return result;
                }
                notified.await;
            }
        })
        .await;
        match established {
            Ok(Ok(())) => {
                self.shared.counters.connected.fetch_add(1, Relaxed);
                Ok(Arc::new(conn))
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ConnectionError::ConnectTimedOut {
                addr,
                after: timeout,
            }
            .into()),
        }
    }

    async fn accept(&self) -> Result<Handle, Error> {
        if !self.shared.server {
            return Err(Error::config(
                "role",
                "this endpoint was bound as a client; bind it with EndpointRole::Server to accept",
            ));
        }
        loop {
            let notified = self.shared.accept.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if st.closing {
                    return Err(Error::EndpointClosed);
                }
                if let Some(id) = st.accept_queue.pop_front() {
                    let c = st.conns.get_mut(&id).expect("queued connections are kept");
                    // The queue's reference becomes the handle's.
                    let r = ConnRef {
                        shared: self.shared.clone(),
                        id,
                        notify: c.notify.clone(),
                        outbox: c.outbox.clone(),
                    };
                    return Ok(Arc::new(DirectConnection::new(
                        r,
                        id,
                        self.shared.datagrams,
                    )));
                }
            }
            notified.await;
        }
    }

    fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.shared.io.bound_addr())
    }

    fn stats(&self) -> EndpointStats {
        let mut s = EndpointStats::default();
        let c = &self.shared.counters;
        s.accepted = c.accepted.load(Relaxed);
        s.handshake_failures = c.handshake_failures.load(Relaxed);
        s.connected = c.connected.load(Relaxed);
        s.open_connections = self.shared.lock().ep.open_connections() as u64;
        s
    }

    async fn close(&self, code: u64, reason: &[u8]) {
        let code = VarInt::from_u64(code).unwrap_or(VarInt::MAX);
        let idle = self.shared.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        {
            let mut st = self.shared.lock();
            st.closing = true;
            let ids: Vec<u64> = st.conns.keys().copied().collect();
            for id in ids {
                let c = st.conns.get_mut(&id).expect("listed");
                if c.error.is_none() {
                    c.close(code, reason);
                }
                st.mark(id);
            }
            self.shared.accept.notify_waiters();
            if st.conns.values().all(|c| c.drained) {
                return;
            }
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, idle).await;
    }
}

/// One connection of the direct engine.
pub struct DirectConnection {
    r: ConnRef,
    counters: Arc<ConnectionCounters>,
    datagrams: bool,
    id: u64,
}

impl fmt::Debug for DirectConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectConnection")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DirectConnection {
    fn new(r: ConnRef, id: u64, datagrams: bool) -> Self {
        DirectConnection {
            r,
            counters: Arc::default(),
            datagrams,
            id,
        }
    }

    fn streams(
        &self,
        id: StreamId,
        send: bool,
        recv: bool,
    ) -> (Option<SendStream>, Option<RecvStream>) {
        let s = send.then(|| {
            // Open for error records from now on; a STOP_SENDING quinn-proto already
            // took (before the application accepted the stream) is recorded here.
            self.r.peek(|c| {
                let mut o = c.outbox.lock();
                o.open.insert(id);
                if let Ok(Some(code)) = c.conn.send_stream(id).stopped() {
                    o.refuse(id, StreamError::Stopped(code.into_inner()));
                }
            });
            SendStream::new(
                Box::new(DirectSend {
                    r: self.r.clone_ref(),
                    id,
                }),
                self.counters.clone(),
            )
        });
        let r = recv.then(|| {
            RecvStream::new(
                Box::new(DirectRecv {
                    r: self.r.clone_ref(),
                    id,
                    eof: false,
                }),
                self.counters.clone(),
            )
        });
        (s, r)
    }

    async fn open(&self, dir: Dir) -> Result<StreamId, ConnectionError> {
        loop {
            let notified = self.r.notify.available[dir as usize].notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let opened = self.r.with(|c| {
                if let Some(e) = c.error() {
                    return Some(Err(e));
                }
                c.conn.streams().open(dir).map(Ok)
            });
            if let Some(r) = opened {
                return r;
            }
            notified.await;
        }
    }

    async fn accept(&self, dir: Dir) -> Result<StreamId, ConnectionError> {
        loop {
            let notified = self.r.notify.incoming[dir as usize].notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Accepting may raise the peer's stream limit: the driver sends MAX_STREAMS.
            let accepted = self.r.with(|c| {
                if let Some(id) = c.conn.streams().accept(dir) {
                    return Some(Ok(id));
                }
                c.error().map(Err)
            });
            if let Some(r) = accepted {
                return r;
            }
            notified.await;
        }
    }
}

#[async_trait]
impl Connection for DirectConnection {
    async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let id = self.open(Dir::Bi).await?;
        let (s, r) = self.streams(id, true, true);
        Ok((s.expect("asked"), r.expect("asked")))
    }

    async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        let id = self.open(Dir::Uni).await?;
        Ok(self.streams(id, true, false).0.expect("asked"))
    }

    async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let id = self.accept(Dir::Bi).await?;
        let (s, r) = self.streams(id, true, true);
        Ok((s.expect("asked"), r.expect("asked")))
    }

    async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        let id = self.accept(Dir::Uni).await?;
        Ok(self.streams(id, false, true).1.expect("asked"))
    }

    fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        if !self.datagrams {
            return Err(DatagramError::Disabled);
        }
        let size = data.len();
        self.r.with(|c| {
            if let Some(e) = c.error() {
                return Err(DatagramError::ConnectionLost(e));
            }
            let max = c.conn.datagrams().max_size();
            if let Some(max) = max {
                if size > max {
                    return Err(DatagramError::TooLarge { size, max });
                }
            }
            c.conn.datagrams().send(data, true).map_err(|e| {
                use proto::SendDatagramError as P;
                let q = match e {
                    P::UnsupportedByPeer => quinn::SendDatagramError::UnsupportedByPeer,
                    P::Disabled => quinn::SendDatagramError::Disabled,
                    P::TooLarge => quinn::SendDatagramError::TooLarge,
                    // With `drop = true` quinn-proto drops the oldest queued datagram
                    // instead of blocking.
                    P::Blocked(_) => quinn::SendDatagramError::TooLarge,
                };
                qerr::datagram_error(q, size, max, &c.local_close)
            })
        })?;
        self.counters.add_datagram_sent(size as u64);
        Ok(())
    }

    async fn recv_datagram(&self) -> Result<Bytes, DatagramError> {
        if !self.datagrams {
            return Err(DatagramError::Disabled);
        }
        loop {
            let notified = self.r.notify.datagram.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.r.peek(|c| {
                if let Some(d) = c.conn.datagrams().recv() {
                    return Some(Ok(d));
                }
                c.error().map(|e| Err(DatagramError::ConnectionLost(e)))
            });
            match got {
                Some(Ok(d)) => {
                    self.counters.add_datagram_received(d.len() as u64);
                    return Ok(d);
                }
                Some(Err(e)) => return Err(e),
                None => notified.await,
            }
        }
    }

    fn max_datagram_size(&self) -> Option<usize> {
        if !self.datagrams {
            return None;
        }
        self.r.peek(|c| c.conn.datagrams().max_size())
    }

    fn close(&self, code: u64, reason: &[u8]) {
        let code = VarInt::from_u64(code).unwrap_or(VarInt::MAX);
        self.r.with(|c| {
            if c.error.is_none() {
                c.close(code, reason);
            }
        });
    }

    async fn closed(&self) -> ConnectionError {
        loop {
            let notified = self.r.notify.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = self.r.peek(|c| c.error()) {
                return e;
            }
            notified.await;
        }
    }

    fn close_reason(&self) -> Option<ConnectionError> {
        self.r.peek(|c| c.error())
    }

    fn stats(&self) -> ConnectionStats {
        let (q, min_rtt) = self.r.peek(|c| (c.conn.stats(), c.conn.min_rtt()));
        let mut s = ConnectionStats::default();
        s.rtt = q.path.rtt;
        s.min_rtt = Some(min_rtt);
        s.congestion_window = q.path.cwnd;
        s.udp_datagrams_sent = q.udp_tx.datagrams;
        s.udp_datagrams_received = q.udp_rx.datagrams;
        s.udp_bytes_sent = q.udp_tx.bytes;
        s.udp_bytes_received = q.udp_rx.bytes;
        s.packets_lost = q.path.lost_packets;
        s.bytes_lost = q.path.lost_bytes;
        s.congestion_events = Some(q.path.congestion_events);
        s.path_mtu = q.path.current_mtu;
        self.counters.fill(&mut s);
        s
    }

    fn remote_addr(&self) -> SocketAddr {
        self.r.peek(|c| c.conn.remote_address())
    }

    fn side(&self) -> Side {
        session::side(self.r.peek(|c| c.conn.side()))
    }

    fn alpn(&self) -> Option<Vec<u8>> {
        session::alpn(self.r.peek(|c| c.conn.crypto_session().handshake_data()))
    }

    fn peer_identity(&self) -> Option<Vec<CertificateDer<'static>>> {
        session::peer_certificates(self.r.peek(|c| c.conn.crypto_session().peer_identity()))
    }

    fn export_keying_material(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), Error> {
        self.r
            .peek(|c| {
                c.conn
                    .crypto_session()
                    .export_keying_material(out, label, context)
            })
            .map_err(session::export_failed)
    }

    fn stable_id(&self) -> u64 {
        self.id
    }
}

fn stoq_id(id: StreamId) -> stoq_core::StreamId {
    stoq_core::StreamId(VarInt::from(id).into_inner())
}

/// The sending half of a stream of the direct engine.
struct DirectSend {
    r: ConnRef,
    id: StreamId,
}

impl fmt::Debug for DirectSend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectSend").field("id", &self.id).finish()
    }
}

impl Drop for DirectSend {
    /// Forgets this half's wakers (quinn-proto may never report on the stream again, and a
    /// long-lived connection would otherwise keep them, and their tasks, until it ends),
    /// and answers a peer's STOP_SENDING with a reset carrying its code, as quinn's glue
    /// does when a stopped stream is dropped.
    fn drop(&mut self) {
        let id = self.id;
        let mut st = self.r.shared.lock();
        let Some(c) = st.conns.get_mut(&self.r.id) else {
            return;
        };
        c.writers.remove(&id);
        c.stopped.remove(&id);
        {
            let mut o = c.outbox.lock();
            o.open.remove(&id);
            o.refused.remove(&id);
        }
        let mut stream = c.conn.send_stream(id);
        let reset = match stream.stopped() {
            Ok(Some(code)) => stream.reset(code).is_ok(),
            _ => false,
        };
        if reset {
            st.mark(self.r.id);
        }
    }
}

/// Moves what stream `id` queued in the outbox while the lock was busy into quinn-proto
/// (a write must not overtake it); false if some is still queued (quinn-proto is blocked).
fn write_queued(c: &mut Conn, id: StreamId, send: &mut bool) -> bool {
    if drain_outbox(&mut c.conn, &c.outbox, &c.local_close, Some(id)) {
        *send = true;
    }
    !c.outbox.holds(id)
}

fn write_error(e: proto::WriteError, c: &Conn) -> StreamError {
    write_error_with(e, &c.local_close)
}

fn write_error_with(e: proto::WriteError, local_close: &LocalClose) -> StreamError {
    let q = match e {
        proto::WriteError::Stopped(code) => quinn::WriteError::Stopped(code),
        proto::WriteError::ClosedStream => quinn::WriteError::ClosedStream,
        proto::WriteError::Blocked => unreachable!("blocked writes wait"),
    };
    qerr::write_error(q, local_close)
}

impl SendStreamBackend for DirectSend {
    fn id(&self) -> stoq_core::StreamId {
        stoq_id(self.id)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, StreamError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let id = self.id;
        let copy = |room: usize| Bytes::copy_from_slice(&buf[..buf.len().min(room)]);
        let write = |c: &mut Conn, send: &mut bool| {
            if let Some(e) = c.error() {
                return Poll::Ready(Err(StreamError::ConnectionLost(e)));
            }
            if write_queued(c, id, send) {
                match c.conn.send_stream(id).write(buf) {
                    Ok(n) => {
                        *send = true;
                        return Poll::Ready(Ok(n));
                    }
                    Err(proto::WriteError::Blocked) => {}
                    Err(e) => return Poll::Ready(Err(write_error(e, c))),
                }
            }
            // Behind queued data, or quinn-proto is full: queue it.
            match c.outbox.queue(cx, id, copy) {
                Queueing::Queued(n) => Poll::Ready(Ok(n)),
                Queueing::Refused(e) => Poll::Ready(Err(e)),
                Queueing::Wait => Poll::Pending,
                Queueing::Full => {
                    c.writers.insert(id, cx.waker().clone());
                    Poll::Pending
                }
            }
        };
        if let Some(r) = self.r.try_access(write) {
            return r;
        }
        match self.r.outbox.queue(cx, id, copy) {
            Queueing::Queued(n) => {
                self.r.queued();
                Poll::Ready(Ok(n))
            }
            Queueing::Refused(e) => Poll::Ready(Err(e)),
            Queueing::Wait => Poll::Pending,
            Queueing::Full => self.r.access(write),
        }
    }

    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<Result<(), StreamError>> {
        if chunk.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let id = self.id;
        // Queues what quinn-proto did not take; `None` if the outbox was full and the
        // stream has nothing queued (the caller writes under the lock).
        let queue = |outbox: &Outbox, chunk: &mut Bytes| loop {
            let take = |room: usize| {
                if chunk.len() <= room {
                    std::mem::take(chunk)
                } else {
                    chunk.split_to(room)
                }
            };
            match outbox.queue(cx, id, take) {
                Queueing::Queued(_) if chunk.is_empty() => return Some(Poll::Ready(Ok(()))),
                Queueing::Queued(_) => {}
                Queueing::Refused(e) => return Some(Poll::Ready(Err(e))),
                Queueing::Wait => return Some(Poll::Pending),
                Queueing::Full => return None,
            }
        };
        let write = |c: &mut Conn, send: &mut bool, chunk: &mut Bytes| {
            if let Some(e) = c.error() {
                return Poll::Ready(Err(StreamError::ConnectionLost(e)));
            }
            if write_queued(c, id, send) {
                while !chunk.is_empty() {
                    // quinn-proto takes the `Bytes` without copying (and advances it).
                    match c
                        .conn
                        .send_stream(id)
                        .write_chunks(std::slice::from_mut(chunk))
                    {
                        Ok(_) => *send = true,
                        Err(proto::WriteError::Blocked) => break,
                        Err(e) => return Poll::Ready(Err(write_error(e, c))),
                    }
                }
                if chunk.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
            queue(&c.outbox, chunk).unwrap_or_else(|| {
                c.writers.insert(id, cx.waker().clone());
                Poll::Pending
            })
        };
        if let Some(r) = self.r.try_access(|c, send| write(c, send, chunk)) {
            return r;
        }
        let before = chunk.len();
        let r = queue(&self.r.outbox, chunk);
        if chunk.len() < before {
            self.r.queued();
        }
        match r {
            Some(r) => r,
            None => self.r.access(|c, send| write(c, send, chunk)),
        }
    }

    fn poll_finish(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        let id = self.id;
        Poll::Ready(self.r.with(|c| {
            if let Some(e) = c.error() {
                return Err(StreamError::ConnectionLost(e));
            }
            drain_outbox(&mut c.conn, &c.outbox, &c.local_close, Some(id));
            let mut o = c.outbox.lock();
            if o.refused.get(&id) == Some(&StreamError::ClosedStream) {
                // Finished (or reset) before, as quinn-proto would say.
                return Err(StreamError::ClosedStream);
            }
            if let Some(q) = o.streams.get_mut(&id) {
                // Data queued while the lock was busy is still blocked in quinn-proto:
                // the driver finishes the stream once it is in.
                q.fin = true;
                o.refuse(id, StreamError::ClosedStream);
                return Ok(());
            }
            drop(o);
            match c.conn.send_stream(id).finish() {
                Ok(()) => {
                    // A queued write after this fails as quinn-proto's would.
                    c.outbox.lock().refuse(id, StreamError::ClosedStream);
                    Ok(())
                }
                // As quinn's glue: harmless (`stopped` tells the application); the
                // stream's drop answers the stop with a reset that echoes its code.
                Err(proto::FinishError::Stopped(_)) => Ok(()),
                Err(proto::FinishError::ClosedStream) => Err(StreamError::ClosedStream),
            }
        }))
    }

    fn reset(&mut self, code: u64) -> Result<(), StreamError> {
        let code = VarInt::from_u64(code).map_err(|_| StreamError::ClosedStream)?;
        let id = self.id;
        self.r.with(|c| {
            // Queued data goes with the reset, as unsent data in quinn-proto does, and
            // later writes fail as quinn-proto's do after a reset (`ClosedStream`, even
            // after the peer's STOP_SENDING).
            c.outbox.refuse(id, StreamError::ClosedStream, true);
            c.conn
                .send_stream(id)
                .reset(code)
                .map_err(|_| StreamError::ClosedStream)
        })
    }

    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<u64>, StreamError>> {
        let id = self.id;
        self.r.peek(|c| match c.conn.send_stream(id).stopped() {
            Ok(Some(code)) => Poll::Ready(Ok(Some(code.into_inner()))),
            // quinn-proto forgets a stream once the peer acknowledged all of it (or its
            // reset, which only this side's `reset` or the drop of this half sends): as
            // quinn's glue, `None`.
            Err(_) => Poll::Ready(Ok(None)),
            Ok(None) => {
                if let Some(e) = c.error() {
                    return Poll::Ready(Err(StreamError::ConnectionLost(e)));
                }
                c.stopped.insert(id, cx.waker().clone());
                Poll::Pending
            }
        })
    }

    fn set_priority(&mut self, priority: i32) -> Result<(), StreamError> {
        let id = self.id;
        self.r.with(|c| {
            c.conn
                .send_stream(id)
                .set_priority(priority)
                .map_err(|_| StreamError::ClosedStream)
        })
    }
}

/// The receiving half of a stream of the direct engine.
struct DirectRecv {
    r: ConnRef,
    id: StreamId,
    /// The end of the stream was read (quinn-proto forgets the stream then).
    eof: bool,
}

impl fmt::Debug for DirectRecv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectRecv").field("id", &self.id).finish()
    }
}

impl Drop for DirectRecv {
    /// Forgets this half's waker (see `DirectSend`'s `Drop`).
    fn drop(&mut self) {
        let id = self.id;
        self.r.peek(|c| {
            c.readers.remove(&id);
        });
    }
}

impl DirectRecv {
    /// Reads up to `max` bytes as chunks handed to `take`; `Ready(Ok(true))` at the end of
    /// the stream, `Ready(Ok(false))` after data.
    fn poll_chunks(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        one: bool,
        mut take: impl FnMut(Bytes),
    ) -> Poll<Result<bool, StreamError>> {
        if self.eof {
            return Poll::Ready(Ok(true));
        }
        let id = self.id;
        let mut st = self.r.shared.lock();
        let c = st
            .conns
            .get_mut(&self.r.id)
            .expect("a referenced connection is kept");
        let lost = c.error();
        let mut stream = c.conn.recv_stream(id);
        let mut chunks = match stream.read(true) {
            Ok(chunks) => chunks,
            Err(_) => {
                return Poll::Ready(Err(
                    lost.map_or(StreamError::ClosedStream, StreamError::ConnectionLost)
                ));
            }
        };
        let mut read = 0;
        let result = loop {
            if read >= max {
                break Poll::Ready(Ok(false));
            }
            match chunks.next(max - read) {
                Ok(Some(chunk)) => {
                    read += chunk.bytes.len();
                    take(chunk.bytes);
                    if one {
                        break Poll::Ready(Ok(false));
                    }
                }
                Ok(None) => {
                    self.eof = true;
                    break Poll::Ready(Ok(read == 0));
                }
                Err(proto::ReadError::Blocked) => {
                    if read > 0 {
                        break Poll::Ready(Ok(false));
                    }
                    break Poll::Pending;
                }
                Err(proto::ReadError::Reset(code)) => {
                    break Poll::Ready(Err(StreamError::Reset(code.into_inner())));
                }
            }
        };
        let transmit = chunks.finalize().should_transmit();
        if result.is_pending() {
            if let Some(e) = lost {
                return Poll::Ready(Err(StreamError::ConnectionLost(e)));
            }
            c.readers.insert(id, cx.waker().clone());
        }
        if transmit {
            st.mark(self.r.id);
        }
        result
    }
}

impl RecvStreamBackend for DirectRecv {
    fn id(&self) -> stoq_core::StreamId {
        stoq_id(self.id)
    }

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), StreamError>> {
        let max = buf.remaining();
        if max == 0 {
            return Poll::Ready(Ok(()));
        }
        self.poll_chunks(cx, max, false, |b| buf.put_slice(&b))
            .map_ok(|_| ())
    }

    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, StreamError>> {
        let mut got = None;
        let r = std::task::ready!(self.poll_chunks(cx, max.max(1), true, |b| got = Some(b)));
        Poll::Ready(r.map(|end| if end { None } else { got }))
    }

    fn stop(&mut self, code: u64) -> Result<(), StreamError> {
        let code = VarInt::from_u64(code).map_err(|_| StreamError::ClosedStream)?;
        let id = self.id;
        self.r.with(|c| {
            c.readers.remove(&id);
            c.conn
                .recv_stream(id)
                .stop(code)
                .map_err(|_| StreamError::ClosedStream)
        })
    }
}

#[cfg(test)]
// The tests hold the state lock across writes on purpose (it stands in for the driver's
// turn). Each such write is queued and returns at once; one that took the lock instead
// would block the test forever, so the data written under it stays below the outbox's
// limit.
#[allow(clippy::await_holding_lock)]
mod tests {
    //! The outbox paths, forced by holding the client endpoint's state lock while the
    //! application writes (as the driver does for a whole turn).

    use super::*;
    use stoq_core::TransportConfig;

    /// A server with `server_config`, a client, and a connection from one to the other.
    async fn connected(
        server_config: TransportConfig,
    ) -> (DirectTransport, DirectTransport, Arc<dyn Connection>) {
        let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
        let options = UringOptions::default();
        let server = bind(
            EndpointSpec::server("[::1]:0".parse().unwrap(), server_config, tls.clone()),
            &options,
        )
        .unwrap();
        let client = bind(
            EndpointSpec::client(
                server.local_addr().unwrap(),
                TransportConfig::default(),
                tls,
            ),
            &options,
        )
        .unwrap();
        let conn = client
            .connect(server.local_addr().unwrap(), "localhost")
            .await
            .unwrap();
        (server, client, conn)
    }

    /// The outbox of the client's only connection.
    fn outbox(client: &DirectTransport) -> Arc<Outbox> {
        let st = client.shared.lock();
        assert_eq!(st.conns.len(), 1);
        st.conns.values().next().unwrap().outbox.clone()
    }

    fn pattern(offset: usize, len: usize) -> Vec<u8> {
        (offset..offset + len).map(|i| (i % 251) as u8).collect()
    }

    async fn read_all(recv: &mut RecvStream) -> Result<Vec<u8>, StreamError> {
        let got = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(64 << 20))
            .await
            .expect("the stream ends");
        got.map(|v| v.expect("within the limit"))
    }

    /// Writes made while the lock is busy are queued (not blocked) and reach the peer in
    /// order with the writes before and after them, both the copying and the chunk path.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_while_the_lock_is_busy_are_queued_and_arrive_in_order() {
        let (server, client, conn) = connected(TransportConfig::default()).await;
        let outbox = outbox(&client);
        let mut send = conn.open_uni().await.unwrap();
        let data = pattern(0, 700_000);
        send.write_all(&data[..100_000]).await.unwrap();
        {
            let _busy = client.shared.lock();
            send.write_all(&data[100_000..300_000]).await.unwrap();
            send.write_chunk(Bytes::copy_from_slice(&data[300_000..500_000]))
                .await
                .unwrap();
            assert_eq!(outbox.bytes.load(Relaxed), 400_000, "queued, not written");
        }
        send.write_all(&data[500_000..]).await.unwrap();
        send.finish().await.unwrap();
        let peer = server.accept().await.unwrap();
        let mut recv = peer.accept_uni().await.unwrap();
        assert!(
            read_all(&mut recv).await.unwrap() == data,
            "byte-exact, in order"
        );
        assert_eq!(outbox.bytes.load(Relaxed), 0);
    }

    /// A stream blocked by the peer's flow control keeps its queued data and its finish
    /// until the window opens: everything arrives, then a clean end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_finish_behind_queued_blocked_data_delivers_it_all() {
        let small = TransportConfig {
            stream_receive_window: 32 * 1024,
            ..TransportConfig::default()
        };
        let (server, client, conn) = connected(small).await;
        let outbox = outbox(&client);
        let mut send = conn.open_uni().await.unwrap();
        let data = pattern(7, 600_000);
        {
            let _busy = client.shared.lock();
            send.write_all(&data).await.unwrap();
        }
        // Most of it cannot enter quinn-proto before the reader opens the window.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(outbox.bytes.load(Relaxed) > 0, "blocked data stays queued");
        send.finish().await.unwrap();
        let peer = server.accept().await.unwrap();
        let mut recv = peer.accept_uni().await.unwrap();
        assert!(read_all(&mut recv).await.unwrap() == data);
        assert_eq!(send.stopped().await, Ok(None), "all acknowledged");
    }

    /// A queued write fails as a direct one would: after the peer's STOP_SENDING, after
    /// this side's reset (whose queued data is discarded: the peer sees the reset), and
    /// once the connection has ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_fail_after_a_stop_a_reset_or_the_connection_s_end() {
        let (server, client, conn) = connected(TransportConfig::default()).await;
        let peer = server.accept().await.unwrap();

        let mut stopped = conn.open_uni().await.unwrap();
        stopped.write_all(b"x").await.unwrap();
        let mut recv = peer.accept_uni().await.unwrap();
        recv.stop(7).unwrap();
        assert_eq!(stopped.stopped().await, Ok(Some(7)));
        {
            let _busy = client.shared.lock();
            assert_eq!(
                stopped.write_all(b"late").await,
                Err(StreamError::Stopped(7))
            );
        }

        let mut reset = conn.open_uni().await.unwrap();
        reset.write_all(b"first").await.unwrap();
        {
            let _busy = client.shared.lock();
            reset.write_all(&[1; 1000]).await.unwrap();
        }
        reset.reset(9).unwrap();
        assert_eq!(outbox(&client).bytes.load(Relaxed), 0, "discarded");
        let mut recv = peer.accept_uni().await.unwrap();
        assert_eq!(read_all(&mut recv).await, Err(StreamError::Reset(9)));
        {
            let _busy = client.shared.lock();
            assert_eq!(reset.write_all(b"x").await, Err(StreamError::ClosedStream));
        }

        let mut open = conn.open_uni().await.unwrap();
        peer.close(42, b"bye");
        let end = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("the close arrives");
        {
            let _busy = client.shared.lock();
            assert_eq!(
                open.write_all(b"x").await,
                Err(StreamError::ConnectionLost(end))
            );
        }
    }

    /// An empty chunk written while the lock is busy queues nothing, so a finish after it
    /// still reaches the peer (an empty queue entry once hid the FIN from the driver).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_chunk_while_the_lock_is_busy_does_not_hold_back_the_finish() {
        let (server, client, conn) = connected(TransportConfig::default()).await;
        let mut send = conn.open_uni().await.unwrap();
        send.write_all(b"abc").await.unwrap();
        {
            let _busy = client.shared.lock();
            send.write_chunk(Bytes::new()).await.unwrap();
        }
        send.finish().await.unwrap();
        let peer = server.accept().await.unwrap();
        let mut recv = peer.accept_uni().await.unwrap();
        assert_eq!(read_all(&mut recv).await.unwrap(), b"abc");
    }

    /// Errors are kept only for send halves the application holds: a STOP_SENDING for a
    /// stream whose half was dropped leaves nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_after_the_send_half_is_dropped_leaves_no_record() {
        let (server, client, conn) = connected(TransportConfig::default()).await;
        let outbox = outbox(&client);
        let mut send = conn.open_uni().await.unwrap();
        send.write_all(&[7; 200_000]).await.unwrap();
        send.finish().await.unwrap();
        drop(send);
        let peer = server.accept().await.unwrap();
        let mut recv = peer.accept_uni().await.unwrap();
        recv.stop(5).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let o = outbox.lock();
        assert!(o.open.is_empty() && o.refused.is_empty());
    }

    /// A STOP_SENDING that arrived before the application accepted the stream makes a
    /// queued write fail too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_before_accept_fails_a_queued_write() {
        let (server, _client, conn) = connected(TransportConfig::default()).await;
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"request").await.unwrap();
        recv.stop(9).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let peer = server.accept().await.unwrap();
        let (mut reply, _request) = peer.accept_bi().await.unwrap();
        let _busy = server.shared.lock();
        assert_eq!(reply.write_all(b"late").await, Err(StreamError::Stopped(9)));
    }
}
