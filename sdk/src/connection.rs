//! [`PhoenixConnection`]: one QUIC connection with Phoenix's messages, streams,
//! multiplexed transfers and requests on top.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use stoq_core::{
    ConnectionError, ConnectionHandle, RecvStream, SendStream, Side, StreamError, Transport,
};
use tokio::sync::{mpsc, Mutex as AsyncMutex, Notify};
use tokio::task::AbortHandle;

use crate::framing::{codes, encode_message_header, LaneControl, Reassembler, StreamKind};
use crate::mux::{self, MuxOptions};
use crate::stats::{ConnectionReport, Count, Meter, SdkCounters, TransportTotals};
use crate::tier::{NetworkTier, ProbeReport};
use crate::PhoenixError;

/// Messages waiting to be read, per connection (or per listener); each holds at most
/// `max_message_size` bytes, so this bounds the memory a slow reader lets peers fill.
const MESSAGE_QUEUE: usize = 32;
/// Application streams and requests waiting to be accepted, per connection.
const STREAM_QUEUE: usize = 256;
/// Largest ping payload echoed.
const PING_MAX: usize = 64;

/// State shared by every connection of one [`Phoenix`](crate::Phoenix).
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) reassembler: Mutex<Reassembler>,
    pub(crate) totals: Arc<SdkCounters>,
    pub(crate) max_message_size: u64,
    pub(crate) registry: Mutex<Vec<Weak<ConnShared>>>,
    pub(crate) retired: Mutex<TransportTotals>,
    next_id: AtomicU64,
    next_lane: AtomicU64,
    /// Incoming unidirectional streams being read right now.
    incoming: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts one incoming stream being read, until dropped.
pub(crate) struct IncomingGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for IncomingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Ctx {
    pub(crate) fn new(max_message_size: u64) -> Ctx {
        Ctx {
            reassembler: Mutex::new(Reassembler::new(max_message_size)),
            totals: Arc::default(),
            max_message_size,
            registry: Mutex::default(),
            retired: Mutex::default(),
            next_id: AtomicU64::new(1),
            next_lane: AtomicU64::new(1),
            incoming: Arc::default(),
        }
    }

    /// Marks an incoming stream as being read until the guard drops.
    pub(crate) fn reading(&self) -> IncomingGuard {
        self.incoming
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        IncomingGuard(self.incoming.clone())
    }

    /// Incoming streams being read right now.
    pub(crate) fn reading_now(&self) -> usize {
        self.incoming.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The live connections.
    pub(crate) fn live(&self) -> Vec<PhoenixConnection> {
        let mut reg = self.registry.lock().expect("registry lock");
        reg.retain(|w| w.strong_count() > 0);
        reg.iter()
            .filter_map(|w| w.upgrade())
            .map(|shared| PhoenixConnection { shared })
            .collect()
    }
}

/// What lets a dialled connection find more connections to the same peer (for
/// multiplexing over several connections).
pub(crate) type PoolLink = Box<dyn Fn(usize) -> mux::MoreConnections + Send + Sync>;

pub(crate) struct ConnShared {
    id: u64,
    conn: ConnectionHandle,
    /// Keeps the endpoint alive as long as the connection is used.
    _endpoint: Option<Arc<dyn Transport>>,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) meter: Meter,
    pub(crate) messages: AsyncMutex<mpsc::Receiver<Result<Message, PhoenixError>>>,
    streams: AsyncMutex<mpsc::Receiver<(SendStream, RecvStream)>>,
    requests: AsyncMutex<mpsc::Receiver<(SendStream, RecvStream)>>,
    tasks: Mutex<Vec<AbortHandle>>,
    pub(crate) pool_link: Mutex<Option<PoolLink>>,
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().expect("tasks lock").drain(..) {
            t.abort();
        }
        if self.conn.close_reason().is_none() {
            self.conn.close(0, b"");
        }
        let mut retired = self.ctx.retired.lock().expect("retired lock");
        retired.add_counters(&self.conn.stats());
        retired.retired_connections += 1;
    }
}

