//! The endpoint driver: one tokio task per endpoint that owns the UDP socket and moves
//! every packet of every connection of the endpoint.
//!
//! Each turn of its loop:
//! 1. picks up what the application did: new dials, connections with queued data (the
//!    "dirty" list), an endpoint close;
//! 2. runs expired timers: quiche's `on_timeout()` (loss detection, idle timeout,
//!    draining), keep-alive PINGs, handshake deadlines and paced packets;
//! 3. services every connection touched so far: asks quiche what changed and wakes the
//!    waiting handles ([`ConnState::after_io`]), then *flushes*: pulls packets with
//!    `send()` into one buffer, in segments of the path's maximum UDP payload, and hands
//!    each run of equal-sized packets to the same peer to the kernel as one GSO send;
//! 4. sleeps until the socket is readable, the application wakes it, or the earliest
//!    timer; on readability it drains the socket with `recvmmsg` (and GRO), routing each
//!    datagram by destination connection ID and feeding it to `conn.recv()`.
//!
//! Locking: the driver locks one connection at a time and never across an `await`; the
//! only `await`s are the socket (when the kernel send buffer is full) and the wait above.
//! Buffers are allocated once per endpoint: the receive buffer, the send buffer, the
//! lists reused every turn; routing builds no owned connection IDs.
//!
//! Pacing: quiche stamps each packet with `SendInfo.at`. Its Reno and CUBIC set it to
//! "now" (quiche 0.30 has no pacer for them); BBRv2 paces. A packet whose `at` is
//! further ahead than quiche's `max_release_into_future()` (1/8 of the smoothed RTT,
//! 1-5 ms) is held back, ends the GSO batch, and goes out when a timer for `at` fires;
//! closer ones are sent at once. The kernel is not asked to pace (SO_TXTIME needs the
//! `fq`/`etf` qdisc and quinn-udp has no transmit-time support); tokio's millisecond
//! timer is the resolution.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use quinn_udp::RecvMeta;
use stoq_core::{ConnectionError, Side, TransportConfig};
use tracing::{debug, trace, warn};

use crate::connection::{BytesFactory, CidKey, ConnShared, Events, Held, NewConn, LOCAL_CID_LEN};
use crate::endpoint::{random_cid, EndpointShared, ACCEPT_QUEUE};
use crate::errors::close_error;
use crate::socket::Socket;

/// GSO batches one connection may send per turn before others get theirs.
const FLUSH_BUDGET: usize = 16;

/// recvmmsg calls (each up to 8 GRO slots, about 350 packets) per turn before the driver
/// services connections and sends again. Small, so acknowledgements leave promptly: 16
/// let the kernel queue fill and tripled the RTT on the loopback bulk benchmark (2.6-2.8
/// Gbit/s, RTT 3.6-4.7 ms), 2 gave 4.2-4.3 Gbit/s at 0.4-0.7 ms, 1 was no better.
const RECV_BUDGET: usize = 2;

/// RFC 9000 section 14.1: a server discards Initial packets in datagrams smaller than
/// this, and answers version negotiation only to datagrams at least this large.
const MIN_INITIAL_DATAGRAM: usize = 1200;

/// RFC 9000 section 7.2: a client's first destination connection ID has at least 8 bytes.
const MIN_INITIAL_DCID: usize = 8;

/// QUIC transport error CONNECTION_REFUSED (RFC 9000 section 20.1).
const CONNECTION_REFUSED: u64 = 0x2;

enum Wake {
    Readable,
    Other,
    SocketFailed(std::io::Error),
}

