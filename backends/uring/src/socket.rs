//! The UDP socket quinn drives ([`quinn::AsyncUdpSocket`]), with every datagram moved
//! through io_uring: a receive ring and a send ring per endpoint.
//!
//! * **Receive**: one multishot `IORING_OP_RECVMSG` stays armed on the socket and the
//!   kernel fills buffers it takes from a provided-buffer ring (`IORING_REGISTER_PBUF_RING`,
//!   [`RECV_BUFFERS`] buffers from one allocation). Each completion is one datagram, or
//!   with UDP GRO a run of same-sized datagrams whose segment size the `UDP_GRO` control
//!   message gives (reported to quinn as `RecvMeta::stride`). [`poll_recv`] copies the
//!   payload into quinn's buffers and hands the buffer straight back to the ring. The
//!   kernel ends a multishot request when the ring runs dry (`ENOBUFS`) or for other
//!   reasons (no `IORING_CQE_F_MORE`); it is re-armed as soon as buffers are back.
//! * **Send**: [`try_send`] copies the transmit into a slot of a fixed pool
//!   ([`SEND_SLOTS`] slots allocated at bind), writes a `SendMsg` SQE with a `UDP_SEGMENT`
//!   control message for GSO and queues it on a **second ring, the send ring**, without
//!   entering the kernel. The first queued SQE after a flush wakes the endpoint's flusher
//!   task, which defers itself until its tokio worker has run everything else that is
//!   ready (`yield_now`: deferred tasks run when the worker would otherwise park), so the
//!   sends of every connection in that burst share one `io_uring_enter` (58 SQEs per
//!   call on a 1 GiB upload, `benches/results/syscalls.md`). When the pool runs out, the sending task submits and
//!   reaps itself. With SQPOLL the send ring's kernel thread takes the SQEs and no call
//!   is made while it is awake. Send errors arrive as completions: they are logged and
//!   the datagram is dropped (QUIC recovers the loss).
//! * **Send completions wake nobody**: the send ring is not registered with tokio, so a
//!   completed send neither wakes a task nor a parked worker thread (with one ring, every
//!   flush made the ring readable and woke the endpoint driver for nothing). Slots are
//!   reaped by the flusher right after its submit (sends on UDP complete inside that
//!   call), by a sender that finds the pool empty, and by `poll_recv`. Only a writer that
//!   must wait for a slot arms a one-shot `POLL_ADD` of the send ring's fd on the receive
//!   ring, so the next send completion wakes the endpoint driver, which reaps it and
//!   wakes the writer.
//! * **Wake-ups**: the receive ring's fd is registered with tokio's reactor ([`AsyncFd`]):
//!   it polls readable while completions are pending. quinn's endpoint driver always has
//!   a [`poll_recv`] outstanding, so it is the one task woken by completions.
//!
//! * **The direct engine** ([`UringEngine::Direct`](crate::UringEngine::Direct)) uses the same rings without quinn's socket
//!   trait: receives are handed to it straight from the ring buffer
//!   (`poll_recv_direct`), and quinn-proto writes each transmit into one of
//!   [`SEND_SLOTS`] buffers allocated at bind (`take_send_buffer`), which the `SendMsg`
//!   sends from and its completion returns to the pool; the engine submits once per turn
//!   (`submit`), so no flusher task runs.
//!
//! [`poll_recv`]: quinn::AsyncUdpSocket::poll_recv
//! [`try_send`]: quinn::AsyncUdpSocket::try_send

use std::alloc::Layout;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, CancelBuilder, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use stoq_core::{Error, TransportConfig};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;
use tracing::{debug, error, warn};

use crate::cmsg::{self, ControlBuf, SendControl, CONTROL_LEN};
use crate::unavailable::{require_kernel, Unavailable};
use crate::UringOptions;

/// Receive buffers in the provided-buffer ring (a power of two, as the kernel requires).
/// With GRO each holds up to 64 KiB of coalesced datagrams, so 64 buffers (4.2 MiB) hold
/// as much as the 4 MiB socket receive buffer STOQ asks for: a burst that fits the
/// socket fits the ring.
pub const RECV_BUFFERS: u16 = 64;
/// Send slots allocated at bind: the most sends queued or in flight at once. Sends on a
/// UDP socket complete within the `io_uring_enter` that submits them unless the socket's
/// send buffer is full, so slots come back within one flush; 128 covers a flush of every
/// connection of a busy endpoint (quinn queues at most 20 datagrams, two GSO sends,
/// per connection per turn).
pub const SEND_SLOTS: usize = 128;
/// GSO segments per send at most with quinn's glue: quinn caps its transmits at 10
/// segments (it allocates each transmit's buffer); the pool's slot size follows from it
/// (`max_udp_payload` times this, at most 64 KiB).
pub const MAX_SEGMENTS: usize = 10;
/// GSO segments per send at most with the direct engine, whose send buffers are allocated
/// once: as many as one UDP datagram's payload limit allows (45 of 1,452 bytes), so a
/// send fills a GRO receive buffer of the peer's (64 KiB) where 10 segments filled a
/// seventh of it. Measured on a 1 GiB upload (`benches/syscalls.sh`): 4.3 times fewer
/// send SQEs and receive completions (17.8k against 76.9k per GiB), and the peer's
/// multishot receive ran out of ring buffers (and was re-armed) 20 times per GiB instead
/// of about 470.
pub const DIRECT_MAX_SEGMENTS: usize = 64;

/// The most payload bytes one send (all its GSO segments) may carry: a UDP datagram's
/// limit over IPv4 (65,535 less the IP and UDP headers), which IPv6's 65,527 exceeds.
const MAX_SEND_BYTES: usize = 65_507;
/// Submission queue entries of the send ring: every send slot and slack.
const SQ_ENTRIES: u32 = 256;
/// Submission queue entries of the receive ring: the receive (re-)arm, the send-ring poll.
const RECV_SQ_ENTRIES: u32 = 8;
/// Completion queue entries: more than can ever be outstanding (one per receive buffer
/// and per send slot), so the CQ never overflows.
const CQ_ENTRIES: u32 = 1024;
/// The provided-buffer group id of the receive ring.
const BGID: u16 = 0;
/// `user_data` of the multishot receive (on the receive ring); sends use their slot index
/// (on the send ring).
const RECV_TAG: u64 = 1 << 32;
/// `user_data` of the one-shot `POLL_ADD` on the receive ring that watches the send ring's
/// completion queue while a writer waits for a slot.
const SEND_POLL_TAG: u64 = (1 << 32) + 1;
/// Receive errors in a row (with no datagram in between) after which the socket reports
/// an error to quinn instead of re-arming forever.
const MAX_RECV_ERRORS: u32 = 1024;
/// How long dropping the socket waits for the cancelled receive and the last sends to
/// complete.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Room for the payload of one receive completion: a GRO run is at most 64 KiB.
const GRO_PAYLOAD: usize = 65536;
/// Size of `struct io_uring_recvmsg_out`, the header the kernel writes at the start of
/// each multishot recvmsg buffer (four `u32`s: name, control and payload lengths, flags).
const RECVMSG_OUT_LEN: usize = 16;
/// At most one send-error line per interval (a peer that vanished makes every send fail).
const SEND_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Counters of what the socket did (for tests and diagnostics).
#[derive(Debug, Default)]
pub struct Counters {
    /// `io_uring_enter` calls made to submit.
    pub enters: AtomicU64,
    /// `SendMsg` SQEs queued.
    pub sends: AtomicU64,
    /// Send completions that reported an error (the datagram was dropped).
    pub send_errors: AtomicU64,
    /// Receive completions carrying data.
    pub recv_completions: AtomicU64,
    /// Times the multishot receive was armed (the first time included).
    pub recv_arms: AtomicU64,
}

/// One heap allocation handed (in part) to the kernel; freed on drop unless leaked.
struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
    leak: bool,
}