/// One QUIC connection with Phoenix's framing on top: whole messages
/// ([`send_data`](Self::send_data) / [`recv_message`](Self::recv_message)), application
/// streams ([`open_stream`](Self::open_stream) / [`accept_stream`](Self::accept_stream)),
/// multiplexed transfers ([`send_multiplexed`](Self::send_multiplexed)) and requests
/// ([`service`](Self::service), [`serve_requests`](Self::serve_requests)).
///
/// Cheap to clone; every clone is the same connection. When the last clone (including
/// those held by a [`Pool`](crate::Pool), a [`Listener`](crate::Listener) or a
/// [`Message`]) is dropped, the connection is closed with code 0 — keep a clone while
/// using its streams.
///
/// Incoming streams are read by background tasks as soon as they arrive: messages and
/// transfers are queued for [`recv_message`](Self::recv_message) (for a connection
/// accepted by a [`Listener`](crate::Listener), also visible through
/// [`Listener::next_message`](crate::Listener::next_message)), application streams for
/// [`accept_stream`](Self::accept_stream), requests for
/// [`serve_requests`](Self::serve_requests); pings are answered.
#[derive(Clone)]
pub struct PhoenixConnection {
    pub(crate) shared: Arc<ConnShared>,
}

impl fmt::Debug for PhoenixConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoenixConnection")
            .field("id", &self.shared.id)
            .field("remote", &self.shared.conn.remote_addr())
            .field("side", &self.shared.conn.side())
            .finish()
    }
}

impl PartialEq for PhoenixConnection {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for PhoenixConnection {}

/// A whole message received from a peer.
///
/// Phoenix delivers a message only when every byte the sender declared arrived and the
/// stream ended cleanly (or, for a multiplexed transfer, every chunk arrived and the
/// SHA-256 matched) — never a truncated one.
#[derive(Clone)]
pub struct Message {
    /// The peer's address.
    pub from: SocketAddr,
    /// The payload.
    pub bytes: Bytes,
    // Weak: a message waiting in its connection's queue must not keep the connection alive.
    connection: Option<Weak<ConnShared>>,
}

impl Message {
    /// A message from `from` (not tied to a connection).
    pub fn new(from: SocketAddr, bytes: Bytes) -> Message {
        Message {
            from,
            bytes,
            connection: None,
        }
    }

    /// The connection it arrived on, to reply on (`None` for messages built with
    /// [`Message::new`], or once every handle to the connection was dropped — a
    /// [`Listener`](crate::Listener) keeps its connections while they are open).
    pub fn connection(&self) -> Option<PhoenixConnection> {
        let shared = self.connection.as_ref()?.upgrade()?;
        Some(PhoenixConnection { shared })
    }

