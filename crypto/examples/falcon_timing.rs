//! Prints FALCON key generation, signing and verification times on this machine.
//!
//! `cargo run -p stoq-crypto --example falcon_timing` (dependencies are optimised even in
//! the dev profile, so the figures are fn-dsa's optimised speed).

use std::time::Instant;

use stoq_crypto::falcon::{FalconLevel, FalconSecretKey};

fn main() {
    for level in [FalconLevel::L512, FalconLevel::L1024] {
        let runs = 20u32;
        let start = Instant::now();
        let mut key = FalconSecretKey::generate(level);
        for _ in 1..runs {
            key = FalconSecretKey::generate(level);
        }
        let keygen = start.elapsed() / runs;
        let runs = 200u32;
        let start = Instant::now();
        let mut sig = Vec::new();
        for i in 0..runs {
            sig = key.sign(&i.to_le_bytes()).expect("sign");
        }
        let sign = start.elapsed() / runs;
        let start = Instant::now();
        for _ in 0..runs {
            key.public_key()
                .verify(&(runs - 1).to_le_bytes(), &sig)
                .expect("verify");
        }
        let verify = start.elapsed() / runs;
        println!(
            "{}: keygen {keygen:?}, sign {sign:?} ({} B), verify {verify:?}",
            key.algorithm(),
            sig.len()
        );
    }
}
