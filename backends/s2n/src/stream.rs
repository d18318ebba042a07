//! s2n-quic's streams behind STOQ's stream backend traits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use stoq_core::{Capability, RecvStreamBackend, SendStreamBackend, StreamError, StreamId};
use tokio::io::ReadBuf;

use crate::connection::ConnCore;
use crate::errors::{app_code, recv_error, send_error};
use crate::events::ConnShared;

/// How often [`S2nSend::poll_stopped`] re-checks an unfinished stream for STOP_SENDING
/// once everything written so far is acknowledged (s2n-quic offers no "wait for
/// STOP_SENDING" operation; see `poll_stopped`).
const STOPPED_RECHECK: Duration = Duration::from_millis(10);

/// Maps a connection error seen on a stream to the connection's recorded close reason.
fn lost(shared: &ConnShared, e: s2n_quic::connection::Error) -> stoq_core::ConnectionError {
    shared
        .close_reason()
        .unwrap_or_else(|| crate::errors::connection_error(e))
}

/// The sending half of an s2n-quic stream.
pub(crate) struct S2nSend {
    inner: s2n_quic::stream::SendStream,
    /// Keeps the connection open while the stream lives.
    core: Arc<ConnCore>,
    finished: bool,
    reset: bool,
    /// The peer's STOP_SENDING code once seen. s2n-quic reports it once and then forgets
    /// the stream (later operations fail with a generic stream error).
    stopped_by_peer: Option<u64>,
    recheck: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl S2nSend {
    pub(crate) fn new(inner: s2n_quic::stream::SendStream, core: Arc<ConnCore>) -> Self {
        S2nSend {
            inner,
            core,
            finished: false,
            reset: false,
            stopped_by_peer: None,
            recheck: None,
        }
    }

    fn err(&mut self, e: s2n_quic::stream::Error) -> StreamError {
        match send_error(e, self.reset, |c| lost(&self.core.shared, c)) {
            StreamError::Stopped(code) => {
                self.stopped_by_peer = Some(code);
                StreamError::Stopped(code)
            }
            StreamError::ClosedStream if !self.reset => match self.stopped_by_peer {
                Some(code) => StreamError::Stopped(code),
                None => StreamError::ClosedStream,
            },
            other => other,
        }
    }
}

impl std::fmt::Debug for S2nSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2nSend")
            .field("id", &self.inner.id())
            .field("finished", &self.finished)
            .finish()
    }
}

impl SendStreamBackend for S2nSend {
    fn id(&self) -> StreamId {
        StreamId(self.inner.id())
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, StreamError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // s2n-quic takes ownership of `Bytes` chunks; a borrowed slice has to be copied.
        // `poll_send_ready` says how much the send buffer accepts, so the copy is never
        // larger than what is queued.
        let available = match ready!(self.inner.poll_send_ready(cx)) {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(self.err(e))),
        };
        let n = available.min(buf.len());
        if n == 0 {
            // Ready with no space means no space will come (s2n-quic returns `Pending` and
            // keeps the waker while the buffer is merely full): the stream was finished.
            return Poll::Ready(Err(StreamError::ClosedStream));
        }
        match self.inner.send_data(Bytes::copy_from_slice(&buf[..n])) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(self.err(e))),
        }
    }

    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<Result<(), StreamError>> {
        // Zero-copy: s2n-quic queues the `Bytes` itself and empties `chunk` once queued.
        while !chunk.is_empty() {
            if let Err(e) = ready!(self.inner.poll_send(chunk, cx)) {
                return Poll::Ready(Err(self.err(e)));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_finish(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        match self.inner.finish() {
            Ok(()) => {
                self.finished = true;
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(self.err(e))),
        }
    }

    fn reset(&mut self, code: u64) -> Result<(), StreamError> {
        self.reset = true;
        self.inner.reset(app_code(code)).map_err(|e| self.err(e))
    }

    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<u64>, StreamError>> {
        if self.reset {
            return Poll::Ready(Err(StreamError::ClosedStream));
        }
        if self.finished {
            // Finished: `poll_close` completes once the peer acknowledged all data and the
            // FIN, or fails with the peer's STOP_SENDING code.
            return match ready!(self.inner.poll_close(cx)) {
                Ok(()) => Poll::Ready(Ok(None)),
                Err(e) => match self.err(e) {
                    StreamError::Stopped(code) => Poll::Ready(Ok(Some(code))),
                    other => Poll::Ready(Err(other)),
                },
            };
        }
        // Not finished: only STOP_SENDING (or the connection ending) can complete this.
        // `poll_flush` reports both while data is unacknowledged; once everything written
        // so far is acknowledged it returns at once, and s2n-quic has no operation that
        // waits for STOP_SENDING alone, so the adapter re-checks on a short timer.
        loop {
            match self.inner.poll_flush(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    return match self.err(e) {
                        StreamError::Stopped(code) => Poll::Ready(Ok(Some(code))),
                        other => Poll::Ready(Err(other)),
                    }
                }
                Poll::Ready(Ok(())) => {}
            }
            let sleep = self
                .recheck
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(STOPPED_RECHECK)));
            ready!(sleep.as_mut().poll(cx));
            self.recheck = None;
        }
    }

    fn set_priority(&mut self, _priority: i32) -> Result<(), StreamError> {
        // s2n-quic 1.91 has no stream priorities (its send streams offer no such API).
        Err(StreamError::Unsupported(Capability::StreamPriority))
    }
}