    /// The payload's length.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("from", &self.from)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Everything a background task of one connection needs.
#[derive(Clone)]
struct Dispatch {
    ctx: Arc<Ctx>,
    meter: Meter,
    messages: mpsc::Sender<Result<Message, PhoenixError>>,
    streams: mpsc::Sender<(SendStream, RecvStream)>,
    requests: mpsc::Sender<(SendStream, RecvStream)>,
    notify: Option<Arc<Notify>>,
    me: Weak<ConnShared>,
}

impl Drop for Dispatch {
    fn drop(&mut self) {
        // A listener waiting for messages learns that this connection's queue may have
        // been disconnected.
        if let Some(n) = &self.notify {
            n.notify_waiters();
        }
    }
}

impl Dispatch {
    async fn deliver(&self, item: Result<Message, PhoenixError>, transfer: bool) {
        let item = match item {
            Ok(mut m) => {
                let n = m.bytes.len() as u64;
                self.meter.count(if transfer {
                    Count::TransferReceived(n)
                } else {
                    Count::MessageReceived(n)
                });
                m.connection = Some(self.me.clone());
                Ok(m)
            }
            Err(e) => {
                self.meter.count(Count::ReceiveError);
                Err(e)
            }
        };
        if self.messages.send(item).await.is_ok() {
            if let Some(n) = &self.notify {
                n.notify_waiters();
            }
        }
    }
}

impl PhoenixConnection {
    /// Wraps an established connection and starts reading its incoming streams.
    /// `notify` is woken whenever a message is queued (a listener's).
    pub(crate) fn wrap(
        conn: ConnectionHandle,
        endpoint: Option<Arc<dyn Transport>>,
        ctx: Arc<Ctx>,
        notify: Option<Arc<Notify>>,
    ) -> PhoenixConnection {
        let (msg_tx, msg_rx) = mpsc::channel(MESSAGE_QUEUE);
        let (stream_tx, stream_rx) = mpsc::channel(STREAM_QUEUE);
        let (req_tx, req_rx) = mpsc::channel(STREAM_QUEUE);
        let meter = Meter {
            conn: Arc::default(),
            total: ctx.totals.clone(),
        };
        let shared = Arc::new(ConnShared {
            id: ctx.next_id.fetch_add(1, Relaxed),
            conn: conn.clone(),
            _endpoint: endpoint,
            ctx: ctx.clone(),
            meter: meter.clone(),
            messages: AsyncMutex::new(msg_rx),
            streams: AsyncMutex::new(stream_rx),
            requests: AsyncMutex::new(req_rx),
            tasks: Mutex::default(),
            pool_link: Mutex::default(),
        });
        let d = Dispatch {
            ctx: ctx.clone(),
            meter,
            messages: msg_tx,
            streams: stream_tx,
            requests: req_tx,
            notify,
            me: Arc::downgrade(&shared),
        };
        let uni = {
            let (conn, d) = (conn.clone(), d.clone());
            tokio::spawn(async move {
                while let Ok(recv) = conn.accept_uni().await {
                    let from = conn.remote_addr();
                    tokio::spawn(handle_uni(d.clone(), from, recv));
                }
            })
        };
        let bi = tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(handle_bi(d.clone(), send, recv));
            }
        });
        *shared.tasks.lock().expect("tasks lock") = vec![uni.abort_handle(), bi.abort_handle()];
        {
            let mut reg = ctx.registry.lock().expect("registry lock");
            reg.retain(|w| w.strong_count() > 0);
            reg.push(Arc::downgrade(&shared));
        }
        PhoenixConnection { shared }
    }

    /// Phoenix's id for this connection, unique within its [`Phoenix`](crate::Phoenix).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The engine's stable id for the connection.
    pub fn stable_id(&self) -> u64 {
        self.shared.conn.stable_id()
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.shared.conn.remote_addr()
    }

    /// Whether this side dialled or accepted.
    pub fn side(&self) -> Side {
        self.shared.conn.side()
    }

    /// The STOQ connection underneath, for everything Phoenix does not wrap (datagrams,
    /// raw streams, keying material export, peer identity).
    pub fn connection(&self) -> &ConnectionHandle {
        &self.shared.conn
    }

    /// Why the connection ended, or `None` while it is open.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.shared.conn.close_reason()
    }

    /// Whether the connection is open.
    pub fn is_open(&self) -> bool {
        self.close_reason().is_none()
    }

    /// Closes the connection with an application `code` and `reason`.
    pub fn close(&self, code: u64, reason: &[u8]) {
        self.shared.conn.close(code, reason);
    }

    /// Waits until the connection has ended and says why.
    pub async fn closed(&self) -> ConnectionError {
        self.shared.conn.closed().await
    }

    /// The largest message this side accepts (and sends).
    pub fn max_message_size(&self) -> u64 {
        self.shared.ctx.max_message_size
    }

    /// Statistics: Phoenix's counters and the engine's.
    pub fn stats(&self) -> ConnectionReport {
        ConnectionReport::new(
            self.shared.id,
            &self.shared.conn,
            self.shared.meter.conn.snapshot(),
        )
    }

    pub(crate) fn idle_since(&self) -> (Option<Instant>, bool) {
        self.shared.meter.conn.idle_since()
    }

    /// Sends `data` as one message and waits until the peer acknowledged all of it.
    ///
    /// Reliable: `Ok` only once the peer's QUIC stack acknowledged every byte and the end
    /// of the stream. A reset or stop by the peer, or the loss of the connection, is an
    /// error; a peer whose limit is smaller refuses with [`PhoenixError::MessageTooLarge`]
    /// (`max: None`) — reliably so for messages larger than its stream receive window,
    /// smaller ones may be acknowledged before the peer reads the header (the peer then
    /// reports the refusal on its side). A message above this side's own
    /// `max_message_size` is refused before anything is sent.
    ///
    /// Each message travels on its own stream, so messages sent one after another may be
    /// received in a different order; use one stream ([`open_stream`](Self::open_stream))
    /// when order matters.
    pub async fn send_data(&self, data: &[u8]) -> Result<(), PhoenixError> {
        self.send_bytes(Bytes::copy_from_slice(data)).await
    }

    /// [`send_data`](Self::send_data) without copying `data`.
    pub async fn send_bytes(&self, data: Bytes) -> Result<(), PhoenixError> {
        let size = data.len() as u64;
        let max = self.max_message_size();
        if size > max {
            return Err(PhoenixError::MessageTooLarge {
                size,
                max: Some(max),
            });
        }
        let _active = self.shared.meter.activity();
        self.send_framed(StreamKind::Message, data).await?;
        self.shared.meter.count(Count::MessageSent(size));
        Ok(())
    }

    /// Sends a message-framed stream of `kind` and waits for the acknowledgement.
    async fn send_framed(&self, kind: StreamKind, data: Bytes) -> Result<(), PhoenixError> {
        let size = data.len() as u64;
        let err = |e| PhoenixError::from_send(e, size);
        let mut send = self.shared.conn.open_uni().await?;
        send.write_all(&encode_message_header(kind, size))
            .await
            .map_err(err)?;
        send.write_chunk(data).await.map_err(err)?;
        send.finish().await.map_err(err)?;
        match send.stopped().await {
            Ok(None) => Ok(()),
            Ok(Some(code)) => Err(PhoenixError::from_peer_code(code, size)),
            Err(e) => Err(err(e)),
        }
    }

    /// The next message (or multiplexed transfer) from the peer.
    ///
    /// A message that failed on the way in (reset, truncated, too large, corrupted) is
    /// returned as [`PhoenixError::Incoming`]; receiving can go on after it. Once the
    /// connection ended and every queued message was read, the error that ended it is
    /// returned ([`PhoenixError::Connection`]).
    ///
    /// For a connection accepted by a [`Listener`](crate::Listener), the listener's
    /// [`next_message`](crate::Listener::next_message) reads the same queue: each message
    /// goes to whichever asks first. A multiplexed transfer spread over several
    /// connections is delivered on the connection whose lane completed it.
    pub async fn recv_message(&self) -> Result<Message, PhoenixError> {
        let item = self.shared.messages.lock().await.recv().await;
        item.unwrap_or_else(|| Err(self.ended()))
    }

    fn ended(&self) -> PhoenixError {
        match self.close_reason() {
            Some(reason) => PhoenixError::Connection(reason),
            None => PhoenixError::Closed,
        }
    }

    /// Opens a bidirectional application stream. The peer gets it from
    /// [`accept_stream`](Self::accept_stream) right away (Phoenix sends the stream's kind
    /// byte at once). The streams are STOQ's: `AsyncWrite`/`AsyncRead`, `finish` to end
    /// cleanly, dropping the send half without `finish` resets it.
    pub async fn open_stream(&self) -> Result<(SendStream, RecvStream), PhoenixError> {
        let (mut send, recv) = self.shared.conn.open_bi().await?;
        send.write_all(&[StreamKind::Stream.byte()]).await?;
        Ok((send, recv))
    }

    /// Waits for the peer to open an application stream with
    /// [`open_stream`](Self::open_stream).
    pub async fn accept_stream(&self) -> Result<(SendStream, RecvStream), PhoenixError> {
        let item = self.shared.streams.lock().await.recv().await;
        item.ok_or_else(|| self.ended())
    }

    /// Splits `data` into chunks sent over several streams (and, with
    /// `options.connections > 1`, several connections to the same peer from this
    /// connection's [`Phoenix`](crate::Phoenix) pool); the peer reassembles them in order,
    /// checks the SHA-256 of the whole and delivers one [`Message`]. `Ok` once the peer
    /// acknowledged every lane.
    ///
    /// Fails with [`PhoenixError::InvalidOptions`] for zero streams, connections or chunk
    /// size, or for more than one connection on a connection that was not dialled
    /// through a Phoenix pool.
    pub async fn send_multiplexed(
        &self,
        data: &[u8],
        options: MuxOptions,
    ) -> Result<(), PhoenixError> {
        self.send_multiplexed_bytes(Bytes::copy_from_slice(data), options)
            .await
    }

    /// [`send_multiplexed`](Self::send_multiplexed) without copying `data`.
    pub async fn send_multiplexed_bytes(
        &self,
        data: Bytes,
        options: MuxOptions,
    ) -> Result<(), PhoenixError> {
        options.validate()?;
        let mut conns = vec![self.clone()];
        if options.connections > 1 {
            let more = {
                let link = self.shared.pool_link.lock().expect("pool link lock");
                match link.as_ref() {
                    Some(f) => f(options.connections),
                    None => {
                        return Err(PhoenixError::InvalidOptions(
                            "multiplexing over several connections needs a connection \
                             dialled through Phoenix::connect (its pool finds the others)"
                                .into(),
                        ))
                    }
                }
            };
            for c in more.await? {
                if conns.len() < options.connections && !conns.contains(&c) {
                    conns.push(c);
                }
            }
        }
        mux::send(&conns, data, options).await
    }

    /// Sends one request on a new bidirectional stream and reads the whole response
    /// (at most `max_response` bytes). Used by [`PhoenixService`](crate::PhoenixService).
    pub async fn request(&self, request: Bytes, max_response: u64) -> Result<Bytes, PhoenixError> {
        let _active = self.shared.meter.activity();
        let sent = request.len() as u64;
        let err = |e| PhoenixError::from_send(e, sent);
        let (mut send, mut recv) = self.shared.conn.open_bi().await?;
        send.write_all(&[StreamKind::Request.byte()])
            .await
            .map_err(err)?;
        send.write_chunk(request).await.map_err(err)?;
        send.finish().await.map_err(err)?;
        let response = match read_limited(&mut recv, max_response).await {
            Err(PhoenixError::Stream(StreamError::Reset(code))) => {
                return Err(PhoenixError::from_peer_code(code, sent))
            }
            other => other?,
        };
        self.shared.meter.count(Count::Request {
            sent,
            received: response.len() as u64,
        });
        Ok(response)
    }

    /// A [`tower::Service`] doing requests on this connection.
    pub fn service(&self) -> crate::PhoenixService {
        crate::PhoenixService::new(self.clone())
    }

    /// Answers the peer's requests (from its [`PhoenixService`](crate::PhoenixService))
    /// with `handler`, each request concurrently, until the connection ends. Requests
    /// larger than `max_message_size` are refused with [`codes::MESSAGE_TOO_LARGE`].
    pub async fn serve_requests<F, Fut>(&self, handler: F) -> Result<(), PhoenixError>
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Bytes> + Send + 'static,
    {
        self.serve_requests_shared(Arc::new(handler)).await
    }

    pub(crate) async fn serve_requests_shared<F, Fut>(
        &self,
        handler: Arc<F>,
    ) -> Result<(), PhoenixError>
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Bytes> + Send + 'static,
    {
        loop {
            let next = self.shared.requests.lock().await.recv().await;
            let Some((send, recv)) = next else {
                return Ok(());
            };
            let handler = handler.clone();
            let meter = self.shared.meter.clone();
            let max = self.max_message_size();
            tokio::spawn(async move {
                let _ = serve_one(meter, max, send, recv, handler).await;
            });
        }
    }

    /// Measures one round trip on a new stream (the peer's Phoenix echoes it).
    pub async fn ping(&self) -> Result<Duration, PhoenixError> {
        let start = Instant::now();
        let nonce: [u8; 8] = rand::random();
        let (mut send, mut recv) = self.shared.conn.open_bi().await?;
        let mut out = vec![StreamKind::Ping.byte()];
        out.extend_from_slice(&nonce);
        send.write_all(&out).await?;
        send.finish().await?;
        let echo = read_limited(&mut recv, PING_MAX as u64).await?;
        if echo[..] != nonce {
            return Err(PhoenixError::Malformed("ping echo differs".into()));
        }
        Ok(start.elapsed())
    }

    /// Measures the path: three pings, then a probe stream of `probe_bytes` (discarded
    /// by the peer) timed from opening to the peer's acknowledgement of its last byte.
    pub async fn measure(&self, probe_bytes: u64) -> Result<ProbeReport, PhoenixError> {
        let mut ping = Duration::MAX;
        for _ in 0..3 {
            ping = ping.min(self.ping().await?);
        }
        let payload = Bytes::from(vec![0u8; probe_bytes as usize]);
        let start = Instant::now();
        {
            let _active = self.shared.meter.activity();
            self.send_framed(StreamKind::Probe, payload).await?;
        }
        let elapsed = start.elapsed();
        self.shared.meter.count(Count::ProbeSent(probe_bytes));
        let stats = self.shared.conn.stats();
        let rtt = if stats.rtt.is_zero() { ping } else { stats.rtt };
        let goodput_bps = probe_bytes as f64 * 8.0 / elapsed.as_secs_f64().max(1e-9);
        Ok(ProbeReport {
            probe_bytes,
            elapsed_ms: crate::stats::ms(elapsed),
            goodput_bps,
            rtt_ms: crate::stats::ms(rtt),
            ping_ms: crate::stats::ms(ping),
            tier: NetworkTier::classify(goodput_bps, rtt),
        })
    }
}

