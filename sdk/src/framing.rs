//! Phoenix's wire formats, and the reassembler for multiplexed transfers.
//!
//! Every stream Phoenix opens starts with one **kind byte** ([`StreamKind`]) so the
//! receiver can tell messages, multiplexed lanes, probes, application streams and
//! requests apart on the same connection. All integers are big-endian.
//!
//! ## Message (unidirectional stream, kind `0x01`)
//! ```text
//! kind 0x01 | length u64 | payload (length bytes) | FIN
//! ```
//! The receiver delivers a [`Message`] only when exactly `length` bytes arrived followed
//! by a clean FIN. A reset is an error, a FIN before `length` bytes is
//! [`PhoenixError::Truncated`], bytes beyond `length` are [`PhoenixError::Malformed`]. A
//! `length` above the receiver's limit is refused at once with `STOP_SENDING`
//! ([`codes::MESSAGE_TOO_LARGE`]). The sender reports success only once the peer
//! acknowledged every byte and the FIN (`SendStream::stopped() == Ok(None)`). Probe
//! streams (kind `0x03`) use the same layout and are discarded by the receiver.
//!
//! ## Multiplexed transfer (one unidirectional stream per lane, kind `0x02`)
//! ```text
//! kind 0x02 | lane header | chunk* | FIN
//! lane header (56 bytes): transfer id u64 | total length u64 | lanes u32 | lane index u32 | SHA-256 [32]
//! chunk (32-byte header + data): transfer id u64 | total length u64 | offset u64 | length u64 | data
//! ```
//! A payload is cut into chunks; chunk `i` travels on lane `i % lanes`, and lanes are
//! spread over one or more connections to the same peer. Every lane repeats the
//! transfer's id, length, lane count and the SHA-256 of the whole payload, so lanes may
//! arrive in any order. The receiver writes each chunk at its offset (so the payload is
//! reassembled in order whatever the arrival order), rejects overlapping or out-of-range
//! chunks, and once every lane ended with a clean FIN checks that every byte is covered
//! ([`PhoenixError::MissingChunks`]) and that the SHA-256 matches
//! ([`PhoenixError::HashMismatch`]). Lanes of a transfer are matched by the peer's IP
//! address and the transfer id (random, 64 bits).
//!
//! ## Application stream, request, ping (bidirectional streams)
//! ```text
//! stream:  kind 0x10 | application bytes in both directions
//! request: kind 0x11 | request bytes | FIN      response: response bytes | FIN
//! ping:    kind 0x12 | up to 64 bytes | FIN     echo:     the same bytes | FIN
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use stoq_core::StreamError;

use crate::{Message, PhoenixError};

/// Application error codes Phoenix puts in `STOP_SENDING` and `RESET_STREAM` frames.
pub mod codes {
    /// The message or transfer is larger than the receiver's `max_message_size`.
    pub const MESSAGE_TOO_LARGE: u64 = 0x5001;
    /// The stream's bytes do not follow Phoenix's framing.
    pub const MALFORMED: u64 = 0x5002;
    /// The stream's kind byte is unknown to the receiver.
    pub const UNKNOWN_KIND: u64 = 0x5003;
    /// The multiplexed transfer this lane belongs to already failed.
    pub const TRANSFER_FAILED: u64 = 0x5004;
    /// The receiver has too many bytes in unfinished multiplexed transfers.
    pub const OVERLOADED: u64 = 0x5005;
}

/// The first byte of every stream Phoenix opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum StreamKind {
    /// A whole message (unidirectional).
    Message = 0x01,
    /// One lane of a multiplexed transfer (unidirectional).
    MuxLane = 0x02,
    /// Probe traffic for tier detection, discarded by the receiver (unidirectional).
    Probe = 0x03,
    /// An application stream from `open_stream` (bidirectional).
    Stream = 0x10,
    /// A request of the tower adapter (bidirectional).
    Request = 0x11,
    /// A round-trip-time ping, echoed by the receiver (bidirectional).
    Ping = 0x12,
}