/// One endpoint's driver.
pub(crate) struct Driver {
    socket: Socket,
    shared: Arc<EndpointShared>,
    /// quiche's server configuration, if this endpoint accepts.
    server_config: Option<quiche::Config>,
    datagrams: bool,
    keep_alive: Option<Duration>,
    handshake_timeout: Duration,
    conns: HashMap<u64, Arc<ConnShared>>,
    cids: HashMap<CidKey, u64>,
    timers: BTreeSet<(Instant, u64)>,
    touched: Vec<Arc<ConnShared>>,
    touched_ids: HashSet<u64>,
    scratch: Vec<Arc<ConnShared>>,
    wakers: Vec<Waker>,
    recv_buf: Vec<u8>,
    recv_slot: usize,
    metas: Vec<RecvMeta>,
    send_buf: Vec<u8>,
    close_done: Option<tokio::sync::oneshot::Sender<()>>,
    drop_handled: bool,
}

impl Driver {
    pub(crate) fn new(
        socket: Socket,
        shared: Arc<EndpointShared>,
        server_config: Option<quiche::Config>,
        cfg: &TransportConfig,
    ) -> Driver {
        let (recv_slot, slots) = socket.recv_layout(cfg);
        // Room for the largest GSO batch of the largest payload this endpoint sends.
        let payload = usize::from(cfg.max_udp_payload);
        let send_len = payload * socket.max_segments(payload).max(1);
        Driver {
            server_config,
            datagrams: cfg.datagrams.enabled,
            keep_alive: cfg.keep_alive_interval,
            handshake_timeout: cfg.connect_timeout,
            conns: HashMap::new(),
            cids: HashMap::new(),
            timers: BTreeSet::new(),
            touched: Vec::new(),
            touched_ids: HashSet::new(),
            scratch: Vec::new(),
            wakers: Vec::new(),
            recv_buf: vec![0; recv_slot * slots],
            recv_slot,
            metas: vec![RecvMeta::default(); slots],
            send_buf: vec![0; send_len.max(payload)],
            close_done: None,
            drop_handled: false,
            shared,
            socket,
        }
    }

    /// Runs until the endpoint is dropped and its last connection has ended.
    pub(crate) async fn run(mut self) {
        let failure = loop {
            let now = Instant::now();
            self.collect_new();
            self.collect_dirty();
            self.handle_close_request();
            self.handle_drop();
            self.fire_timers(now);
            self.service().await;
            if let Some(done) = self.close_done.take() {
                let _ = done.send(());
            }
            if self.shared.dropped.load(Relaxed) && self.conns.is_empty() && self.touched.is_empty()
            {
                break None;
            }
            let deadline = self.timers.first().map(|(t, _)| *t);
            let wake = tokio::select! {
                biased;
                r = self.socket.io.readable() => match r {
                    Ok(()) => Wake::Readable,
                    Err(e) => Wake::SocketFailed(e),
                },
                _ = self.shared.wake.notified() => Wake::Other,
                _ = sleep_until(deadline) => Wake::Other,
            };
            match wake {
                Wake::Readable => self.receive(),
                Wake::Other => {}
                Wake::SocketFailed(e) => break Some(e),
            }
        };
        self.shared.driver_gone.store(true, Relaxed);
        if let Some(e) = failure {
            warn!(local = %self.socket.local, error = %e, "quiche endpoint socket failed");
            let err =
                ConnectionError::Unreachable(format!("the endpoint's UDP socket failed: {e}"));
            for c in self.conns.values() {
                c.with_state(|st, wakers, ev| st.set_closed(err.clone(), wakers, ev));
            }
        }
        self.shared.accept_ready.notify_waiters();
        debug!(local = %self.socket.local, "quiche endpoint driver finished");
    }

    fn touch(&mut self, c: &Arc<ConnShared>) {
        if self.touched_ids.insert(c.id) {
            self.touched.push(c.clone());
        }
    }

    /// Registers connections the application dialled.
    fn collect_new(&mut self) {
        let mut new = std::mem::take(&mut self.scratch);
        self.shared.take_new(&mut new);
        for c in new.drain(..) {
            let scid = c.state.lock().scid;
            self.cids.insert(scid, c.id);
            self.conns.insert(c.id, c.clone());
            self.shared.counters.open.fetch_add(1, Relaxed);
            self.touch(&c);
        }
        self.scratch = new;
    }