/// Reads a stream to its clean end, refusing more than `max` bytes (the stream is then
/// stopped with [`codes::MESSAGE_TOO_LARGE`]).
pub(crate) async fn read_limited(recv: &mut RecvStream, max: u64) -> Result<Bytes, PhoenixError> {
    let mut chunks = Vec::new();
    let mut got = 0u64;
    while let Some(c) = recv.read_chunk(usize::MAX).await? {
        got += c.len() as u64;
        if got > max {
            let _ = recv.stop(codes::MESSAGE_TOO_LARGE);
            return Err(PhoenixError::MessageTooLarge {
                size: got,
                max: Some(max),
            });
        }
        chunks.push(c);
    }
    Ok(concat(chunks, got))
}

fn concat(mut chunks: Vec<Bytes>, len: u64) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().expect("one chunk");
    }
    let mut out = BytesMut::with_capacity(len as usize);
    for c in chunks {
        out.extend_from_slice(&c);
    }
    out.freeze()
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<usize, StreamError> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = recv.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

async fn handle_uni(d: Dispatch, from: SocketAddr, mut recv: RecvStream) {
    let _active = d.meter.activity();
    let _reading = d.ctx.reading();
    let mut kind = [0u8; 1];
    // A stream that ends or is reset before its kind byte promised nothing: ignore it.
    if !matches!(read_exact(&mut recv, &mut kind).await, Ok(1)) {
        return;
    }
    match StreamKind::from_byte(kind[0]) {
        Some(StreamKind::Message) => {
            let result = read_message(&d, &mut recv).await;
            d.deliver(
                result
                    .map_err(|e| PhoenixError::incoming(from, e))
                    .map(|b| Message::new(from, b)),
                false,
            )
            .await;
        }
        Some(StreamKind::Probe) => {
            if let Ok(b) = read_message_discarding(&d, &mut recv).await {
                d.meter.count(Count::ProbeReceived(b));
            }
        }
        Some(StreamKind::MuxLane) => read_lane(&d, from, recv).await,
        _ => {
            let _ = recv.stop(codes::UNKNOWN_KIND);
            d.deliver(
                Err(PhoenixError::incoming(
                    from,
                    PhoenixError::UnknownKind(kind[0]),
                )),
                false,
            )
            .await;
        }
    }
}

