//! A [`tower::Service`] over a Phoenix connection, and the matching server helper.
//!
//! Each call is one bidirectional stream: the request (after the kind byte
//! [`StreamKind::Request`](crate::framing::StreamKind)) and a FIN one way, the response
//! and a FIN the other. Calls are independent streams, so any number run concurrently;
//! tower's layers (timeouts, concurrency limits, retries) compose on top:
//!
//! ```no_run
//! # async fn demo(conn: phoenix::PhoenixConnection) -> Result<(), tower::BoxError> {
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! let mut svc = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(5))
//!     .concurrency_limit(16)
//!     .service(conn.service());
//! let response = svc.ready().await?.call(bytes::Bytes::from_static(b"ping")).await?;
//! # Ok(()) }
//! ```
//!
//! (The `timeout` and `limit` layers need tower's `timeout` and `limit` features in the
//! application's own `Cargo.toml`.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::{Listener, PhoenixConnection, PhoenixError};

/// Request/response over a [`PhoenixConnection`], one bidirectional stream per call.
///
/// `poll_ready` is ready while the connection is open and fails with
/// [`PhoenixError::Connection`] once it has ended (so a balancer or retry layer can drop
/// it). Responses larger than [`max_response_size`](Self::with_max_response_size)
/// (default: the connection's `max_message_size`) fail with
/// [`PhoenixError::MessageTooLarge`].
#[derive(Debug, Clone)]
pub struct PhoenixService {
    conn: PhoenixConnection,
    max_response: u64,
}

impl PhoenixService {
    /// A service on `conn`.
    pub fn new(conn: PhoenixConnection) -> PhoenixService {
        let max_response = conn.max_message_size();
        PhoenixService { conn, max_response }
    }

    /// Sets the largest response accepted.
    #[must_use]
    pub fn with_max_response_size(mut self, max: u64) -> PhoenixService {
        self.max_response = max;
        self
    }

    /// The connection.
    pub fn connection(&self) -> &PhoenixConnection {
        &self.conn
    }
}

impl tower::Service<Bytes> for PhoenixService {
    type Response = Bytes;
    type Error = PhoenixError;
    type Future = Pin<Box<dyn Future<Output = Result<Bytes, PhoenixError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), PhoenixError>> {
        Poll::Ready(match self.conn.close_reason() {
            Some(reason) => Err(PhoenixError::Connection(reason)),
            None => Ok(()),
        })
    }

    fn call(&mut self, request: Bytes) -> Self::Future {
        let conn = self.conn.clone();
        let max = self.max_response;
        Box::pin(async move { conn.request(request, max).await })
    }
}

/// Where [`serve_requests`] takes requests from.
#[derive(Debug, Clone)]
pub enum ServeTarget {
    /// Every connection a listener accepts.
    Listener(Listener),
    /// One connection.
    Connection(PhoenixConnection),
}

impl From<Listener> for ServeTarget {
    fn from(l: Listener) -> Self {
        ServeTarget::Listener(l)
    }
}

impl From<&Listener> for ServeTarget {
    fn from(l: &Listener) -> Self {
        ServeTarget::Listener(l.clone())
    }
}

impl From<PhoenixConnection> for ServeTarget {
    fn from(c: PhoenixConnection) -> Self {
        ServeTarget::Connection(c)
    }
}

impl From<&PhoenixConnection> for ServeTarget {
    fn from(c: &PhoenixConnection) -> Self {
        ServeTarget::Connection(c.clone())
    }
}

/// Answers [`PhoenixService`] requests with `handler` (each request concurrently) until
/// the listener or connection is closed. See [`Listener::serve_requests`] and
/// [`PhoenixConnection::serve_requests`].
pub async fn serve_requests<F, Fut>(
    target: impl Into<ServeTarget>,
    handler: F,
) -> Result<(), PhoenixError>
where
    F: Fn(Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Bytes> + Send + 'static,
{
    match target.into() {
        ServeTarget::Listener(l) => l.serve_requests(handler).await,
        ServeTarget::Connection(c) => c.serve_requests(handler).await,
    }
}