impl StreamKind {
    /// The kind a byte stands for.
    pub fn from_byte(b: u8) -> Option<StreamKind> {
        Some(match b {
            0x01 => StreamKind::Message,
            0x02 => StreamKind::MuxLane,
            0x03 => StreamKind::Probe,
            0x10 => StreamKind::Stream,
            0x11 => StreamKind::Request,
            0x12 => StreamKind::Ping,
            _ => return None,
        })
    }

    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// Length of a message header: kind byte and `u64` length.
pub const MESSAGE_HEADER_LEN: usize = 9;
/// Length of a lane header (after the kind byte).
pub const LANE_HEADER_LEN: usize = 56;
/// Length of a chunk header.
pub const CHUNK_HEADER_LEN: usize = 32;

/// The header of a message (or probe) stream: kind byte, then the payload length.
pub fn encode_message_header(kind: StreamKind, len: u64) -> [u8; MESSAGE_HEADER_LEN] {
    let mut h = [0u8; MESSAGE_HEADER_LEN];
    h[0] = kind.byte();
    h[1..].copy_from_slice(&len.to_be_bytes());
    h
}

/// The header of one lane of a multiplexed transfer (sent after the kind byte
/// [`StreamKind::MuxLane`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneHeader {
    /// Random identifier of the transfer.
    pub transfer_id: u64,
    /// Length of the whole payload.
    pub total_len: u64,
    /// How many lanes the transfer uses.
    pub lanes: u32,
    /// This lane's index, `0..lanes`.
    pub lane_index: u32,
    /// SHA-256 of the whole payload.
    pub sha256: [u8; 32],
}

impl LaneHeader {
    /// The 56 header bytes.
    pub fn encode(&self) -> [u8; LANE_HEADER_LEN] {
        let mut h = [0u8; LANE_HEADER_LEN];
        h[0..8].copy_from_slice(&self.transfer_id.to_be_bytes());
        h[8..16].copy_from_slice(&self.total_len.to_be_bytes());
        h[16..20].copy_from_slice(&self.lanes.to_be_bytes());
        h[20..24].copy_from_slice(&self.lane_index.to_be_bytes());
        h[24..56].copy_from_slice(&self.sha256);
        h
    }

    /// Parses the 56 header bytes.
    pub fn decode(h: &[u8; LANE_HEADER_LEN]) -> LaneHeader {
        LaneHeader {
            transfer_id: be_u64(&h[0..8]),
            total_len: be_u64(&h[8..16]),
            lanes: u32::from_be_bytes(h[16..20].try_into().expect("4 bytes")),
            lane_index: u32::from_be_bytes(h[20..24].try_into().expect("4 bytes")),
            sha256: h[24..56].try_into().expect("32 bytes"),
        }
    }
}

/// The header in front of every chunk of a multiplexed transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The transfer the chunk belongs to.
    pub transfer_id: u64,
    /// Length of the whole payload.
    pub total_len: u64,
    /// Where the chunk's data goes in the payload.
    pub offset: u64,
    /// Length of the chunk's data, which follows the header.
    pub len: u64,
}

impl ChunkHeader {
    /// The 32 header bytes.
    pub fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut h = [0u8; CHUNK_HEADER_LEN];
        h[0..8].copy_from_slice(&self.transfer_id.to_be_bytes());
        h[8..16].copy_from_slice(&self.total_len.to_be_bytes());
        h[16..24].copy_from_slice(&self.offset.to_be_bytes());
        h[24..32].copy_from_slice(&self.len.to_be_bytes());
        h
    }

    /// Parses the 32 header bytes.
    pub fn decode(h: &[u8; CHUNK_HEADER_LEN]) -> ChunkHeader {
        ChunkHeader {
            transfer_id: be_u64(&h[0..8]),
            total_len: be_u64(&h[8..16]),
            offset: be_u64(&h[16..24]),
            len: be_u64(&h[24..32]),
        }
    }
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// What the reader of a lane should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneControl {
    /// Keep reading.
    Continue,
    /// Stop reading and send `STOP_SENDING` with this code; the lane is finished.
    Stop(u64),
}

type TransferKey = (IpAddr, u64);

