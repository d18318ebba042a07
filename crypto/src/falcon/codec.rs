//! Conversions between the padded signatures fn-dsa handles and PQClean's unpadded ones.
//!
//! A signature is `0x30 + logn`, a 40-byte nonce, then the compressed `s2` (Golomb-Rice:
//! per coefficient a sign bit, 7 low bits, the high bits in unary ended by a 1). The padded
//! form appends zero bytes up to a fixed size; the unpadded form stops at the last byte the
//! compressed value uses. [`compressed_len`] finds that byte the way PQClean's decoder does.

use crate::CryptoError;

use super::FalconAlgorithm;

/// Header byte plus nonce.
pub(crate) const SIG_PREFIX: usize = 41;

/// The number of bytes the compressed encoding of `n` coefficients at the start of `d`
/// uses, or `None` if `d` does not start with a valid encoding (truncated, a coefficient
/// above 2047, a "-0", or non-zero unused bits in the last byte).
pub(crate) fn compressed_len(d: &[u8], n: usize) -> Option<usize> {
    let mut i = 0usize;
    let mut acc: u32 = 0;
    let mut acc_len: u32 = 0;
    for _ in 0..n {
        let byte = *d.get(i)?;
        acc = (acc << 8) | u32::from(byte);
        i += 1;
        let s = (acc >> (acc_len + 7)) & 1;
        let mut m = (acc >> acc_len) & 0x7f;
        loop {
            if acc_len == 0 {
                let byte = *d.get(i)?;
                acc = (acc << 8) | u32::from(byte);
                i += 1;
                acc_len = 8;
            }
            acc_len -= 1;
            if (acc >> acc_len) & 1 != 0 {
                break;
            }
            m += 0x80;
            if m > 2047 {
                return None;
            }
        }
        if s == 1 && m == 0 {
            return None;
        }
    }
    if acc_len > 0 && acc & ((1 << acc_len) - 1) != 0 {
        return None;
    }
    Some(i)
}

/// `sig`, as `alg` encodes it, in the padded form fn-dsa verifies. Lengths are checked;
/// content is left to the verifier except for the unpadded form's exact-length rule.
pub(crate) fn to_padded(alg: FalconAlgorithm, sig: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let p = alg.params();
    let padded_len = fn_dsa::signature_size(p.level.logn());
    let wrong_length = |expected| CryptoError::WrongLength {
        what: format!("{} signature", p.name),
        expected,
        found: sig.len(),
    };
    if p.padded {
        if sig.len() != padded_len {
            return Err(wrong_length(padded_len));
        }
        return Ok(sig.to_vec());
    }
    if sig.len() > p.signature_len {
        return Err(wrong_length(p.signature_len));
    }
    if sig.len() > padded_len {
        // A valid PQClean signature, but longer than fn-dsa can decode.
        return Err(wrong_length(padded_len));
    }
    if sig.len() <= SIG_PREFIX {
        return Err(CryptoError::BadSignature {
            what: format!("{} signature", p.name),
        });
    }
    let n = 1usize << p.level.logn();
    // PQClean refuses an unpadded signature with anything after the encoding.
    if compressed_len(&sig[SIG_PREFIX..], n) != Some(sig.len() - SIG_PREFIX) {
        return Err(CryptoError::BadSignature {
            what: format!("{} signature", p.name),
        });
    }
    let mut out = sig.to_vec();
    out.resize(padded_len, 0);
    Ok(out)
}

/// A padded signature made by fn-dsa, in `alg`'s encoding (unchanged if `alg` is padded).
pub(crate) fn from_padded(alg: FalconAlgorithm, mut sig: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
    let p = alg.params();
    if p.padded {
        return Ok(sig);
    }
    let n = 1usize << p.level.logn();
    let used = sig
        .get(SIG_PREFIX..)
        .and_then(|c| compressed_len(c, n))
        .ok_or_else(|| {
            CryptoError::Generate(format!("{}: fn-dsa made an undecodable signature", p.name))
        })?;
    sig.truncate(SIG_PREFIX + used);
    Ok(sig)
}
