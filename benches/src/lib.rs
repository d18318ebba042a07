//! # STOQ benchmarks
//!
//! Figures here are goodput: payload bytes counted **and verified** at the receiver,
//! divided by the receiver's time from the first byte to the end of the stream. Client
//! and server run as separate processes (the server is this binary re-executed), the
//! maximum UDP payload is pinned at 1452 B, and every backend uses TLS_AES_128_GCM_SHA256
//! (`stoq-crypto` puts it first), following shared/FACTS.md's method.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod loopback;
pub mod pattern;
pub mod usage;
