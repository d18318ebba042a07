//! [`Listener`]: a server endpoint accepting connections and their messages.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use futures_util::Stream;
use stoq_core::Transport;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::connection::Ctx;
use crate::{Message, PhoenixConnection, PhoenixError};

struct ListenerShared {
    transport: Arc<dyn Transport>,
    local_addr: SocketAddr,
    /// Every accepted connection that may still yield messages.
    conns: Mutex<Vec<PhoenixConnection>>,
    /// Accepted connections not yet taken by `accept`.
    queue: Mutex<VecDeque<PhoenixConnection>>,
    notify: Arc<Notify>,
    closed: AtomicBool,
    next: AtomicUsize,
    accept_task: Mutex<Option<AbortHandle>>,
    ctx: Arc<Ctx>,
}

/// How long [`Listener::close`] lets messages already being read reach the queue.
const CLOSE_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

impl Drop for ListenerShared {
    fn drop(&mut self) {
        if let Some(t) = self.accept_task.get_mut().expect("task lock").take() {
            t.abort();
        }
    }
}

/// A bound server endpoint: accepts connections ([`accept`](Self::accept)) and receives
/// the messages of all of them ([`next_message`](Self::next_message),
/// [`incoming_messages`](Self::incoming_messages)).
///
/// Connections are accepted in the background as soon as their handshake completes, so
/// messages flow whether or not [`accept`](Self::accept) is called. Cheap to clone; the
/// endpoint stops accepting when the last clone is dropped or [`close`](Self::close) is
/// called.
#[derive(Clone)]
pub struct Listener {
    shared: Arc<ListenerShared>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.shared.local_addr)
            .field("backend", &self.shared.transport.name())
            .finish()
    }
}

impl Listener {
    pub(crate) fn start(
        transport: Arc<dyn Transport>,
        ctx: Arc<Ctx>,
    ) -> Result<Listener, PhoenixError> {
        let local_addr = transport.local_addr()?;
        let shared = Arc::new(ListenerShared {
            transport: transport.clone(),
            local_addr,
            conns: Mutex::default(),
            queue: Mutex::default(),
            notify: Arc::new(Notify::new()),
            closed: AtomicBool::new(false),
            next: AtomicUsize::new(0),
            accept_task: Mutex::default(),
            ctx: ctx.clone(),
        });
        let task = tokio::spawn(accept_loop(transport, ctx, Arc::downgrade(&shared)));
        *shared.accept_task.lock().expect("task lock") = Some(task.abort_handle());
        Ok(Listener { shared })
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The STOQ endpoint underneath.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.shared.transport
    }

    /// The next accepted connection not yet returned by `accept`. Fails with
    /// [`PhoenixError::Closed`] once the listener is closed.
    pub async fn accept(&self) -> Result<PhoenixConnection, PhoenixError> {
        loop {
            let mut notified = pin!(self.shared.notify.notified());
            notified.as_mut().enable();
            if let Some(c) = self.shared.queue.lock().expect("queue lock").pop_front() {
                return Ok(c);
            }
            if self.shared.closed.load(Relaxed) {
                return Err(PhoenixError::Closed);
            }
            notified.await;
        }
    }

    /// The connections accepted so far that are still open or have messages queued.
    pub fn connections(&self) -> Vec<PhoenixConnection> {
        let mut conns = self.shared.conns.lock().expect("conns lock");
        conns.retain(|c| !finished(c));
        conns.clone()
    }

    /// The next message from any accepted connection, taking connections in turn.
    ///
    /// A message that failed on the way in is returned as [`PhoenixError::Incoming`] and
    /// receiving can go on; [`PhoenixError::Closed`] means the listener is closed and
    /// every queued message was read. Each message carries its
    /// [`connection`](Message::connection) to reply on.
    pub async fn next_message(&self) -> Result<Message, PhoenixError> {
        loop {
            let mut notified = pin!(self.shared.notify.notified());
            notified.as_mut().enable();
            if let Some(item) = self.try_next_message() {
                return item;
            }
            if self.shared.closed.load(Relaxed) && self.connections().is_empty() {
                return Err(PhoenixError::Closed);
            }
            notified.await;
        }
    }

