//! The benchmark payload: a pattern the receiver can verify byte by byte at memory speed.
//!
//! Byte `o` of a stream is byte `o % 8` (little-endian) of the word `(o / 8) ^ seed`, so
//! a lost, duplicated, reordered or corrupted range shows up at its offset, without the
//! cost of a cryptographic hash on the hot path.

/// Fills `buf` with the pattern for stream offsets `offset..offset + buf.len()`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte_at(seed, offset + i as u64);
        // Switch to whole words as soon as the offset is aligned.
        if (offset + i as u64 + 1).is_multiple_of(8) {
            let start = i + 1;
            let words = (buf.len() - start) / 8;
            let base = (offset + start as u64) / 8;
            for w in 0..words {
                let v = (base + w as u64) ^ seed;
                buf[start + w * 8..start + w * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
            let tail = start + words * 8;
            for (j, b) in buf[tail..].iter_mut().enumerate() {
                *b = byte_at(seed, offset + (tail + j) as u64);
            }
            return;
        }
    }
}

fn byte_at(seed: u64, offset: u64) -> u8 {
    ((offset / 8) ^ seed).to_le_bytes()[(offset % 8) as usize]
}

/// Whether `buf` holds the pattern for offsets `offset..offset + buf.len()`; on a
/// mismatch, the stream offset of the first wrong byte.
pub fn verify(seed: u64, offset: u64, buf: &[u8]) -> Result<(), u64> {
    let mut i = 0;
    // Head, up to word alignment.
    while i < buf.len() && !(offset + i as u64).is_multiple_of(8) {
        if buf[i] != byte_at(seed, offset + i as u64) {
            return Err(offset + i as u64);
        }
        i += 1;
    }
    let mut chunks = buf[i..].chunks_exact(8);
    for (word, c) in ((offset + i as u64) / 8..).zip(&mut chunks) {
        let got = u64::from_le_bytes(c.try_into().expect("chunks_exact(8)"));
        if got != word ^ seed {
            let pos = c
                .iter()
                .zip((word ^ seed).to_le_bytes())
                .position(|(a, b)| *a != b);
            return Err(word * 8 + pos.unwrap_or(0) as u64);
        }
    }
    let tail_start = offset + (buf.len() - chunks.remainder().len()) as u64;
    for (j, b) in chunks.remainder().iter().enumerate() {
        if *b != byte_at(seed, tail_start + j as u64) {
            return Err(tail_start + j as u64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_verify_at_any_alignment() {
        for offset in [0u64, 1, 7, 8, 13, 4096, 1_000_003] {
            for len in [0usize, 1, 7, 8, 9, 100, 1452] {
                let mut buf = vec![0u8; len];
                fill(42, offset, &mut buf);
                for (i, b) in buf.iter().enumerate() {
                    assert_eq!(*b, byte_at(42, offset + i as u64));
                }
                assert_eq!(verify(42, offset, &buf), Ok(()));
            }
        }
    }

    #[test]
    fn verify_reports_the_offset_of_corruption_and_shifts() {
        let mut buf = vec![0u8; 1000];
        fill(7, 3, &mut buf);
        buf[500] ^= 1;
        assert_eq!(verify(7, 3, &buf), Err(503));
        // A range delivered at the wrong offset (a lost or duplicated chunk) fails.
        let mut shifted = vec![0u8; 64];
        fill(7, 64, &mut shifted);
        assert!(verify(7, 72, &shifted).is_err());
        // Another seed (another stream) fails.
        assert!(verify(8, 64, &shifted).is_err());
    }
}