#[derive(Debug)]
enum Phase {
    LaneHeader,
    ChunkHeader,
    Data {
        offset: u64,
        len: u64,
        remaining: u64,
    },
}

#[derive(Debug)]
struct Lane {
    from: SocketAddr,
    phase: Phase,
    header: Vec<u8>,
    transfer: Option<TransferKey>,
}

struct Transfer {
    from: SocketAddr,
    id: u64,
    total: u64,
    lanes: u32,
    sha256: [u8; 32],
    buf: Vec<u8>,
    /// Covered ranges, start -> end.
    covered: BTreeMap<u64, u64>,
    received: u64,
    lanes_seen: HashSet<u32>,
    lanes_open: u32,
    lanes_done: u32,
    failed: bool,
    last_activity: Instant,
}

/// Reassembles multiplexed transfers from their lanes (sans-IO: feed it the bytes read
/// from each lane and tell it how each lane ended).
///
/// Lanes are identified by a number the caller picks (unique per lane stream). Results —
/// complete [`Message`]s and failed transfers as [`PhoenixError::Incoming`] — are queued and
/// taken with [`take_deliveries`](Self::take_deliveries); each transfer yields exactly one.
///
/// ```
/// use phoenix::framing::{sha256, ChunkHeader, LaneControl, LaneHeader, Reassembler};
/// let payload = b"hello, multiplexed world";
/// let header = LaneHeader { transfer_id: 7, total_len: payload.len() as u64, lanes: 1,
///                           lane_index: 0, sha256: sha256(payload) };
/// let chunk = ChunkHeader { transfer_id: 7, total_len: payload.len() as u64, offset: 0,
///                           len: payload.len() as u64 };
/// let mut lane = header.encode().to_vec();
/// lane.extend_from_slice(&chunk.encode());
/// lane.extend_from_slice(payload);
///
/// let from = "[::1]:4433".parse().unwrap();
/// let mut r = Reassembler::new(1 << 20);
/// assert_eq!(r.lane_data(1, from, &lane), LaneControl::Continue);
/// r.lane_end(1, Ok(()));
/// let msg = r.take_deliveries().pop().unwrap().unwrap();
/// assert_eq!(&msg.bytes[..], payload);
/// ```
pub struct Reassembler {
    max_message_size: u64,
    budget: u64,
    buffered: u64,
    stall_timeout: Duration,
    lanes: HashMap<u64, Lane>,
    transfers: HashMap<TransferKey, Transfer>,
    deliveries: VecDeque<Result<Message, PhoenixError>>,
}

impl fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reassembler")
            .field("transfers", &self.transfers.len())
            .field("lanes", &self.lanes.len())
            .field("buffered", &self.buffered)
            .finish()
    }
}