    /// Connections the application queued data or commands on.
    fn collect_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.scratch);
        self.shared.take_dirty(&mut dirty);
        for c in dirty.drain(..) {
            if self.conns.contains_key(&c.id) {
                self.touch(&c);
            } else {
                c.clear_dirty();
            }
        }
        self.scratch = dirty;
    }

    /// `Transport::close`: every connection is closed with the code and reason.
    fn handle_close_request(&mut self) {
        let Some(req) = self.shared.close_request.lock().take() else {
            return;
        };
        self.shared.accept_queue.lock().clear();
        let conns: Vec<_> = self.conns.values().cloned().collect();
        for c in conns {
            let mut ev = Events::default();
            {
                let mut st = c.state.lock();
                st.close_app(req.code, &req.reason, &mut self.wakers, &mut ev, |_, _| {
                    ConnectionError::EndpointClosed
                });
            }
            self.wake_all(&c, &ev);
            self.touch(&c);
        }
        self.close_done = Some(req.done);
    }

    /// The `Transport` was dropped: connections nobody accepted are closed.
    fn handle_drop(&mut self) {
        if self.drop_handled || !self.shared.dropped.load(Relaxed) {
            return;
        }
        self.drop_handled = true;
        let queued: Vec<_> = self.shared.accept_queue.lock().drain(..).collect();
        for c in queued {
            let mut ev = Events::default();
            {
                let mut st = c.state.lock();
                st.close_app(0, b"", &mut self.wakers, &mut ev, |_, _| {
                    ConnectionError::EndpointClosed
                });
            }
            self.wake_all(&c, &ev);
            self.touch(&c);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(c) = self.conns.get(&id).cloned() else {
                continue;
            };
            {
                let mut st = c.state.lock();
                st.io.timer = None;
                if st.conn.timeout_instant().is_some_and(|t| t <= now) {
                    st.conn.on_timeout();
                }
                if let Some(deadline) = st.handshake_deadline {
                    if deadline <= now && !st.established {
                        st.handshake_deadline = None;
                        st.start_close(false, CONNECTION_REFUSED, b"handshake timed out", now);
                    }
                }
                if let (true, None, Some(interval)) =
                    (st.established, st.close.as_ref(), st.keep_alive)
                {
                    if now >= st.io.last_tx + interval {
                        // A PING: the peer acknowledges it, which keeps both idle
                        // timers from expiring.
                        let _ = st.conn.send_ack_eliciting();
                    }
                }
            }
            self.touch(&c);
        }
    }

    /// Services every touched connection: events, packets out, timer, removal.
    async fn service(&mut self) {
        let mut i = 0;
        while i < self.touched.len() {
            let c = self.touched[i].clone();
            self.service_one(&c).await;
            i += 1;
        }
        self.touched.clear();
        self.touched_ids.clear();
    }

    async fn service_one(&mut self, c: &Arc<ConnShared>) {
        c.clear_dirty();
        let mut ev = Events::default();
        {
            let mut st = c.state.lock();
            st.after_io(&mut self.wakers, &mut ev);
            st.progress_deferred_close(Instant::now());
        }
        if ev.established_now {
            self.on_established(c, &mut ev);
        }
        self.flush(c).await;
        let removed = {
            let mut st = c.state.lock();
            st.after_io(&mut self.wakers, &mut ev);
            let stuck = st.closing_stuck(Instant::now());
            if stuck {
                warn!(peer = %st.peer, side = ?st.side, "quiche did not finish closing a connection in time; forgetting it");
            }
            if st.conn.is_closed() || st.abandoned || stuck {
                if st.close.is_none() {
                    let side = st.side;
                    let e = close_error(&mut st.conn, side)
                        .unwrap_or_else(|| ConnectionError::Engine("connection discarded".into()));
                    st.set_closed(e, &mut self.wakers, &mut ev);
                }
                if let Some(t) = st.io.timer.take() {
                    self.timers.remove(&(t, c.id));
                }
                self.cids.remove(&st.scid);
                if let Some(odcid) = st.odcid {
                    self.cids.remove(&odcid);
                }
                if st.side == Side::Server && !st.established {
                    self.shared
                        .counters
                        .handshake_failures
                        .fetch_add(1, Relaxed);
                    warn!(peer = %st.peer, error = ?st.close, "incoming quiche handshake failed");
                }
                true
            } else {
                self.update_timer(c.id, &mut st);
                false
            }
        };
        if removed {
            self.conns.remove(&c.id);
            self.shared.counters.open.fetch_sub(1, Relaxed);
        }
        self.wake_all(c, &ev);
    }

    fn wake_all(&mut self, c: &ConnShared, ev: &Events) {
        for w in self.wakers.drain(..) {
            w.wake();
        }
        c.notify(ev);
    }

    /// A handshake completed: server connections go to the accept queue.
    fn on_established(&mut self, c: &Arc<ConnShared>, ev: &mut Events) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let mut st = c.state.lock();
            let ssl: &mut boring::ssl::SslRef = st.conn.as_mut();
            let cipher = ssl.current_cipher().map(|c| c.name()).unwrap_or("?");
            let group = ssl.curve_name().unwrap_or("?");
            debug!(side = ?c.side, cipher, group, "quiche handshake complete");
        }
        if c.side != Side::Server {
            return;
        }
        let refused = {
            let mut queue = self.shared.accept_queue.lock();
            if self.shared.closing.load(Relaxed)
                || self.shared.dropped.load(Relaxed)
                || queue.len() >= ACCEPT_QUEUE
            {
                true
            } else {
                queue.push_back(c.clone());
                false
            }
        };
        if refused {
            let mut st = c.state.lock();
            st.start_close(
                false,
                CONNECTION_REFUSED,
                b"not accepting connections",
                Instant::now(),
            );
            st.set_closed(ConnectionError::EndpointClosed, &mut self.wakers, ev);
        } else {
            self.shared.counters.accepted.fetch_add(1, Relaxed);
            self.shared.accept_ready.notify_waiters();
        }
    }

    fn update_timer(&mut self, id: u64, st: &mut crate::connection::ConnState) {
        let mut next = st.conn.timeout_instant();
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(h) = &st.io.held {
            earliest(h.at);
        }
        if let (true, None, Some(interval)) = (st.established, st.close.as_ref(), st.keep_alive) {
            earliest(st.io.last_tx + interval);
        }
        if let Some(d) = st.handshake_deadline {
            earliest(d);
        }
        if let Some(d) = &st.deferred_close {
            earliest(d.deadline);
        }
        if let Some(d) = st.closing_deadline {
            if !st.conn.is_draining() {
                earliest(d);
            }
        }
        if next != st.io.timer {
            if let Some(old) = st.io.timer {
                self.timers.remove(&(old, id));
            }
            if let Some(t) = next {
                self.timers.insert((t, id));
            }
            st.io.timer = next;
        }
    }

    /// Sends everything quiche has for `c` now, in GSO batches.
    async fn flush(&mut self, c: &Arc<ConnShared>) {
        for _ in 0..FLUSH_BUDGET {
            let now = Instant::now();
            let (len, to, segment, more) = {
                let mut st = c.state.lock();
                let seg = st.conn.max_send_udp_payload_size().min(self.send_buf.len());
                let max_segs = self.socket.max_segments(seg).min(self.send_buf.len() / seg);
                let horizon = now + st.conn.max_release_into_future();
                let mut len = 0;
                let mut segs = 0;
                let mut to = None;
                let mut more = true;
                let mut closed_batch = false;
                // A packet held for pacing goes first, once its time has come.
                if let Some(h) = &st.io.held {
                    if h.at > horizon {
                        more = false;
                        closed_batch = true;
                    } else {
                        let h = st.io.held.take().expect("checked above");
                        self.send_buf[..h.len].copy_from_slice(&st.io.held_buf[..h.len]);
                        len = h.len;
                        segs = 1;
                        to = Some(h.to);
                        closed_batch = h.len < seg;
                    }
                }
                while !closed_batch && segs < max_segs {
                    let out = &mut self.send_buf[len..len + seg];
                    match st.conn.send(out) {
                        Ok((n, info)) => {
                            if st.closing_deadline.is_some() {
                                st.closing_sent += 1;
                            }
                            st.io.datagrams_sent += 1;
                            st.io.bytes_sent += n as u64;
                            let paced = info.at > horizon;
                            if paced || to.is_some_and(|t| t != info.to) {
                                // Cannot join this batch: keep it for later.
                                st.io.held_buf.clear();
                                st.io
                                    .held_buf
                                    .extend_from_slice(&self.send_buf[len..len + n]);
                                st.io.held = Some(Held {
                                    len: n,
                                    to: info.to,
                                    at: info.at,
                                });
                                more = !paced;
                                break;
                            }
                            to = Some(info.to);
                            len += n;
                            segs += 1;
                            // Only the last datagram of a GSO batch may be short.
                            if n < seg {
                                break;
                            }
                        }
                        Err(quiche::Error::Done) => {
                            more = false;
                            break;
                        }
                        Err(e) => {
                            trace!(error = ?e, "quiche send failed");
                            more = false;
                            break;
                        }
                    }
                }
                if segs > 0 {
                    st.io.last_tx = now;
                }
                (len, to, (segs > 1).then_some(seg), more)
            };
            if let Some(to) = to {
                self.socket.send(&self.send_buf[..len], to, segment).await;
            }
            if !more {
                return;
            }
        }
        // Budget spent with more to send: come back next turn, after the others.
        c.mark_dirty();
    }

    /// Drains the socket.
    fn receive(&mut self) {
        let mut buf = std::mem::take(&mut self.recv_buf);
        let mut metas = std::mem::take(&mut self.metas);
        for _ in 0..RECV_BUDGET {
            let n = match self.socket.try_recv(&mut buf, self.recv_slot, &mut metas) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    // E.g. an ICMP error reported on the socket; nothing to do but go on.
                    debug!(error = %e, "UDP receive failed");
                    break;
                }
            };
            let now = Instant::now();
            for (i, meta) in metas.iter().take(n).enumerate() {
                let from = Socket::normalise(meta.addr);
                let start = i * self.recv_slot;
                let data = &mut buf[start..start + meta.len.min(self.recv_slot)];
                let stride = if meta.stride == 0 {
                    data.len().max(1)
                } else {
                    meta.stride
                };
                for datagram in data.chunks_mut(stride) {
                    self.datagram(datagram, from, now);
                }
            }
        }
        self.recv_buf = buf;
        self.metas = metas;
    }

    /// Routes one datagram by destination connection ID.
    fn datagram(&mut self, datagram: &mut [u8], from: std::net::SocketAddr, now: Instant) {
        let Some(dcid) = dcid_of(datagram) else {
            return;
        };
        let info = quiche::RecvInfo {
            from,
            to: self.socket.local,
        };
        if let Some(id) = self.cids.get(&CidKey::new(dcid)) {
            let Some(c) = self.conns.get(id) else {
                return;
            };
            {
                let mut st = c.state.lock();
                st.io.datagrams_received += 1;
                st.io.bytes_received += datagram.len() as u64;
                // Coalesced packets go to quiche one at a time: quiche skips the rest
                // of a datagram once one packet in it cannot be decrypted (e.g. a
                // Handshake packet after the handshake keys were discarded, coalesced
                // with the 1-RTT packet that carries a CONNECTION_CLOSE).
                // A 1-RTT packet counts as a sign of confirmation only in a datagram
                // that arrives after the handshake completed: a server may send 1-RTT
                // packets (0.5-RTT data) with its handshake flight, before it has the
                // client's Finished.
                let was_established = st.conn.is_established();
                let mut rest = datagram;
                while !rest.is_empty() {
                    let n = coalesced_len(rest).unwrap_or(rest.len());
                    let (packet, tail) = rest.split_at_mut(n);
                    // The header form bit is not header-protected: read it before quiche
                    // decrypts the packet in place.
                    let short = packet[0] & 0x80 == 0;
                    match st.conn.recv(packet, info) {
                        Ok(_) => {
                            if short && was_established {
                                st.one_rtt_received = true;
                            }
                        }
                        Err(quiche::Error::Done) => {}
                        Err(e) => trace!(error = ?e, "quiche dropped a packet"),
                    }
                    rest = tail;
                }
            }
            if self.touched_ids.insert(c.id) {
                self.touched.push(c.clone());
            }
            return;
        }
        self.unknown(datagram, info, now);
    }

    /// A datagram for no known connection: maybe a new one (server), maybe version
    /// negotiation; anything else is dropped.
    fn unknown(&mut self, datagram: &mut [u8], info: quiche::RecvInfo, now: Instant) {
        // Short headers for unknown IDs (stale or garbage): dropped. A stateless reset
        // could answer them; this endpoint issues none.
        if datagram[0] & 0x80 == 0 || datagram.len() < MIN_INITIAL_DATAGRAM {
            return;
        }
        if self.server_config.is_none()
            || self.shared.closing.load(Relaxed)
            || self.shared.dropped.load(Relaxed)
        {
            return;
        }
        let Ok(hdr) = quiche::Header::from_slice(datagram, LOCAL_CID_LEN) else {
            return;
        };
        if !quiche::version_is_supported(hdr.version) {
            let mut out = [0u8; 128];
            if let Ok(n) = quiche::negotiate_version(&hdr.scid, &hdr.dcid, &mut out) {
                self.socket.try_send_now(&out[..n], info.from);
            }
            return;
        }
        if hdr.ty != quiche::Type::Initial || hdr.dcid.as_ref().len() < MIN_INITIAL_DCID {
            return;
        }
        let scid = random_cid();
        let Some(config) = self.server_config.as_mut() else {
            return;
        };
        let mut conn = match quiche::accept_with_buf_factory::<BytesFactory>(
            &quiche::ConnectionId::from_ref(&scid),
            None,
            self.socket.local,
            info.from,
            config,
        ) {
            Ok(c) => c,
            Err(e) => {
                debug!(error = ?e, "quiche refused a new connection");
                return;
            }
        };
        let len = datagram.len() as u64;
        if let Err(e) = conn.recv(datagram, info) {
            // An Initial that does not decrypt: noise, or an attack. No state kept.
            trace!(error = ?e, from = %info.from, "dropped an invalid Initial");
            return;
        }
        let odcid = CidKey::new(hdr.dcid.as_ref());
        let shared = ConnShared::new(
            self.shared.clone(),
            NewConn {
                conn,
                side: Side::Server,
                peer: info.from,
                scid: CidKey::new(&scid),
                odcid: Some(odcid),
                datagrams: self.datagrams,
                keep_alive: self.keep_alive,
                handshake_deadline: Some(now + self.handshake_timeout),
            },
        );
        {
            let mut st = shared.state.lock();
            st.io.datagrams_received = 1;
            st.io.bytes_received = len;
        }
        self.cids.insert(CidKey::new(&scid), shared.id);
        self.cids.insert(odcid, shared.id);
        self.conns.insert(shared.id, shared.clone());
        self.shared.counters.open.fetch_add(1, Relaxed);
        self.touch(&shared);
    }
}

