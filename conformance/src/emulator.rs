//! A network emulator in user space: a UDP relay between one client and one server that
//! impairs each direction with seeded, reproducible decisions.
//!
//! This kernel has no `netem`, so delay, loss, reordering, duplication and corruption are
//! applied here, between the two ends, the way netem would apply them on an interface
//! (`tbf`/`htb` in a network namespace can add a kernel-side rate limit; this relay has
//! its own). The client dials [`Emulator::addr`]; the relay forwards to the server from a
//! socket of its own, so the server sees the relay as its peer. [`Emulator::start`] relays
//! one client address at a time; [`Emulator::start_shared`] relays any number of clients,
//! each from its own socket toward the server, through the *same* impairments: their
//! datagrams share one bottleneck queue, as flows sharing a link do.
//!
//! Each direction is an [`Impairments`] set. For every datagram, in this order:
//! 1. a **blackhole** interval drops everything;
//! 2. **loss**: random (Bernoulli) or bursty (Gilbert–Elliott, [`GilbertElliott`]);
//! 3. the **bottleneck**: with a [`rate`](Impairments::rate) the datagram waits its turn
//!    behind what is queued (serialisation at that rate) and is dropped when the queue
//!    already holds [`queue_bytes`](Impairments::queue_bytes) (tail drop); the wait is
//!    recorded in the direction's [`QueueDelayHistogram`];
//! 4. **delay** plus uniform **jitter** (jitter alone can reorder), and with probability
//!    [`reorder`](Impairments::reorder) an extra [`reorder_delay`](Impairments::reorder_delay);
//! 5. **duplication**: a second copy, impaired like the first from step 4 on;
//! 6. **corruption**: each copy has one byte flipped with probability
//!    [`corrupt`](Impairments::corrupt).
//!
//! The decisions ([`Impairer`]) are a pure function of the seed and the sequence of
//! (arrival time, length) pairs, so a test can check them without sockets or clocks and a
//! failing run can be replayed with its seed. Wall-clock scheduling of the live relay is
//! of course not reproducible to the microsecond; tokio's timer rounds to 1 ms.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Bursty loss after Gilbert and Elliott: a two-state Markov chain stepped once per
/// datagram, losing with `loss_good` in the good state and `loss_bad` in the bad one.
/// The mean length of a bad period is `1 / bad_to_good` datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from good to bad at each datagram.
    pub good_to_bad: f64,
    /// Probability of moving from bad to good at each datagram.
    pub bad_to_good: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

/// A time interval, measured from the emulator's start, during which a direction drops
/// every datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blackhole {
    /// When it begins, after the emulator started.
    pub start: Duration,
    /// How long it lasts.
    pub duration: Duration,
}

/// The impairments of one direction. [`Default`] is a perfect link (nothing applied).
#[derive(Debug, Clone, PartialEq)]
pub struct Impairments {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Uniform extra delay in `[0, jitter]` per datagram.
    pub jitter: Duration,
    /// Random loss probability (ignored when `burst_loss` is set).
    pub loss: f64,
    /// Bursty loss instead of random loss.
    pub burst_loss: Option<GilbertElliott>,
    /// Probability that a datagram is held back by `reorder_delay` (later ones overtake it).
    pub reorder: f64,
    /// The extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a delivered copy has one byte flipped.
    pub corrupt: f64,
    /// Bottleneck rate in bits per second; `None`: no bottleneck.
    pub rate: Option<u64>,
    /// The bottleneck's queue in bytes (tail drop beyond it). Only with `rate`.
    pub queue_bytes: usize,
    /// Intervals that drop everything.
    pub blackholes: Vec<Blackhole>,
}

impl Default for Impairments {
    fn default() -> Self {
        Impairments {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst_loss: None,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            duplicate: 0.0,
            corrupt: 0.0,
            rate: None,
            queue_bytes: usize::MAX,
            blackholes: Vec::new(),
        }
    }
}

