//! Helpers shared by the integration tests: every Phoenix here uses in-memory
//! certificates (`stoq_crypto::ephemeral_material`), so nothing is written to the user's
//! home directory.
#![allow(dead_code)]

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use phoenix::{Listener, Phoenix, PhoenixBuilder, TlsMaterial, DEFAULT_CERT_NAMES};

pub const APP: &str = "phoenix-test";

/// One CA and leaf for the whole test binary (both sides must share the roots).
pub fn material() -> TlsMaterial {
    static M: OnceLock<TlsMaterial> = OnceLock::new();
    M.get_or_init(|| stoq_crypto::ephemeral_material(&DEFAULT_CERT_NAMES).unwrap())
        .clone()
}

/// A builder with the test certificates and ALPN.
pub fn builder() -> PhoenixBuilder {
    Phoenix::builder().app_name(APP).tls(material())
}

/// A Phoenix with the test certificates.
pub async fn phoenix() -> Phoenix {
    builder().build().await.unwrap()
}

/// A listener on `[::1]` and the target string to dial it.
pub async fn listen(p: &Phoenix) -> (Listener, String) {
    let l = p.listen("[::1]:0").await.unwrap();
    let target = format!("[::1]:{}", l.local_addr().port());
    (l, target)
}

/// `len` reproducible pseudo-random bytes (xorshift64*).
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `f` under a time limit so a hang fails the test instead of stalling the suite.
pub async fn within<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test step timed out")
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}
