//! quinn's streams behind STOQ's stream backend traits.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use stoq_core::{RecvStreamBackend, SendStreamBackend, StreamError, StreamId};
use tokio::io::ReadBuf;

use crate::errors::{read_error, write_error, LocalClose};

type StoppedFuture =
    Pin<Box<dyn Future<Output = Result<Option<quinn::VarInt>, quinn::StoppedError>> + Send + Sync>>;

pub(crate) struct QuinnSend {
    pub(crate) inner: quinn::SendStream,
    pub(crate) local_close: Arc<LocalClose>,
    stopped: Option<StoppedFuture>,
}

impl QuinnSend {
    pub(crate) fn new(inner: quinn::SendStream, local_close: Arc<LocalClose>) -> Self {
        QuinnSend {
            inner,
            local_close,
            stopped: None,
        }
    }
}

impl std::fmt::Debug for QuinnSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuinnSend")
            .field("id", &self.inner.id())
            .finish()
    }
}

fn stream_id(id: quinn::StreamId) -> StreamId {
    StreamId(quinn::VarInt::from(id).into_inner())
}

impl SendStreamBackend for QuinnSend {
    fn id(&self) -> StreamId {
        stream_id(self.inner.id())
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, StreamError>> {
        Pin::new(&mut self.inner)
            .poll_write(cx, buf)
            .map_err(|e| write_error(e, &self.local_close))
    }

    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<Result<(), StreamError>> {
        // quinn's `write_chunks` future is a stateless wrapper around a poll function (as
        // quinn's own `poll_write` is), so a fresh one per poll is correct; it hands the
        // `Bytes` to quinn-proto without copying.
        while !chunk.is_empty() {
            let fut = self.inner.write_chunks(std::slice::from_mut(chunk));
            ready!(pin!(fut).poll(cx)).map_err(|e| write_error(e, &self.local_close))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_finish(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        Poll::Ready(self.inner.finish().map_err(|_| StreamError::ClosedStream))
    }

    fn reset(&mut self, code: u64) -> Result<(), StreamError> {
        let code = quinn::VarInt::from_u64(code).map_err(|_| StreamError::ClosedStream)?;
        self.inner
            .reset(code)
            .map_err(|_| StreamError::ClosedStream)
    }

    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<u64>, StreamError>> {
        let fut = self
            .stopped
            .get_or_insert_with(|| Box::pin(self.inner.stopped()));
        let res = ready!(fut.as_mut().poll(cx));
        self.stopped = None;
        Poll::Ready(match res {
            Ok(code) => Ok(code.map(|c| c.into_inner())),
            Err(quinn::StoppedError::ConnectionLost(c)) => Err(StreamError::ConnectionLost(
                crate::errors::connection_error(c, &self.local_close),
            )),
            Err(quinn::StoppedError::ZeroRttRejected) => Err(StreamError::ConnectionLost(
                stoq_core::ConnectionError::Engine("0-RTT data rejected".into()),
            )),
        })
    }

    fn set_priority(&mut self, priority: i32) -> Result<(), StreamError> {
        self.inner
            .set_priority(priority)
            .map_err(|_| StreamError::ClosedStream)
    }
}

pub(crate) struct QuinnRecv {
    pub(crate) inner: quinn::RecvStream,
    pub(crate) local_close: Arc<LocalClose>,
}

impl std::fmt::Debug for QuinnRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuinnRecv")
            .field("id", &self.inner.id())
            .finish()
    }
}

impl RecvStreamBackend for QuinnRecv {
    fn id(&self) -> StreamId {
        stream_id(self.inner.id())
    }

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), StreamError>> {
        self.inner
            .poll_read_buf(cx, buf)
            .map_err(|e| read_error(e, &self.local_close))
    }

    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, StreamError>> {
        // As with `write_chunks`: quinn's `read_chunk` future only wraps a poll function.
        let fut = self.inner.read_chunk(max, true);
        let res = ready!(pin!(fut).poll(cx));
        Poll::Ready(
            res.map(|c| c.map(|c| c.bytes))
                .map_err(|e| read_error(e, &self.local_close)),
        )
    }

    fn stop(&mut self, code: u64) -> Result<(), StreamError> {
        let code = quinn::VarInt::from_u64(code).map_err(|_| StreamError::ClosedStream)?;
        self.inner.stop(code).map_err(|_| StreamError::ClosedStream)
    }
}