/// Reads a message's length and payload (after the kind byte).
async fn read_message(d: &Dispatch, recv: &mut RecvStream) -> Result<Bytes, PhoenixError> {
    let len = read_length(d, recv).await?;
    let mut chunks = Vec::new();
    let got = read_payload(recv, len, |c| chunks.push(c)).await?;
    Ok(concat(chunks, got))
}

async fn read_message_discarding(d: &Dispatch, recv: &mut RecvStream) -> Result<u64, PhoenixError> {
    let len = read_length(d, recv).await?;
    read_payload(recv, len, drop).await
}

async fn read_length(d: &Dispatch, recv: &mut RecvStream) -> Result<u64, PhoenixError> {
    let mut len = [0u8; 8];
    let n = read_exact(recv, &mut len).await?;
    if n < 8 {
        return Err(PhoenixError::Truncated {
            expected: 8,
            received: n as u64,
        });
    }
    let len = u64::from_be_bytes(len);
    let max = d.ctx.max_message_size;
    if len > max {
        let _ = recv.stop(codes::MESSAGE_TOO_LARGE);
        return Err(PhoenixError::MessageTooLarge {
            size: len,
            max: Some(max),
        });
    }
    Ok(len)
}

/// Reads exactly `len` payload bytes followed by a clean end.
async fn read_payload(
    recv: &mut RecvStream,
    len: u64,
    mut sink: impl FnMut(Bytes),
) -> Result<u64, PhoenixError> {
    let mut got = 0u64;
    while let Some(c) = recv.read_chunk(usize::MAX).await? {
        got += c.len() as u64;
        if got > len {
            let _ = recv.stop(codes::MALFORMED);
            return Err(PhoenixError::Malformed(format!(
                "more than the declared {len} bytes on a message stream"
            )));
        }
        sink(c);
    }
    if got < len {
        return Err(PhoenixError::Truncated {
            expected: len,
            received: got,
        });
    }
    Ok(got)
}

