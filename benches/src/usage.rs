//! Process CPU time, from getrusage(2) through the `nix` crate.

use std::time::Duration;

/// User plus system CPU time this process has used so far.
pub fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
            };
            t(u.user_time()) + t(u.system_time())
        }
        // getrusage(RUSAGE_SELF) cannot fail on Linux; report zero rather than abort.
        Err(_) => Duration::ZERO,
    }
}