impl Impairments {
    /// Checks that every probability is in `[0, 1]` and a bottleneck has a non-zero rate
    /// and room for one datagram; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let mut probabilities = vec![
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
        ];
        if let Some(ge) = &self.burst_loss {
            probabilities.extend([
                ("burst_loss.good_to_bad", ge.good_to_bad),
                ("burst_loss.bad_to_good", ge.bad_to_good),
                ("burst_loss.loss_good", ge.loss_good),
                ("burst_loss.loss_bad", ge.loss_bad),
            ]);
        }
        for (name, p) in probabilities {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} = {p} is not a probability in [0, 1]"));
            }
        }
        if self.rate == Some(0) {
            return Err("rate must be above 0 bits per second".into());
        }
        if self.rate.is_some() && self.queue_bytes < 1500 {
            return Err(format!(
                "queue_bytes = {} cannot hold one 1500-byte datagram",
                self.queue_bytes
            ));
        }
        Ok(())
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Inside a [`Blackhole`].
    Blackhole,
    /// Random or bursty loss.
    Loss,
    /// The bottleneck queue was full.
    QueueFull,
}

/// One copy to deliver: after `delay` from the datagram's arrival, corrupted or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Time from arrival to delivery.
    pub delay: Duration,
    /// The part of `delay` spent waiting in the bottleneck queue behind earlier datagrams
    /// (not counting this datagram's own serialisation); zero without a bottleneck.
    pub queueing: Duration,
    /// Flip the byte at `corrupt_at % len` (None: deliver intact).
    pub corrupt_at: Option<usize>,
}

/// What happens to one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Dropped, and why.
    Drop(DropReason),
    /// Delivered as these copies (one, or two when duplicated).
    Deliver(Vec<Delivery>),
}

/// The decisions of one direction: deterministic for a seed and a sequence of
/// `(arrival, length)` calls (see the module documentation).
#[derive(Debug)]
pub struct Impairer {
    cfg: Impairments,
    rng: StdRng,
    /// Gilbert–Elliott state.
    bad: bool,
    /// When the bottleneck is free again, measured from the start.
    link_free_at: Duration,
}

impl Impairer {
    /// Decisions for `cfg` from `seed`.
    pub fn new(cfg: Impairments, seed: u64) -> Impairer {
        Impairer {
            cfg,
            rng: StdRng::seed_from_u64(seed),
            bad: false,
            link_free_at: Duration::ZERO,
        }
    }

    /// The fate of a datagram of `len` bytes arriving `arrival` after the start. Calls
    /// must come in order of arrival.
    pub fn decide(&mut self, arrival: Duration, len: usize) -> Fate {
        // Draw every random number a datagram may need up front, so one decision never
        // shifts the random stream of the next (a replay with one impairment changed
        // keeps the others' decisions).
        let draws: [f64; 9] = std::array::from_fn(|_| self.rng.random::<f64>());
        let corrupt_positions: [usize; 2] =
            std::array::from_fn(|_| self.rng.random::<u32>() as usize);
        let cfg = &self.cfg;
        if cfg
            .blackholes
            .iter()
            .any(|b| arrival >= b.start && arrival < b.start + b.duration)
        {
            return Fate::Drop(DropReason::Blackhole);
        }
        let lost = match &cfg.burst_loss {
            Some(ge) => {
                self.bad = if self.bad {
                    draws[0] >= ge.bad_to_good
                } else {
                    draws[0] < ge.good_to_bad
                };
                draws[1] < if self.bad { ge.loss_bad } else { ge.loss_good }
            }
            None => draws[1] < cfg.loss,
        };
        if lost {
            return Fate::Drop(DropReason::Loss);
        }
        let mut queued = Duration::ZERO;
        let mut queueing = Duration::ZERO;
        if let Some(rate) = cfg.rate {
            let start = self.link_free_at.max(arrival);
            let backlog = start - arrival;
            queueing = backlog;
            let backlog_bytes = (backlog.as_secs_f64() * rate as f64 / 8.0) as usize;
            if backlog_bytes + len > cfg.queue_bytes {
                return Fate::Drop(DropReason::QueueFull);
            }
            let serialisation = Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
            self.link_free_at = start + serialisation;
            queued = self.link_free_at - arrival;
        }
        let copy = |jitter_draw: f64, reorder_draw: f64, corrupt_draw: f64, pos: usize| {
            let mut delay = queued + cfg.delay + cfg.jitter.mul_f64(jitter_draw);
            if reorder_draw < cfg.reorder {
                delay += cfg.reorder_delay;
            }
            Delivery {
                delay,
                queueing,
                corrupt_at: (corrupt_draw < cfg.corrupt).then_some(pos),
            }
        };
        let mut copies = vec![copy(draws[2], draws[3], draws[4], corrupt_positions[0])];
        if draws[5] < cfg.duplicate {
            copies.push(copy(draws[6], draws[7], draws[8], corrupt_positions[1]));
        }
        Fate::Deliver(copies)
    }
}

