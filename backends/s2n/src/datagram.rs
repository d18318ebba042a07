//! Unreliable datagrams (RFC 9221) through s2n-quic's datagram provider.
//!
//! STOQ plugs its own datagram endpoint into s2n-quic rather than the default one
//! (`s2n_quic_core::datagram::default`), because the default
//! * drops a queued datagram that does not fit into the packet being built, even when the
//!   next packet would have room for it (`default.rs`, `Sender::on_transmit`), so a
//!   maximum-size datagram is lost whenever an ACK frame shares its packet, and
//! * needs `datagram_mut` (the connection lock) for every send and receive.
//!
//! Here the queues live in a [`DatagramShared`] that the STOQ connection reaches directly:
//! `send_datagram` appends and wakes the connection with the waker s2n-quic hands to the
//! provider; `recv_datagram` waits on a [`Notify`] that the receiver signals per arrival.
//! A datagram that does not fit the current packet waits for the next one, in which
//! datagrams are written first (s2n-quic alternates that priority per packet,
//! `s2n-quic-transport/src/transmission/application.rs`); only a datagram that does not
//! fit even there is dropped. [`max_datagram_size`] is computed so that never happens on
//! the current path.
//!
//! Queue limits count datagrams (`DatagramConfig`). When a queue is full the newest
//! datagram is dropped, on both sides.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use bytes::Bytes;
use s2n_quic::provider::datagram::{
    ConnectionInfo, Endpoint, Packet, PreConnectionInfo, ReceiveContext, Receiver, Sender,
};
use tokio::sync::Notify;

use crate::events::lock;

/// Bytes of a 1-RTT packet that are not frame payload, at most: the first byte, a
/// destination connection ID of up to 20 bytes (RFC 9000 section 17.3; the peer chooses
/// its length), a packet number of up to 4 bytes and the 16-byte AEAD tag.
const PACKET_OVERHEAD: usize = 1 + 20 + 4 + 16;

/// The largest datagram payload that fits into one packet of a path whose maximum UDP
/// payload is `path_mtu`, with a DATAGRAM frame carrying a length field (type byte plus
/// varint length).
pub(crate) fn max_datagram_payload(path_mtu: u16) -> usize {
    let space = usize::from(path_mtu).saturating_sub(PACKET_OVERHEAD);
    let varint = match space {
        0..=63 => 1,
        64..=16383 => 2,
        _ => 4,
    };
    space.saturating_sub(1 + varint)
}

/// State shared between s2n-quic's datagram callbacks and the STOQ connection.
#[derive(Debug)]
pub(crate) struct DatagramShared {
    state: Mutex<State>,
    /// `state.tx.len()`, readable without the lock (s2n-quic asks often).
    queued: AtomicUsize,
    arrived: Notify,
    /// Whether this side enabled datagrams.
    pub(crate) enabled: bool,
    /// The peer's `max_datagram_frame_size` limit on payloads (0: the peer does not accept
    /// datagrams).
    pub(crate) peer_max_payload: u64,
    send_capacity: usize,
    recv_capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    tx: VecDeque<Bytes>,
    rx: VecDeque<Bytes>,
    /// Wakes the connection so it asks `has_transmission_interest` again.
    waker: Option<Waker>,
    closed: bool,
    dropped_tx: u64,
    dropped_rx: u64,
}

/// Why a datagram could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// The connection has ended.
    Closed,
}

impl DatagramShared {
    fn new(enabled: bool, peer_max_payload: u64, send: usize, recv: usize, waker: Waker) -> Self {
        DatagramShared {
            state: Mutex::new(State {
                waker: Some(waker),
                ..State::default()
            }),
            queued: AtomicUsize::new(0),
            arrived: Notify::new(),
            enabled,
            peer_max_payload,
            send_capacity: send,
            recv_capacity: recv,
        }
    }

    /// A placeholder for a connection whose datagram state could not be reached (it had
    /// already ended).
    pub(crate) fn closed(enabled: bool) -> Self {
        let s = DatagramShared::new(enabled, 0, 1, 1, Waker::noop().clone());
        lock(&s.state).closed = true;
        s
    }

