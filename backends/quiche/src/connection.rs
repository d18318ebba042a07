//! One connection: the state the endpoint driver and the application handles share, and
//! [`QuicheConnection`], the handle behind STOQ's [`Connection`] trait.
//!
//! quiche is sans-IO and single-threaded: a `quiche::Connection` is a plain value. Here it
//! lives in a [`ConnState`] behind one `parking_lot::Mutex` per connection. The endpoint
//! driver locks it to feed received packets, run timers and pull packets to send; the
//! application's handles lock it to move stream and datagram data. Nobody holds the lock
//! across an `await`, and every lock is short: one `stream_send_zc`, one `stream_recv`, or
//! one GSO batch of packets.
//!
//! quiche reports no events, so the state keeps what the poll-based handles need: a
//! waker per stream half, the STOP_SENDING / reset / FIN outcomes once quiche has
//! reported them (quiche forgets a stream once it is complete, see
//! [`ConnState::poll_stopped`]), queues of peer-opened streams, and notifications for
//! the async methods. After each batch of I/O the driver asks quiche what changed
//! ([`ConnState::after_io`]) and wakes whoever waits.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use stoq_core::pki_types::CertificateDer;
use stoq_core::{
    Connection, ConnectionCounters, ConnectionError, ConnectionStats, DatagramError, Error,
    RecvStream, SendStream, Side, StreamError,
};
use tokio::io::ReadBuf;
use tokio::sync::Notify;

use crate::endpoint::EndpointShared;
use crate::errors::{close_error, engine};
use crate::stream::{QuicheRecv, QuicheSend};

/// quiche's buffers as `bytes::Bytes`, so `write_chunk` hands the application's chunk to
/// quiche without copying (`stream_send_zc`) and received datagrams reach the
/// application without another copy.
#[derive(Debug, Clone, Default)]
pub(crate) struct BytesFactory;

impl quiche::BufFactory for BytesFactory {
    type Buf = Bytes;
    type DgramBuf = Bytes;

    fn buf_from_slice(buf: &[u8]) -> Bytes {
        Bytes::copy_from_slice(buf)
    }

    fn dgram_buf_from_slice(buf: &[u8]) -> Bytes {
        Bytes::copy_from_slice(buf)
    }
}

/// The quiche connection type this backend uses.
pub(crate) type QConn = quiche::Connection<BytesFactory>;

/// quiche's default stream urgency (RFC 9218 scale widened to a byte; lower is sent first).
const DEFAULT_URGENCY: u8 = 127;

/// Most bytes one `poll_write` copies into quiche: bounds the time the connection lock is
/// held for one call (a 256 KiB copy takes about 10 us).
const MAX_WRITE: usize = 256 * 1024;

/// Largest chunk `read_chunk` returns: one allocation and one lock per 128 KiB.
const MAX_CHUNK: usize = 128 * 1024;

/// Longest close reason sent: a CONNECTION_CLOSE frame must fit in one packet.
const MAX_REASON: usize = 1024;

/// Largest QUIC variable-length integer (RFC 9000 section 16): error codes above it
/// cannot be sent.
const VARINT_MAX: u64 = (1 << 62) - 1;

/// Connection IDs this endpoint issues are this long, so short-header packets can be
/// routed by their first bytes.
pub(crate) const LOCAL_CID_LEN: usize = 16;

/// A connection ID as a fixed-size hash key, built without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CidKey {
    len: u8,
    bytes: [u8; quiche::MAX_CONN_ID_LEN],
}

impl CidKey {
    /// The key for `cid` (at most 20 bytes, as RFC 9000 allows; longer ones are cut, and
    /// then match nothing this endpoint issued).
    pub(crate) fn new(cid: &[u8]) -> CidKey {
        let len = cid.len().min(quiche::MAX_CONN_ID_LEN);
        let mut bytes = [0u8; quiche::MAX_CONN_ID_LEN];
        bytes[..len].copy_from_slice(&cid[..len]);
        CidKey {
            len: len as u8,
            bytes,
        }
    }
}

/// Per-connection I/O bookkeeping kept by the driver.
#[derive(Debug)]
pub(crate) struct IoState {
    /// UDP datagrams and payload bytes sent.
    pub(crate) datagrams_sent: u64,
    pub(crate) bytes_sent: u64,
    /// UDP datagrams and payload bytes received.
    pub(crate) datagrams_received: u64,
    pub(crate) bytes_received: u64,
    /// When the last packet was sent (keep-alive counts from here).
    pub(crate) last_tx: Instant,
    /// The deadline currently registered in the driver's timer set.
    pub(crate) timer: Option<Instant>,
    /// A packet quiche produced with a send time (`SendInfo.at`) too far ahead to send
    /// now (or for another address than the batch it was generated into); it goes out
    /// first on the next flush once its time has come. Its bytes are in `held_buf`.
    pub(crate) held: Option<Held>,
    /// The held packet's bytes (the buffer is reused).
    pub(crate) held_buf: Vec<u8>,
}

/// A packet waiting for its send time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub(crate) len: usize,
    pub(crate) to: SocketAddr,
    pub(crate) at: Instant,
}

/// What `after_io` found that needs waking outside the lock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Events {
    /// Established or closed: wake `connect`, `closed()` and friends.
    pub(crate) state: bool,
    /// The handshake completed in this round.
    pub(crate) established_now: bool,
    /// Peer-opened streams were queued.
    pub(crate) accept: bool,
    /// Datagrams arrived.
    pub(crate) datagram: bool,
    /// The peer raised our stream limit while someone waits to open one.
    pub(crate) credit: bool,
}

/// Streams the peer opened of one type (bidirectional or unidirectional), tracked so each
/// is queued for `accept_*` exactly once even when they first show data out of order.
#[derive(Debug)]
struct PeerStreams {
    /// The lowest stream ID of this type not yet queued.
    next: u64,
    /// IDs above `next` already queued.
    above: BTreeSet<u64>,
}

impl PeerStreams {
    fn new(first: u64) -> Self {
        PeerStreams {
            next: first,
            above: BTreeSet::new(),
        }
    }

