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
//!   [`StoqControllerFactory`](crate::congestion::StoqControllerFactory) registers the new
//!   controller's [`PacingRate`] under the tokio task that built it, and
//!   [`PacedSocket::create_io_poller`] takes the registration of the current task, so each
//!   poller knows its connection's rate.
//! * quinn-proto builds another controller when the peer migrates (to another IPv4
//!   address, or to any other IPv6 address or port), on the connection's own driver task;
//!   that connection's poller, polled by the same task, adopts it on its next
//!   `poll_writable`. The bucket keeps every controller it adopted (weakly: quinn-proto
//!   owns them) and paces at the rate written last, so a path validation that fails and
//!   brings the old path (and controller) back also brings its rate back. A registration
//!   nobody takes (a handshake quinn refused after building, a build in a task that is not a
//!   connection driver) is matched to no other task and dies with its controller.
//! * quinn's connection driver calls `poll_writable` and then, synchronously on the same
//!   thread, `try_send` for each transmit. `poll_writable` returns `Pending` (and arms a
//!   tokio timer) while the bucket is in debt; when it returns `Ready` it names its bucket
//!   in a thread-local slot, and `try_send` charges the bytes it sent to that bucket.
//! * A transmit is never held longer than [`MAX_HOLD`]: debt beyond that is forgiven. The
//!   pacer cannot tell ACK-only packets, loss probes or a CONNECTION_CLOSE (which
//!   quinn-proto itself never paces) from data, so at a very low rate it would otherwise
//!   hold them behind a data batch for seconds. Such a packet can still wait up to twice
//!   [`MAX_HOLD`] (behind a data transmit quinn already holds, then for its own turn), and
//!   the price is that a rate below one transmit per [`MAX_HOLD`] is not enforced: about
//!   290 kB/s with 10-datagram GSO batches.
//! * A GSO batch (up to 10 datagrams, quinn-proto's own burst floor) is charged whole, so
//!   its datagrams leave up to one batch's pacing interval after quinn-proto stamped them,
//!   and that delay lands in the controller's RTT samples. Capping batches at about 1 ms of
//!   sending (2 datagrams at 1 MB/s, as Linux TCP sizes TSO bursts) was measured and
//!   rejected: on the emulated 50 Mbit/s path two STOQ BBRv3 flows on quinn shared worse
//!   with it (Jain's index 0.64-0.82 over 40 s, against 0.85-0.97 without).
//!
//! Limits: the hand-offs rely on those orderings in quinn 0.11's `Connecting::new` and
//! `ConnectionDriver::drive_transmit` (the workspace pins quinn 0.11; the conformance
//! contract `custom_pacing_rate_is_honoured` checks a client connection whose rate changes
//! mid-transfer, `tests/pacing.rs` a server connection; adoption on migration and the
//! revert are covered by unit tests of the bucket only). Only endpoints bound by
//! `QuinnTransport` register controllers: [`crate::transport_config`] alone builds unpaced
//! ones. A transmit quinn sends outside a connection (stateless resets, version
//! negotiation) is not paced. Rebinding the endpoint through [`quinn::Endpoint::rebind`]
//! (reachable via `QuinnTransport::quinn`) replaces the socket and every connection's
//! poller, which ends pacing for the connections alive then. A fresh or idle bucket lets
//! one burst of `max(2 ms at the rate, 16 KiB)` go at once. No crate offers pacing for an
//! `AsyncUdpSocket`, hence this module.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::time::{Instant, Sleep};

/// A controller's pacing rate in bytes per second, written by its adapter after every
/// callback and read by the pacer before every send; with the time of the last write, so a
/// bucket that knows several controllers of one connection follows the live one. A rate
/// of 0 means "no rate": quinn's own pacer alone applies.
#[derive(Debug, Default)]
pub struct PacingRate {
    rate: AtomicU64,
    /// Nanoseconds since [`EPOCH`] at the last write, plus one (0 = never written).
    written: AtomicU64,
}

/// The time base of [`PacingRate`]'s write stamps.
static EPOCH: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);

impl PacingRate {
    /// Publishes the controller's current rate (`None` = no rate), stamped with `now`, the
    /// time quinn gave the callback (`None`: the rate is stored without a new stamp).
    pub fn set(&self, bytes_per_second: Option<u64>, now: Option<std::time::Instant>) {
        self.rate.store(bytes_per_second.unwrap_or(0), Relaxed);
        if let Some(now) = now {
            let stamp = now.saturating_duration_since(*EPOCH).as_nanos() as u64 + 1;
            self.written.fetch_max(stamp, Relaxed);
        }
    }