    /// A queued message, if any; prunes connections that ended with nothing queued.
    fn try_next_message(&self) -> Option<Result<Message, PhoenixError>> {
        let conns = self.connections();
        if conns.is_empty() {
            return None;
        }
        let start = self.shared.next.fetch_add(1, Relaxed);
        let mut finished = Vec::new();
        let mut found = None;
        for i in 0..conns.len() {
            let c = &conns[(start + i) % conns.len()];
            // A connection whose queue someone is reading with `recv_message` is skipped.
            let Ok(mut rx) = c.shared.messages.try_lock() else {
                continue;
            };
            match rx.try_recv() {
                Ok(item) => {
                    found = Some(item);
                    break;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => finished.push(c.clone()),
            }
        }
        if !finished.is_empty() {
            self.shared
                .conns
                .lock()
                .expect("conns lock")
                .retain(|c| !finished.contains(c));
        }
        found
    }

    /// The messages of all accepted connections as a stream, ending when the listener is
    /// closed (items as [`next_message`](Self::next_message) returns them).
    pub fn incoming_messages(
        &self,
    ) -> impl Stream<Item = Result<Message, PhoenixError>> + Send + 'static {
        futures_util::stream::unfold(self.clone(), |l| async move {
            match l.next_message().await {
                Err(PhoenixError::Closed) => None,
                item => Some((item, l)),
            }
        })
    }

    /// Answers requests on every connection this listener accepts (taking them from
    /// [`accept`](Self::accept)) until the listener is closed. See
    /// [`PhoenixConnection::serve_requests`].
    pub async fn serve_requests<F, Fut>(&self, handler: F) -> Result<(), PhoenixError>
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Bytes> + Send + 'static,
    {
        let handler = Arc::new(handler);
        loop {
            let conn = match self.accept().await {
                Ok(c) => c,
                Err(PhoenixError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            let handler = handler.clone();
            tokio::spawn(async move { conn.serve_requests_shared(handler).await });
        }
    }

    /// Stops accepting, closes every connection (code 0) and waits briefly until the
    /// peers were told. Queued messages can still be read.
    pub async fn close(&self) {
        self.shared.closed.store(true, Relaxed);
        if let Some(t) = self.shared.accept_task.lock().expect("task lock").take() {
            t.abort();
        }
        self.shared.queue.lock().expect("queue lock").clear();
        // A sender is told a message was delivered once the peer's QUIC stack acknowledged
        // it; let messages whose bytes have arrived finish reaching the queue (bounded)
        // before the connections close, so none of those is lost.
        // The first pause also lets a stream whose data just arrived be accepted and
        // counted before the counter is read.
        let deadline = tokio::time::Instant::now() + CLOSE_DRAIN;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            if self.shared.ctx.reading_now() == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        self.shared.transport.close(0, b"listener closed").await;
        self.shared.notify.notify_waiters();
    }
}

/// Whether a connection ended with nothing left to read (so a listener can forget it).
fn finished(c: &PhoenixConnection) -> bool {
    !c.is_open() && c.shared.messages.try_lock().is_ok_and(|rx| rx.is_empty())
}

async fn accept_loop(transport: Arc<dyn Transport>, ctx: Arc<Ctx>, listener: Weak<ListenerShared>) {
    loop {
        let accepted = transport.accept().await;
        let Some(l) = listener.upgrade() else {
            return;
        };
        match accepted {
            Ok(conn) => {
                let pc = PhoenixConnection::wrap(
                    conn,
                    Some(transport.clone()),
                    ctx.clone(),
                    Some(l.notify.clone()),
                );
                {
                    let mut conns = l.conns.lock().expect("conns lock");
                    conns.retain(|c| !finished(c));
                    conns.push(pc.clone());
                }
                {
                    let mut q = l.queue.lock().expect("queue lock");
                    // Connections nobody accepted that have since ended are of no use.
                    q.retain(|c| c.is_open());
                    q.push_back(pc);
                }
                l.notify.notify_waiters();
            }
            Err(_) => {
                l.closed.store(true, Relaxed);
                l.notify.notify_waiters();
                return;
            }
        }
    }
}