/// Width of one [`QueueDelayHistogram`] bin.
pub const QUEUE_DELAY_BIN: Duration = Duration::from_micros(100);
/// Bins of a [`QueueDelayHistogram`]: 0 to 1 s in 100 us steps; the last bin also holds
/// every longer wait.
pub const QUEUE_DELAY_BINS: usize = 10_000;

/// How long datagrams waited in a direction's bottleneck queue ([`Delivery::queueing`]),
/// one count per delivered copy, in bins of [`QUEUE_DELAY_BIN`]. Lock-free; a benchmark
/// takes a [`snapshot`](Self::snapshot) at the start and at the end of its measurement
/// and subtracts them ([`QueueDelaySnapshot::since`]). Only a direction with a
/// [`rate`](Impairments::rate) records.
#[derive(Debug)]
pub struct QueueDelayHistogram {
    bins: Vec<AtomicU64>,
}

impl Default for QueueDelayHistogram {
    fn default() -> Self {
        QueueDelayHistogram {
            bins: (0..QUEUE_DELAY_BINS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl QueueDelayHistogram {
    /// Counts one wait.
    pub fn record(&self, wait: Duration) {
        let bin = (wait.as_nanos() / QUEUE_DELAY_BIN.as_nanos()) as usize;
        self.bins[bin.min(QUEUE_DELAY_BINS - 1)].fetch_add(1, Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> QueueDelaySnapshot {
        QueueDelaySnapshot {
            counts: self.bins.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }
}

/// The counts of a [`QueueDelayHistogram`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDelaySnapshot {
    /// Count per bin of [`QUEUE_DELAY_BIN`].
    pub counts: Vec<u64>,
}

impl QueueDelaySnapshot {
    /// What was recorded after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &QueueDelaySnapshot) -> QueueDelaySnapshot {
        QueueDelaySnapshot {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }

    /// Waits counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `p`-th percentile (0..=100, nearest rank), as the middle of its bin; `None`
    /// when nothing was counted.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil().clamp(1.0, n as f64) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(QUEUE_DELAY_BIN * i as u32 + QUEUE_DELAY_BIN / 2);
            }
        }
        None
    }

    /// The mean wait (bin middles); `None` when nothing was counted.
    pub fn mean(&self) -> Option<Duration> {
        let n = self.count();
        (n > 0).then(|| {
            let sum: f64 = self
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| (i as f64 + 0.5) * *c as f64)
                .sum();
            QUEUE_DELAY_BIN.mul_f64(sum / n as f64)
        })
    }
}

/// Counters of one direction.
#[derive(Debug, Default)]
pub struct DirectionStats {
    /// Datagrams that arrived at the relay.
    pub received: AtomicU64,
    /// Copies sent on (duplicates count twice).
    pub delivered: AtomicU64,
    /// Dropped inside a blackhole.
    pub dropped_blackhole: AtomicU64,
    /// Dropped by random or bursty loss.
    pub dropped_loss: AtomicU64,
    /// Dropped by the full bottleneck queue.
    pub dropped_queue: AtomicU64,
    /// Extra copies made.
    pub duplicated: AtomicU64,
    /// Copies delivered with a flipped byte.
    pub corrupted: AtomicU64,
    /// Waits in the bottleneck queue of delivered copies (only with a rate).
    pub queue_delay: QueueDelayHistogram,
}

impl DirectionStats {
    fn count_drop(&self, reason: DropReason) {
        match reason {
            DropReason::Blackhole => &self.dropped_blackhole,
            DropReason::Loss => &self.dropped_loss,
            DropReason::QueueFull => &self.dropped_queue,
        }
        .fetch_add(1, Relaxed);
    }
}

/// A datagram waiting for its delivery time (earliest first; arrival order breaks ties),
/// with the index of the relay slot it belongs to.
type Pending = Reverse<(Instant, u64, usize, Vec<u8>)>;

/// A datagram on its way: delivery time, relay slot, bytes.
type Queued = (Instant, usize, Vec<u8>);

/// One relayed client: the relay's socket toward the server for it, and the client's
/// current address.
#[derive(Debug)]
struct Slot {
    back: Arc<UdpSocket>,
    client: std::sync::Mutex<Option<SocketAddr>>,
}

/// The relay's clients. Locks are never held across an await.
#[derive(Debug, Default)]
struct Slots {
    list: std::sync::RwLock<Vec<Arc<Slot>>>,
    by_client: std::sync::Mutex<HashMap<SocketAddr, usize>>,
}

impl Slots {
    fn get(&self, i: usize) -> Option<Arc<Slot>> {
        self.list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(i)
            .cloned()
    }

    fn push(&self, slot: Slot) -> usize {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        list.push(Arc::new(slot));
        list.len() - 1
    }
}

/// A running relay (see the module documentation). Dropping it stops every task.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    /// Client to server.
    pub up: Arc<DirectionStats>,
    /// Server to client.
    pub down: Arc<DirectionStats>,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
    }
}