/// How long a multiplexed transfer may go without progress before it is abandoned.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Reassembler {
    /// A reassembler accepting transfers of up to `max_message_size` bytes, with at most
    /// four such transfers' worth of bytes buffered at once.
    pub fn new(max_message_size: u64) -> Self {
        Reassembler {
            max_message_size,
            budget: max_message_size.saturating_mul(4),
            buffered: 0,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            lanes: HashMap::new(),
            transfers: HashMap::new(),
            deliveries: VecDeque::new(),
        }
    }

    /// Sets the total bytes unfinished transfers may hold; a transfer that would exceed it
    /// is refused with [`codes::OVERLOADED`].
    #[must_use]
    pub fn with_budget(mut self, budget: u64) -> Self {
        self.budget = budget;
        self
    }

    /// Sets how long a transfer may go without progress before it fails with
    /// [`PhoenixError::TransferStalled`].
    #[must_use]
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Transfers in progress (including failed ones whose lanes are still open).
    pub fn pending_transfers(&self) -> usize {
        self.transfers.len()
    }

    /// Bytes held by unfinished transfers.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered
    }

    /// Completed messages and failed transfers, oldest first.
    pub fn take_deliveries(&mut self) -> Vec<Result<Message, PhoenixError>> {
        self.deliveries.drain(..).collect()
    }

    /// Feeds bytes read from lane `lane` (everything after the kind byte), which arrived
    /// from `from`. On [`LaneControl::Stop`] the lane is finished: stop the stream with the
    /// code and call nothing more for it.
    pub fn lane_data(&mut self, lane: u64, from: SocketAddr, mut input: &[u8]) -> LaneControl {
        let now = Instant::now();
        if !self.lanes.contains_key(&lane) {
            self.expire_stalled(now);
            self.lanes.insert(
                lane,
                Lane {
                    from,
                    phase: Phase::LaneHeader,
                    header: Vec::with_capacity(LANE_HEADER_LEN),
                    transfer: None,
                },
            );
        }
        while !input.is_empty() {
            let l = self.lanes.get_mut(&lane).expect("lane present");
            if let Some(key) = l.transfer {
                match self.transfers.get_mut(&key) {
                    Some(t) if !t.failed => t.last_activity = now,
                    // The transfer failed (another lane, or stalled): end this lane quietly.
                    _ => return self.drop_lane(lane, codes::TRANSFER_FAILED),
                }
            }
            match l.phase {
                Phase::LaneHeader => {
                    let take = (LANE_HEADER_LEN - l.header.len()).min(input.len());
                    l.header.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if l.header.len() == LANE_HEADER_LEN {
                        let raw: [u8; LANE_HEADER_LEN] =
                            l.header[..].try_into().expect("header length");
                        l.header.clear();
                        l.phase = Phase::ChunkHeader;
                        if let ctl @ LaneControl::Stop(_) =
                            self.begin_lane(lane, LaneHeader::decode(&raw), now)
                        {
                            return ctl;
                        }
                    }
                }
                Phase::ChunkHeader => {
                    let take = (CHUNK_HEADER_LEN - l.header.len()).min(input.len());
                    l.header.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if l.header.len() == CHUNK_HEADER_LEN {
                        let raw: [u8; CHUNK_HEADER_LEN] =
                            l.header[..].try_into().expect("header length");
                        l.header.clear();
                        if let ctl @ LaneControl::Stop(_) =
                            self.begin_chunk(lane, ChunkHeader::decode(&raw))
                        {
                            return ctl;
                        }
                    }
                }
                Phase::Data {
                    offset,
                    len,
                    remaining,
                } => {
                    let key = l.transfer.expect("data phase has a transfer");
                    let n = remaining.min(input.len() as u64);
                    let t = self.transfers.get_mut(&key).expect("checked above");
                    let start = offset as usize;
                    t.buf[start..start + n as usize].copy_from_slice(&input[..n as usize]);
                    input = &input[n as usize..];
                    l.phase = if remaining == n {
                        Phase::ChunkHeader
                    } else {
                        Phase::Data {
                            offset: offset + n,
                            len,
                            remaining: remaining - n,
                        }
                    };
                }
            }
        }
        LaneControl::Continue
    }

    /// Lane `lane` ended: `Ok(())` for a clean FIN, or the stream error (e.g. a reset).
    /// Completing the last lane of a transfer queues its message (or error).
    pub fn lane_end(&mut self, lane: u64, result: Result<(), StreamError>) {
        let Some(l) = self.lanes.remove(&lane) else {
            return;
        };
        let failure = match result {
            Err(e) => Some(PhoenixError::Stream(e)),
            Ok(()) => match l.phase {
                Phase::ChunkHeader if l.header.is_empty() => None,
                Phase::LaneHeader => Some(PhoenixError::Truncated {
                    expected: LANE_HEADER_LEN as u64,
                    received: l.header.len() as u64,
                }),
                Phase::ChunkHeader => Some(PhoenixError::Truncated {
                    expected: CHUNK_HEADER_LEN as u64,
                    received: l.header.len() as u64,
                }),
                Phase::Data { len, remaining, .. } => Some(PhoenixError::Truncated {
                    expected: len,
                    received: len - remaining,
                }),
            },
        };
        let Some(key) = l.transfer else {
            // The lane never got as far as its header.
            if let Some(e) = failure {
                self.deliveries
                    .push_back(Err(PhoenixError::incoming(l.from, e)));
            }
            return;
        };
        let Some(t) = self.transfers.get_mut(&key) else {
            return;
        };
        t.lanes_open -= 1;
        if let Some(e) = failure {
            self.fail(key, e);
            self.forget_if_idle(key);
            return;
        }
        if t.failed {
            self.forget_if_idle(key);
            return;
        }
        t.lanes_done += 1;
        if t.lanes_done == t.lanes {
            let t = self.transfers.remove(&key).expect("present");
            self.buffered -= t.total;
            self.deliveries.push_back(finish(t));
        }
    }

    /// Fails transfers without progress for longer than the stall timeout.
    pub fn expire_stalled(&mut self, now: Instant) {
        let stalled: Vec<TransferKey> = self
            .transfers
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.last_activity) > self.stall_timeout)
            .map(|(k, _)| *k)
            .collect();
        for key in stalled {
            let id = key.1;
            self.fail(key, PhoenixError::TransferStalled { transfer_id: id });
            self.transfers.remove(&key);
        }
    }

    fn begin_lane(&mut self, lane: u64, h: LaneHeader, now: Instant) -> LaneControl {
        let from = self.lanes[&lane].from;
        if h.lanes == 0 || h.lane_index >= h.lanes {
            return self.reject_lane(
                lane,
                codes::MALFORMED,
                PhoenixError::Malformed(format!(
                    "lane index {} of {} lanes",
                    h.lane_index, h.lanes
                )),
            );
        }
        if h.total_len > self.max_message_size {
            return self.reject_lane(
                lane,
                codes::MESSAGE_TOO_LARGE,
                PhoenixError::MessageTooLarge {
                    size: h.total_len,
                    max: Some(self.max_message_size),
                },
            );
        }
        let key = (from.ip(), h.transfer_id);
        match self.transfers.get_mut(&key) {
            Some(t) if t.failed => {
                t.lanes_seen.insert(h.lane_index);
                self.lanes.remove(&lane);
                self.forget_if_idle(key);
                return LaneControl::Stop(codes::TRANSFER_FAILED);
            }
            Some(t) => {
                let problem =
                    if t.total != h.total_len || t.lanes != h.lanes || t.sha256 != h.sha256 {
                        Some("lane header disagrees with the transfer's other lanes".to_string())
                    } else if !t.lanes_seen.insert(h.lane_index) {
                        Some(format!("lane {} arrived twice", h.lane_index))
                    } else {
                        None
                    };
                if let Some(p) = problem {
                    self.lanes.get_mut(&lane).expect("lane").transfer = Some(key);
                    t.lanes_open += 1;
                    self.fail(key, PhoenixError::Malformed(p));
                    return self.drop_lane(lane, codes::MALFORMED);
                }
                t.lanes_open += 1;
                t.last_activity = now;
            }
            None => {
                if self.buffered + h.total_len > self.budget {
                    let e = PhoenixError::Overloaded {
                        pending: self.buffered,
                        size: h.total_len,
                        budget: self.budget,
                    };
                    return self.reject_lane(lane, codes::OVERLOADED, e);
                }
                self.buffered += h.total_len;
                self.transfers.insert(
                    key,
                    Transfer {
                        from,
                        id: h.transfer_id,
                        total: h.total_len,
                        lanes: h.lanes,
                        sha256: h.sha256,
                        buf: vec![0; h.total_len as usize],
                        covered: BTreeMap::new(),
                        received: 0,
                        lanes_seen: HashSet::from([h.lane_index]),
                        lanes_open: 1,
                        lanes_done: 0,
                        failed: false,
                        last_activity: now,
                    },
                );
            }
        }
        self.lanes.get_mut(&lane).expect("lane").transfer = Some(key);
        LaneControl::Continue
    }

    fn begin_chunk(&mut self, lane: u64, c: ChunkHeader) -> LaneControl {
        let key = self.lanes[&lane].transfer.expect("chunk after lane header");
        let t = self.transfers.get_mut(&key).expect("checked by caller");
        let end = c.offset.checked_add(c.len);
        let problem = if c.transfer_id != t.id || c.total_len != t.total {
            Some("chunk header names another transfer".to_string())
        } else if c.len == 0 {
            Some("empty chunk".to_string())
        } else if end.is_none_or(|e| e > t.total) {
            Some(format!(
                "chunk {}+{} beyond the transfer's {} bytes",
                c.offset, c.len, t.total
            ))
        } else {
            let end = end.expect("checked");
            let before = t.covered.range(..=c.offset).next_back();
            let after = t.covered.range(c.offset..).next();
            if before.is_some_and(|(_, e)| *e > c.offset) || after.is_some_and(|(s, _)| *s < end) {
                Some(format!(
                    "chunk {}+{} overlaps another chunk",
                    c.offset, c.len
                ))
            } else {
                t.covered.insert(c.offset, end);
                t.received += c.len;
                None
            }
        };
        if let Some(p) = problem {
            self.fail(key, PhoenixError::Malformed(p));
            return self.drop_lane(lane, codes::MALFORMED);
        }
        self.lanes.get_mut(&lane).expect("lane").phase = Phase::Data {
            offset: c.offset,
            len: c.len,
            remaining: c.len,
        };
        LaneControl::Continue
    }

    /// Refuses a lane that has not joined a transfer, reporting `e`.
    fn reject_lane(&mut self, lane: u64, code: u64, e: PhoenixError) -> LaneControl {
        let l = self.lanes.remove(&lane).expect("lane");
        self.deliveries
            .push_back(Err(PhoenixError::incoming(l.from, e)));
        LaneControl::Stop(code)
    }

    /// Ends a lane without reporting anything more (its transfer is already dealt with).
    fn drop_lane(&mut self, lane: u64, code: u64) -> LaneControl {
        if let Some(l) = self.lanes.remove(&lane) {
            if let Some(key) = l.transfer {
                if let Some(t) = self.transfers.get_mut(&key) {
                    t.lanes_open = t.lanes_open.saturating_sub(1);
                }
                self.forget_if_idle(key);
            }
        }
        LaneControl::Stop(code)
    }

    /// Marks a transfer failed (once), frees its buffer and reports `e`.
    fn fail(&mut self, key: TransferKey, e: PhoenixError) {
        if let Some(t) = self.transfers.get_mut(&key) {
            if !t.failed {
                t.failed = true;
                t.buf = Vec::new();
                self.buffered -= t.total;
                self.deliveries
                    .push_back(Err(PhoenixError::incoming(t.from, e)));
            }
        }
    }

    /// Forgets a failed transfer once no lane is open and every lane was seen.
    fn forget_if_idle(&mut self, key: TransferKey) {
        if let Some(t) = self.transfers.get(&key) {
            if t.failed && t.lanes_open == 0 && t.lanes_seen.len() as u32 == t.lanes {
                self.transfers.remove(&key);
            }
        }
    }
}

