//! Sending one payload over several streams and connections (the receiving side is
//! [`Reassembler`](crate::framing::Reassembler); the wire format is in
//! [`framing`](crate::framing)).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::future::try_join_all;

use crate::framing::{sha256, ChunkHeader, LaneHeader, StreamKind, LANE_HEADER_LEN};
use crate::stats::Count;
use crate::{PhoenixConnection, PhoenixError};

/// A future yielding live connections to the same peer from a pool.
pub(crate) type MoreConnections =
    Pin<Box<dyn Future<Output = Result<Vec<PhoenixConnection>, PhoenixError>> + Send>>;

/// How [`send_multiplexed`](crate::PhoenixConnection::send_multiplexed) spreads a payload.
///
/// The payload is cut into chunks of `chunk_size` bytes; chunk `i` goes to lane
/// `i % streams`, and lane `j` is a unidirectional stream on connection
/// `j % connections`. Fewer lanes are used when there are fewer chunks than streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuxOptions {
    /// Lanes (streams) in total, over all connections; at least `connections`.
    pub streams: usize,
    /// Connections to the peer to spread the lanes over (taken from, or added to, the
    /// pool of the [`Phoenix`](crate::Phoenix) that dialled the connection).
    pub connections: usize,
    /// Bytes per chunk.
    pub chunk_size: usize,
}

impl Default for MuxOptions {
    /// Four streams on one connection, 1 MiB chunks.
    fn default() -> Self {
        MuxOptions {
            streams: 4,
            connections: 1,
            chunk_size: 1024 * 1024,
        }
    }
}

impl MuxOptions {
    /// Checks that every count is positive and there are at least as many streams as
    /// connections.
    pub fn validate(&self) -> Result<(), PhoenixError> {
        let bad = |s: &str| Err(PhoenixError::InvalidOptions(s.to_string()));
        if self.streams == 0 {
            return bad("MuxOptions::streams must be at least 1");
        }
        if self.connections == 0 {
            return bad("MuxOptions::connections must be at least 1");
        }
        if self.chunk_size == 0 {
            return bad("MuxOptions::chunk_size must be at least 1");
        }
        if self.streams < self.connections {
            return bad("MuxOptions::streams must be at least MuxOptions::connections");
        }
        if self.streams > u32::MAX as usize {
            return bad("MuxOptions::streams must fit in 32 bits");
        }
        Ok(())
    }
}

/// Sends `data` over lanes spread across `conns` (the first one is charged for it in the
/// statistics).
pub(crate) async fn send(
    conns: &[PhoenixConnection],
    data: Bytes,
    options: MuxOptions,
) -> Result<(), PhoenixError> {
    let first = &conns[0];
    let total = data.len() as u64;
    let max = first.max_message_size();
    if total > max {
        return Err(PhoenixError::MessageTooLarge {
            size: total,
            max: Some(max),
        });
    }
    let _active = first.shared.meter.activity();
    let digest = sha256(&data);
    let chunk = options.chunk_size as u64;
    let chunks = total.div_ceil(chunk) as usize;
    let lanes = options.streams.min(chunks.max(1));
    let transfer_id: u64 = rand::random();
    let lane_futures = (0..lanes).map(|lane| {
        let header = LaneHeader {
            transfer_id,
            total_len: total,
            lanes: lanes as u32,
            lane_index: lane as u32,
            sha256: digest,
        };
        let ranges: Vec<(u64, u64)> = (lane..chunks)
            .step_by(lanes)
            .map(|i| {
                let offset = i as u64 * chunk;
                (offset, chunk.min(total - offset))
            })
            .collect();
        send_lane(&conns[lane % conns.len()], header, &data, ranges)
    });
    try_join_all(lane_futures).await?;
    first.shared.meter.count(Count::TransferSent(total));
    Ok(())
}

async fn send_lane(
    conn: &PhoenixConnection,
    header: LaneHeader,
    data: &Bytes,
    ranges: Vec<(u64, u64)>,
) -> Result<(), PhoenixError> {
    let total = header.total_len;
    let err = |e| PhoenixError::from_send(e, total);
    let mut send = conn.connection().open_uni().await?;
    let mut head = Vec::with_capacity(1 + LANE_HEADER_LEN);
    head.push(StreamKind::MuxLane.byte());
    head.extend_from_slice(&header.encode());
    send.write_all(&head).await.map_err(err)?;
    for (offset, len) in ranges {
        let h = ChunkHeader {
            transfer_id: header.transfer_id,
            total_len: total,
            offset,
            len,
        };
        send.write_all(&h.encode()).await.map_err(err)?;
        send.write_chunk(data.slice(offset as usize..(offset + len) as usize))
            .await
            .map_err(err)?;
    }
    send.finish().await.map_err(err)?;
    match send.stopped().await {
        Ok(None) => Ok(()),
        Ok(Some(code)) => Err(PhoenixError::from_peer_code(code, total)),
        Err(e) => Err(err(e)),
    }
}
