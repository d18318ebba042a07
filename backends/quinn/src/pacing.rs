//! Pacing at a STOQ controller's `pacing_rate`, between quinn and its UDP socket.
//!
//! quinn-proto paces every connection itself, at 1.25 × window / smoothed RTT; its
//! `Controller` trait has no pacing rate. A controller that paces below that (BBR sends at
//! about its bandwidth estimate while its window is twice the BDP) would otherwise fill the
//! bottleneck queue, which is what the emulated-path benchmark measured for STOQ's BBRv3
//! on quinn before this module: 36 ms of a 40 ms queue, against 6 ms on s2n-quic, which
//! honours the rate.
//!
//! [`PacedSocket`] wraps the endpoint's [`AsyncUdpSocket`] and holds each connection's
//! transmits back with a token bucket filled at its controller's rate:
//!
//! * quinn creates one [`UdpPoller`] per connection, in the same synchronous call (under
//!   its endpoint lock) in which quinn-proto builds that connection's controller.
//!   [`StoqControllerFactory`](crate::congestion::StoqControllerFactory) leaves the new
//!   controller's [`PacingRate`] in a thread-local slot and
//!   [`PacedSocket::create_io_poller`] takes it, so each poller knows its connection's
//!   rate. A controller built later on the connection's own driver (quinn-proto builds a
//!   new one when the peer migrates to another IP) is picked up by that connection's next
//!   `poll_writable`, which runs on the same thread right after.
//! * quinn's connection driver calls `poll_writable` and then, synchronously on the same
//!   thread, `try_send` for each transmit. `poll_writable` returns `Pending` (and arms a
//!   tokio timer) while the bucket is in debt; when it returns `Ready` it names its bucket
//!   in a second thread-local slot, and `try_send` charges the bytes it sent to that bucket.
//!
//! * A GSO batch (up to 10 datagrams, quinn-proto's own burst floor) is charged whole, so
//!   its datagrams leave up to one batch's pacing interval after quinn-proto stamped them,
//!   and that delay lands in the controller's RTT samples. Capping batches at about 1 ms of
//!   sending (2 datagrams at 1 MB/s, as Linux TCP sizes TSO bursts) was measured and
//!   rejected: on the emulated 50 Mbit/s path two STOQ BBRv3 flows on quinn shared worse
//!   with it (Jain's index 0.64-0.82 over 40 s, against 0.85-0.97 without).
//!
//! The hand-offs rely on those two orderings in quinn 0.11's `Connecting::new` and
//! `ConnectionDriver::drive_transmit`; the workspace pins quinn 0.11 and the conformance
//! contract `custom_pacing_rate_is_honoured` fails if they ever stop holding. A transmit
//! quinn sends outside a connection (stateless resets, version negotiation) is not paced.
//! No crate offers pacing for an `AsyncUdpSocket`, hence this module.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::time::{Instant, Sleep};

/// A connection's pacing rate in bytes per second, written by its controller adapter after
/// every callback and read by the pacer before every send. 0 means "no rate": quinn's own
/// pacer alone applies.
#[derive(Debug, Default)]
pub struct PacingRate(AtomicU64);

impl PacingRate {
    /// Publishes the controller's current rate (`None` = no rate).
    pub fn set(&self, bytes_per_second: Option<u64>) {
        self.0.store(bytes_per_second.unwrap_or(0), Relaxed);
    }

    /// The last published rate, bytes per second, or `None`.
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Relaxed) {
            0 => None,
            r => Some(r),
        }
    }
}

thread_local! {
    /// The rate of the controller quinn-proto built last on this thread, until a poller
    /// takes it.
    static BUILT: RefCell<Option<Arc<PacingRate>>> = const { RefCell::new(None) };
    /// The bucket of the poller that just said "writable" on this thread, for the
    /// `try_send` that follows.
    static SENDING: RefCell<Option<Arc<Bucket>>> = const { RefCell::new(None) };
}

/// Records the rate of a controller just built on this thread (called by the factory).
pub(crate) fn controller_built(rate: Arc<PacingRate>) {
    BUILT.with(|b| *b.borrow_mut() = Some(rate));
}

/// Forgets a built controller no poller took (called after each `connect`/`accept`, so a
/// handshake quinn refused after building its controller cannot hand that rate to an
/// unrelated connection later).
pub(crate) fn forget_built() {
    BUILT.with(|b| b.borrow_mut().take());
}

fn take_built() -> Option<Arc<PacingRate>> {
    BUILT.with(|b| b.borrow_mut().take())
}

/// The most a bucket holds, so an idle connection does not bank an unbounded burst: 2 ms
/// at the current rate (tokio's timer ticks in milliseconds, so a waiting sender may wake
/// up to 1 ms late and must not lose that time's credit), and at least
/// [`MIN_BURST_BYTES`].
const BURST: Duration = Duration::from_millis(2);
/// The smallest burst: a 10-segment GSO batch of 1,452-byte datagrams plus slack.
pub const MIN_BURST_BYTES: f64 = 16.0 * 1024.0;
/// One connection's token bucket. Tokens may go negative: a transmit is sent whole once the
/// bucket is out of debt and its size is charged after, so a GSO batch is never split.
#[derive(Debug)]
struct Bucket {
    rate: Mutex<Arc<PacingRate>>,
    state: Mutex<Tokens>,
}