    /// Records `id`; false if it was queued before.
    fn first_sighting(&mut self, id: u64) -> bool {
        if id < self.next || !self.above.insert(id) {
            return false;
        }
        while self.above.remove(&self.next) {
            self.next += 4;
        }
        true
    }
}

/// One stream's application-side state.
#[derive(Debug, Default)]
struct StreamSlot {
    /// Handles alive (or queued for `accept_*`).
    send_handle: bool,
    recv_handle: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    stopped_waker: Option<Waker>,
    /// Listed in `parked_writers`.
    write_parked: bool,
    /// Send half: FIN queued, reset by us, stopped by the peer (latched, because quiche
    /// collects a stopped stream as soon as it has reported the error once), and all
    /// data plus FIN acknowledged.
    finished: bool,
    reset: bool,
    stopped: Option<u64>,
    complete: bool,
    /// Receive half: FIN read, reset by the peer (latched), STOP_SENDING sent by us.
    fin_read: bool,
    peer_reset: Option<u64>,
    stop_sent: bool,
}

impl StreamSlot {
    fn wake_all(&mut self, wakers: &mut Vec<Waker>) {
        wakers.extend(self.read_waker.take());
        wakers.extend(self.write_waker.take());
        wakers.extend(self.stopped_waker.take());
    }
}

/// Everything about one connection that needs the lock.
pub(crate) struct ConnState {
    pub(crate) conn: QConn,
    pub(crate) side: Side,
    /// The peer's address (IPv4 peers as IPv4 even on a dual-stack socket).
    pub(crate) peer: SocketAddr,
    pub(crate) established: bool,
    /// Why the connection ended, once it has; every later operation fails with it.
    pub(crate) close: Option<ConnectionError>,
    /// Forget the connection at once instead of draining (a connect that timed out).
    pub(crate) abandoned: bool,
    /// Local datagram support (`TransportConfig::datagrams.enabled`).
    pub(crate) datagrams: bool,
    /// Routing keys: our connection ID and, on servers, the client's original DCID.
    pub(crate) scid: CidKey,
    pub(crate) odcid: Option<CidKey>,
    /// PING after this long without sending (quiche has no keep-alive of its own).
    pub(crate) keep_alive: Option<Duration>,
    /// Servers give up on handshakes not complete by then.
    pub(crate) handshake_deadline: Option<Instant>,
    /// A client's application close that waits for the handshake to be confirmed
    /// ([`ConnState::close_app`] says why).
    pub(crate) deferred_close: Option<DeferredClose>,
    /// quiche accepted a 1-RTT packet from the peer after the handshake completed. On a
    /// client this is how the driver learns the handshake is confirmed (the server sends
    /// HANDSHAKE_DONE in its first 1-RTT packet; quiche has no accessor for it).
    pub(crate) one_rtt_received: bool,
    /// Once a local close was handed to quiche: by then quiche must be draining or
    /// closed, or the driver forgets the connection ([`CLOSING_LIMIT`]).
    pub(crate) closing_deadline: Option<Instant>,
    /// Packets quiche produced since the local close ([`CLOSING_PACKET_LIMIT`]).
    pub(crate) closing_sent: u32,
    pub(crate) io: IoState,
    streams: HashMap<u64, StreamSlot>,
    stopped_waiters: Vec<u64>,
    /// Streams whose writer waits for send capacity.
    parked_writers: Vec<u64>,
    accept_bi: VecDeque<u64>,
    accept_uni: VecDeque<u64>,
    peer_bidi: PeerStreams,
    peer_uni: PeerStreams,
    next_bidi: u64,
    next_uni: u64,
    open_waiting: bool,
}

impl std::fmt::Debug for ConnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnState")
            .field("trace_id", &self.conn.trace_id())
            .field("side", &self.side)
            .field("peer", &self.peer)
            .field("established", &self.established)
            .field("close", &self.close)
            .finish_non_exhaustive()
    }
}

/// An application close held back until the handshake is confirmed.
#[derive(Debug)]
pub(crate) struct DeferredClose {
    code: u64,
    reason: Vec<u8>,
    /// Give up waiting for confirmation then and close with a transport error.
    pub(crate) deadline: Instant,
}

/// How long a locally closed connection may go on without quiche entering the draining
/// state (it does so as soon as it has sent the CONNECTION_CLOSE frame). Past this, the
/// driver stops sending for it and forgets it, so no engine state machine can keep a
/// closed connection busy (see [`ConnState::close_app`]). Generous: sending a close needs
/// no congestion window, only the anti-amplification budget on unvalidated paths.
pub(crate) const CLOSING_LIMIT: Duration = Duration::from_secs(1);

/// How many packets a locally closed connection may send before quiche enters the
/// draining state. quiche drains right after the packet that carries its
/// CONNECTION_CLOSE, so more than a few means it is looping without sending the close
/// (see [`ConnState::close_app`]); the driver then forgets the connection at once
/// rather than flood the peer until [`CLOSING_LIMIT`].
pub(crate) const CLOSING_PACKET_LIMIT: u32 = 8;

/// QUIC transport error APPLICATION_ERROR (RFC 9000 section 20.1): how an application
/// close travels before the handshake is confirmed (section 10.2.3).
const APPLICATION_ERROR: u64 = 0x0c;

/// How a new connection is set up.
pub(crate) struct NewConn {
    pub(crate) conn: QConn,
    pub(crate) side: Side,
    pub(crate) peer: SocketAddr,
    pub(crate) scid: CidKey,
    pub(crate) odcid: Option<CidKey>,
    pub(crate) datagrams: bool,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) handshake_deadline: Option<Instant>,
}