    /// The last published rate, bytes per second, or `None`.
    pub fn get(&self) -> Option<u64> {
        match self.rate.load(Relaxed) {
            0 => None,
            r => Some(r),
        }
    }
}

/// Who built a controller: the tokio task, or the thread outside any task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Builder {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

impl Builder {
    fn current() -> Self {
        match tokio::task::try_id() {
            Some(id) => Builder::Task(id),
            None => Builder::Thread(std::thread::current().id()),
        }
    }
}

/// Controllers built and not yet adopted by a poller, by builder; [`PENDING_LEN`] lets the
/// per-poll check skip the lock when there are none.
static PENDING: LazyLock<Mutex<HashMap<Builder, Weak<PacingRate>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static PENDING_LEN: AtomicUsize = AtomicUsize::new(0);

fn pending() -> std::sync::MutexGuard<'static, HashMap<Builder, Weak<PacingRate>>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// The bucket of the poller that just said "writable" on this thread, for the
    /// `try_send` that follows.
    static SENDING: RefCell<Option<Arc<Bucket>>> = const { RefCell::new(None) };
}

/// Registers a controller just built by the current task (called by the factory).
pub(crate) fn controller_built(rate: &Arc<PacingRate>) {
    let mut p = pending();
    if p.len() >= 64 {
        // Builds no poller took (endpoints without a paced socket) go once their
        // controllers are gone.
        p.retain(|_, w| w.strong_count() > 0);
    }
    p.insert(Builder::current(), Arc::downgrade(rate));
    PENDING_LEN.store(p.len(), Relaxed);
}

/// Forgets what the current task built and no poller took (called after each
/// `connect`/`accept`: a handshake quinn refused after building its controller).
pub(crate) fn forget_built() {
    if PENDING_LEN.load(Relaxed) == 0 {
        return;
    }
    let mut p = pending();
    p.remove(&Builder::current());
    PENDING_LEN.store(p.len(), Relaxed);
}

/// Takes what the current task built, if it is still alive.
fn take_built() -> Option<Weak<PacingRate>> {
    if PENDING_LEN.load(Relaxed) == 0 {
        return None;
    }
    let mut p = pending();
    let taken = p.remove(&Builder::current());
    PENDING_LEN.store(p.len(), Relaxed);
    taken.filter(|w| w.strong_count() > 0)
}

/// The most a bucket holds, so an idle connection does not bank an unbounded burst: 2 ms
/// at the current rate (tokio's timer ticks in milliseconds, so a waiting sender may wake
/// up to 1 ms late and must not lose that time's credit), and at least
/// [`MIN_BURST_BYTES`].
const BURST: Duration = Duration::from_millis(2);
/// The smallest burst: a 10-segment GSO batch of 1,452-byte datagrams plus slack.
pub const MIN_BURST_BYTES: f64 = 16.0 * 1024.0;
/// The longest the pacer holds a transmit (see the module documentation).
pub const MAX_HOLD: Duration = Duration::from_millis(50);

/// The most a bucket holds at `rate` bytes per second ([`BURST`], [`MIN_BURST_BYTES`]).
fn burst(rate: f64) -> f64 {
    (rate * BURST.as_secs_f64()).max(MIN_BURST_BYTES)
}
/// One connection's token bucket. Tokens may go negative: a transmit is sent whole once the
/// bucket is out of debt and its size is charged after, so a GSO batch is never split.
#[derive(Debug)]
struct Bucket(Mutex<BucketState>);

