//! Stream handles.
//!
//! Backends implement the poll-based [`SendStreamBackend`] / [`RecvStreamBackend`];
//! applications use the concrete [`SendStream`] / [`RecvStream`], which implement tokio's
//! `AsyncWrite` / `AsyncRead` (so `tokio::io::copy`, codecs and `BufReader` just work),
//! add chunk-based zero-copy methods, keep the connection's application byte counters, and
//! give every engine the same drop semantics.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stats::ConnectionCounters;
use crate::StreamError;

/// A QUIC stream ID (RFC 9000 section 2.1). The two low bits give the initiator and
/// direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    /// Whether the client opened the stream.
    pub fn is_client_initiated(self) -> bool {
        self.0 & 0x1 == 0
    }
    /// Whether the stream is unidirectional.
    pub fn is_unidirectional(self) -> bool {
        self.0 & 0x2 != 0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The sending half of a stream, as a backend implements it.
///
/// All methods are poll-based or synchronous so the hot path allocates nothing.
pub trait SendStreamBackend: Send + Sync + fmt::Debug {
    /// The stream's ID.
    fn id(&self) -> StreamId;

    /// Queues bytes from `buf`, returning how many were accepted (at least 1 when `buf`
    /// is non-empty), or `Pending` while flow control or the send buffer is full.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, StreamError>>;

    /// Queues a whole chunk without copying where the engine allows it. Engines that
    /// copy anyway may implement this with `poll_write`. Returns `Ready(Ok(()))` once
    /// all of `chunk` is queued; on `Pending`, `chunk` holds what is still unsent.
    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<Result<(), StreamError>> {
        while !chunk.is_empty() {
            let n = std::task::ready!(self.poll_write(cx, chunk))?;
            let _ = chunk.split_to(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Marks the end of the stream (FIN) after everything queued so far. Completes once
    /// the FIN is queued in the engine; use [`poll_stopped`](Self::poll_stopped) to learn
    /// when the peer has received everything.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>>;

    /// Abandons the stream with `RESET_STREAM` carrying `code`; unsent data is discarded.
    fn reset(&mut self, code: u64) -> Result<(), StreamError>;

    /// Completes with `Ok(None)` once the peer has acknowledged all data and the FIN, or
    /// `Ok(Some(code))` if the peer sent `STOP_SENDING` with `code`.
    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<u64>, StreamError>>;

    /// Sets the send priority (higher is sent first). Backends without
    /// [`Capability::StreamPriority`](crate::Capability) return `Unsupported`.
    fn set_priority(&mut self, priority: i32) -> Result<(), StreamError>;
}

/// The receiving half of a stream, as a backend implements it.
pub trait RecvStreamBackend: Send + Sync + fmt::Debug {
    /// The stream's ID.
    fn id(&self) -> StreamId;

    /// Reads into `buf`. Leaving `buf` unfilled with `Ready(Ok(()))` means the stream
    /// ended cleanly (the peer's FIN arrived and all data was read). A peer reset is
    /// `Err(StreamError::Reset(code))`, never a clean end.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), StreamError>>;

    /// Reads the next chunk of at most `max` bytes, in order, without copying where the
    /// engine allows it. `Ok(None)` is the clean end of the stream.
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, StreamError>>;

    /// Asks the peer to stop sending with `STOP_SENDING` carrying `code`; further reads
    /// fail with [`StreamError::ClosedStream`].
    fn stop(&mut self, code: u64) -> Result<(), StreamError>;
}

/// The sending half of a QUIC stream.
///
/// Write with `AsyncWrite` (`write_all`, `tokio::io::copy`) or, without copying,
/// [`write_chunk`](Self::write_chunk). End it with [`finish`](Self::finish): the peer then
/// reads every byte and a clean end. **Dropping it without `finish` resets the stream with
/// code [`SendStream::DROP_RESET_CODE`]**, so the peer never mistakes an abandoned
/// message for a complete one — on every engine.
///
/// `AsyncWrite::poll_shutdown` finishes the stream; `poll_flush` is a no-op because QUIC
/// engines send queued data as fast as congestion control allows.
pub struct SendStream {
    inner: Box<dyn SendStreamBackend>,
    counters: Arc<ConnectionCounters>,
    finished: bool,
    reset: bool,
}

impl SendStream {
    /// The application error code sent in `RESET_STREAM` when a `SendStream` is dropped
    /// without `finish()` or `reset()`.
    pub const DROP_RESET_CODE: u64 = 0;

    /// Wraps a backend stream. `counters` are the owning connection's counters; the
    /// handle adds every byte the application writes to them.
    pub fn new(inner: Box<dyn SendStreamBackend>, counters: Arc<ConnectionCounters>) -> Self {
        counters.stream_opened();
        SendStream {
            inner,
            counters,
            finished: false,
            reset: false,
        }
    }

    /// The stream's ID.
    pub fn id(&self) -> StreamId {
        self.inner.id()
    }

    /// Writes all of `chunk` without copying where the engine allows.
    pub async fn write_chunk(&mut self, mut chunk: Bytes) -> Result<(), StreamError> {
        let len = chunk.len() as u64;
        poll_fn(|cx| self.inner.poll_write_chunk(cx, &mut chunk)).await?;
        self.counters.add_app_sent(len);
        Ok(())
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), StreamError> {
        while !buf.is_empty() {
            let n = poll_fn(|cx| self.inner.poll_write(cx, buf)).await?;
            self.counters.add_app_sent(n as u64);
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Ends the stream cleanly: everything written so far is delivered, then the end of
    /// stream. Returns once the FIN is queued; [`stopped`](Self::stopped) waits for the
    /// peer's acknowledgement.
    pub async fn finish(&mut self) -> Result<(), StreamError> {
        if self.reset {
            return Err(StreamError::ClosedStream);
        }
        poll_fn(|cx| self.inner.poll_finish(cx)).await?;
        self.finished = true;
        Ok(())
    }

    /// Abandons the stream with `RESET_STREAM` carrying `code`.
    pub fn reset(&mut self, code: u64) -> Result<(), StreamError> {
        self.inner.reset(code)?;
        self.reset = true;
        Ok(())
    }

    /// Waits until the peer acknowledged all data (`Ok(None)`) or sent `STOP_SENDING`
    /// (`Ok(Some(code))`).
    pub async fn stopped(&mut self) -> Result<Option<u64>, StreamError> {
        poll_fn(|cx| self.inner.poll_stopped(cx)).await
    }

    /// Sets the send priority relative to the connection's other streams.
    pub fn set_priority(&mut self, priority: i32) -> Result<(), StreamError> {
        self.inner.set_priority(priority)
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if !self.finished && !self.reset {
            // Errors mean the stream is already closed (e.g. the peer stopped it or the
            // connection is gone): nothing left to reset.
            let _ = self.inner.reset(Self::DROP_RESET_CODE);
        }
    }
}

impl fmt::Debug for SendStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendStream")
            .field("id", &self.inner.id())
            .field("finished", &self.finished)
            .finish()
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.inner.poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.counters.add_app_sent(n as u64);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        match this.inner.poll_finish(cx) {
            Poll::Ready(Ok(())) => {
                this.finished = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The receiving half of a QUIC stream.
///
/// Read with `AsyncRead` (`read_to_end`, `tokio::io::copy`) or, without copying,
/// [`read_chunk`](Self::read_chunk). A clean end (the peer's FIN) reads as EOF; a peer
/// reset is an error ([`StreamError::Reset`], inside the `io::Error` for `AsyncRead`),
/// never a silent EOF. Dropping it before the end asks the peer to stop sending (code 0).
pub struct RecvStream {
    inner: Box<dyn RecvStreamBackend>,
    counters: Arc<ConnectionCounters>,
    done: bool,
    /// [`RecvStream::stop`] was called: reads fail from then on.
    stopped: bool,
}

impl RecvStream {
    /// Wraps a backend stream; `counters` are the owning connection's counters.
    pub fn new(inner: Box<dyn RecvStreamBackend>, counters: Arc<ConnectionCounters>) -> Self {
        RecvStream {
            inner,
            counters,
            done: false,
            stopped: false,
        }
    }

    /// The stream's ID.
    pub fn id(&self) -> StreamId {
        self.inner.id()
    }

    /// The next chunk of at most `max` bytes, in order; `Ok(None)` at the clean end.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        if self.stopped {
            return Err(StreamError::ClosedStream);
        }
        let chunk = poll_fn(|cx| self.inner.poll_read_chunk(cx, max)).await?;
        match &chunk {
            Some(c) => self.counters.add_app_received(c.len() as u64),
            None => self.done = true,
        }
        Ok(chunk)
    }

    /// Reads into `buf`, returning the number of bytes read; `Ok(0)` at the clean end
    /// (for a non-empty `buf`).
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        if self.stopped {
            return Err(StreamError::ClosedStream);
        }
        let mut rb = ReadBuf::new(buf);
        poll_fn(|cx| self.inner.poll_read(cx, &mut rb)).await?;
        let n = rb.filled().len();
        self.counters.add_app_received(n as u64);
        if n == 0 && rb.capacity() > 0 {
            self.done = true;
        }
        Ok(n)
    }

    /// Reads the whole stream; fails with [`StreamError::Reset`] if the peer reset it, and
    /// stops the stream with code 0 and returns `Ok(None)` if it exceeds `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Option<Vec<u8>>, StreamError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read_chunk(usize::MAX).await? {
            if out.len() + chunk.len() > limit {
                self.stop(0)?;
                return Ok(None);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    }

    /// Asks the peer to stop sending with `STOP_SENDING` carrying `code`. Every read after
    /// it fails with [`StreamError::ClosedStream`], on every backend: what was still in
    /// flight is discarded, and a stopped stream never looks cleanly ended.
    pub fn stop(&mut self, code: u64) -> Result<(), StreamError> {
        self.done = true;
        self.stopped = true;
        self.inner.stop(code)
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.inner.stop(0);
        }
    }
}

impl fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvStream")
            .field("id", &self.inner.id())
            .finish()
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.stopped {
            return Poll::Ready(Err(StreamError::ClosedStream.into()));
        }
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                this.counters.add_app_received(n as u64);
                if n == 0 && buf.remaining() > 0 {
                    this.done = true;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Err(e.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