/// The destination connection ID of a QUIC packet, read without allocating: after the
/// first byte for short headers (always [`LOCAL_CID_LEN`] bytes, the length this
/// endpoint issues), from its length prefix for long headers (RFC 8999 invariants).
fn dcid_of(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if first & 0x80 == 0 {
        datagram.get(1..1 + LOCAL_CID_LEN)
    } else {
        let len = usize::from(*datagram.get(5)?);
        datagram.get(6..6 + len)
    }
}

/// The length of the first packet of a datagram when it is a long-header packet that
/// other packets follow (RFC 9000 section 12.2), from its Length field; `None` for a
/// short header, a Retry or version negotiation (which fill the datagram), a packet that
/// fills the datagram, or anything malformed (quiche then judges the whole datagram).
fn coalesced_len(d: &[u8]) -> Option<usize> {
    let first = *d.first()?;
    if first & 0x80 == 0 || d.get(1..5)? == [0, 0, 0, 0] {
        return None;
    }
    let mut off = 5;
    off += 1 + usize::from(*d.get(off)?);
    off += 1 + usize::from(*d.get(off)?);
    match (first & 0x30) >> 4 {
        // Initial: a token precedes the length.
        0 => {
            let (token, n) = varint(d.get(off..)?)?;
            off = off
                .checked_add(n)?
                .checked_add(usize::try_from(token).ok()?)?;
        }
        // 0-RTT and Handshake.
        1 | 2 => {}
        // Retry has no Length field.
        _ => return None,
    }
    let (len, n) = varint(d.get(off..)?)?;
    let end = off
        .checked_add(n)?
        .checked_add(usize::try_from(len).ok()?)?;
    (end < d.len()).then_some(end)
}