/// Everything a relay task needs.
struct Relay {
    server: SocketAddr,
    loopback: SocketAddr,
    front: Arc<UdpSocket>,
    slots: Slots,
    start: Instant,
    up_stats: Arc<DirectionStats>,
    down_stats: Arc<DirectionStats>,
    /// Shared by every slot's server-side receiver (one bottleneck per direction).
    down: std::sync::Mutex<Impairer>,
    up_tx: mpsc::UnboundedSender<Queued>,
    down_tx: mpsc::UnboundedSender<Queued>,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    /// Every client address gets a slot of its own ([`Emulator::start_shared`]).
    shared: bool,
}

impl Relay {
    /// A new slot: a socket toward the server and a task receiving the server's datagrams
    /// on it.
    fn add_slot(self: &Arc<Self>, client: Option<SocketAddr>) -> io::Result<usize> {
        let std_socket = std::net::UdpSocket::bind(self.loopback)?;
        std_socket.connect(self.server)?;
        std_socket.set_nonblocking(true)?;
        let back = Arc::new(UdpSocket::from_std(std_socket)?);
        let index = self.slots.push(Slot {
            back: back.clone(),
            client: std::sync::Mutex::new(client),
        });
        let relay = self.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match back.recv(&mut buf).await {
                    Ok(n) => {
                        let mut impairer = relay.down.lock().unwrap_or_else(|p| p.into_inner());
                        schedule(
                            &mut impairer,
                            &relay.down_stats,
                            relay.start,
                            index,
                            &buf[..n],
                            &relay.down_tx,
                        );
                    }
                    // ICMP port unreachable from a server that is gone: keep going.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                    Err(_) => return,
                }
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        Ok(index)
    }

    /// The slot for a datagram from `from`, made if needed.
    fn slot_for(self: &Arc<Self>, from: SocketAddr) -> io::Result<usize> {
        if !self.shared {
            let slot = self.slots.get(0).expect("made at start");
            *slot.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
            return Ok(0);
        }
        if let Some(i) = self
            .slots
            .by_client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&from)
        {
            return Ok(*i);
        }
        let i = self.add_slot(Some(from))?;
        self.slots
            .by_client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(from, i);
        Ok(i)
    }
}

impl Emulator {
    /// Starts a relay in front of `server`: the client side listens on loopback (the
    /// server's address family), `up` impairs client→server datagrams, `down`
    /// server→client, both seeded from `seed`. One client address at a time is relayed;
    /// a datagram from another address replaces it as the client (the server keeps seeing
    /// the same relay address). Must run in a tokio runtime.
    pub async fn start(
        server: SocketAddr,
        up: Impairments,
        down: Impairments,
        seed: u64,
    ) -> io::Result<Emulator> {
        Self::start_with(server, up, down, seed, false).await
    }

    /// Like [`start`](Self::start), but every client address is relayed from a socket of
    /// its own toward the server (so the server sees one peer per client), and all
    /// clients' datagrams go through the same two [`Impairer`]s: one bottleneck queue per
    /// direction shared by every flow, like flows sharing a link.
    pub async fn start_shared(
        server: SocketAddr,
        up: Impairments,
        down: Impairments,
        seed: u64,
    ) -> io::Result<Emulator> {
        Self::start_with(server, up, down, seed, true).await
    }