#[derive(Debug)]
struct BucketState {
    /// The connection's controllers (current path, and earlier ones quinn-proto may go
    /// back to).
    rates: Vec<Weak<PacingRate>>,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn new(rate: Weak<PacingRate>) -> Self {
        Bucket(Mutex::new(BucketState {
            rates: vec![rate],
            tokens: 0.0,
            last: None,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BucketState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a controller built later for this connection (a new path's).
    fn adopt(&self, rate: Weak<PacingRate>) {
        let mut s = self.state();
        s.rates.retain(|w| w.strong_count() > 0);
        s.rates.push(rate);
    }

    /// The rate of the live controller written last.
    fn rate(&self) -> Option<u64> {
        let s = self.state();
        let newest = s
            .rates
            .iter()
            .filter_map(Weak::upgrade)
            .max_by_key(|c| c.written.load(Relaxed))?;
        newest.get()
    }

    /// When the bucket will be out of debt at `rate` (at most [`MAX_HOLD`] from now), or
    /// `None` if it is now.
    fn ready_at(&self, rate: u64, now: Instant) -> Option<Instant> {
        let mut s = self.state();
        let rate = rate as f64;
        let cap = burst(rate);
        s.tokens = match s.last {
            Some(last) => (s.tokens + rate * (now - last).as_secs_f64()).min(cap),
            None => cap,
        };
        s.last = Some(now);
        if s.tokens >= 0.0 {
            return None;
        }
        // Forgive debt that would hold the transmit longer than MAX_HOLD.
        s.tokens = s.tokens.max(-rate * MAX_HOLD.as_secs_f64());
        Some(now + Duration::from_secs_f64(-s.tokens / rate))
    }

    fn charge(&self, bytes: usize) {
        self.state().tokens -= bytes as f64;
    }
}

/// One connection's pacer for an engine that drives quinn-proto itself and so owns every
/// transmit (stoq-uring's direct engine): the token bucket [`PacedSocket`] uses, fed by the
/// controllers that connection built. The engine asks [`ready_at`](Self::ready_at) before
/// each `poll_transmit` and [`charge`](Self::charge)s what it sent.
#[derive(Debug)]
pub struct ConnectionPacer(Bucket);

impl ConnectionPacer {
    /// The pacer of the controller the current task (or thread) just built, if a paced
    /// [`StoqControllerFactory`](crate::congestion::StoqControllerFactory) built one: call
    /// it right after the quinn-proto call that created the connection.
    pub fn take_built() -> Option<Self> {
        take_built().map(|r| ConnectionPacer(Bucket::new(r)))
    }

    /// Adopts a controller the current task built since (quinn-proto builds one per new
    /// path): call it right after each call into the connection that may migrate it. The
    /// pacer follows the controller written last.
    pub fn adopt_built(&self) {
        if let Some(r) = take_built() {
            self.0.adopt(r);
        }
    }

    /// `None` if a transmit may go now; otherwise when the bucket is out of debt (at most
    /// [`MAX_HOLD`] from `now`). Always `None` while the controller gives no rate.
    pub fn ready_at(&self, now: std::time::Instant) -> Option<std::time::Instant> {
        let rate = self.0.rate()?;
        self.0
            .ready_at(rate, Instant::from_std(now))
            .map(Instant::into_std)
    }

    /// The most bytes one transmit should carry: the burst the bucket lets out at once
    /// at the current rate (2 ms of it, at least [`MIN_BURST_BYTES`]). `None` while the
    /// controller gives no rate. An engine that batches more datagrams into one transmit
    /// sends longer trains than the controller asked for, and beyond [`MAX_HOLD`] of debt
    /// (debt is charged after the transmit and the excess forgiven) faster than its rate.
    pub fn max_transmit_bytes(&self) -> Option<usize> {
        let rate = self.0.rate()?;
        Some(burst(rate as f64) as usize)
    }

    /// Charges a transmit of `bytes` that was sent.
    pub fn charge(&self, bytes: usize) {
        self.0.charge(bytes);
    }
}

/// Forgets what the current task built and no connection took (a handshake quinn-proto
/// refused after building its controller); for engines that drive quinn-proto themselves.
pub fn forget_unclaimed() {
    forget_built();
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
            // A controller quinn-proto built in this connection's driver task: a new
            // path's.
            match &this.bucket {
                Some(b) => b.adopt(rate),
                None => this.bucket = Some(Arc::new(Bucket::new(rate))),
            }
        }
        if let Some(bucket) = &this.bucket {
            if let Some(rate) = bucket.rate() {
                if let Some(at) = bucket.ready_at(rate, Instant::now()) {
                    match &mut this.sleep {
                        Some(s) => s.as_mut().reset(at),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                    let sleep = this.sleep.as_mut().expect("just set");
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // The debt's deadline has passed: send (not a second look, which under
                    // float rounding or a paused clock could find a sliver of debt and
                    // spin).
                }
            }
        }
        let ready = this.inner.as_mut().poll_writable(cx);
        if matches!(ready, Poll::Ready(Ok(()))) {
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
        rate.set(Some(1_000_000), Some(std::time::Instant::now()));
        let b = Bucket::new(Arc::downgrade(&rate));
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
        let b = Bucket::new(Arc::downgrade(&rate));
        let t0 = Instant::now();
        assert_eq!(b.ready_at(1_000_000, t0), None);
        // A minute idle banks no more than the cap.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.ready_at(1_000_000, later), None);
        b.charge(MIN_BURST_BYTES as usize + 1_000);
        assert!(b.ready_at(1_000_000, later).is_some());
    }

    #[test]
    fn no_transmit_is_held_longer_than_max_hold() {
        let rate = Arc::new(PacingRate::default());
        let b = Bucket::new(Arc::downgrade(&rate));
        let t0 = Instant::now();
        assert_eq!(b.ready_at(1_000, t0), None);
        // 100 kB of debt at 1 kB/s would be 100 s; the hold stops at MAX_HOLD and the
        // rest of the debt is forgiven.
        b.charge(MIN_BURST_BYTES as usize + 100_000);
        let at = b.ready_at(1_000, t0).expect("in debt");
        assert!(at - t0 <= MAX_HOLD, "{:?}", at - t0);
        assert_eq!(b.ready_at(1_000, at), None);
    }

    #[test]
    fn bucket_follows_the_controller_written_last() {
        let t = std::time::Instant::now();
        let old = Arc::new(PacingRate::default());
        let new = Arc::new(PacingRate::default());
        old.set(Some(1_000), Some(t));
        let b = Bucket::new(Arc::downgrade(&old));
        assert_eq!(b.rate(), Some(1_000));
        // A new path's controller: adopted, and written after the old one.
        new.set(Some(2_000), Some(t + Duration::from_millis(1)));
        b.adopt(Arc::downgrade(&new));
        assert_eq!(b.rate(), Some(2_000));
        // The path validation failed: the old path's controller is live again.
        old.set(Some(3_000), Some(t + Duration::from_millis(2)));
        assert_eq!(b.rate(), Some(3_000));
        // A controller quinn-proto dropped no longer counts.
        drop(old);
        assert_eq!(b.rate(), Some(2_000));
        drop(new);
        assert_eq!(b.rate(), None);
    }

    #[test]
    fn a_write_without_a_time_changes_the_rate_not_the_order() {
        let t = std::time::Instant::now();
        let old = Arc::new(PacingRate::default());
        let new = Arc::new(PacingRate::default());
        old.set(Some(1_000), Some(t));
        new.set(Some(2_000), Some(t + Duration::from_millis(1)));
        let b = Bucket::new(Arc::downgrade(&old));
        b.adopt(Arc::downgrade(&new));
        // An MTU update on the old controller (no time from quinn) does not make it the
        // live one.
        old.set(Some(5_000), None);
        assert_eq!(b.rate(), Some(2_000));
        new.set(Some(3_000), None);
        assert_eq!(b.rate(), Some(3_000));
    }

    #[tokio::test]
    async fn a_registration_goes_only_to_the_task_that_built() {
        let rate = Arc::new(PacingRate::default());
        let r = rate.clone();
        tokio::spawn(async move { controller_built(&r) })
            .await
            .unwrap();
        // Another task (this one) does not get it, and neither does another thread.
        assert!(take_built().is_none());
        let other = std::thread::spawn(|| take_built().is_none())
            .join()
            .unwrap();
        assert!(other);
        // The builder does.
        let rate2 = Arc::new(PacingRate::default());
        let r2 = rate2.clone();
        let took = tokio::spawn(async move {
            controller_built(&r2);
            take_built().is_some() && take_built().is_none()
        })
        .await
        .unwrap();
        assert!(took);
        // A registration whose controller is gone is never handed out.
        let dead = Arc::new(PacingRate::default());
        controller_built(&dead);
        drop(dead);
        assert!(take_built().is_none());
        drop(rate);
    }

    #[test]
    fn no_rate_means_none() {
        let r = PacingRate::default();
        assert_eq!(r.get(), None);
        let now = Some(std::time::Instant::now());
        r.set(Some(5), now);
        assert_eq!(r.get(), Some(5));
        r.set(None, now);
        assert_eq!(r.get(), None);
    }
}