/// The receiving half of an s2n-quic stream.
pub(crate) struct S2nRecv {
    inner: s2n_quic::stream::ReceiveStream,
    /// Keeps the connection open while the stream lives.
    core: Arc<ConnCore>,
    /// Bytes of a received chunk not yet handed out (s2n-quic returns whole chunks).
    pending: Bytes,
    stopped: bool,
    ended: bool,
}

impl S2nRecv {
    pub(crate) fn new(inner: s2n_quic::stream::ReceiveStream, core: Arc<ConnCore>) -> Self {
        S2nRecv {
            inner,
            core,
            pending: Bytes::new(),
            stopped: false,
            ended: false,
        }
    }

    /// The next non-empty chunk, or `None` at the clean end.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>> {
        if self.stopped {
            return Poll::Ready(Err(StreamError::ClosedStream));
        }
        if !self.pending.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))));
        }
        if self.ended {
            return Poll::Ready(Ok(None));
        }
        loop {
            match ready!(self.inner.poll_receive(cx)) {
                Ok(Some(chunk)) if chunk.is_empty() => continue,
                Ok(Some(chunk)) => return Poll::Ready(Ok(Some(chunk))),
                Ok(None) => {
                    self.ended = true;
                    return Poll::Ready(Ok(None));
                }
                Err(e) => {
                    let shared = &self.core.shared;
                    return Poll::Ready(Err(recv_error(e, |c| lost(shared, c))));
                }
            }
        }
    }
}

impl std::fmt::Debug for S2nRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2nRecv")
            .field("id", &self.inner.id())
            .finish()
    }
}

impl RecvStreamBackend for S2nRecv {
    fn id(&self) -> StreamId {
        StreamId(self.inner.id())
    }

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), StreamError>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let Some(mut chunk) = ready!(self.poll_chunk(cx))? else {
            return Poll::Ready(Ok(()));
        };
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk.split_to(n));
        self.pending = chunk;
        Poll::Ready(Ok(()))
    }

    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, StreamError>> {
        if max == 0 {
            return Poll::Ready(Ok(Some(Bytes::new())));
        }
        let Some(mut chunk) = ready!(self.poll_chunk(cx))? else {
            return Poll::Ready(Ok(None));
        };
        if chunk.len() > max {
            self.pending = chunk.split_off(max);
        }
        Poll::Ready(Ok(Some(chunk)))
    }

    fn stop(&mut self, code: u64) -> Result<(), StreamError> {
        self.stopped = true;
        self.pending = Bytes::new();
        if self.ended {
            // The stream already ended cleanly; there is nothing to stop.
            return Ok(());
        }
        self.inner
            .stop_sending(app_code(code))
            .map_err(|e| recv_error(e, |c| lost(&self.core.shared, c)))
    }
}