impl ConnState {
    fn new(n: NewConn) -> Self {
        let client = n.side == Side::Client;
        // Stream ID low bits: 0x1 server-initiated, 0x2 unidirectional.
        let (local_bidi, local_uni, peer_bidi, peer_uni) =
            if client { (0, 2, 1, 3) } else { (1, 3, 0, 2) };
        ConnState {
            conn: n.conn,
            side: n.side,
            peer: n.peer,
            established: false,
            close: None,
            abandoned: false,
            datagrams: n.datagrams,
            scid: n.scid,
            odcid: n.odcid,
            keep_alive: n.keep_alive,
            handshake_deadline: n.handshake_deadline,
            deferred_close: None,
            one_rtt_received: false,
            closing_deadline: None,
            closing_sent: 0,
            io: IoState {
                datagrams_sent: 0,
                bytes_sent: 0,
                datagrams_received: 0,
                bytes_received: 0,
                last_tx: Instant::now(),
                timer: None,
                held: None,
                held_buf: Vec::new(),
            },
            streams: HashMap::new(),
            stopped_waiters: Vec::new(),
            parked_writers: Vec::new(),
            accept_bi: VecDeque::new(),
            accept_uni: VecDeque::new(),
            peer_bidi: PeerStreams::new(peer_bidi),
            peer_uni: PeerStreams::new(peer_uni),
            next_bidi: local_bidi,
            next_uni: local_uni,
            open_waiting: false,
        }
    }

    fn is_local(&self, id: u64) -> bool {
        (id & 0x1 == 1) == (self.side == Side::Server)
    }

    /// Records the end of the connection (first cause wins) and wakes every waiter.
    pub(crate) fn set_closed(
        &mut self,
        e: ConnectionError,
        wakers: &mut Vec<Waker>,
        ev: &mut Events,
    ) {
        if self.close.is_some() {
            return;
        }
        self.close = Some(e);
        for slot in self.streams.values_mut() {
            slot.wake_all(wakers);
        }
        ev.state = true;
        ev.accept = true;
        ev.datagram = true;
        ev.credit = true;
    }