fn finish(t: Transfer) -> Result<Message, PhoenixError> {
    let err = |e| Err(PhoenixError::incoming(t.from, e));
    if t.received != t.total {
        return err(PhoenixError::MissingChunks {
            transfer_id: t.id,
            missing: t.total - t.received,
            total: t.total,
        });
    }
    if sha256(&t.buf) != t.sha256 {
        return err(PhoenixError::HashMismatch { transfer_id: t.id });
    }
    Ok(Message::new(t.from, Bytes::from(t.buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let l = LaneHeader {
            transfer_id: 1 << 60,
            total_len: 12345,
            lanes: 3,
            lane_index: 2,
            sha256: [9; 32],
        };
        assert_eq!(LaneHeader::decode(&l.encode()), l);
        let c = ChunkHeader {
            transfer_id: 5,
            total_len: 99,
            offset: 10,
            len: 20,
        };
        assert_eq!(ChunkHeader::decode(&c.encode()), c);
        let m = encode_message_header(StreamKind::Message, 258);
        assert_eq!(m, [1, 0, 0, 0, 0, 0, 0, 1, 2]);
        for b in 0..=255u8 {
            if let Some(k) = StreamKind::from_byte(b) {
                assert_eq!(k.byte(), b);
            }
        }
    }
}