impl Region {
    fn new(size: usize, align: usize) -> Region {
        let layout = Layout::from_size_align(size.max(1), align).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Region {
            ptr,
            layout,
            leak: false,
        }
    }

    fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if !self.leak {
            // SAFETY: allocated in `new` with this layout, freed once. `Driver::shutdown`
            // sets `leak` if the kernel may still use the memory.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }
}

/// The kernel-visible part of one send: header, address, control messages.
#[repr(C)]
struct SendSlot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    name: libc::sockaddr_storage,
    control: ControlBuf,
}

/// What the completion of a send needs to know about it.
#[derive(Debug, Clone, Copy, Default)]
struct SlotInfo {
    segmented: bool,
    ecn: bool,
    destination: Option<SocketAddr>,
}

/// A completed receive not yet fully copied to quinn.
#[derive(Debug, Clone, Copy)]
struct Received {
    bid: u16,
    /// Payload bytes already delivered (a GRO run may span two `poll_recv` calls).
    offset: usize,
}

/// Everything touched under the lock: the ring, the buffers and their bookkeeping.
struct Driver {
    /// The receive ring (multishot receive, its re-arms, the send-ring poll), registered
    /// with tokio's reactor. Declared first with `send_ring`: both are dropped (closed,
    /// the buffer registration gone) before the memory regions below are freed.
    ring: IoUring,
    /// The send ring: `SendMsg` SQEs only, and watched by nobody, so send completions
    /// wake no task and no thread; they are reaped by whoever next needs a slot or
    /// flushes. With [`UringOptions::sqpoll`] this ring has the kernel polling thread.
    send_ring: IoUring,
    socket: std::net::UdpSocket,
    /// The buffer ring's entries (page-aligned, [`RECV_BUFFERS`] entries).
    buf_ring: Region,
    /// The receive buffers, `recv_buf_size` bytes each.
    recv_bufs: Region,
    recv_buf_size: usize,
    /// The multishot receive's `msghdr` (only `msg_namelen`/`msg_controllen` matter).
    recv_hdr: Box<libc::msghdr>,
    /// Tail of the buffer ring (ours; the kernel owns the head).
    recv_tail: u16,
    /// Buffers the kernel may fill (in the ring, not in `received`).
    recv_in_kernel: usize,
    recv_armed: bool,
    received: VecDeque<Received>,
    recv_errors: u32,
    recv_waker: Option<Waker>,
    /// [`SEND_SLOTS`] slots (kernel-visible headers).
    send_slots: Region,
    /// The send payloads, `send_slot_size` bytes per slot.
    send_data: Region,
    send_slot_size: usize,
    send_info: Vec<SlotInfo>,
    send_free: Vec<u16>,
    /// Direct engine only: the buffer each slot in flight sends from (quinn-proto wrote
    /// the transmit into it), returned to `spare` by its completion.
    owned: Vec<Option<Vec<u8>>>,
    /// Direct engine only: send buffers not in flight, [`SEND_SLOTS`] of them allocated at
    /// bind with room for one slot's payload.
    spare: Vec<Vec<u8>>,
    send_in_flight: usize,
    /// Send SQEs pushed but not yet submitted.
    queued: usize,
    /// The flusher was notified and has not yet taken the lock to flush. A send queued
    /// while this is false notifies it, so sends that a failed flush left queued are
    /// retried by the next one (a counter of queued sends cannot tell "the flusher is on
    /// its way" from "the last flush failed").
    flush_scheduled: bool,
    /// The `POLL_ADD` on the send ring's fd ([`SEND_POLL_TAG`]) is in flight.
    send_poll_armed: bool,
    writers: Vec<Waker>,
    /// False after the kernel refused an ECN control message (`EINVAL`).
    ecn_ok: bool,
    last_send_error_log: Option<Instant>,
    closing: bool,
    counters: Arc<Counters>,
    /// Completions copied out of the ring by `reap` (capacity kept).
    scratch: Vec<(u64, i32, u32)>,
}

// SAFETY: the raw pointers in `Driver` (through `Region`) point to memory it owns, and
// `Driver` is only ever used behind `UringSocket`'s mutex.
unsafe impl Send for Driver {}

impl Driver {
    fn buf_ring_entries(&self) -> *mut BufRingEntry {
        self.buf_ring.ptr().cast()
    }

    fn recv_buf(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < RECV_BUFFERS, so the offset is inside `recv_bufs`.
        unsafe { self.recv_bufs.ptr().add(bid as usize * self.recv_buf_size) }
    }

    fn slot(&self, i: usize) -> *mut SendSlot {
        // SAFETY: i < SEND_SLOTS, so the offset is inside `send_slots`.
        unsafe { self.send_slots.ptr().cast::<SendSlot>().add(i) }
    }

    fn slot_data(&self, i: usize) -> *mut u8 {
        // SAFETY: i < SEND_SLOTS, so the offset is inside `send_data`.
        unsafe { self.send_data.ptr().add(i * self.send_slot_size) }
    }

    /// Gives receive buffer `bid` (back) to the kernel.
    fn recycle(&mut self, bid: u16) {
        let entries = self.buf_ring_entries();
        let index = (self.recv_tail & (RECV_BUFFERS - 1)) as usize;
        // SAFETY: the entry at the tail is not visible to the kernel until the tail moves
        // past it (it reads entries between its head and our tail only); `index` is in
        // range. The buffer itself is ours: its completion arrived and it was copied out.
        unsafe {
            let e = &mut *entries.add(index);
            e.set_addr(self.recv_buf(bid) as u64);
            e.set_len(self.recv_buf_size as u32);
            e.set_bid(bid);
        }
        self.recv_tail = self.recv_tail.wrapping_add(1);
        // SAFETY: the tail field lives in entry 0 (the ring was registered at this
        // address); the kernel reads it with acquire semantics, so release publishes
        // the entry written above.
        unsafe {
            let tail = BufRingEntry::tail(entries) as *const AtomicU16;
            (*tail).store(self.recv_tail, Ordering::Release);
        }
        self.recv_in_kernel += 1;
    }