    /// Asks quiche what changed after packets were received, timers ran or packets were
    /// sent, and collects the wakers and notifications due.
    pub(crate) fn after_io(&mut self, wakers: &mut Vec<Waker>, ev: &mut Events) {
        if !self.established && self.conn.is_established() {
            self.established = true;
            self.handshake_deadline = None;
            ev.state = true;
            ev.established_now = true;
        }
        // Streams with data (or a FIN, or a reset) to read: wake their readers, and
        // queue peer-opened streams seen for the first time for `accept_*`.
        while let Some(id) = self.conn.stream_readable_next() {
            if let Some(slot) = self.streams.get_mut(&id) {
                wakers.extend(slot.read_waker.take());
            } else if !self.is_local(id) {
                let bidi = id & 0x2 == 0;
                let first = if bidi {
                    self.peer_bidi.first_sighting(id)
                } else {
                    self.peer_uni.first_sighting(id)
                };
                if first {
                    self.streams.insert(
                        id,
                        StreamSlot {
                            send_handle: bidi,
                            recv_handle: true,
                            ..StreamSlot::default()
                        },
                    );
                    if bidi {
                        self.accept_bi.push_back(id);
                    } else {
                        self.accept_uni.push_back(id);
                    }
                    ev.accept = true;
                }
            }
        }
        // Parked writers: capacity came back (ACKs, MAX_DATA, MAX_STREAM_DATA), the
        // peer stopped the stream, or it is gone. quiche's `stream_writable_next()` is
        // deliberately not used: popping a writable stream out of quiche's writable set
        // makes quiche collect it, and forget a STOP_SENDING code, as soon as an ACK
        // arrives in the same packet as the STOP_SENDING (quiche only re-links a stream
        // that was *not* writable when STOP_SENDING arrives, and its ACK handler
        // collects complete streams that are not linked). Left linked, a stopped stream
        // stays until STOQ has read the code through `stream_capacity`/`stream_send`.
        if !self.parked_writers.is_empty() {
            let mut i = 0;
            while i < self.parked_writers.len() {
                let id = self.parked_writers[i];
                let ready = match self.conn.stream_capacity(id) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(quiche::Error::StreamStopped(code)) => {
                        if let Some(slot) = self.streams.get_mut(&id) {
                            slot.stopped = Some(code);
                        }
                        true
                    }
                    Err(_) => true,
                };
                if ready {
                    self.parked_writers.swap_remove(i);
                    if let Some(slot) = self.streams.get_mut(&id) {
                        slot.write_parked = false;
                        wakers.extend(slot.write_waker.take());
                        if slot.stopped.is_some() {
                            wakers.extend(slot.stopped_waker.take());
                        }
                    }
                } else {
                    i += 1;
                }
            }
        }
        // `stopped()` waiters: quiche says nothing when a stream's data is all
        // acknowledged, it just collects the stream; look.
        if !self.stopped_waiters.is_empty() {
            let mut i = 0;
            while i < self.stopped_waiters.len() {
                let id = self.stopped_waiters[i];
                if self.send_outcome(id).is_some() {
                    self.stopped_waiters.swap_remove(i);
                    if let Some(slot) = self.streams.get_mut(&id) {
                        wakers.extend(slot.stopped_waker.take());
                    }
                } else {
                    i += 1;
                }
            }
        }
        if self.datagrams && self.conn.dgram_recv_queue_len() > 0 {
            ev.datagram = true;
        }
        if self.open_waiting
            && (self.conn.peer_streams_left_bidi() > 0 || self.conn.peer_streams_left_uni() > 0)
        {
            self.open_waiting = false;
            ev.credit = true;
        }
        if self.close.is_none() {
            if let Some(e) = close_error(&mut self.conn, self.side) {
                self.set_closed(e, wakers, ev);
            }
        }
    }

    /// The send half's final outcome if quiche can tell: `Some(Some(code))` the peer sent
    /// STOP_SENDING, `Some(None)` all data and the FIN were acknowledged.
    ///
    /// quiche exposes no per-stream acknowledgement state. It *collects* a stream (drops
    /// it, remembering only its ID) once it is complete: for a locally opened
    /// unidirectional stream when all data and the FIN are acknowledged; for a
    /// bidirectional stream only when, in addition, the receive half is complete (the
    /// peer's FIN or reset was read, or reading was stopped after the peer finished).
    /// After that `stream_capacity` fails with `InvalidStreamState` and `stream_closed`
    /// is true, which is what this checks. A STOP_SENDING shows as `StreamStopped` from
    /// `stream_capacity` (which may collect the stream in the same call, hence the latch).
    fn send_outcome(&mut self, id: u64) -> Option<Option<u64>> {
        let slot = self.streams.get(&id)?;
        if let Some(code) = slot.stopped {
            return Some(Some(code));
        }
        if slot.complete {
            return Some(None);
        }
        if !slot.finished {
            // Without a FIN there is nothing to acknowledge completely; a STOP_SENDING
            // is still reported.
            return match self.conn.stream_capacity(id) {
                Err(quiche::Error::StreamStopped(code)) => {
                    self.streams.get_mut(&id)?.stopped = Some(code);
                    Some(Some(code))
                }
                _ => None,
            };
        }
        match self.conn.stream_capacity(id) {
            Err(quiche::Error::StreamStopped(code)) => {
                self.streams.get_mut(&id)?.stopped = Some(code);
                Some(Some(code))
            }
            Err(quiche::Error::InvalidStreamState(_)) if self.conn.stream_closed(id) => {
                self.streams.get_mut(&id)?.complete = true;
                Some(None)
            }
            _ => None,
        }
    }

    /// The error a stream operation fails with once the connection has ended.
    fn lost(&self) -> Option<StreamError> {
        self.close.clone().map(StreamError::ConnectionLost)
    }

    /// Maps a quiche error from a send-side call on `id`.
    fn send_error(&mut self, id: u64, e: quiche::Error) -> StreamError {
        match e {
            quiche::Error::StreamStopped(code) => {
                if let Some(slot) = self.streams.get_mut(&id) {
                    slot.stopped = Some(code);
                }
                StreamError::Stopped(code)
            }
            quiche::Error::InvalidStreamState(_) | quiche::Error::FinalSize => {
                StreamError::ClosedStream
            }
            e => self
                .lost()
                .unwrap_or_else(|| StreamError::ConnectionLost(engine(e))),
        }
    }

    /// Checks the send half is usable.
    fn send_usable(&self, id: u64) -> Result<(), StreamError> {
        let slot = self.streams.get(&id).ok_or(StreamError::ClosedStream)?;
        if let Some(code) = slot.stopped {
            return Err(StreamError::Stopped(code));
        }
        if slot.reset || slot.finished {
            return Err(StreamError::ClosedStream);
        }
        if let Some(e) = self.lost() {
            return Err(e);
        }
        Ok(())
    }

    /// Send capacity of `id` now, or `Pending` with the writer parked for `after_io`.
    /// `stream_writable(id, 1)` also tells the peer when the stream is blocked by its
    /// flow control (STREAM_DATA_BLOCKED).
    fn poll_capacity(&mut self, id: u64, cx: &mut Context<'_>) -> Poll<Result<usize, StreamError>> {
        if let Err(e) = self.send_usable(id) {
            return Poll::Ready(Err(e));
        }
        match self.conn.stream_writable(id, 1) {
            Ok(true) => match self.conn.stream_capacity(id) {
                Ok(n) if n > 0 => Poll::Ready(Ok(n)),
                Ok(_) => self.park_writer(id, cx),
                Err(e) => Poll::Ready(Err(self.send_error(id, e))),
            },
            Ok(false) => self.park_writer(id, cx),
            Err(e) => Poll::Ready(Err(self.send_error(id, e))),
        }
    }

    fn park_writer<T>(&mut self, id: u64, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(slot) = self.streams.get_mut(&id) {
            slot.write_waker = Some(cx.waker().clone());
            if !slot.write_parked {
                slot.write_parked = true;
                self.parked_writers.push(id);
            }
        }
        Poll::Pending
    }

    pub(crate) fn poll_write(
        &mut self,
        id: u64,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, StreamError>> {
        if buf.is_empty() {
            return Poll::Ready(self.send_usable(id).map(|()| 0));
        }
        let cap = std::task::ready!(self.poll_capacity(id, cx))?;
        let n = cap.min(buf.len()).min(MAX_WRITE);
        match self
            .conn
            .stream_send_zc(id, Bytes::copy_from_slice(&buf[..n]), false)
        {
            Ok((sent, _)) if sent > 0 => Poll::Ready(Ok(sent)),
            Ok(_) | Err(quiche::Error::Done) => self.park_writer(id, cx),
            Err(e) => Poll::Ready(Err(self.send_error(id, e))),
        }
    }

    /// Queues as much of `chunk` as quiche takes, without copying; `Ready` once all of
    /// it is queued, `Pending` with the rest left in `chunk`.
    pub(crate) fn poll_write_chunk(
        &mut self,
        id: u64,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<Result<(), StreamError>> {
        while !chunk.is_empty() {
            std::task::ready!(self.poll_capacity(id, cx))?;
            // A clone is a reference-count increment; quiche splits it at what fits.
            match self.conn.stream_send_zc(id, chunk.clone(), false) {
                Ok((sent, _)) if sent > 0 => chunk.advance(sent),
                Ok(_) | Err(quiche::Error::Done) => return self.park_writer(id, cx),
                Err(e) => return Poll::Ready(Err(self.send_error(id, e))),
            }
        }
        Poll::Ready(Ok(()))
    }

    pub(crate) fn finish(&mut self, id: u64) -> Result<(), StreamError> {
        if self.streams.get(&id).is_some_and(|s| s.finished) {
            return Ok(());
        }
        self.send_usable(id)?;
        match self.conn.stream_send_zc(id, Bytes::new(), true) {
            Ok(_) => {
                if let Some(slot) = self.streams.get_mut(&id) {
                    slot.finished = true;
                }
                Ok(())
            }
            Err(e) => Err(self.send_error(id, e)),
        }
    }

    pub(crate) fn reset(&mut self, id: u64, code: u64) -> Result<(), StreamError> {
        let slot = self.streams.get(&id).ok_or(StreamError::ClosedStream)?;
        if slot.reset || slot.complete || code > VARINT_MAX {
            return Err(StreamError::ClosedStream);
        }
        if let Some(e) = self.lost() {
            return Err(e);
        }
        match self.conn.stream_shutdown(id, quiche::Shutdown::Write, code) {
            Ok(()) => {
                if let Some(slot) = self.streams.get_mut(&id) {
                    slot.reset = true;
                }
                Ok(())
            }
            // Already collected: everything was acknowledged, nothing left to reset.
            Err(quiche::Error::Done) => Err(StreamError::ClosedStream),
            Err(e) => Err(self.send_error(id, e)),
        }
    }

    pub(crate) fn poll_stopped(
        &mut self,
        id: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<u64>, StreamError>> {
        if let Some(outcome) = self.send_outcome(id) {
            return Poll::Ready(Ok(outcome));
        }
        match self.streams.get(&id) {
            None => return Poll::Ready(Err(StreamError::ClosedStream)),
            Some(slot) if slot.reset => return Poll::Ready(Err(StreamError::ClosedStream)),
            Some(_) => {}
        }
        if let Some(e) = self.lost() {
            return Poll::Ready(Err(e));
        }
        if let Some(slot) = self.streams.get_mut(&id) {
            slot.stopped_waker = Some(cx.waker().clone());
        }
        if !self.stopped_waiters.contains(&id) {
            self.stopped_waiters.push(id);
        }
        Poll::Pending
    }

    pub(crate) fn set_priority(&mut self, id: u64, priority: i32) -> Result<(), StreamError> {
        self.send_usable(id)?;
        // STOQ: higher is sent first, 0 is the default. quiche: lower urgency first,
        // 127 the default.
        let urgency = (i64::from(DEFAULT_URGENCY) - i64::from(priority)).clamp(0, 255) as u8;
        self.conn
            .stream_priority(id, urgency, true)
            .map_err(|e| self.send_error(id, e))
    }

    /// Checks the receive half; `Ok(true)` at the clean end.
    fn recv_usable(&self, id: u64) -> Result<bool, StreamError> {
        let slot = self.streams.get(&id).ok_or(StreamError::ClosedStream)?;
        if let Some(code) = slot.peer_reset {
            return Err(StreamError::Reset(code));
        }
        if slot.fin_read {
            return Ok(true);
        }
        if slot.stop_sent {
            return Err(StreamError::ClosedStream);
        }
        Ok(false)
    }

    /// Maps the outcome of a `stream_recv*` call.
    fn recv_result(
        &mut self,
        id: u64,
        cx: &mut Context<'_>,
        r: quiche::Result<(usize, bool)>,
    ) -> Poll<Result<usize, StreamError>> {
        match r {
            Ok((n, fin)) => {
                if fin {
                    if let Some(slot) = self.streams.get_mut(&id) {
                        slot.fin_read = true;
                    }
                }
                if n == 0 && !fin {
                    return self.park_reader(id, cx);
                }
                Poll::Ready(Ok(n))
            }
            Err(quiche::Error::Done) => match self.lost() {
                // Buffered data is still delivered after the connection ended; only
                // then does reading fail.
                Some(e) => Poll::Ready(Err(e)),
                None => self.park_reader(id, cx),
            },
            Err(quiche::Error::StreamReset(code)) => {
                if let Some(slot) = self.streams.get_mut(&id) {
                    slot.peer_reset = Some(code);
                }
                Poll::Ready(Err(StreamError::Reset(code)))
            }
            Err(quiche::Error::InvalidStreamState(_)) => {
                if !self.conn.stream_closed(id) && self.lost().is_none() {
                    // A peer stream announced by a higher-numbered one, with nothing
                    // received yet: quiche creates it with its first frame.
                    return self.park_reader(id, cx);
                }
                Poll::Ready(Err(self.lost().unwrap_or(StreamError::ClosedStream)))
            }
            Err(e) => Poll::Ready(Err(self
                .lost()
                .unwrap_or_else(|| StreamError::ConnectionLost(engine(e))))),
        }
    }

    fn park_reader<T>(&mut self, id: u64, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(slot) = self.streams.get_mut(&id) {
            slot.read_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    pub(crate) fn poll_read(
        &mut self,
        id: u64,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), StreamError>> {
        if self.recv_usable(id)? || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // `ReadBuf` is a `BufMut`: quiche copies straight into the unfilled part
        // without zeroing it first.
        let r = self.conn.stream_recv_buf(id, &mut *buf);
        self.recv_result(id, cx, r).map_ok(|_| ())
    }

    pub(crate) fn poll_read_chunk(
        &mut self,
        id: u64,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, StreamError>> {
        if self.recv_usable(id)? {
            return Poll::Ready(Ok(None));
        }
        let want = self
            .conn
            .stream_readable_len(id, max.min(MAX_CHUNK))
            .min(max);
        let mut chunk = BytesMut::with_capacity(want);
        let r = self.conn.stream_recv_buf(id, (&mut chunk).limit(want));
        match std::task::ready!(self.recv_result(id, cx, r)) {
            Ok(0) => Poll::Ready(Ok(None)),
            Ok(_) => Poll::Ready(Ok(Some(chunk.freeze()))),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    pub(crate) fn stop(&mut self, id: u64, code: u64) -> Result<(), StreamError> {
        let slot = self.streams.get(&id).ok_or(StreamError::ClosedStream)?;
        if slot.stop_sent || code > VARINT_MAX {
            return Err(StreamError::ClosedStream);
        }
        if slot.fin_read || slot.peer_reset.is_some() || self.close.is_some() {
            // Nothing more will arrive: nothing to stop.
            if let Some(slot) = self.streams.get_mut(&id) {
                slot.stop_sent = true;
            }
            return Ok(());
        }
        match self.conn.stream_shutdown(id, quiche::Shutdown::Read, code) {
            Ok(()) | Err(quiche::Error::Done) => {
                if let Some(slot) = self.streams.get_mut(&id) {
                    slot.stop_sent = true;
                }
                Ok(())
            }
            Err(_) => Err(StreamError::ClosedStream),
        }
    }

    /// A handle of `id` was dropped; forgets the stream once neither half has one.
    pub(crate) fn release(&mut self, id: u64, send: bool) {
        let Some(slot) = self.streams.get_mut(&id) else {
            return;
        };
        if send {
            slot.send_handle = false;
            slot.write_waker = None;
            slot.stopped_waker = None;
        } else {
            slot.recv_handle = false;
            slot.read_waker = None;
        }
        if !slot.send_handle && !slot.recv_handle {
            let parked = slot.write_parked;
            self.streams.remove(&id);
            self.stopped_waiters.retain(|w| *w != id);
            if parked {
                self.parked_writers.retain(|w| *w != id);
            }
        }
    }

    /// Opens a stream if the peer's limit allows; `None` (and a wake-up request) if not.
    fn try_open(&mut self, bidi: bool) -> Result<Option<u64>, ConnectionError> {
        if let Some(e) = &self.close {
            return Err(e.clone());
        }
        let left = if bidi {
            self.conn.peer_streams_left_bidi()
        } else {
            self.conn.peer_streams_left_uni()
        };
        if left == 0 {
            self.open_waiting = true;
            return Ok(None);
        }
        let id = if bidi { self.next_bidi } else { self.next_uni };
        // Creates the stream in quiche now (so reads on a fresh bidirectional stream
        // work before anything was written); the peer learns of it with its first frame.
        match self.conn.stream_priority(id, DEFAULT_URGENCY, true) {
            Ok(()) => {}
            Err(quiche::Error::StreamLimit) => {
                self.open_waiting = true;
                return Ok(None);
            }
            Err(e) => return Err(engine(e)),
        }
        if bidi {
            self.next_bidi += 4;
        } else {
            self.next_uni += 4;
        }
        self.streams.insert(
            id,
            StreamSlot {
                send_handle: true,
                recv_handle: bidi,
                ..StreamSlot::default()
            },
        );
        Ok(Some(id))
    }

    fn try_accept(&mut self, bidi: bool) -> Result<Option<u64>, ConnectionError> {
        let queue = if bidi {
            &mut self.accept_bi
        } else {
            &mut self.accept_uni
        };
        if let Some(id) = queue.pop_front() {
            return Ok(Some(id));
        }
        match &self.close {
            Some(e) => Err(e.clone()),
            None => Ok(None),
        }
    }

    /// Closes with an application code and reason (recorded as sent).
    pub(crate) fn close_app(
        &mut self,
        code: u64,
        reason: &[u8],
        wakers: &mut Vec<Waker>,
        ev: &mut Events,
        as_error: impl FnOnce(u64, Bytes) -> ConnectionError,
    ) {
        if self.close.is_some() {
            return;
        }
        let code = code.min(VARINT_MAX);
        let reason = &reason[..reason.len().min(MAX_REASON)];
        if self.side == Side::Client && self.conn.is_established() && !self.one_rtt_received {
            // The handshake is complete but maybe not confirmed. quiche 0.30 puts an
            // application close only in 1-RTT packets, and once closing it ignores every
            // incoming packet: if its Handshake space still has something to send (a
            // client Finished awaiting retransmission), it then sends Handshake packets
            // without the close in a busy loop until the idle timeout, and the server
            // never hears of the close (seen as a handshake flood stalling an endpoint).
            // So the close waits until a 1-RTT packet from the server arrives after the
            // handshake completed (a confirmed server sends HANDSHAKE_DONE in it), for at
            // most three PTOs but at least 250 ms. Should quiche loop anyway, the driver forgets the
            // connection after a few packets ([`ConnState::closing_stuck`]).
            let wait = self
                .conn
                .path_stats()
                .next()
                .map(|p| 3 * (p.rtt + 4 * p.rttvar) + Duration::from_millis(25))
                .unwrap_or(Duration::from_millis(100))
                // At least 250 ms: on a busy machine the server's HANDSHAKE_DONE can
                // take far longer than the RTT estimate says, and waiting costs only
                // the connection's memory (the application already sees it closed).
                .clamp(Duration::from_millis(250), Duration::from_secs(2));
            self.deferred_close = Some(DeferredClose {
                code,
                reason: reason.to_vec(),
                deadline: Instant::now() + wait,
            });
        } else {
            self.start_close(true, code, reason, Instant::now());
        }
        self.set_closed(as_error(code, Bytes::copy_from_slice(reason)), wakers, ev);
    }

    /// Hands a close to quiche and starts the [`CLOSING_LIMIT`] clock.
    pub(crate) fn start_close(&mut self, app: bool, code: u64, reason: &[u8], now: Instant) {
        if self.conn.close(app, code, reason).is_ok() {
            self.closing_deadline = Some(now + CLOSING_LIMIT);
        }
    }

    /// Sends a deferred application close once the handshake is confirmed, or at its
    /// deadline as a transport close with APPLICATION_ERROR (RFC 9000 section 10.2.3:
    /// what an endpoint sends when it cannot yet use 1-RTT packets), which quiche can
    /// send in a Handshake packet.
    pub(crate) fn progress_deferred_close(&mut self, now: Instant) {
        let due = match &self.deferred_close {
            Some(d) => self.one_rtt_received || now >= d.deadline,
            None => false,
        };
        if !due {
            return;
        }
        let d = self.deferred_close.take().expect("checked above");
        if self.one_rtt_received {
            self.start_close(true, d.code, &d.reason, now);
        } else {
            self.start_close(false, APPLICATION_ERROR, b"", now);
        }
    }

    /// The closing state outlived [`CLOSING_LIMIT`] without quiche draining.
    pub(crate) fn closing_stuck(&self, now: Instant) -> bool {
        self.closing_deadline
            .is_some_and(|d| now >= d || self.closing_sent > CLOSING_PACKET_LIMIT)
            && !self.conn.is_draining()
            && !self.conn.is_closed()
    }
}

/// A connection as the driver and the handles share it.
pub(crate) struct ConnShared {
    /// Unique among the endpoint's connections.
    pub(crate) id: u64,
    pub(crate) state: Mutex<ConnState>,
    pub(crate) endpoint: Arc<EndpointShared>,
    /// Queued for the driver's attention (the application did something that may have
    /// produced packets to send).
    dirty: AtomicBool,
    /// Application handles alive (connection handles and streams); the connection is
    /// closed with code 0 when the last one goes, as quinn does.
    refs: AtomicUsize,
    pub(crate) side: Side,
    pub(crate) counters: Arc<ConnectionCounters>,
    /// Established or closed.
    pub(crate) state_changed: Notify,
    /// Peer-opened streams queued.
    pub(crate) accept_ready: Notify,
    /// Datagrams arrived.
    pub(crate) datagram_ready: Notify,
    /// The peer raised our stream limits.
    pub(crate) credit_ready: Notify,
}

impl std::fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnShared")
            .field("id", &self.id)
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl ConnShared {
    pub(crate) fn new(endpoint: Arc<EndpointShared>, n: NewConn) -> Arc<Self> {
        Arc::new(ConnShared {
            id: endpoint.next_conn_id(),
            side: n.side,
            state: Mutex::new(ConnState::new(n)),
            endpoint,
            dirty: AtomicBool::new(false),
            refs: AtomicUsize::new(0),
            counters: Arc::default(),
            state_changed: Notify::new(),
            accept_ready: Notify::new(),
            datagram_ready: Notify::new(),
            credit_ready: Notify::new(),
        })
    }

    /// Asks the driver to look at this connection (flush what the application queued).
    pub(crate) fn mark_dirty(self: &Arc<Self>) {
        if !self.dirty.swap(true, Ordering::AcqRel) {
            self.endpoint.push_dirty(self.clone());
        }
    }

    /// The driver takes the connection off the dirty list.
    pub(crate) fn clear_dirty(&self) {
        self.dirty.store(false, Ordering::Release);
    }

    /// Wakes the async waiters `ev` names (outside the lock).
    pub(crate) fn notify(&self, ev: &Events) {
        if ev.state {
            self.state_changed.notify_waiters();
        }
        if ev.accept {
            self.accept_ready.notify_waiters();
        }
        if ev.datagram {
            self.datagram_ready.notify_waiters();
        }
        if ev.credit {
            self.credit_ready.notify_waiters();
        }
    }

    /// Waits until the handshake completed or the connection ended.
    pub(crate) async fn established(&self) -> Result<(), ConnectionError> {
        loop {
            let mut notified = pin!(self.state_changed.notified());
            notified.as_mut().enable();
            {
                let st = self.state.lock();
                if let Some(e) = &st.close {
                    return Err(e.clone());
                }
                if st.established {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Runs `f` on the state, then (outside the lock) wakes what it collected, sends
    /// the notifications it asked for, and flags the driver to send what it queued.
    pub(crate) fn with_state<T>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut ConnState, &mut Vec<Waker>, &mut Events) -> T,
    ) -> T {
        let mut wakers = Vec::new();
        let mut ev = Events::default();
        let out = {
            let mut st = self.state.lock();
            f(&mut st, &mut wakers, &mut ev)
        };
        for w in wakers {
            w.wake();
        }
        self.notify(&ev);
        self.mark_dirty();
        out
    }

    /// Closes with an application code and reason, as `Connection::close` does.
    fn close_app(self: &Arc<Self>, code: u64, reason: &[u8]) {
        self.with_state(|st, wakers, ev| {
            st.close_app(code, reason, wakers, ev, |code, reason| {
                ConnectionError::LocallyClosed { code, reason }
            });
        });
    }
}

/// An application's reference to a connection: while one exists the connection stays
/// open; dropping the last closes it with code 0 and an empty reason.
pub(crate) struct ConnRef(pub(crate) Arc<ConnShared>);

impl ConnRef {
    pub(crate) fn new(shared: Arc<ConnShared>) -> Self {
        shared.refs.fetch_add(1, Ordering::AcqRel);
        ConnRef(shared)
    }
}

impl Clone for ConnRef {
    fn clone(&self) -> Self {
        ConnRef::new(self.0.clone())
    }
}

impl Drop for ConnRef {
    fn drop(&mut self) {
        if self.0.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.close_app(0, b"");
        }
    }
}

impl std::ops::Deref for ConnRef {
    type Target = Arc<ConnShared>;
    fn deref(&self) -> &Arc<ConnShared> {
        &self.0
    }
}

/// One quiche connection behind STOQ's [`Connection`] trait.
pub struct QuicheConnection {
    inner: ConnRef,
}

impl std::fmt::Debug for QuicheConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicheConnection")
            .field("id", &self.inner.id)
            .field("side", &self.inner.side)
            .finish_non_exhaustive()
    }
}

impl QuicheConnection {
    pub(crate) fn new(shared: Arc<ConnShared>) -> Self {
        QuicheConnection {
            inner: ConnRef::new(shared),
        }
    }

    /// The TLS cipher suite and key-exchange group BoringSSL negotiated, e.g.
    /// `("TLS_AES_128_GCM_SHA256", "X25519MLKEM768")`.
    pub fn tls_parameters(&self) -> (Option<String>, Option<String>) {
        let mut st = self.inner.state.lock();
        let ssl: &mut boring::ssl::SslRef = st.conn.as_mut();
        (
            ssl.current_cipher().map(|c| c.name().to_string()),
            ssl.curve_name().map(str::to_string),
        )
    }

    /// quiche's own statistics, for what STOQ's [`ConnectionStats`] does not carry.
    pub fn quiche_stats(&self) -> quiche::Stats {
        self.inner.state.lock().conn.stats()
    }

    fn send_stream(&self, id: u64) -> SendStream {
        SendStream::new(
            Box::new(QuicheSend::new(self.inner.clone(), id)),
            self.inner.counters.clone(),
        )
    }

    fn recv_stream(&self, id: u64) -> RecvStream {
        RecvStream::new(
            Box::new(QuicheRecv::new(self.inner.clone(), id)),
            self.inner.counters.clone(),
        )
    }

    async fn open(&self, bidi: bool) -> Result<u64, ConnectionError> {
        loop {
            let mut notified = pin!(self.inner.credit_ready.notified());
            notified.as_mut().enable();
            if let Some(id) = self.inner.state.lock().try_open(bidi)? {
                return Ok(id);
            }
            notified.await;
        }
    }

    async fn accept(&self, bidi: bool) -> Result<u64, ConnectionError> {
        loop {
            let mut notified = pin!(self.inner.accept_ready.notified());
            notified.as_mut().enable();
            if let Some(id) = self.inner.state.lock().try_accept(bidi)? {
                return Ok(id);
            }
            notified.await;
        }
    }
}

#[async_trait]
impl Connection for QuicheConnection {
    async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let id = self.open(true).await?;
        Ok((self.send_stream(id), self.recv_stream(id)))
    }

    async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        let id = self.open(false).await?;
        Ok(self.send_stream(id))
    }

    async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let id = self.accept(true).await?;
        Ok((self.send_stream(id), self.recv_stream(id)))
    }

    async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        let id = self.accept(false).await?;
        Ok(self.recv_stream(id))
    }

    fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        let size = data.len();
        let r = self.inner.with_state(|st, _, _| {
            if !st.datagrams {
                return Err(DatagramError::Disabled);
            }
            if let Some(e) = &st.close {
                return Err(DatagramError::ConnectionLost(e.clone()));
            }
            // `None` until the peer's transport parameters allow datagrams.
            let max = st
                .conn
                .dgram_max_writable_len()
                .ok_or(DatagramError::Disabled)?;
            if size > max {
                return Err(DatagramError::TooLarge { size, max });
            }
            match st.conn.dgram_send_buf(data) {
                Ok(()) => Ok(true),
                // The send queue is full: dropped, as datagrams may be.
                Err(quiche::Error::Done) => Ok(false),
                Err(quiche::Error::InvalidState) => Err(DatagramError::Disabled),
                Err(quiche::Error::BufferTooShort) => Err(DatagramError::TooLarge { size, max }),
                Err(e) => Err(DatagramError::ConnectionLost(engine(e))),
            }
        })?;
        if r {
            self.inner.counters.add_datagram_sent(size as u64);
        }
        Ok(())
    }

    async fn recv_datagram(&self) -> Result<Bytes, DatagramError> {
        loop {
            let mut notified = pin!(self.inner.datagram_ready.notified());
            notified.as_mut().enable();
            {
                let mut st = self.inner.state.lock();
                if !st.datagrams {
                    return Err(DatagramError::Disabled);
                }
                match st.conn.dgram_recv_buf() {
                    Ok(d) => {
                        drop(st);
                        self.inner.counters.add_datagram_received(d.len() as u64);
                        return Ok(d);
                    }
                    Err(_) => {
                        if let Some(e) = &st.close {
                            return Err(DatagramError::ConnectionLost(e.clone()));
                        }
                    }
                }
            }
            notified.await;
        }
    }

    fn max_datagram_size(&self) -> Option<usize> {
        let st = self.inner.state.lock();
        if !st.datagrams || st.close.is_some() {
            return None;
        }
        st.conn.dgram_max_writable_len()
    }

    fn close(&self, code: u64, reason: &[u8]) {
        self.inner.close_app(code, reason);
    }

    async fn closed(&self) -> ConnectionError {
        loop {
            let mut notified = pin!(self.inner.state_changed.notified());
            notified.as_mut().enable();
            if let Some(e) = &self.inner.state.lock().close {
                return e.clone();
            }
            notified.await;
        }
    }

    fn close_reason(&self) -> Option<ConnectionError> {
        self.inner.state.lock().close.clone()
    }

    fn stats(&self) -> ConnectionStats {
        let st = self.inner.state.lock();
        let q = st.conn.stats();
        let mut s = ConnectionStats::default();
        if let Some(p) = st
            .conn
            .path_stats()
            .find(|p| p.active)
            .or_else(|| st.conn.path_stats().next())
        {
            s.rtt = p.rtt;
            s.min_rtt = p.min_rtt;
            s.congestion_window = p.cwnd as u64;
            s.path_mtu = u16::try_from(p.pmtu).unwrap_or(u16::MAX);
        }
        if s.path_mtu == 0 {
            s.path_mtu = u16::try_from(st.conn.max_send_udp_payload_size()).unwrap_or(u16::MAX);
        }
        s.udp_datagrams_sent = st.io.datagrams_sent;
        s.udp_datagrams_received = st.io.datagrams_received;
        s.udp_bytes_sent = st.io.bytes_sent;
        s.udp_bytes_received = st.io.bytes_received;
        s.packets_lost = q.lost as u64;
        s.bytes_lost = q.lost_bytes;
        drop(st);
        self.inner.counters.fill(&mut s);
        s
    }

    fn remote_addr(&self) -> SocketAddr {
        self.inner.state.lock().peer
    }

    fn side(&self) -> Side {
        self.inner.side
    }

    fn alpn(&self) -> Option<Vec<u8>> {
        let st = self.inner.state.lock();
        let proto = st.conn.application_proto();
        (!proto.is_empty()).then(|| proto.to_vec())
    }

    fn peer_identity(&self) -> Option<Vec<CertificateDer<'static>>> {
        let st = self.inner.state.lock();
        let chain = st.conn.peer_cert_chain()?;
        Some(
            chain
                .into_iter()
                .map(|der| CertificateDer::from(der.to_vec()))
                .collect(),
        )
    }

    fn export_keying_material(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), Error> {
        // BoringSSL's own RFC 8446 section 7.5 exporter, reached through quiche's
        // `AsMut<SslRef>`; its API takes the label as text.
        let label = std::str::from_utf8(label).map_err(|_| {
            Error::Tls("keying material export: BoringSSL takes UTF-8 labels only".into())
        })?;
        let mut st = self.inner.state.lock();
        if !st.established {
            return Err(Error::Tls(
                "keying material export: the handshake is not complete".into(),
            ));
        }
        let ssl: &mut boring::ssl::SslRef = st.conn.as_mut();
        ssl.export_keying_material(out, label, Some(context))
            .map_err(|e| Error::Tls(format!("keying material export failed: {e}")))
    }

    fn stable_id(&self) -> u64 {
        self.inner.id
    }
}