    /// Queues `data` for sending (dropping it if the send queue is full) and wakes the
    /// connection.
    pub(crate) fn send(&self, data: Bytes) -> Result<(), QueueError> {
        let waker = {
            let mut st = lock(&self.state);
            if st.closed {
                return Err(QueueError::Closed);
            }
            if st.tx.len() >= self.send_capacity {
                st.dropped_tx += 1;
                return Ok(());
            }
            st.tx.push_back(data);
            self.queued.store(st.tx.len(), Relaxed);
            st.waker.clone()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Waits for the next received datagram; `None` once the connection has ended.
    pub(crate) async fn recv(&self) -> Option<Bytes> {
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if let Some(d) = st.rx.pop_front() {
                    return Some(d);
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Queues a received datagram (dropping it if the receive queue is full) and wakes one
    /// waiting receiver.
    fn deliver(&self, datagram: &[u8]) {
        if !self.enabled {
            return;
        }
        {
            let mut st = lock(&self.state);
            if st.rx.len() >= self.recv_capacity {
                st.dropped_rx += 1;
                return;
            }
            st.rx.push_back(Bytes::copy_from_slice(datagram));
        }
        self.arrived.notify_one();
    }

    fn on_closed(&self) {
        lock(&self.state).closed = true;
        self.arrived.notify_waiters();
    }
}

/// STOQ's datagram provider for s2n-quic.
#[derive(Debug)]
pub(crate) struct DatagramEndpoint {
    pub(crate) enabled: bool,
    pub(crate) send_queue: usize,
    pub(crate) receive_queue: usize,
}

/// Payload limit STOQ advertises in `max_datagram_frame_size` (RFC 9221 recommends 65535).
const ADVERTISED_MAX: u64 = 65535;

impl Endpoint for DatagramEndpoint {
    type Sender = DatagramSender;
    type Receiver = DatagramReceiver;

    fn create_connection(&mut self, info: &ConnectionInfo) -> (DatagramSender, DatagramReceiver) {
        let shared = Arc::new(DatagramShared::new(
            self.enabled,
            info.max_datagram_payload,
            self.send_queue.max(1),
            self.receive_queue.max(1),
            info.waker.clone(),
        ));
        (
            DatagramSender {
                shared: shared.clone(),
            },
            DatagramReceiver { shared },
        )
    }

    fn max_datagram_frame_size(&self, _info: &PreConnectionInfo) -> u64 {
        // 0 leaves the transport parameter out: the peer may not send datagrams.
        if self.enabled {
            ADVERTISED_MAX
        } else {
            0
        }
    }
}

/// The sending half s2n-quic calls while building packets.
#[derive(Debug)]
pub(crate) struct DatagramSender {
    pub(crate) shared: Arc<DatagramShared>,
}

impl Sender for DatagramSender {
    fn on_transmit<P: Packet>(&mut self, packet: &mut P) {
        // Like s2n-quic's default: in packets where stream data has priority, datagrams
        // only fill what streams leave; the next packet puts datagrams first.
        if packet.has_pending_streams() && !packet.datagrams_prioritized() {
            return;
        }
        let mut st = lock(&self.shared.state);
        let mut written = false;
        while let Some(d) = st.tx.front() {
            if d.len() > packet.remaining_capacity() {
                if packet.datagrams_prioritized() && !written {
                    // Datagrams came first in this packet and it still does not fit: it
                    // never will on this path (the MTU shrank after it was queued).
                    st.tx.pop_front();
                    st.dropped_tx += 1;
                    continue;
                }
                break;
            }
            if packet.write_datagram(d).is_err() {
                // Larger than the peer's limit (checked before queueing) or than the
                // packet: retry in the next packet unless nothing else was written.
                if packet.datagrams_prioritized() && !written {
                    st.tx.pop_front();
                    st.dropped_tx += 1;
                    continue;
                }
                break;
            }
            written = true;
            st.tx.pop_front();
        }
        self.shared.queued.store(st.tx.len(), Relaxed);
    }

    fn has_transmission_interest(&self) -> bool {
        self.shared.queued.load(Relaxed) > 0
    }

    fn on_connection_error(&mut self, _error: s2n_quic::connection::Error) {
        self.shared.on_closed();
    }
}

/// The receiving half s2n-quic calls for each DATAGRAM frame.
#[derive(Debug)]
pub(crate) struct DatagramReceiver {
    pub(crate) shared: Arc<DatagramShared>,
}

impl Receiver for DatagramReceiver {
    fn on_datagram(&mut self, _context: &ReceiveContext<'_>, datagram: &[u8]) {
        self.shared.deliver(datagram);
    }

    fn on_connection_error(&mut self, _error: s2n_quic::connection::Error) {
        self.shared.on_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_payload_leaves_room_for_headers() {
        // 1452 - 41 = 1411 bytes of frame space; type byte and 2-byte length.
        assert_eq!(max_datagram_payload(1452), 1408);
        assert_eq!(max_datagram_payload(1200), 1156);
        assert_eq!(max_datagram_payload(40), 0);
    }

    #[tokio::test]
    async fn queues_drop_the_newest_and_close_wakes_receivers() {
        let s = Arc::new(DatagramShared::new(true, 1200, 2, 1, Waker::noop().clone()));
        s.send(Bytes::from_static(b"a")).unwrap();
        s.send(Bytes::from_static(b"b")).unwrap();
        s.send(Bytes::from_static(b"c")).unwrap();
        assert_eq!(lock(&s.state).tx.len(), 2);
        assert_eq!(lock(&s.state).dropped_tx, 1);
        s.deliver(b"x");
        s.deliver(b"y");
        assert_eq!(lock(&s.state).dropped_rx, 1);
        assert_eq!(s.recv().await.as_deref(), Some(&b"x"[..]));
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.recv().await }
        });
        tokio::task::yield_now().await;
        s.on_closed();
        assert_eq!(waiter.await.unwrap(), None);
        assert_eq!(s.send(Bytes::from_static(b"z")), Err(QueueError::Closed));
    }
}
