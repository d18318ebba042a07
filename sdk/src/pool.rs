//! Connection pooling: one live connection per peer, reused.
//!
//! A [`Pool`] maps a [`PoolKey`] (peer address and TLS server name) to live connections.
//! [`Phoenix::connect`](crate::Phoenix::connect) asks it first (a *hit*) and dials only on
//! a *miss*. Connections leave the pool when:
//! * they are **dead** (`close_reason()` is `Some`) — noticed on every lookup;
//! * the pool is **full** — the least recently used connection is closed with code 0;
//! * they are **idle** — not handed out and without Phoenix activity for longer than
//!   `idle_timeout`, and not held outside the pool (no clone of the
//!   [`PhoenixConnection`] exists elsewhere) — checked by a background sweep every quarter
//!   of the timeout; they are closed with code 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::PhoenixConnection;

/// What a pooled connection is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The TLS server name the peer's certificate was verified against.
    pub server_name: String,
}

impl PoolKey {
    /// A key for `addr` and `server_name`.
    pub fn new(addr: SocketAddr, server_name: impl Into<String>) -> PoolKey {
        PoolKey {
            addr,
            server_name: server_name.into(),
        }
    }
}

/// Pool limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most connections kept (over all peers); at least 1. Default 64.
    pub max_connections: usize,
    /// Close connections unused for longer than this; `None` keeps them until they die
    /// or are evicted for space. Default 60 s.
    pub idle_timeout: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 64,
            idle_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// Pool counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// Lookups answered with a live pooled connection.
    pub hits: u64,
    /// Lookups that found none (and led to a dial).
    pub misses: u64,
    /// Connections removed from the pool, for any reason.
    pub evictions: u64,
    /// ... because they had died.
    pub evicted_dead: u64,
    /// ... because they were idle for longer than the idle timeout.
    pub evicted_idle: u64,
    /// ... because the pool was full (least recently used first).
    pub evicted_lru: u64,
    /// Connections in the pool now.
    pub open: u64,
}

#[derive(Debug)]
struct Entry {
    key: PoolKey,
    conn: PhoenixConnection,
    last_used: Instant,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    dead: AtomicU64,
    idle: AtomicU64,
    lru: AtomicU64,
}

#[derive(Debug)]
struct PoolInner {
    config: PoolConfig,
    entries: Mutex<Vec<Entry>>,
    counters: Counters,
    /// One dial at a time per target, so concurrent `connect`s share one connection.
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A pool of live connections keyed by peer ([`PoolKey`]: address and TLS server name).
///
/// [`Phoenix::connect`](crate::Phoenix::connect) asks it first (a *hit*) and dials only on
/// a *miss*. Connections leave the pool when:
/// * they are **dead** (`close_reason()` is `Some`) — noticed on every lookup;
/// * the pool is **full** — the least recently used connection is closed with code 0;
/// * they are **idle** — not handed out and without Phoenix activity for longer than
///   `idle_timeout`, and not held outside the pool (no clone of the
///   [`PhoenixConnection`] exists elsewhere) — checked by a background sweep every quarter
///   of the timeout (at least every 10 ms, at most every 5 s); they are closed with code 0.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl Pool {
    /// An empty pool. With an idle timeout and inside a tokio runtime, a background task
    /// sweeps idle connections (it ends when the pool is dropped).
    pub fn new(config: PoolConfig) -> Pool {
        let config = PoolConfig {
            max_connections: config.max_connections.max(1),
            ..config
        };
        let pool = Pool {
            inner: Arc::new(PoolInner {
                config,
                entries: Mutex::default(),
                counters: Counters::default(),
                gates: Mutex::default(),
            }),
        };
        if let (Some(timeout), Ok(rt)) =
            (config.idle_timeout, tokio::runtime::Handle::try_current())
        {
            let period = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
            rt.spawn(sweep_task(Arc::downgrade(&pool.inner), period));
        }
        pool
    }

    /// The pool's limits.
    pub fn config(&self) -> PoolConfig {
        self.inner.config
    }

    /// The most recently used live connection for `key`, counted as a hit or a miss.
    /// Dead connections (of any key) are evicted first.
    pub fn get(&self, key: &PoolKey) -> Option<PhoenixConnection> {
        let found = self.lookup(key, 1).pop();
        self.record(found.is_some());
        found
    }

    /// Up to `n` live connections for `key`, most recently used first, without counting
    /// hits or misses.
    pub fn get_many(&self, key: &PoolKey, n: usize) -> Vec<PhoenixConnection> {
        self.lookup(key, n)
    }

    fn lookup(&self, key: &PoolKey, n: usize) -> Vec<PhoenixConnection> {
        let mut entries = self.inner.entries.lock().expect("pool lock");
        self.evict_dead(&mut entries);
        let now = Instant::now();
        let mut matching: Vec<&mut Entry> = entries.iter_mut().filter(|e| &e.key == key).collect();
        matching.sort_by_key(|e| std::cmp::Reverse(e.last_used));
        matching
            .into_iter()
            .take(n)
            .map(|e| {
                e.last_used = now;
                e.conn.clone()
            })
            .collect()
    }