async fn read_lane(d: &Dispatch, from: SocketAddr, mut recv: RecvStream) {
    let lane = d.ctx.next_lane.fetch_add(1, Relaxed);
    loop {
        let read = recv.read_chunk(usize::MAX).await;
        let (stop, deliveries) = {
            let mut r = d.ctx.reassembler.lock().expect("reassembler lock");
            let stop = match read {
                Ok(Some(chunk)) => match r.lane_data(lane, from, &chunk) {
                    LaneControl::Continue => None,
                    LaneControl::Stop(code) => Some(Some(code)),
                },
                Ok(None) => {
                    r.lane_end(lane, Ok(()));
                    Some(None)
                }
                Err(e) => {
                    r.lane_end(lane, Err(e));
                    Some(None)
                }
            };
            (stop, r.take_deliveries())
        };
        for item in deliveries {
            d.deliver(item, true).await;
        }
        match stop {
            None => continue,
            Some(Some(code)) => {
                let _ = recv.stop(code);
                return;
            }
            Some(None) => return,
        }
    }
}

async fn handle_bi(d: Dispatch, mut send: SendStream, mut recv: RecvStream) {
    let mut kind = [0u8; 1];
    if !matches!(read_exact(&mut recv, &mut kind).await, Ok(1)) {
        return;
    }
    match StreamKind::from_byte(kind[0]) {
        Some(StreamKind::Stream) => {
            let _ = d.streams.send((send, recv)).await;
        }
        Some(StreamKind::Request) => {
            let _ = d.requests.send((send, recv)).await;
        }
        Some(StreamKind::Ping) => {
            if let Ok(echo) = read_limited(&mut recv, PING_MAX as u64).await {
                if send.write_chunk(echo).await.is_ok() && send.finish().await.is_ok() {
                    let _ = send.stopped().await;
                }
            }
        }
        _ => {
            let _ = recv.stop(codes::UNKNOWN_KIND);
            let _ = send.reset(codes::UNKNOWN_KIND);
            let from =
                d.me.upgrade()
                    .map(|s| s.conn.remote_addr())
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            d.deliver(
                Err(PhoenixError::incoming(
                    from,
                    PhoenixError::UnknownKind(kind[0]),
                )),
                false,
            )
            .await;
        }
    }
}

async fn serve_one<F, Fut>(
    meter: Meter,
    max: u64,
    mut send: SendStream,
    mut recv: RecvStream,
    handler: Arc<F>,
) -> Result<(), PhoenixError>
where
    F: Fn(Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Bytes> + Send + 'static,
{
    let _active = meter.activity();
    let request = match read_limited(&mut recv, max).await {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, PhoenixError::MessageTooLarge { .. }) {
                let _ = send.reset(codes::MESSAGE_TOO_LARGE);
            }
            return Err(e);
        }
    };
    let received = request.len() as u64;
    let response = handler(request).await;
    let sent = response.len() as u64;
    send.write_chunk(response).await?;
    send.finish().await?;
    send.stopped().await?;
    meter.count(Count::Served { received, sent });
    Ok(())
}
