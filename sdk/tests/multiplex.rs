//! Multiplexed transfers: real loopback transfers, and the reassembler fed crafted
//! frames.

mod common;

use std::net::SocketAddr;

use common::{listen, payload, phoenix, within};
use phoenix::framing::{
    sha256, ChunkHeader, LaneControl, LaneHeader, Reassembler, CHUNK_HEADER_LEN, LANE_HEADER_LEN,
};
use phoenix::{codes, MuxOptions, PhoenixError, StreamError};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_mib_over_four_streams() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    let data = payload(20, 20 * MIB);
    let opts = MuxOptions {
        streams: 4,
        connections: 1,
        chunk_size: MIB,
    };
    within(120, client.send_multiplexed(&target, &data, opts))
        .await
        .unwrap();
    let msg = within(60, listener.next_message()).await.unwrap();
    assert_eq!(msg.bytes.len(), data.len());
    assert!(msg.bytes[..] == data[..], "reassembled payload differs");

    let c = client.stats().total.sdk;
    assert_eq!((c.transfers_sent, c.bytes_sent), (1, data.len() as u64));
    let s = server.stats().total.sdk;
    assert_eq!((s.transfers_received, s.messages_received), (1, 1));
    assert_eq!(client.pool().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_mib_over_two_connections() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    // Odd sizes: the last chunk is short.
    let data = payload(21, 20 * MIB + 12345);
    let opts = MuxOptions {
        streams: 4,
        connections: 2,
        chunk_size: 768 * 1024,
    };
    within(120, client.send_multiplexed(&target, &data, opts))
        .await
        .unwrap();
    let msg = within(60, listener.next_message()).await.unwrap();
    assert!(msg.bytes[..] == data[..], "reassembled payload differs");
    assert_eq!(
        client.pool().len(),
        2,
        "the lanes used two pooled connections"
    );
    assert_eq!(listener.connections().len(), 2);
    // Both connections carried lanes.
    for c in client.pool().connections() {
        assert!(c.stats().transport.app_bytes_sent > 5 * MIB as u64);
    }
    // A second transfer reuses the two pooled connections.
    within(
        120,
        client.send_multiplexed(&target, &data[..3 * MIB], opts),
    )
    .await
    .unwrap();
    assert_eq!(
        within(60, listener.next_message()).await.unwrap().len(),
        3 * MIB
    );
    assert_eq!(client.pool().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_mux_options_are_refused() {
    let server = phoenix().await;
    let (listener, target) = listen(&server).await;
    let client = phoenix().await;
    for opts in [
        MuxOptions {
            streams: 0,
            ..MuxOptions::default()
        },
        MuxOptions {
            chunk_size: 0,
            ..MuxOptions::default()
        },
        MuxOptions {
            streams: 2,
            connections: 3,
            chunk_size: 10,
        },
    ] {
        let err = within(20, client.send_multiplexed(&target, b"x", opts))
            .await
            .unwrap_err();
        assert!(matches!(err, PhoenixError::InvalidOptions(_)), "{err:?}");
    }
    // A connection accepted by a listener has no pool to find more connections in.
    let conn = within(20, client.connect(&target)).await.unwrap();
    within(20, conn.send_data(b"hi")).await.unwrap();
    let msg = within(20, listener.next_message()).await.unwrap();
    let err = within(
        20,
        msg.connection().unwrap().send_multiplexed(
            b"x",
            MuxOptions {
                streams: 2,
                connections: 2,
                chunk_size: 1,
            },
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PhoenixError::InvalidOptions(_)), "{err:?}");
    // Tiny and empty payloads work (fewer lanes than streams).
    for data in [&b""[..], b"x", b"0123456789"] {
        within(20, conn.send_multiplexed(data, MuxOptions::default()))
            .await
            .unwrap();
        assert_eq!(
            &within(20, listener.next_message()).await.unwrap().bytes[..],
            data
        );
    }
}

// ---- The reassembler, fed crafted frames --------------------------------------------

fn from() -> SocketAddr {
    "[::1]:5000".parse().unwrap()
}

/// The bytes of every lane of a transfer of `data` (chunk `i` on lane `i % lanes`).
fn lanes(id: u64, data: &[u8], lanes: u32, chunk: usize) -> Vec<Vec<u8>> {
    let total = data.len() as u64;
    let mut out: Vec<Vec<u8>> = (0..lanes)
        .map(|i| {
            LaneHeader {
                transfer_id: id,
                total_len: total,
                lanes,
                lane_index: i,
                sha256: sha256(data),
            }
            .encode()
            .to_vec()
        })
        .collect();
    for (i, c) in data.chunks(chunk).enumerate() {
        let lane = &mut out[i % lanes as usize];
        lane.extend_from_slice(
            &ChunkHeader {
                transfer_id: id,
                total_len: total,
                offset: (i * chunk) as u64,
                len: c.len() as u64,
            }
            .encode(),
        );
        lane.extend_from_slice(c);
    }
    out
}

fn single(r: &mut Reassembler) -> Result<phoenix::Message, PhoenixError> {
    let mut d = r.take_deliveries();
    assert_eq!(d.len(), 1, "expected exactly one delivery");
    d.pop().unwrap()
}

#[test]
fn reassembler_orders_chunks_from_interleaved_lanes() {
    let data = payload(1, 10_000);
    let frames = lanes(42, &data, 3, 700);
    let mut r = Reassembler::new(1 << 20);
    // Feed the lanes interleaved in small, odd-sized pieces, last lane first.
    let mut pos = vec![0usize; frames.len()];
    loop {
        let mut progressed = false;
        for lane in (0..frames.len()).rev() {
            let f = &frames[lane];
            if pos[lane] < f.len() {
                let end = (pos[lane] + 13).min(f.len());
                assert_eq!(
                    r.lane_data(lane as u64, from(), &f[pos[lane]..end]),
                    LaneControl::Continue
                );
                pos[lane] = end;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    assert!(r.take_deliveries().is_empty());
    for lane in 0..frames.len() {
        r.lane_end(lane as u64, Ok(()));
    }
    let msg = single(&mut r).unwrap();
    assert_eq!(&msg.bytes[..], &data[..]);
    assert_eq!(msg.from, from());
    assert_eq!((r.pending_transfers(), r.buffered_bytes()), (0, 0));
}

#[test]
fn reassembler_detects_a_corrupted_chunk() {
    let data = payload(2, 5000);
    let mut frames = lanes(7, &data, 2, 1000);
    // Flip one payload byte in lane 1 (after its lane header and first chunk header).
    frames[1][LANE_HEADER_LEN + CHUNK_HEADER_LEN + 10] ^= 0xff;
    let mut r = Reassembler::new(1 << 20);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(r.lane_data(i as u64, from(), f), LaneControl::Continue);
        r.lane_end(i as u64, Ok(()));
    }
    let err = single(&mut r).unwrap_err();
    assert!(
        matches!(err.root(), PhoenixError::HashMismatch { transfer_id: 7 }),
        "{err:?}"
    );
    assert_eq!(r.pending_transfers(), 0);
}

#[test]
fn reassembler_detects_a_missing_chunk() {
    let data = payload(3, 4000);
    let frames = lanes(8, &data, 2, 1000);
    // Drop lane 0's second chunk (chunk 2, bytes 2000..3000): cut lane 0 after chunk 0.
    let cut = LANE_HEADER_LEN + CHUNK_HEADER_LEN + 1000;
    let mut r = Reassembler::new(1 << 20);
    assert_eq!(
        r.lane_data(0, from(), &frames[0][..cut]),
        LaneControl::Continue
    );
    r.lane_end(0, Ok(()));
    assert_eq!(r.lane_data(1, from(), &frames[1]), LaneControl::Continue);
    r.lane_end(1, Ok(()));
    let err = single(&mut r).unwrap_err();
    assert!(
        matches!(
            err.root(),
            PhoenixError::MissingChunks {
                transfer_id: 8,
                missing: 1000,
                total: 4000
            }
        ),
        "{err:?}"
    );
}

#[test]
fn reassembler_rejects_overlapping_and_out_of_range_chunks() {
    let data = payload(4, 3000);
    for bad in [
        // Overlaps the first chunk (0..1000).
        ChunkHeader {
            transfer_id: 9,
            total_len: 3000,
            offset: 500,
            len: 1000,
        },
        // Beyond the end.
        ChunkHeader {
            transfer_id: 9,
            total_len: 3000,
            offset: 2500,
            len: 1000,
        },
        // Another transfer's header.
        ChunkHeader {
            transfer_id: 10,
            total_len: 3000,
            offset: 1000,
            len: 1000,
        },
    ] {
        let mut lane = lanes(9, &data[..1000], 1, 1000)[0].clone();
        // Rewrite the lane header's total to 3000 (chunk 0 only covers 0..1000).
        lane[..LANE_HEADER_LEN].copy_from_slice(
            &LaneHeader {
                transfer_id: 9,
                total_len: 3000,
                lanes: 1,
                lane_index: 0,
                sha256: sha256(&data),
            }
            .encode(),
        );
        lane[LANE_HEADER_LEN..LANE_HEADER_LEN + CHUNK_HEADER_LEN].copy_from_slice(
            &ChunkHeader {
                transfer_id: 9,
                total_len: 3000,
                offset: 0,
                len: 1000,
            }
            .encode(),
        );
        lane.extend_from_slice(&bad.encode());
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(
            r.lane_data(1, from(), &lane),
            LaneControl::Stop(codes::MALFORMED)
        );
        let err = single(&mut r).unwrap_err();
        assert!(matches!(err.root(), PhoenixError::Malformed(_)), "{err:?}");
        assert_eq!((r.pending_transfers(), r.buffered_bytes()), (0, 0));
    }
}

#[test]
fn reassembler_reports_a_reset_lane_once_and_stops_the_others() {
    let data = payload(5, 6000);
    let frames = lanes(11, &data, 3, 1000);
    let mut r = Reassembler::new(1 << 20);
    assert_eq!(
        r.lane_data(0, from(), &frames[0][..100]),
        LaneControl::Continue
    );
    assert_eq!(
        r.lane_data(1, from(), &frames[1][..100]),
        LaneControl::Continue
    );
    r.lane_end(0, Err(StreamError::Reset(5)));
    let err = single(&mut r).unwrap_err();
    assert!(
        matches!(err.root(), PhoenixError::Stream(StreamError::Reset(5))),
        "{err:?}"
    );
    // Lane 1 (already joined) and lane 2 (new) are told to stop; nothing more is reported.
    assert_eq!(
        r.lane_data(1, from(), &frames[1][100..]),
        LaneControl::Stop(codes::TRANSFER_FAILED)
    );
    assert_eq!(
        r.lane_data(2, from(), &frames[2]),
        LaneControl::Stop(codes::TRANSFER_FAILED)
    );
    assert!(r.take_deliveries().is_empty());
    assert_eq!((r.pending_transfers(), r.buffered_bytes()), (0, 0));
}

#[test]
fn reassembler_refuses_oversized_truncated_and_bogus_lanes() {
    // Larger than the limit: refused at the lane header.
    let big = LaneHeader {
        transfer_id: 1,
        total_len: 2 << 20,
        lanes: 1,
        lane_index: 0,
        sha256: [0; 32],
    };
    let mut r = Reassembler::new(1 << 20);
    assert_eq!(
        r.lane_data(1, from(), &big.encode()),
        LaneControl::Stop(codes::MESSAGE_TOO_LARGE)
    );
    let err = single(&mut r).unwrap_err();
    assert!(
        matches!(err.root(), PhoenixError::MessageTooLarge { max: Some(m), .. } if *m == 1 << 20),
        "{err:?}"
    );

    // A lane ending in the middle of a chunk.
    let data = payload(6, 2000);
    let frame = &lanes(2, &data, 1, 2000)[0];
    assert_eq!(
        r.lane_data(2, from(), &frame[..frame.len() - 1]),
        LaneControl::Continue
    );
    r.lane_end(2, Ok(()));
    let err = single(&mut r).unwrap_err();
    assert!(
        matches!(
            err.root(),
            PhoenixError::Truncated {
                expected: 2000,
                received: 1999
            }
        ),
        "{err:?}"
    );

    // A lane index outside the lane count.
    let bogus = LaneHeader {
        transfer_id: 3,
        total_len: 10,
        lanes: 2,
        lane_index: 2,
        sha256: [0; 32],
    };
    assert_eq!(
        r.lane_data(3, from(), &bogus.encode()),
        LaneControl::Stop(codes::MALFORMED)
    );
    assert!(matches!(
        single(&mut r).unwrap_err().root(),
        PhoenixError::Malformed(_)
    ));

    // Too many bytes pending across transfers.
    let mut r = Reassembler::new(1000).with_budget(1500);
    let h = |id| LaneHeader {
        transfer_id: id,
        total_len: 1000,
        lanes: 1,
        lane_index: 0,
        sha256: [0; 32],
    };
    assert_eq!(
        r.lane_data(1, from(), &h(1).encode()),
        LaneControl::Continue
    );
    assert_eq!(
        r.lane_data(2, from(), &h(2).encode()),
        LaneControl::Stop(codes::OVERLOADED)
    );
    assert!(matches!(
        single(&mut r).unwrap_err().root(),
        PhoenixError::Overloaded { .. }
    ));
    assert_eq!(r.buffered_bytes(), 1000);
}

#[test]
fn reassembler_abandons_stalled_transfers() {
    let data = payload(7, 3000);
    let frames = lanes(12, &data, 2, 1000);
    let mut r = Reassembler::new(1 << 20).with_stall_timeout(std::time::Duration::ZERO);
    assert_eq!(r.lane_data(0, from(), &frames[0]), LaneControl::Continue);
    r.lane_end(0, Ok(()));
    // Lane 1 never comes.
    std::thread::sleep(std::time::Duration::from_millis(5));
    r.expire_stalled(std::time::Instant::now());
    assert!(matches!(
        single(&mut r).unwrap_err().root(),
        PhoenixError::TransferStalled { transfer_id: 12 }
    ));
    assert_eq!((r.pending_transfers(), r.buffered_bytes()), (0, 0));
}