    /// Adds a connection under `key`, evicting (and closing) the least recently used
    /// connections while the pool is over its size limit.
    pub fn insert(&self, key: PoolKey, conn: PhoenixConnection) {
        let mut entries = self.inner.entries.lock().expect("pool lock");
        if entries.iter().any(|e| e.conn == conn) {
            return;
        }
        self.evict_dead(&mut entries);
        while entries.len() >= self.inner.config.max_connections {
            let (i, _) = entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .expect("pool is not empty");
            let e = entries.swap_remove(i);
            e.conn.close(0, b"evicted from the connection pool");
            self.inner.counters.lru.fetch_add(1, Relaxed);
        }
        entries.push(Entry {
            key,
            conn,
            last_used: Instant::now(),
        });
    }

    /// Removes `conn` from the pool without closing it.
    pub fn remove(&self, conn: &PhoenixConnection) -> bool {
        let mut entries = self.inner.entries.lock().expect("pool lock");
        let before = entries.len();
        entries.retain(|e| &e.conn != conn);
        entries.len() != before
    }

    /// Evicts dead and idle connections now (the background sweep does this
    /// periodically); returns how many left.
    pub fn sweep(&self) -> usize {
        sweep(&self.inner)
    }

    /// Closes every pooled connection with code 0 and empties the pool.
    pub fn clear(&self) {
        let drained: Vec<Entry> = self
            .inner
            .entries
            .lock()
            .expect("pool lock")
            .drain(..)
            .collect();
        for e in drained {
            e.conn.close(0, b"connection pool cleared");
        }
    }

    /// Connections in the pool.
    pub fn len(&self) -> usize {
        self.inner.entries.lock().expect("pool lock").len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pooled connection.
    pub fn connections(&self) -> Vec<PhoenixConnection> {
        let entries = self.inner.entries.lock().expect("pool lock");
        entries.iter().map(|e| e.conn.clone()).collect()
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        let c = &self.inner.counters;
        let (dead, idle, lru) = (
            c.dead.load(Relaxed),
            c.idle.load(Relaxed),
            c.lru.load(Relaxed),
        );
        PoolStats {
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            evictions: dead + idle + lru,
            evicted_dead: dead,
            evicted_idle: idle,
            evicted_lru: lru,
            open: self.len() as u64,
        }
    }

    /// The most recently used live connection under any of `keys`, without counting.
    pub(crate) fn find(&self, keys: &[PoolKey]) -> Option<PhoenixConnection> {
        keys.iter().find_map(|k| self.lookup(k, 1).pop())
    }

    pub(crate) fn record(&self, hit: bool) {
        let c = &self.inner.counters;
        if hit {
            c.hits.fetch_add(1, Relaxed);
        } else {
            c.misses.fetch_add(1, Relaxed);
        }
    }

    /// The dial gate for `target`.
    pub(crate) fn gate(&self, target: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.inner.gates.lock().expect("gates lock");
        gates.retain(|_, g| Arc::strong_count(g) > 1);
        gates.entry(target.to_string()).or_default().clone()
    }

    fn evict_dead(&self, entries: &mut Vec<Entry>) {
        let before = entries.len();
        entries.retain(|e| e.conn.is_open());
        self.inner
            .counters
            .dead
            .fetch_add((before - entries.len()) as u64, Relaxed);
    }
}

fn sweep(inner: &PoolInner) -> usize {
    let now = Instant::now();
    let (dead, idle) = {
        let mut entries = inner.entries.lock().expect("pool lock");
        let before = entries.len();
        entries.retain(|e| e.conn.is_open());
        let dead = before - entries.len();
        let mut idle = Vec::new();
        if let Some(timeout) = inner.config.idle_timeout {
            let mut i = 0;
            while i < entries.len() {
                if is_idle(&entries[i], now, timeout) {
                    idle.push(entries.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        (dead, idle)
    };
    inner.counters.dead.fetch_add(dead as u64, Relaxed);
    inner.counters.idle.fetch_add(idle.len() as u64, Relaxed);
    for e in &idle {
        e.conn.close(0, b"idle in the connection pool");
    }
    dead + idle.len()
}

fn is_idle(e: &Entry, now: Instant, timeout: Duration) -> bool {
    if Arc::strong_count(&e.conn.shared) > 1 {
        return false; // someone outside the pool holds it
    }
    let (last_activity, busy) = e.conn.idle_since();
    if busy {
        return false;
    }
    let last = last_activity.map_or(e.last_used, |a| a.max(e.last_used));
    now.saturating_duration_since(last) > timeout
}

async fn sweep_task(pool: Weak<PoolInner>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        sweep(&inner);
    }
}