/// A QUIC variable-length integer and its encoded size (RFC 9000 section 16).
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let n = 1usize << (first >> 6);
    let bytes = b.get(..n)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &bytes[1..] {
        v = (v << 8) | u64::from(x);
    }
    Some((v, n))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcid_parsing_never_panics() {
        assert_eq!(dcid_of(&[]), None);
        assert_eq!(dcid_of(&[0x40]), None);
        assert_eq!(dcid_of(&[0xc0, 0, 0, 0, 1]), None);
        assert_eq!(dcid_of(&[0xc0, 0, 0, 0, 1, 20, 1, 2, 3]), None);
        assert_eq!(
            dcid_of(&[0xc0, 0, 0, 0, 1, 2, 7, 8, 9]),
            Some(&[7u8, 8][..])
        );
        let mut short = vec![0x40];
        short.extend_from_slice(&[5; LOCAL_CID_LEN]);
        assert_eq!(dcid_of(&short), Some(&[5u8; LOCAL_CID_LEN][..]));
    }

    #[test]
    fn coalesced_packets_are_split_by_length() {
        // Handshake packet: DCID 2, SCID 1, length 3 (1-byte varint), then a short one.
        let mut d = vec![0xe0, 0, 0, 0, 1, 2, 9, 9, 1, 8, 3, 0xaa, 0xbb, 0xcc];
        let first = d.len();
        d.extend_from_slice(&[0x40, 1, 2, 3]);
        assert_eq!(coalesced_len(&d), Some(first));
        // Alone in its datagram: not split.
        assert_eq!(coalesced_len(&d[..first]), None);
        // Initial with a 2-byte token and a 2-byte varint length of 4.
        let mut i = vec![0xc0, 0, 0, 0, 1, 1, 7, 0, 2, 5, 5, 0x40, 4, 1, 2, 3, 4];
        let first = i.len();
        i.extend_from_slice(&[0x41, 0]);
        assert_eq!(coalesced_len(&i), Some(first));
        // Short header, Retry, version negotiation and garbage: never split.
        assert_eq!(coalesced_len(&[0x40, 1, 2]), None);
        assert_eq!(coalesced_len(&[0xf0, 0, 0, 0, 1, 0, 0, 1, 2, 3]), None);
        assert_eq!(coalesced_len(&[0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(coalesced_len(&[0xe0, 0, 0, 0, 1, 200]), None);
        assert_eq!(coalesced_len(&[0xe0, 0, 0, 0, 1, 0, 0, 0xff]), None);
        assert_eq!(varint(&[0x25]), Some((37, 1)));
        assert_eq!(varint(&[0x7b, 0xbd]), Some((15293, 2)));
        assert_eq!(varint(&[0x9d, 0x7f, 0x3e, 0x7d]), Some((494878333, 4)));
    }
}