#[derive(Debug)]
struct Tokens {
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn new(rate: Arc<PacingRate>) -> Self {
        Bucket {
            rate: Mutex::new(rate),
            state: Mutex::new(Tokens {
                tokens: 0.0,
                last: None,
            }),
        }
    }

    fn rate(&self) -> Option<u64> {
        self.rate.lock().unwrap_or_else(|e| e.into_inner()).get()
    }

    /// When the bucket will be out of debt at `rate`, or `None` if it is now.
    fn ready_at(&self, rate: u64, now: Instant) -> Option<Instant> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let rate = rate as f64;
        let cap = (rate * BURST.as_secs_f64()).max(MIN_BURST_BYTES);
        s.tokens = match s.last {
            Some(last) => (s.tokens + rate * (now - last).as_secs_f64()).min(cap),
            None => cap,
        };
        s.last = Some(now);
        if s.tokens >= 0.0 {
            None
        } else {
            Some(now + Duration::from_secs_f64(-s.tokens / rate))
        }
    }

    fn charge(&self, bytes: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.tokens -= bytes as f64;
    }
}

/// An [`AsyncUdpSocket`] that paces each connection at its STOQ controller's rate (see the
/// module documentation). Everything else is the wrapped socket's.
#[derive(Debug)]
pub struct PacedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
}

impl PacedSocket {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>) -> Arc<Self> {
        Arc::new(PacedSocket { inner })
    }
}

impl AsyncUdpSocket for PacedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(PacedPoller {
            inner: self.inner.clone().create_io_poller(),
            bucket: take_built().map(|r| Arc::new(Bucket::new(r))),
            sleep: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let bucket = SENDING.with(|s| s.borrow_mut().take());
        self.inner.try_send(transmit)?;
        if let Some(b) = bucket {
            b.charge(transmit.contents.len());
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// One connection's write-readiness: the bucket out of debt, then the socket's own.
struct PacedPoller {
    inner: Pin<Box<dyn UdpPoller>>,
    bucket: Option<Arc<Bucket>>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl fmt::Debug for PacedPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacedPoller")
            .field("inner", &self.inner)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl UdpPoller for PacedPoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rate) = take_built() {
            // A controller quinn-proto built on this connection's driver: a new path's.
            match &this.bucket {
                Some(b) => *b.rate.lock().unwrap_or_else(|e| e.into_inner()) = rate,
                None => this.bucket = Some(Arc::new(Bucket::new(rate))),
            }
        }
        if let Some(bucket) = &this.bucket {
            if let Some(rate) = bucket.rate() {
                loop {
                    let now = Instant::now();
                    let Some(at) = bucket.ready_at(rate, now) else {
                        break;
                    };
                    match &mut this.sleep {
                        Some(s) => s.as_mut().reset(at),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                    let sleep = this.sleep.as_mut().expect("just set");
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
        let ready = this.inner.as_mut().poll_writable(cx);
        if ready.is_ready() {
            let bucket = this.bucket.clone();
            SENDING.with(|s| *s.borrow_mut() = bucket);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_holds_to_the_rate() {
        let rate = Arc::new(PacingRate::default());
        rate.set(Some(1_000_000));
        let b = Bucket::new(rate);
        let t0 = Instant::now();
        // A fresh bucket is full: one burst goes at once.
        assert_eq!(b.ready_at(1_000_000, t0), None);
        b.charge(MIN_BURST_BYTES as usize + 10_000);
        // 10 kB of debt at 1 MB/s: 10 ms.
        let at = b.ready_at(1_000_000, t0).expect("in debt");
        let wait = at - t0;
        assert!(
            wait >= Duration::from_micros(9_900) && wait <= Duration::from_micros(10_100),
            "{wait:?}"
        );
        assert_eq!(b.ready_at(1_000_000, at), None);
    }

    #[test]
    fn idle_credit_is_capped() {
        let rate = Arc::new(PacingRate::default());
        let b = Bucket::new(rate);
        let t0 = Instant::now();
        assert_eq!(b.ready_at(1_000_000, t0), None);
        // A minute idle banks no more than the cap.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.ready_at(1_000_000, later), None);
        b.charge(MIN_BURST_BYTES as usize + 1_000);
        assert!(b.ready_at(1_000_000, later).is_some());
    }

    #[test]
    fn no_rate_means_none() {
        let r = PacingRate::default();
        assert_eq!(r.get(), None);
        r.set(Some(5));
        assert_eq!(r.get(), Some(5));
        r.set(None);
        assert_eq!(r.get(), None);
    }
}