    /// Pushes a send SQE, submitting first if the queue is full. False if the kernel
    /// takes no submissions (the request was not queued; the caller must not wait for it).
    ///
    /// # Safety
    /// Everything `sqe` points to must stay valid until its completion arrives.
    #[must_use]
    unsafe fn push_send(&mut self, sqe: &squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: the caller guarantees the SQE's pointers stay valid.
            if unsafe { self.send_ring.submission().push(sqe) }.is_ok() {
                self.queued += 1;
                return true;
            }
            if !self.submit_sends() {
                break;
            }
        }
        warn!("io_uring submission queue full and the kernel takes no submissions");
        false
    }

    /// Submits the queued sends with one `io_uring_enter` (none with SQPOLL while the
    /// kernel thread is awake). False if the kernel refused; the sends stay queued and
    /// the next flush retries them.
    fn submit_sends(&mut self) -> bool {
        if self.queued == 0 {
            return true;
        }
        let sqpoll = self.send_ring.params().is_setup_sqpoll();
        for _ in 0..3 {
            // With SQPOLL, `submit` enters the kernel only to wake a sleeping thread.
            let enters = !sqpoll || self.send_ring.submission().need_wakeup();
            match self.send_ring.submit() {
                Ok(_) => {
                    if enters {
                        self.counters.enters.fetch_add(1, Ordering::Relaxed);
                    }
                    // With SQPOLL the kernel thread takes every entry up to the tail we
                    // published: it was awake (and sees the tail before it sleeps) or the
                    // call woke it. What it returns counts the queue's length at the call,
                    // not what we pushed (the thread may already have taken some), so it
                    // must not be subtracted from `queued`. Without SQPOLL the kernel may
                    // take fewer than were queued (short of memory): what is left in the
                    // queue goes in with the next call.
                    self.queued = if sqpoll {
                        0
                    } else {
                        self.send_ring.submission().len()
                    };
                    if self.queued == 0 {
                        return true;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => {
                    // Completions must be reaped (or kernel memory is short): make room.
                    self.reap_sends();
                }
                Err(e) => {
                    warn!(error = %e, "io_uring_enter failed");
                    return false;
                }
            }
        }
        false
    }

    /// Pushes an SQE on the receive ring and submits it at once (re-arms and the send-ring
    /// poll are rare). False if it was not submitted.
    ///
    /// # Safety
    /// Everything `sqe` points to must stay valid until its completion arrives.
    #[must_use]
    unsafe fn push_recv_ring(&mut self, sqe: &squeue::Entry) -> bool {
        // SAFETY: the caller guarantees the SQE's pointers stay valid.
        if unsafe { self.ring.submission().push(sqe) }.is_err() {
            // Only the receive and the send poll ever use this queue (2 of SQ_ENTRIES),
            // and each is submitted at once: the queue cannot be full.
            warn!("io_uring receive submission queue full");
            return false;
        }
        for _ in 0..3 {
            match self.ring.submit() {
                Ok(_) => {
                    self.counters.enters.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => {
                    self.reap();
                }
                Err(e) => {
                    warn!(error = %e, "io_uring_enter failed on the receive ring");
                    break;
                }
            }
        }
        // The SQE stays queued and goes in with the next successful submission; the
        // caller treats it as in flight (its completion will arrive).
        true
    }

    /// Enters the kernel on the receive ring so it posts the completions it holds as task
    /// work (the receive ring's `IORING_SQ_TASKRUN` flag is set).
    fn run_task_work(&mut self) {
        match self.ring.submit() {
            Ok(_) => {
                self.counters.enters.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => debug!(error = %e, "io_uring_enter to run task work failed"),
        }
    }

    /// Submits what a failed `io_uring_enter` left queued on the receive ring (the
    /// multishot receive or the send-ring poll), so the endpoint cannot go deaf.
    fn submit_pending_recv_ring(&mut self) {
        if self.ring.submission().is_empty() {
            return;
        }
        match self.ring.submit() {
            Ok(_) => {
                self.counters.enters.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => debug!(error = %e, "io_uring_enter failed on the receive ring again"),
        }
    }

    /// Watches the send ring's completion queue from the receive ring (which tokio
    /// watches), so a writer waiting for a slot is woken when a send completes.
    fn arm_send_poll(&mut self) {
        if self.send_poll_armed || self.closing {
            return;
        }
        let sqe = opcode::PollAdd::new(Fd(self.send_ring.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(SEND_POLL_TAG);
        // SAFETY: POLL_ADD points to no memory.
        if unsafe { self.push_recv_ring(&sqe) } {
            self.send_poll_armed = true;
        }
    }

    /// Arms the multishot receive if it is not armed and the ring has buffers.
    fn arm_recv(&mut self) {
        if self.recv_armed || self.closing || self.recv_in_kernel == 0 {
            return;
        }
        let sqe = opcode::RecvMsgMulti::new(
            Fd(self.socket.as_raw_fd()),
            &*self.recv_hdr as *const libc::msghdr,
            BGID,
        )
        .build()
        .user_data(RECV_TAG);
        // SAFETY: the msghdr is boxed in `self` and outlives the ring; the buffers it
        // fills are the registered ring's, owned by `self` and freed after the ring.
        if !unsafe { self.push_recv_ring(&sqe) } {
            return; // retried on the next poll_recv
        }
        self.recv_armed = true;
        self.counters.recv_arms.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes every pending completion of both rings: receives are queued for
    /// `poll_recv`, send slots return to the pool. Wakes the receiver and the writers
    /// waiting for slots.
    fn reap(&mut self) {
        let mut result = ReapResult::default();
        // Copy out first (the queue borrows the ring mutably) into a vector kept across
        // calls, so reaping allocates nothing.
        let mut completions = std::mem::take(&mut self.scratch);
        completions.extend(
            self.ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
        );
        for &(user_data, res, flags) in &completions {
            if user_data == RECV_TAG {
                self.on_recv_completion(res, flags, &mut result);
            } else if user_data == SEND_POLL_TAG {
                self.send_poll_armed = false;
            }
        }
        completions.clear();
        self.scratch = completions;
        if result.received {
            if let Some(w) = self.recv_waker.take() {
                w.wake();
            }
        }
        self.reap_sends();
    }

    /// Gives back a slot that was taken but not handed to the kernel, waking the writers
    /// that wait for one.
    fn return_slot(&mut self, slot: u16) {
        self.send_free.push(slot);
        for w in self.writers.drain(..) {
            w.wake();
        }
    }

    /// Takes the send ring's completions: their slots return to the pool and the writers
    /// waiting for slots are woken. True if a slot was freed.
    fn reap_sends(&mut self) -> bool {
        let mut completions = std::mem::take(&mut self.scratch);
        completions.extend(
            self.send_ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
        );
        let freed = !completions.is_empty();
        for &(user_data, res, _) in &completions {
            if (user_data as usize) < SEND_SLOTS {
                self.on_send_completion(user_data as usize, res);
            }
        }
        completions.clear();
        self.scratch = completions;
        if freed {
            for w in self.writers.drain(..) {
                w.wake();
            }
        }
        freed
    }

    fn on_recv_completion(&mut self, res: i32, flags: u32, result: &mut ReapResult) {
        if res >= 0 {
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.recv_in_kernel -= 1;
                self.received.push_back(Received { bid, offset: 0 });
                self.recv_errors = 0;
                result.received = true;
                self.counters
                    .recv_completions
                    .fetch_add(1, Ordering::Relaxed);
            }
        } else {
            match -res {
                // The ring ran dry: re-armed once `poll_recv` returns buffers.
                libc::ENOBUFS => {}
                // Our cancellation at drop, or the kernel cancelling requests of a thread
                // that exited: re-armed unless closing.
                libc::ECANCELED => {}
                errno => {
                    self.recv_errors += 1;
                    debug!(error = %io::Error::from_raw_os_error(errno), "io_uring receive failed");
                    result.received = true; // so the receiver re-arms (or gives up)
                }
            }
        }
        if !cqueue::more(flags) {
            self.recv_armed = false;
        }
    }

    fn on_send_completion(&mut self, slot: usize, res: i32) {
        self.send_free.push(slot as u16);
        self.send_in_flight -= 1;
        if let Some(mut buf) = self.owned[slot].take() {
            buf.clear();
            self.spare.push(buf);
        }
        if res >= 0 {
            return;
        }
        self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
        let info = self.send_info[slot];
        let e = io::Error::from_raw_os_error(-res);
        match -res {
            // The device cannot segment (no checksum offload): quinn-udp's reaction too.
            libc::EIO if info.segmented => {
                GSO_DISABLED.store(true, Ordering::Relaxed);
                warn!("UDP GSO send failed with EIO; sending one datagram per send from now on");
            }
            libc::EINVAL if info.ecn && self.ecn_ok => {
                self.ecn_ok = false;
                warn!("the kernel refused the ECN control message; sending without ECN");
            }
            _ => {}
        }
        if self
            .last_send_error_log
            .is_none_or(|t| t.elapsed() > SEND_ERROR_LOG_INTERVAL)
        {
            self.last_send_error_log = Some(Instant::now());
            warn!(error = %e, destination = ?info.destination, "io_uring send failed; datagram dropped");
        } else {
            debug!(error = %e, destination = ?info.destination, "io_uring send failed; datagram dropped");
        }
    }

    /// Copies completed receives into quinn's buffers; returns how many entries it filled.
    fn deliver(&mut self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some(front) = self.received.front().copied() else {
                break;
            };
            // SAFETY: the kernel completed this buffer (its CQE arrived) and gets it back
            // only through `recycle` below, so nothing writes it while this slice lives.
            let buffer =
                unsafe { std::slice::from_raw_parts(self.recv_buf(front.bid), self.recv_buf_size) };
            let done = match RecvMsgOut::parse(buffer, &self.recv_hdr) {
                Ok(out) if out.is_payload_truncated() => {
                    debug!("received datagram larger than the receive buffer; dropped");
                    true
                }
                Ok(out) => match cmsg::read_sockaddr(out.name_data()) {
                    Some(addr) => {
                        let control = cmsg::decode_recv(out.control_data());
                        let payload = &out.payload_data()[front.offset..];
                        let stride = control.stride.unwrap_or(out.payload_data().len()).max(1);
                        let room = bufs[n].len();
                        let take = if payload.len() <= room {
                            payload.len()
                        } else {
                            room / stride * stride
                        };
                        if take == 0 {
                            debug!(
                                room,
                                stride, "quinn's receive buffer cannot hold one datagram; dropped"
                            );
                            true
                        } else {
                            bufs[n][..take].copy_from_slice(&payload[..take]);
                            meta[n] = RecvMeta {
                                addr,
                                len: take,
                                stride,
                                ecn: control.ecn,
                                dst_ip: control.dst_ip,
                            };
                            n += 1;
                            if take < payload.len() {
                                self.received[0].offset += take;
                                false
                            } else {
                                true
                            }
                        }
                    }
                    None => true,
                },
                Err(()) => {
                    debug!("malformed multishot receive buffer; dropped");
                    true
                }
            };
            if done {
                self.received.pop_front();
                self.recycle(front.bid);
            }
        }
        n
    }

    /// Hands up to `max` completed receives to `f` straight from their buffers (the
    /// direct engine), then recycles the buffers; returns how many it handed over.
    fn deliver_direct(&mut self, max: usize, f: &mut dyn FnMut(RecvMeta, &[u8])) -> usize {
        let mut n = 0;
        while n < max {
            let Some(front) = self.received.pop_front() else {
                break;
            };
            // SAFETY: the kernel completed this buffer (its CQE arrived) and gets it back
            // only through `recycle` below, so nothing writes it while this slice lives.
            let buffer =
                unsafe { std::slice::from_raw_parts(self.recv_buf(front.bid), self.recv_buf_size) };
            match RecvMsgOut::parse(buffer, &self.recv_hdr) {
                Ok(out) if out.is_payload_truncated() => {
                    debug!("received datagram larger than the receive buffer; dropped");
                }
                Ok(out) => {
                    if let Some(addr) = cmsg::read_sockaddr(out.name_data()) {
                        let control = cmsg::decode_recv(out.control_data());
                        let payload = &out.payload_data()[front.offset..];
                        let stride = control.stride.unwrap_or(payload.len()).max(1);
                        let meta = RecvMeta {
                            addr,
                            len: payload.len(),
                            stride,
                            ecn: control.ecn,
                            dst_ip: control.dst_ip,
                        };
                        f(meta, payload);
                        n += 1;
                    }
                }
                Err(()) => debug!("malformed multishot receive buffer; dropped"),
            }
            self.recycle(front.bid);
        }
        n
    }

    /// Requests in flight on either ring.
    fn busy(&self) -> bool {
        self.recv_armed || self.send_poll_armed || self.send_in_flight > 0
    }

    /// Cancels the receive, lets the queued sends complete, and waits (bounded) for every
    /// completion, so no buffer is freed while the kernel may still use it.
    fn shutdown(&mut self) {
        self.closing = true;
        self.submit_sends();
        // Anything still queued must reach the kernel before the cancel, or it would be
        // submitted by the drain below, after the cancel, and never complete in time.
        self.submit_pending_recv_ring();
        // Only the receive ring's requests are cancelled (the multishot receive never ends
        // by itself). Sends complete on their own, and among them are the
        // CONNECTION_CLOSE datagrams quinn queued just before the endpoint went away: the
        // drain below waits for them instead of discarding them.
        if self.recv_armed || self.send_poll_armed {
            let timeout = Timespec::new().sec(1);
            if let Err(e) = self
                .ring
                .submitter()
                .register_sync_cancel(Some(timeout), CancelBuilder::any())
            {
                if e.kind() != io::ErrorKind::NotFound {
                    debug!(error = %e, "cancelling io_uring requests at close");
                }
            }
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.busy() && Instant::now() < deadline {
            let ts = Timespec::new().nsec(50_000_000);
            let args = SubmitArgs::new().timespec(&ts);
            let ring = if self.recv_armed || self.send_poll_armed {
                &self.ring
            } else {
                &self.send_ring
            };
            let _ = ring.submitter().submit_with_args(1, &args);
            self.reap();
        }
        if self.busy() {
            // The kernel may still write into (or read from) the buffers: leaking them is
            // the only sound choice.
            error!(
                receive_armed = self.recv_armed,
                sends = self.send_in_flight,
                "io_uring requests did not complete at close; leaking their buffers"
            );
            self.buf_ring.leak = true;
            self.recv_bufs.leak = true;
            self.send_slots.leak = true;
            self.send_data.leak = true;
            for buf in self.owned.iter_mut().filter_map(Option::take) {
                std::mem::forget(buf);
            }
        }
    }
}

/// Set when a GSO send failed with `EIO` (the device cannot segment), process-wide as
/// the cause is the network device, not one socket.
static GSO_DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Debug, Default)]
struct ReapResult {
    received: bool,
}

/// The receive ring's fd, as tokio's reactor sees it.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A UDP socket whose every datagram goes through io_uring (see the module docs).
pub struct UringSocket {
    /// Declared first: deregistered from tokio's reactor before the ring closes.
    ring_fd: AsyncFd<RingFd>,
    driver: Mutex<Driver>,
    flush: Arc<Notify>,
    local_addr: SocketAddr,
    gso_segments: usize,
    gro_segments: usize,
    may_fragment: bool,
    counters: Arc<Counters>,
}

impl fmt::Debug for UringSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringSocket")
            .field("local_addr", &self.local_addr)
            .field("gso_segments", &self.gso_segments)
            .field("gro_segments", &self.gro_segments)
            .finish_non_exhaustive()
    }
}

impl UringSocket {
    /// Binds a UDP socket at `addr` as every STOQ backend does
    /// ([`stoq_core::socket::bind_udp`]: dual-stack on IPv6, buffer sizes from `cfg`),
    /// sets the options quinn-udp sets (GRO, ECN and destination-address reporting,
    /// no fragmentation) and creates its ring. Must be called within a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        cfg: &TransportConfig,
        options: &UringOptions,
    ) -> Result<Arc<UringSocket>, Error> {
        Self::bind_for(addr, cfg, options, false)
    }

    /// [`UringSocket::bind`] for the direct engine when `direct`: sends come from a pool of
    /// buffers quinn-proto writes its transmits into ([`UringSocket::take_send_buffer`]),
    /// not from the copy slots, and the engine submits them itself
    /// ([`UringSocket::submit`]), so no flusher task runs.
    pub(crate) fn bind_for(
        addr: SocketAddr,
        cfg: &TransportConfig,
        options: &UringOptions,
        direct: bool,
    ) -> Result<Arc<UringSocket>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::io(
                format!("binding the uring endpoint {addr}"),
                io::Error::other("must be called within a tokio runtime"),
            )
        })?;
        let unavailable = |u: Unavailable| u.into_error(addr);
        require_kernel(6, 0, "multishot IORING_OP_RECVMSG (Linux 6.0)").map_err(unavailable)?;
        // Both rings use COOP_TASKRUN: a receive completion does not interrupt the thread
        // that armed the receive with an IPI to post its CQE (the interrupts took 14 % of
        // the receiver's CPU). The kernel runs that work when the thread next enters or
        // leaves the kernel (a system call, the scheduler tick), and wakes it at once if it
        // sleeps (epoll_wait, a futex), so a completion waits at most for the owner's next
        // system call or tick. On a current-thread runtime that thread is the one that
        // polls the receive ring, so TASKRUN_FLAG tells `poll_recv` when work waits and it
        // enters at once instead of parking. On a multi-threaded runtime the work belongs
        // to whichever worker armed the receive, which another worker's `io_uring_enter`
        // does not run, so the flag is not asked for there (a retry on it made
        // io_uring_enter calls explode to 460k per GiB).
        let current_thread =
            runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread;
        let mut builder = IoUring::builder();
        builder
            .setup_cqsize(CQ_ENTRIES)
            .setup_submit_all()
            .setup_coop_taskrun();
        if current_thread {
            builder.setup_taskrun_flag();
        }
        let ring = builder
            .build(RECV_SQ_ENTRIES)
            .map_err(|e| unavailable(Unavailable::from_setup_error(&e)))?;
        let mut builder = IoUring::builder();
        builder.setup_cqsize(CQ_ENTRIES).setup_submit_all();
        match &options.sqpoll {
            // The kernel refuses COOP_TASKRUN with SQPOLL (EINVAL): the SQPOLL thread runs
            // the send ring's task work itself.
            Some(_) => {}
            None => {
                builder.setup_coop_taskrun();
                if current_thread {
                    builder.setup_taskrun_flag();
                }
            }
        }
        if let Some(sqpoll) = &options.sqpoll {
            builder.setup_sqpoll(sqpoll.idle.as_millis().min(u32::MAX as u128) as u32);
            if let Some(cpu) = sqpoll.cpu {
                builder.setup_sqpoll_cpu(cpu);
            }
        }
        let send_ring = builder
            .build(SQ_ENTRIES)
            .map_err(|e| unavailable(Unavailable::from_setup_error(&e)))?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(|e| {
            unavailable(Unavailable::Setup {
                step: "probing io_uring opcodes (IORING_REGISTER_PROBE)",
                errno: e.raw_os_error().unwrap_or(0),
            })
        })?;
        for (code, name) in [
            (opcode::RecvMsg::CODE, "IORING_OP_RECVMSG"),
            (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
        ] {
            if !probe.is_supported(code) {
                return Err(unavailable(Unavailable::KernelTooOld {
                    release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                    missing: name,
                }));
            }
        }

        let socket = stoq_core::socket::bind_udp(addr, cfg)?;
        let state = quinn::udp::UdpSocketState::new((&socket).into())
            .map_err(|e| Error::io(format!("setting socket options of UDP socket {addr}"), e))?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| Error::io(format!("reading the address of UDP socket {addr}"), e))?;
        // A send (all its GSO segments) must fit one send slot and one UDP datagram's
        // payload limit, 65,507 bytes over IPv4 (the kernel's limit for one GSO send):
        // with jumbo payloads, fewer segments.
        let gso_segments = state
            .max_gso_segments()
            .clamp(
                1,
                if direct {
                    DIRECT_MAX_SEGMENTS
                } else {
                    MAX_SEGMENTS
                },
            )
            .min((MAX_SEND_BYTES / cfg.max_udp_payload.max(1) as usize).max(1));
        let gro_segments = state.gro_segments().max(1);

        // Receive buffers: header, name, control messages, payload, as the kernel lays
        // out a multishot recvmsg completion.
        let payload = if gro_segments > 1 {
            GRO_PAYLOAD
        } else {
            cfg.max_udp_payload as usize
        };
        let recv_buf_size = (RECVMSG_OUT_LEN
            + std::mem::size_of::<libc::sockaddr_storage>()
            + CONTROL_LEN
            + payload)
            .next_multiple_of(64);
        let buf_ring = Region::new(
            RECV_BUFFERS as usize * std::mem::size_of::<BufRingEntry>(),
            4096,
        );
        let recv_bufs = Region::new(RECV_BUFFERS as usize * recv_buf_size, 64);
        // SAFETY: msghdr is a plain C struct; all-zero is valid.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        recv_hdr.msg_controllen = CONTROL_LEN as _;

        let send_slot_size = (cfg.max_udp_payload as usize * gso_segments).min(MAX_SEND_BYTES);
        let send_slots = Region::new(
            SEND_SLOTS * std::mem::size_of::<SendSlot>(),
            std::mem::align_of::<SendSlot>(),
        );
        // The copy slots' payloads (quinn's glue), or the direct engine's buffers.
        let (send_data, spare) = if direct {
            let spare = (0..SEND_SLOTS)
                .map(|_| Vec::with_capacity(send_slot_size))
                .collect();
            (Region::new(0, 64), spare)
        } else {
            (Region::new(SEND_SLOTS * send_slot_size, 64), Vec::new())
        };

        // SAFETY: the ring memory is page-aligned, RECV_BUFFERS entries long and lives
        // in `Driver` after the ring (dropped later, or leaked).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buf_ring.ptr() as u64,
                RECV_BUFFERS,
                BGID,
                0,
            )
        }
        .map_err(|e| {
            unavailable(Unavailable::Setup {
                step:
                    "registering the provided-buffer ring (IORING_REGISTER_PBUF_RING, Linux 5.19)",
                errno: e.raw_os_error().unwrap_or(0),
            })
        })?;

        // SAFETY: the ring's fd stays open and unchanged while the AsyncFd lives: the ring
        // is owned by the `Driver` in the same `UringSocket`, declared after `ring_fd`,
        // so the AsyncFd is deregistered and dropped before the ring closes its fd.
        let ring_fd = unsafe {
            AsyncFd::register_with_interest(RingFd(ring.as_raw_fd()), Interest::READABLE)
        }
        .map_err(|e| {
            Error::io(
                format!("registering the io_uring of {addr} with tokio"),
                e.into_parts().1,
            )
        })?;
        let counters = Arc::new(Counters::default());
        let mut driver = Driver {
            ring,
            send_ring,
            socket,
            buf_ring,
            recv_bufs,
            recv_buf_size,
            recv_hdr,
            recv_tail: 0,
            recv_in_kernel: 0,
            recv_armed: false,
            received: VecDeque::with_capacity(RECV_BUFFERS as usize),
            recv_errors: 0,
            recv_waker: None,
            send_slots,
            send_data,
            send_slot_size,
            send_info: vec![SlotInfo::default(); SEND_SLOTS],
            send_free: (0..SEND_SLOTS as u16).rev().collect(),
            owned: (0..SEND_SLOTS).map(|_| None).collect(),
            spare,
            send_in_flight: 0,
            queued: 0,
            flush_scheduled: false,
            send_poll_armed: false,
            writers: Vec::new(),
            ecn_ok: true,
            last_send_error_log: None,
            closing: false,
            counters: counters.clone(),
            scratch: Vec::with_capacity(CQ_ENTRIES as usize),
        };
        for bid in 0..RECV_BUFFERS {
            driver.recycle(bid);
        }
        // The receive is armed by the first `poll_recv`, not here: the kernel runs a
        // multishot request's completion work on the thread that armed it, waking that
        // thread if it sleeps. Armed here, that would be the caller of `bind`, often a
        // thread outside the runtime's workers (the one blocked in `Runtime::block_on`):
        // it would be woken for every batch of datagrams (about 1,400 extra futex calls
        // per GiB received) while the endpoint's driver runs elsewhere. Armed by the
        // driver, the work lands on a worker that polls the ring anyway.

        let flush = Arc::new(Notify::new());
        let socket = Arc::new(UringSocket {
            ring_fd,
            driver: Mutex::new(driver),
            flush: flush.clone(),
            local_addr,
            gso_segments,
            gro_segments,
            may_fragment: state.may_fragment(),
            counters,
        });
        if !direct {
            runtime.spawn(flusher(Arc::downgrade(&socket), flush));
        }
        Ok(socket)
    }

    fn lock(&self) -> MutexGuard<'_, Driver> {
        self.driver.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the socket did so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Reaps both rings and hands completed receives to `deliver` (which returns how many
    /// it took); `Pending`, with `cx` woken by the next completion, when none is there.
    fn poll_recv_with(
        &self,
        cx: &mut Context,
        mut deliver: impl FnMut(&mut Driver) -> usize,
    ) -> Poll<io::Result<usize>> {
        let mut d = self.lock();
        let mut ran_task_work = false;
        loop {
            // This task is about to look at the queue itself: no wake-up for it.
            d.recv_waker = None;
            d.submit_pending_recv_ring();
            d.reap();
            // The send-ring poll fires once; re-arm it while writers still wait for
            // slots (the completions it signalled may have been reaped elsewhere).
            if !d.writers.is_empty() {
                d.arm_send_poll();
            }
            let n = deliver(&mut d);
            d.arm_recv();
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            if !ran_task_work && d.ring.submission().taskrun() {
                // Completions wait as kernel task work (COOP_TASKRUN): run it now, once
                // per poll (the flag may stay set when the work is another thread's).
                ran_task_work = true;
                d.run_task_work();
                continue;
            }
            if d.recv_errors >= MAX_RECV_ERRORS {
                d.recv_errors = 0;
                return Poll::Ready(Err(io::Error::other(
                    "io_uring receive keeps failing on this socket",
                )));
            }
            d.recv_waker = Some(cx.waker().clone());
            match self.ring_fd.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }

    // ----- The direct engine's I/O ([`crate::direct`]) -----

    /// The direct engine's receive: calls `f` with each completed receive (one datagram,
    /// or a GRO run of `meta.stride`-sized ones) straight from its ring buffer, at most
    /// `max` of them, then gives the buffers back to the kernel. `Pending` (and `cx` woken
    /// by the next completion of either ring) when there is none. `f` runs under the
    /// socket's lock: it must not call back into the socket.
    pub(crate) fn poll_recv_direct(
        &self,
        cx: &mut Context,
        max: usize,
        f: &mut dyn FnMut(RecvMeta, &[u8]),
    ) -> Poll<io::Result<usize>> {
        self.poll_recv_with(cx, |d| d.deliver_direct(max, f))
    }

    /// An empty send buffer with room for one send's payload, or `None` while all
    /// [`SEND_SLOTS`] are queued or in flight (see [`UringSocket::poll_send_buffer`]).
    pub(crate) fn take_send_buffer(&self) -> Option<Vec<u8>> {
        let mut d = self.lock();
        if d.spare.is_empty() {
            d.reap_sends();
            if d.spare.is_empty() {
                d.submit_sends();
                d.reap_sends();
            }
        }
        d.spare.pop()
    }

    /// Gives back a buffer from [`UringSocket::take_send_buffer`] that carries nothing.
    pub(crate) fn return_send_buffer(&self, mut buf: Vec<u8>) {
        buf.clear();
        self.lock().spare.push(buf);
    }

    /// Ready when a send buffer is free (or the socket is closing); otherwise `cx` is
    /// woken when a send completes.
    pub(crate) fn poll_send_buffer(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut d = self.lock();
        if !d.spare.is_empty() || d.closing {
            return Poll::Ready(());
        }
        if !d.reap_sends() {
            d.submit_sends();
            d.reap_sends();
        }
        if !d.spare.is_empty() {
            return Poll::Ready(());
        }
        if !d.writers.iter().any(|w| w.will_wake(cx.waker())) {
            d.writers.push(cx.waker().clone());
        }
        // The send ring is watched by nobody: have the receive ring (which the direct
        // engine's driver polls) report the next send completion.
        d.arm_send_poll();
        Poll::Pending
    }

    /// Queues `buf` (a buffer from [`UringSocket::take_send_buffer`] holding one
    /// transmit, `segment_size`-byte datagrams when that is set) as one `SendMsg`,
    /// without copying it; [`UringSocket::submit`] hands it to the kernel. The buffer
    /// returns to the pool when the send completes. A send that cannot be queued is
    /// dropped, as a send the kernel failed would be (QUIC recovers the loss).
    pub(crate) fn send_buffer(
        &self,
        buf: Vec<u8>,
        destination: SocketAddr,
        ecn: Option<quinn::udp::EcnCodepoint>,
        segment_size: Option<usize>,
        src_ip: Option<std::net::IpAddr>,
    ) {
        let mut d = self.lock();
        let len = buf.len();
        let give_back = |d: &mut Driver, mut buf: Vec<u8>| {
            buf.clear();
            d.spare.push(buf);
        };
        if d.closing || len == 0 {
            give_back(&mut d, buf);
            return;
        }
        if len > d.send_slot_size {
            warn!(
                len,
                max = d.send_slot_size,
                "transmit larger than a send slot; dropped"
            );
            give_back(&mut d, buf);
            return;
        }
        let gso_off = GSO_DISABLED.load(Ordering::Relaxed);
        let segmented = segment_size.is_some_and(|s| s < len);
        if segmented && gso_off {
            // GSO was switched off after quinn-proto built this transmit (see try_send).
            give_back(&mut d, buf);
            return;
        }
        // One slot per buffer, and a buffer in flight holds its slot: a slot is free.
        let Some(slot) = d.send_free.pop().map(usize::from) else {
            warn!("no send slot for a send buffer; dropped");
            give_back(&mut d, buf);
            return;
        };
        let control = SendControl {
            destination,
            ecn,
            segment_size: segment_size.filter(|_| segmented).map(|s| s as u16),
            src_ip,
        };
        let ecn_ok = d.ecn_ok;
        let fd = d.socket.as_raw_fd();
        let s = d.slot(slot);
        // SAFETY: the slot was free and is ours until its completion; the payload is
        // `buf`'s heap memory, which does not move when `buf` moves into `owned[slot]`
        // and stays there, untouched, until the completion returns it to `spare`.
        let sqe = unsafe { prepare_send(s, fd, buf.as_ptr(), len, &control, ecn_ok, slot) };
        d.owned[slot] = Some(buf);
        d.send_info[slot] = SlotInfo {
            segmented,
            ecn: ecn_ok && ecn.is_some(),
            destination: Some(destination),
        };
        // SAFETY: see above.
        if !unsafe { d.push_send(&sqe) } {
            let buf = d.owned[slot].take();
            d.return_slot(slot as u16);
            if let Some(buf) = buf {
                give_back(&mut d, buf);
            }
            return;
        }
        d.send_in_flight += 1;
        self.counters.sends.fetch_add(1, Ordering::Relaxed);
    }

    /// Submits every queued send with one `io_uring_enter` and takes the completions
    /// already there (the direct engine calls it once per turn of its driver).
    pub(crate) fn submit(&self) {
        let mut d = self.lock();
        d.submit_sends();
        d.reap_sends();
    }

    /// The most GSO segments one send may carry.
    pub(crate) fn max_segments(&self) -> usize {
        self.max_transmit_segments()
    }

    /// Whether datagrams sent may be fragmented (path MTU discovery is off if so).
    pub(crate) fn fragments(&self) -> bool {
        self.may_fragment
    }

    /// The socket's bound address.
    pub(crate) fn bound_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Submits every queued send with one `io_uring_enter` and takes the completions
    /// that are already there (sends on UDP usually complete inside that call).
    fn flush(&self) {
        let mut d = self.lock();
        d.flush_scheduled = false;
        d.submit_sends();
        d.reap_sends();
    }
}

/// Submits queued sends once per burst. Woken by the first send queued after a flush,
/// it defers itself ([`tokio::task::yield_now`]: the scheduler runs deferred tasks when
/// its worker has nothing else to run, and at the latest at its next periodic I/O poll),
/// so every send queued by the tasks of this burst, on any connection, shares one
/// `io_uring_enter`. Ends when the socket is dropped.
async fn flusher(socket: Weak<UringSocket>, notify: Arc<Notify>) {
    loop {
        notify.notified().await;
        tokio::task::yield_now().await;
        match socket.upgrade() {
            Some(s) => s.flush(),
            None => return,
        }
    }
}

/// Writes the header, address and control messages of send slot `s` for `len` bytes at
/// `data`, and returns the `SendMsg` SQE that sends them (`user_data` = `slot`).
///
/// # Safety
/// The slot must be the caller's (free, not in any SQE), and `s` and `data` must stay
/// valid and untouched until the SQE's completion arrives.
unsafe fn prepare_send(
    s: *mut SendSlot,
    fd: RawFd,
    data: *const u8,
    len: usize,
    control: &SendControl,
    ecn: bool,
    slot: usize,
) -> squeue::Entry {
    // SAFETY: the caller guarantees `s` is ours and valid.
    let slot_ref = unsafe { &mut *s };
    let namelen = cmsg::write_sockaddr(control.destination, &mut slot_ref.name);
    let controllen = cmsg::encode_send(control, ecn, &mut slot_ref.control);
    slot_ref.iov = libc::iovec {
        iov_base: data.cast_mut().cast(),
        iov_len: len,
    };
    // SAFETY: msghdr is a plain C struct; all-zero is valid.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = (&mut slot_ref.name as *mut libc::sockaddr_storage).cast();
    hdr.msg_namelen = namelen;
    hdr.msg_iov = &mut slot_ref.iov;
    hdr.msg_iovlen = 1;
    if controllen > 0 {
        hdr.msg_control = slot_ref.control.0.as_mut_ptr().cast();
        hdr.msg_controllen = controllen as _;
    }
    slot_ref.hdr = hdr;
    opcode::SendMsg::new(Fd(fd), &slot_ref.hdr as *const libc::msghdr)
        .build()
        .user_data(slot as u64)
}

impl Drop for UringSocket {
    fn drop(&mut self) {
        // The flusher sees the socket gone and ends.
        self.flush.notify_one();
        self.driver
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .shutdown();
    }
}

impl AsyncUdpSocket for UringSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller { socket: self })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let mut d = self.lock();
        if d.closing {
            return Ok(());
        }
        let slot = match d.send_free.pop() {
            Some(s) => s as usize,
            None => {
                // The pool ran out: submit what is queued from this task and take the
                // completions (sends on UDP complete inside the submitting call).
                d.reap_sends();
                if d.send_free.is_empty() {
                    d.submit_sends();
                    d.reap_sends();
                }
                match d.send_free.pop() {
                    Some(s) => s as usize,
                    None => return Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        };
        let len = transmit.contents.len();
        if len > d.send_slot_size {
            d.return_slot(slot as u16);
            warn!(
                len,
                max = d.send_slot_size,
                "transmit larger than a send slot; dropped"
            );
            return Ok(());
        }
        let segment_size = transmit
            .segment_size
            .filter(|s| *s < len && !GSO_DISABLED.load(Ordering::Relaxed))
            .map(|s| s as u16);
        if transmit.segment_size.is_some_and(|s| s < len) && segment_size.is_none() {
            // GSO was switched off after quinn built this transmit: send its segments
            // one by one would need more slots; dropping it is what quinn-udp does for
            // the batch that failed, and QUIC recovers the loss.
            d.return_slot(slot as u16);
            return Ok(());
        }
        let control = SendControl {
            destination: transmit.destination,
            ecn: transmit.ecn,
            segment_size,
            src_ip: transmit.src_ip,
        };
        let ecn = d.ecn_ok;
        let data = d.slot_data(slot);
        let s = d.slot(slot);
        let fd = d.socket.as_raw_fd();
        // The copy and the header are written without the lock: the slot is ours alone
        // (taken from `send_free`, so neither the kernel nor another sender uses it), and
        // holding the lock through a 64 KiB copy made every connection driver and the
        // endpoint driver on the other workers wait for it.
        drop(d);
        // SAFETY: slot `slot` was free, so the kernel holds no request using its memory
        // and no other caller can take it until it is pushed or returned; the regions
        // live as long as `self`. It is written here, then handed to the kernel by the
        // SQE and not touched again until its completion returns it to `send_free`.
        let sqe = unsafe {
            std::ptr::copy_nonoverlapping(transmit.contents.as_ptr(), data, len);
            prepare_send(s, fd, data, len, &control, ecn, slot)
        };
        let mut d = self.lock();
        d.send_info[slot] = SlotInfo {
            segmented: segment_size.is_some(),
            ecn: ecn && transmit.ecn.is_some(),
            destination: Some(transmit.destination),
        };
        // SAFETY: header, address, control and payload live in the slot until the
        // completion frees it (see above).
        if !unsafe { d.push_send(&sqe) } {
            // Not queued: the slot is free again and the datagram is lost (QUIC
            // recovers it), as for a send that failed in the kernel.
            d.return_slot(slot as u16);
            return Ok(());
        }
        d.send_in_flight += 1;
        self.counters.sends.fetch_add(1, Ordering::Relaxed);
        let first = !d.flush_scheduled;
        d.flush_scheduled = true;
        drop(d);
        if first {
            self.flush.notify_one();
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.poll_recv_with(cx, |d| d.deliver(bufs, meta))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    fn max_transmit_segments(&self) -> usize {
        if GSO_DISABLED.load(Ordering::Relaxed) {
            1
        } else {
            self.gso_segments
        }
    }

    fn max_receive_segments(&self) -> usize {
        self.gro_segments
    }

    fn may_fragment(&self) -> bool {
        self.may_fragment
    }
}

/// Write readiness for one task: ready while the pool has a free slot.
struct Poller {
    socket: Arc<UringSocket>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller").finish_non_exhaustive()
    }
}

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let mut d = self.socket.lock();
        if !d.send_free.is_empty() || d.closing {
            return Poll::Ready(Ok(()));
        }
        if !d.reap_sends() {
            d.submit_sends();
            d.reap_sends();
        }
        if !d.send_free.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if !d.writers.iter().any(|w| w.will_wake(cx.waker())) {
            d.writers.push(cx.waker().clone());
        }
        // Nobody watches the send ring: have the receive ring (which tokio watches)
        // report its next completion, so the endpoint driver reaps it and wakes us.
        d.arm_send_poll();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use quinn::udp::EcnCodepoint;

    use super::*;

    fn bind(addr: &str) -> Arc<UringSocket> {
        UringSocket::bind(
            addr.parse().unwrap(),
            &TransportConfig::default(),
            &UringOptions::default(),
        )
        .expect("binding an io_uring socket")
    }

    fn datagram<'a>(to: SocketAddr, contents: &'a [u8], segment: Option<usize>) -> Transmit<'a> {
        Transmit {
            destination: to,
            ecn: Some(EcnCodepoint::Ect0),
            contents,
            segment_size: segment,
            src_ip: None,
        }
    }

    /// Receives as quinn's endpoint does (32 buffers of 64 segments) until `bytes` arrived.
    async fn receive(s: &UringSocket, bytes: usize) -> Vec<(Vec<u8>, RecvMeta)> {
        let chunk = 1452 * s.max_receive_segments();
        let mut storage = vec![0u8; chunk * 32];
        let mut out = Vec::new();
        let mut total = 0;
        while total < bytes {
            let mut meta = [RecvMeta::default(); 32];
            let n = {
                let mut iovs: Vec<IoSliceMut> =
                    storage.chunks_mut(chunk).map(IoSliceMut::new).collect();
                tokio::time::timeout(
                    Duration::from_secs(10),
                    poll_fn(|cx| s.poll_recv(cx, &mut iovs, &mut meta)),
                )
                .await
                .expect("datagrams arrive within 10 s")
                .unwrap()
            };
            for (i, m) in meta[..n].iter().enumerate() {
                out.push((storage[i * chunk..i * chunk + m.len].to_vec(), *m));
                total += m.len;
            }
        }
        out
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_gso_batch_of_jumbo_payloads_fits_one_send_slot() {
        let cfg = TransportConfig {
            max_udp_payload: 9000,
            ..TransportConfig::default()
        };
        let s = UringSocket::bind("[::1]:0".parse().unwrap(), &cfg, &UringOptions::default())
            .expect("binding an io_uring socket");
        let default = bind("[::1]:0");
        assert!(
            default.max_transmit_segments() > 7,
            "loopback offers GSO here"
        );
        // quinn-proto builds batches of up to max_segments x the path MTU, which can reach
        // max_udp_payload; a batch larger than a slot would be dropped at the socket.
        assert_eq!(s.max_transmit_segments(), MAX_SEND_BYTES / 9000);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn gso_send_arrives_as_one_gro_batch_with_its_segment_size() {
        let (a, b) = (bind("[::1]:0"), bind("[::1]:0"));
        assert!(a.max_transmit_segments() > 1, "loopback offers GSO here");
        assert!(b.max_receive_segments() > 1, "loopback offers GRO here");
        let payload: Vec<u8> = (0..1200 * 10 - 7).map(|i| (i % 251) as u8).collect();
        a.try_send(&datagram(b.local_addr, &payload, Some(1200)))
            .unwrap();
        let got = receive(&b, payload.len()).await;
        let bytes: Vec<u8> = got.iter().flat_map(|(d, _)| d.clone()).collect();
        assert_eq!(bytes, payload);
        for (_, m) in &got {
            assert_eq!(m.stride, 1200, "{m:?}");
            assert_eq!(m.addr, a.local_addr);
            assert_eq!(m.ecn, Some(EcnCodepoint::Ect0));
            assert_eq!(m.dst_ip, Some("::1".parse().unwrap()));
        }
        assert_eq!(got.len(), 1, "one GRO batch, as sent");
        assert_eq!(a.counters().sends.load(Ordering::Relaxed), 1);
        assert_eq!(a.counters().send_errors.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn ipv4_datagrams_and_an_ipv4_peer_on_a_dual_stack_socket() {
        let (v4, dual) = (bind("127.0.0.1:0"), bind("[::]:0"));
        v4.try_send(&datagram(
            SocketAddr::new("127.0.0.1".parse().unwrap(), dual.local_addr.port()),
            b"ping",
            None,
        ))
        .unwrap();
        let got = receive(&dual, 4).await;
        assert_eq!(got[0].0, b"ping");
        let from = got[0].1.addr;
        assert_eq!(from.port(), v4.local_addr.port());
        dual.try_send(&datagram(from, b"pong", None)).unwrap();
        assert_eq!(receive(&v4, 4).await[0].0, b"pong");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_of_sends_shares_one_io_uring_enter() {
        let (a, b) = (bind("[::1]:0"), bind("[::1]:0"));
        let before = a.counters().enters.load(Ordering::Relaxed);
        let payload = [7u8; 1200];
        for _ in 0..100 {
            a.try_send(&datagram(b.local_addr, &payload, None)).unwrap();
        }
        // Nothing entered the kernel yet: the sends are queued until this task yields.
        assert_eq!(a.counters().enters.load(Ordering::Relaxed), before);
        let got = receive(&b, 100 * 1200).await;
        assert_eq!(got.iter().map(|(d, _)| d.len()).sum::<usize>(), 100 * 1200);
        assert_eq!(
            a.counters().enters.load(Ordering::Relaxed) - before,
            1,
            "100 sends, one io_uring_enter"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_pool_is_submitted_by_the_sending_task_and_its_slots_reused() {
        let (a, b) = (bind("[::1]:0"), bind("[::1]:0"));
        let before = a.counters().enters.load(Ordering::Relaxed);
        let payload = [1u8; 100];
        for _ in 0..SEND_SLOTS {
            a.try_send(&datagram(b.local_addr, &payload, None)).unwrap();
        }
        assert_eq!(a.counters().enters.load(Ordering::Relaxed), before);
        assert!(a.lock().send_free.is_empty(), "every slot queued");
        // The pool is empty: this send submits the queued ones itself (no flusher, no
        // yield), takes their completions and reuses a slot.
        a.try_send(&datagram(b.local_addr, &payload, None)).unwrap();
        assert_eq!(a.counters().enters.load(Ordering::Relaxed) - before, 1);
        let mut poller = a.clone().create_io_poller();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(poller.as_mut().poll_writable(&mut cx).is_ready());
        let got = receive(&b, (SEND_SLOTS + 1) * 100).await;
        assert_eq!(
            got.iter().map(|(d, _)| d.len()).sum::<usize>(),
            (SEND_SLOTS + 1) * 100
        );
        assert_eq!(a.counters().send_errors.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropping_cancels_the_receive_and_drains_the_ring() {
        let s = bind("[::1]:0");
        assert!(!s.lock().recv_armed, "armed by the first poll, not by bind");
        let mut storage = vec![0u8; 65536];
        let mut iovs = [IoSliceMut::new(&mut storage)];
        let mut meta = [RecvMeta::default()];
        let polled = poll_fn(|cx| Poll::Ready(s.poll_recv(cx, &mut iovs, &mut meta))).await;
        assert!(polled.is_pending(), "nothing was sent");
        assert!(s.lock().recv_armed);
        let started = Instant::now();
        let mut s = Arc::into_inner(s).expect("only reference");
        s.driver.get_mut().unwrap().shutdown();
        let d = s.driver.get_mut().unwrap();
        assert!(!d.busy(), "drained");
        assert!(!d.recv_bufs.leak, "nothing leaked");
        assert!(started.elapsed() < DRAIN_TIMEOUT);
    }

    /// Wakes a `Notify` and remembers that it was woken.
    struct Flag {
        woken: std::sync::atomic::AtomicBool,
        notify: Notify,
    }

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.woken.store(true, Ordering::SeqCst);
            self.notify.notify_one();
        }
    }

    /// The path of a writer that finds the pool empty: `poll_writable` is pending and arms
    /// the send-ring poll on the receive ring; the next send completion makes the receive
    /// ring readable, the endpoint driver's `poll_recv` reaps it and wakes the writer.
    /// Nobody else polls or reaps the send ring in between.
    #[tokio::test(flavor = "current_thread")]
    async fn a_writer_waiting_for_a_slot_is_woken_by_the_next_send_completion() {
        let a = bind("[::1]:0");
        // Every slot taken, as if in flight: their completions never come by themselves.
        let held: Vec<u16> = {
            let mut d = a.lock();
            let held: Vec<u16> = d.send_free.drain(..).collect();
            d.send_in_flight += held.len();
            held
        };
        // quinn's endpoint driver: a task that always has a poll_recv outstanding.
        let driver = tokio::spawn({
            let a = a.clone();
            async move {
                let mut storage = vec![0u8; 65536];
                let mut meta = [RecvMeta::default(); 1];
                loop {
                    let mut iovs = [IoSliceMut::new(&mut storage)];
                    let _ = poll_fn(|cx| a.poll_recv(cx, &mut iovs, &mut meta)).await;
                }
            }
        });
        tokio::task::yield_now().await;

        let mut poller = a.clone().create_io_poller();
        let flag = Arc::new(Flag {
            woken: std::sync::atomic::AtomicBool::new(false),
            notify: Notify::new(),
        });
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(
            poller.as_mut().poll_writable(&mut cx).is_pending(),
            "no slot is free"
        );
        assert!(a.lock().send_poll_armed, "the send-ring poll is armed");

        // One send completes: a NOP on the send ring carrying a held slot's tag.
        {
            let mut d = a.lock();
            let nop = opcode::Nop::new().build().user_data(u64::from(held[0]));
            // SAFETY: a NOP points to no memory.
            unsafe { d.send_ring.submission().push(&nop) }.expect("room for one SQE");
            d.send_ring.submit().expect("submitting the NOP");
        }
        tokio::time::timeout(Duration::from_secs(5), flag.notify.notified())
            .await
            .expect("the waiting writer is woken within 5 s");
        assert!(flag.woken.load(Ordering::SeqCst));
        assert!(
            poller.as_mut().poll_writable(&mut cx).is_ready(),
            "a slot is free again"
        );
        {
            let d = a.lock();
            assert_eq!(d.send_free, vec![held[0]], "the completed slot came back");
            assert!(d.writers.is_empty(), "no writer left waiting");
        }

        driver.abort();
        let _ = driver.await;
        let mut d = a.lock();
        d.send_free.extend(&held[1..]);
        d.send_in_flight -= held.len() - 1;
    }
}