    async fn start_with(
        server: SocketAddr,
        up: Impairments,
        down: Impairments,
        seed: u64,
        shared: bool,
    ) -> io::Result<Emulator> {
        for (dir, cfg) in [("up", &up), ("down", &down)] {
            cfg.validate()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{dir}: {e}")))?;
        }
        let loopback: SocketAddr = if server.is_ipv4() {
            "127.0.0.1:0".parse().expect("literal")
        } else {
            "[::1]:0".parse().expect("literal")
        };
        let front = Arc::new(UdpSocket::bind(loopback).await?);
        let addr = front.local_addr()?;
        let (up_tx, up_rx) = mpsc::unbounded_channel::<Queued>();
        let (down_tx, down_rx) = mpsc::unbounded_channel::<Queued>();
        let tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let relay = Arc::new(Relay {
            server,
            loopback,
            front: front.clone(),
            slots: Slots::default(),
            start: Instant::now(),
            up_stats: Arc::new(DirectionStats::default()),
            down_stats: Arc::new(DirectionStats::default()),
            down: std::sync::Mutex::new(Impairer::new(down, seed ^ 0x5eed_d0e5)),
            up_tx,
            down_tx,
            tasks: tasks.clone(),
            shared,
        });
        if !shared {
            relay.add_slot(None)?;
        }
        let mut spawned = Vec::new();
        // Client -> relay: decide, queue for delivery to the server.
        spawned.push(tokio::spawn({
            let relay = relay.clone();
            let mut impairer = Impairer::new(up, seed);
            async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = relay.front.recv_from(&mut buf).await {
                    let Ok(slot) = relay.slot_for(from) else {
                        continue;
                    };
                    schedule(
                        &mut impairer,
                        &relay.up_stats,
                        relay.start,
                        slot,
                        &buf[..n],
                        &relay.up_tx,
                    );
                }
            }
        }));
        spawned.push(tokio::spawn(deliver(up_rx, {
            let relay = relay.clone();
            move |slot: usize, d: Vec<u8>| {
                let slot = relay.slots.get(slot);
                async move {
                    if let Some(slot) = slot {
                        let _ = slot.back.send(&d).await;
                    }
                }
            }
        })));
        spawned.push(tokio::spawn(deliver(down_rx, {
            let relay = relay.clone();
            move |slot: usize, d: Vec<u8>| {
                let to = relay
                    .slots
                    .get(slot)
                    .and_then(|s| *s.client.lock().unwrap_or_else(|p| p.into_inner()));
                let front = relay.front.clone();
                async move {
                    if let Some(to) = to {
                        let _ = front.send_to(&d, to).await;
                    }
                }
            }
        })));
        tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(spawned);
        Ok(Emulator {
            addr,
            up: relay.up_stats.clone(),
            down: relay.down_stats.clone(),
            tasks,
        })
    }

    /// The address clients dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Applies `impairer`'s decision to one datagram of relay slot `slot` and queues its
/// copies.
fn schedule(
    impairer: &mut Impairer,
    stats: &DirectionStats,
    start: Instant,
    slot: usize,
    datagram: &[u8],
    out: &mpsc::UnboundedSender<Queued>,
) {
    stats.received.fetch_add(1, Relaxed);
    let now = Instant::now();
    let rated = impairer.cfg.rate.is_some();
    match impairer.decide(now - start, datagram.len()) {
        Fate::Drop(reason) => stats.count_drop(reason),
        Fate::Deliver(copies) => {
            if copies.len() > 1 {
                stats.duplicated.fetch_add(copies.len() as u64 - 1, Relaxed);
            }
            for c in copies {
                let mut d = datagram.to_vec();
                if let (Some(pos), false) = (c.corrupt_at, d.is_empty()) {
                    let i = pos % d.len();
                    d[i] ^= 0x5a;
                    stats.corrupted.fetch_add(1, Relaxed);
                }
                stats.delivered.fetch_add(1, Relaxed);
                if rated {
                    stats.queue_delay.record(c.queueing);
                }
                let _ = out.send((now + c.delay, slot, d));
            }
        }
    }
}

