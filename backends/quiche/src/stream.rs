//! quiche streams behind STOQ's poll-based stream traits.
//!
//! A stream handle is a connection reference and a stream ID; every call locks the
//! connection, runs one quiche stream call and, if that queued something to send, flags
//! the driver. Mapping:
//! * `poll_write` copies into one `Bytes` and hands it to `stream_send_zc`;
//!   `poll_write_chunk` hands the caller's `Bytes` over without copying.
//! * Blocked writers park their waker; after each batch of I/O the driver asks quiche
//!   for the parked streams' capacity (`stream_capacity`) and wakes those that can go
//!   on (see `ConnState::after_io` for why not `stream_writable_next()`).
//! * `poll_finish` queues the FIN (`stream_send_zc` of nothing with `fin`), `reset`
//!   is `stream_shutdown(Write, code)`, `stop` is `stream_shutdown(Read, code)`.
//! * Reads copy straight into the caller's buffer (`stream_recv_buf`); a peer reset
//!   surfaces as `StreamError::Reset(code)`, a STOP_SENDING as `StreamError::Stopped`.

use std::task::{Context, Poll};

use bytes::Bytes;
use stoq_core::{RecvStreamBackend, SendStreamBackend, StreamError, StreamId};
use tokio::io::ReadBuf;

use crate::connection::ConnRef;

/// The sending half of a quiche stream.
pub(crate) struct QuicheSend {
    conn: ConnRef,
    id: u64,
}

impl QuicheSend {
    pub(crate) fn new(conn: ConnRef, id: u64) -> Self {
        QuicheSend { conn, id }
    }
}

impl std::fmt::Debug for QuicheSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicheSend").field("id", &self.id).finish()
    }
}

impl SendStreamBackend for QuicheSend {
    fn id(&self) -> StreamId {
        StreamId(self.id)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, StreamError>> {
        let r = self.conn.state.lock().poll_write(self.id, cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.mark_dirty();
        }
        r
    }

    fn poll_write_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<Result<(), StreamError>> {
        let before = chunk.len();
        let r = self.conn.state.lock().poll_write_chunk(self.id, cx, chunk);
        if chunk.len() < before {
            self.conn.mark_dirty();
        }
        r
    }

    fn poll_finish(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        let r = self.conn.state.lock().finish(self.id);
        self.conn.mark_dirty();
        Poll::Ready(r)
    }

    fn reset(&mut self, code: u64) -> Result<(), StreamError> {
        let r = self.conn.state.lock().reset(self.id, code);
        self.conn.mark_dirty();
        r
    }

    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<u64>, StreamError>> {
        self.conn.state.lock().poll_stopped(self.id, cx)
    }

    fn set_priority(&mut self, priority: i32) -> Result<(), StreamError> {
        self.conn.state.lock().set_priority(self.id, priority)
    }
}

impl Drop for QuicheSend {
    fn drop(&mut self) {
        self.conn.state.lock().release(self.id, true);
    }
}

/// The receiving half of a quiche stream.
pub(crate) struct QuicheRecv {
    conn: ConnRef,
    id: u64,
}

impl QuicheRecv {
    pub(crate) fn new(conn: ConnRef, id: u64) -> Self {
        QuicheRecv { conn, id }
    }
}

impl std::fmt::Debug for QuicheRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicheRecv").field("id", &self.id).finish()
    }
}

impl RecvStreamBackend for QuicheRecv {
    fn id(&self) -> StreamId {
        StreamId(self.id)
    }

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), StreamError>> {
        let before = buf.filled().len();
        let r = self.conn.state.lock().poll_read(self.id, cx, buf);
        if buf.filled().len() > before {
            // Reading may have opened flow-control credit to announce.
            self.conn.mark_dirty();
        }
        r
    }

    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, StreamError>> {
        let r = self.conn.state.lock().poll_read_chunk(self.id, cx, max);
        if matches!(r, Poll::Ready(Ok(Some(_)))) {
            self.conn.mark_dirty();
        }
        r
    }

    fn stop(&mut self, code: u64) -> Result<(), StreamError> {
        let r = self.conn.state.lock().stop(self.id, code);
        self.conn.mark_dirty();
        r
    }
}

impl Drop for QuicheRecv {
    fn drop(&mut self) {
        self.conn.state.lock().release(self.id, false);
    }
}