/// Sends each queued datagram at its time, earliest first.
async fn deliver<F, Fut>(mut rx: mpsc::UnboundedReceiver<Queued>, send: F)
where
    F: Fn(usize, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let next = heap.peek().map(|Reverse((at, _, _, _))| *at);
        tokio::select! {
            item = rx.recv() => match item {
                Some((at, slot, d)) => {
                    heap.push(Reverse((at, seq, slot, d)));
                    seq += 1;
                }
                None if heap.is_empty() => return,
                None => {}
            },
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse((at, _, _, _))| *at <= now) {
                    let Reverse((_, _, slot, d)) = heap.pop().expect("peeked");
                    send(slot, d).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: Impairments, seed: u64, n: usize, spacing: Duration, len: usize) -> Vec<Fate> {
        let mut imp = Impairer::new(cfg, seed);
        (0..n)
            .map(|i| imp.decide(spacing * i as u32, len))
            .collect()
    }

    #[test]
    fn a_default_link_delivers_everything_once_at_once() {
        for f in run(
            Impairments::default(),
            1,
            1000,
            Duration::from_micros(10),
            1200,
        ) {
            assert_eq!(
                f,
                Fate::Deliver(vec![Delivery {
                    delay: Duration::ZERO,
                    queueing: Duration::ZERO,
                    corrupt_at: None
                }])
            );
        }
    }

    #[test]
    fn decisions_are_reproducible_from_the_seed() {
        let cfg = Impairments {
            loss: 0.1,
            jitter: Duration::from_millis(5),
            duplicate: 0.05,
            corrupt: 0.05,
            reorder: 0.1,
            reorder_delay: Duration::from_millis(3),
            ..Impairments::default()
        };
        let a = run(cfg.clone(), 42, 2000, Duration::from_micros(100), 1200);
        let b = run(cfg.clone(), 42, 2000, Duration::from_micros(100), 1200);
        let c = run(cfg, 43, 2000, Duration::from_micros(100), 1200);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn random_loss_duplication_and_corruption_match_their_rates() {
        let cfg = Impairments {
            loss: 0.03,
            duplicate: 0.02,
            corrupt: 0.01,
            ..Impairments::default()
        };
        let n = 100_000;
        let fates = run(cfg, 7, n, Duration::from_micros(10), 1200);
        let lost = fates
            .iter()
            .filter(|f| **f == Fate::Drop(DropReason::Loss))
            .count();
        let copies: Vec<&Delivery> = fates
            .iter()
            .filter_map(|f| match f {
                Fate::Deliver(c) => Some(c),
                Fate::Drop(_) => None,
            })
            .flatten()
            .collect();
        let delivered = n - lost;
        let dups = copies.len() - delivered;
        let corrupted = copies.iter().filter(|c| c.corrupt_at.is_some()).count();
        let share = |k: usize, of: usize| k as f64 / of as f64;
        // Binomial standard deviations are about 0.05 % of n here; 4 of them allowed.
        assert!((share(lost, n) - 0.03).abs() < 0.0025, "loss {lost}");
        assert!((share(dups, delivered) - 0.02).abs() < 0.002, "dups {dups}");
        assert!(
            (share(corrupted, copies.len()) - 0.01).abs() < 0.0015,
            "corrupted {corrupted}"
        );
    }

    #[test]
    fn gilbert_elliott_loss_comes_in_bursts_of_the_configured_length() {
        let cfg = Impairments {
            burst_loss: Some(GilbertElliott {
                good_to_bad: 0.01,
                bad_to_good: 0.25,
                loss_good: 0.0,
                loss_bad: 1.0,
            }),
            ..Impairments::default()
        };
        let fates = run(cfg, 11, 200_000, Duration::from_micros(10), 1200);
        let mut bursts = Vec::new();
        let mut current = 0usize;
        for f in &fates {
            if matches!(f, Fate::Drop(DropReason::Loss)) {
                current += 1;
            } else if current > 0 {
                bursts.push(current);
                current = 0;
            }
        }
        let mean = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
        // Mean bad period 1 / 0.25 = 4 datagrams; stationary loss 0.01 / 0.26 = 3.8 %.
        assert!((mean - 4.0).abs() < 0.3, "mean burst {mean}");
        let lost: usize = bursts.iter().sum();
        let share = lost as f64 / fates.len() as f64;
        assert!((share - 0.01 / 0.26).abs() < 0.004, "loss share {share}");
    }

    #[test]
    fn the_bottleneck_serialises_at_its_rate_and_drops_beyond_its_queue() {
        // 10 Mbit/s: a 1250-byte datagram takes 1 ms. Offered at 2 per ms.
        let cfg = Impairments {
            rate: Some(10_000_000),
            queue_bytes: 10 * 1250,
            ..Impairments::default()
        };
        let fates = run(cfg, 3, 100, Duration::from_micros(500), 1250);
        let delivered: Vec<Duration> = fates
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match f {
                Fate::Deliver(c) => Some(Duration::from_micros(500) * i as u32 + c[0].delay),
                Fate::Drop(r) => {
                    assert_eq!(*r, DropReason::QueueFull);
                    None
                }
            })
            .collect();
        // Departures are exactly 1 ms apart once the queue has built up.
        for w in delivered.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap.abs_diff(Duration::from_millis(1)) < Duration::from_micros(2),
                "gap {gap:?}"
            );
        }
        // Half the offered load fits the link; the queue caps the rest.
        assert!((45..=62).contains(&delivered.len()), "{}", delivered.len());
        // Queueing delay never exceeds the queue's drain time (10 ms).
        for f in &fates {
            if let Fate::Deliver(c) = f {
                assert!(c[0].delay <= Duration::from_millis(11), "{:?}", c[0].delay);
            }
        }
    }

    #[test]
    fn queueing_is_the_wait_behind_earlier_datagrams() {
        // 10 Mbit/s, 1250-byte datagrams (1 ms each) arriving 4 at once: they wait 0, 1,
        // 2 and 3 ms behind each other; the delay adds their own 1 ms serialisation.
        let cfg = Impairments {
            rate: Some(10_000_000),
            queue_bytes: 100 * 1250,
            delay: Duration::from_millis(5),
            ..Impairments::default()
        };
        let mut imp = Impairer::new(cfg, 1);
        let hist = QueueDelayHistogram::default();
        for k in 0..4u32 {
            let Fate::Deliver(c) = imp.decide(Duration::ZERO, 1250) else {
                panic!("nothing is lost")
            };
            assert_eq!(c[0].queueing, Duration::from_millis(u64::from(k)));
            assert_eq!(c[0].delay, Duration::from_millis(u64::from(k) + 1 + 5));
            hist.record(c[0].queueing);
        }
        let snap = hist.snapshot();
        assert_eq!(snap.count(), 4);
        // Bin middles: 0.05, 1.05, 2.05, 3.05 ms.
        assert_eq!(snap.percentile(50.0), Some(Duration::from_micros(1050)));
        assert_eq!(snap.percentile(100.0), Some(Duration::from_micros(3050)));
        assert_eq!(snap.mean(), Some(Duration::from_micros(1550)));
        let empty = QueueDelayHistogram::default().snapshot();
        assert_eq!(snap.since(&snap).count(), 0);
        assert_eq!(snap.since(&empty), snap);
        assert_eq!(empty.percentile(50.0), None);
        // A wait beyond the last bin lands in it.
        hist.record(Duration::from_secs(5));
        assert_eq!(hist.snapshot().since(&snap).counts[QUEUE_DELAY_BINS - 1], 1);
    }

    #[test]
    fn a_blackhole_drops_exactly_its_interval() {
        let cfg = Impairments {
            blackholes: vec![Blackhole {
                start: Duration::from_millis(100),
                duration: Duration::from_millis(50),
            }],
            ..Impairments::default()
        };
        let fates = run(cfg, 5, 300, Duration::from_millis(1), 100);
        for (i, f) in fates.iter().enumerate() {
            let inside = (100..150).contains(&i);
            assert_eq!(
                matches!(f, Fate::Drop(DropReason::Blackhole)),
                inside,
                "datagram at {i} ms"
            );
        }
    }

    #[test]
    fn delay_jitter_and_reordering_stay_within_their_bounds() {
        let cfg = Impairments {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(4),
            reorder: 0.1,
            reorder_delay: Duration::from_millis(10),
            ..Impairments::default()
        };
        let fates = run(cfg, 9, 10_000, Duration::from_micros(100), 1200);
        let mut reordered = 0;
        for f in &fates {
            let Fate::Deliver(c) = f else {
                panic!("nothing is lost")
            };
            let d = c[0].delay;
            assert!(d >= Duration::from_millis(20), "{d:?}");
            assert!(d <= Duration::from_millis(34), "{d:?}");
            if d > Duration::from_millis(24) {
                reordered += 1;
            }
        }
        assert!((800..=1200).contains(&reordered), "reordered {reordered}");
    }

    #[test]
    fn invalid_impairments_are_refused_naming_the_field() {
        let bad = Impairments {
            loss: 1.5,
            ..Impairments::default()
        };
        assert!(bad.validate().unwrap_err().contains("loss"));
        let no_rate = Impairments {
            rate: Some(0),
            ..Impairments::default()
        };
        assert!(no_rate.validate().unwrap_err().contains("rate"));
        let tiny = Impairments {
            rate: Some(1_000_000),
            queue_bytes: 100,
            ..Impairments::default()
        };
        assert!(tiny.validate().unwrap_err().contains("queue_bytes"));
    }

    /// The live relay: datagrams through it arrive, duplicated and corrupted at the rates
    /// asked for, and a perfect link delivers each once and intact.
    #[tokio::test]
    async fn the_relay_forwards_both_ways_with_its_impairments() {
        let server = UdpSocket::bind("[::1]:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                let _ = server.send_to(&buf[..n], from).await;
            }
        });
        let up = Impairments {
            duplicate: 0.1,
            ..Impairments::default()
        };
        let down = Impairments {
            corrupt: 0.1,
            ..Impairments::default()
        };
        let emu = Emulator::start(server_addr, up, down, 1).await.unwrap();
        let client = Arc::new(UdpSocket::bind("[::1]:0").await.unwrap());
        client.connect(emu.addr()).await.unwrap();
        let n = 500u32;
        // Receive while sending: the socket's default buffer holds only ~256 datagrams.
        let receiver = tokio::spawn({
            let client = client.clone();
            async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 64];
                while let Ok(Ok(k)) =
                    tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf)).await
                {
                    got.push(buf[..k].to_vec());
                }
                got
            }
        });
        for i in 0..n {
            client.send(&i.to_be_bytes()).await.unwrap();
            // Pace the sender so no socket buffer on the way overflows.
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let got = receiver.await.unwrap();
        let up_stats = &emu.up;
        let down_stats = &emu.down;
        assert_eq!(up_stats.received.load(Relaxed), u64::from(n));
        let dups = up_stats.duplicated.load(Relaxed);
        assert!((20..=90).contains(&dups), "duplicates {dups}");
        // Every echo (duplicates included) comes back; corrupted ones differ.
        assert_eq!(got.len() as u64, u64::from(n) + dups);
        let corrupted = down_stats.corrupted.load(Relaxed);
        let intact = got
            .iter()
            .filter(|d| d.len() == 4 && u32::from_be_bytes([d[0], d[1], d[2], d[3]]) < n)
            .count() as u64;
        assert!(corrupted > 0, "no corruption at 10 %");
        // A flipped byte (XOR 0x5a) in a 4-byte counter below 500 lands at or above 500
        // unless it hit the lowest byte (a quarter of the flips), so most corruptions
        // are visible as values out of range.
        assert!(intact < got.len() as u64, "corruption not visible");
        drop(emu);
        echo.abort();
    }
    /// The shared relay: two clients each get their own relay socket toward the server
    /// (the server sees two peers), each gets its own echoes back, and both go through
    /// one bottleneck (its queue-delay histogram counts the datagrams of both).
    #[tokio::test]
    async fn the_shared_relay_keeps_clients_apart_behind_one_bottleneck() {
        let server = UdpSocket::bind("[::1]:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let peers = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let echo = tokio::spawn({
            let peers = peers.clone();
            async move {
                let mut buf = vec![0u8; 2048];
                while let Ok((n, from)) = server.recv_from(&mut buf).await {
                    peers.lock().unwrap().insert(from);
                    let _ = server.send_to(&buf[..n], from).await;
                }
            }
        });
        let up = Impairments {
            rate: Some(8_000_000),
            queue_bytes: 1_000_000,
            ..Impairments::default()
        };
        let emu = Emulator::start_shared(server_addr, up, Impairments::default(), 1)
            .await
            .unwrap();
        let n = 50u32;
        let mut clients = Vec::new();
        for tag in [1u8, 2u8] {
            let c = UdpSocket::bind("[::1]:0").await.unwrap();
            c.connect(emu.addr()).await.unwrap();
            clients.push((tag, c));
        }
        // 100 datagrams of 1000 B at 8 Mbit/s take 100 ms to drain: the later ones wait.
        for i in 0..n {
            for (tag, c) in &clients {
                let mut d = vec![*tag; 1000];
                d[..4].copy_from_slice(&i.to_be_bytes());
                c.send(&d).await.unwrap();
            }
            // Let the relay drain its socket: a burst of 100 would overflow the
            // default receive buffer (about 90 datagrams of this size on loopback).
            if i % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        for (tag, c) in &clients {
            let mut buf = [0u8; 2048];
            for _ in 0..n {
                let k = tokio::time::timeout(Duration::from_secs(2), c.recv(&mut buf))
                    .await
                    .expect("an echo within 2 s")
                    .unwrap();
                assert_eq!(k, 1000);
                assert_eq!(buf[500], *tag, "an echo went to the wrong client");
            }
        }
        assert_eq!(
            peers.lock().unwrap().len(),
            2,
            "the server saw one peer per client"
        );
        let q = emu.up.queue_delay.snapshot();
        assert_eq!(q.count(), u64::from(2 * n));
        let p95 = q.percentile(95.0).unwrap();
        assert!(p95 > Duration::from_millis(60), "p95 wait {p95:?}");
        drop(emu);
        echo.abort();
    }
}
