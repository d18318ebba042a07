//! CPU pinning for the paired overhead runs.
//!
//! On this project's 2-core machine the client and the server of a run share both cores,
//! and the scheduler moves their threads between them from run to run: a run where both
//! busy threads land on one core is 10-20 % slower than one where they do not. That noise
//! is larger than the 3 % the overhead target is about. Pinning the client (this
//! process) to one core and the server process to the other takes it away, for the STOQ
//! row and the direct row alike, so their per-round ratio measures the framework and not
//! the scheduler.
//!
//! Affinity on Linux is per thread: [`pin_process`] sets it on every thread the process
//! has now (as `taskset -a -p` does); threads started later inherit it from the thread
//! that starts them.

use std::io;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs this process may run on, lowest first.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(io::Error::from)?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Restricts every current thread of process `pid` (0: this process) to `cpus`.
pub fn pin_process(pid: u32, cpus: &[usize]) -> io::Result<()> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).map_err(io::Error::from)?;
    }
    let dir = if pid == 0 {
        "/proc/self/task".to_string()
    } else {
        format!("/proc/{pid}/task")
    };
    let mut pinned = 0;
    for entry in std::fs::read_dir(&dir)? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            Ok(()) => pinned += 1,
            // The thread ended between listing and pinning.
            Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    if pinned == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no threads found in {dir}"),
        ));
    }
    Ok(())
}

/// How the paired runs place client and server: `(client CPUs, server CPUs)`, one
/// disjoint half each, or `None` with fewer than two CPUs allowed.
pub fn split(cpus: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
    if cpus.len() < 2 {
        return None;
    }
    let half = cpus.len() / 2;
    Some((cpus[..half].to_vec(), cpus[half..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_gives_disjoint_halves() {
        assert_eq!(split(&[0]), None);
        assert_eq!(split(&[0, 1]), Some((vec![0], vec![1])));
        assert_eq!(split(&[0, 1, 2]), Some((vec![0], vec![1, 2])));
        assert_eq!(split(&[2, 3, 5, 7]), Some((vec![2, 3], vec![5, 7])));
    }

    #[test]
    fn pinning_a_thread_takes_effect_and_can_be_undone() {
        let all = allowed_cpus().expect("affinity readable");
        assert!(!all.is_empty());
        // A thread of its own, so the test does not change the test harness's threads.
        std::thread::spawn(move || {
            let first = all[0];
            let mut one = CpuSet::new();
            one.set(first).unwrap();
            sched_setaffinity(Pid::from_raw(0), &one).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![first]);
            let mut back = CpuSet::new();
            for &c in &all {
                back.set(c).unwrap();
            }
            sched_setaffinity(Pid::from_raw(0), &back).unwrap();
            assert_eq!(allowed_cpus().unwrap(), all);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pinning_a_missing_process_is_an_error() {
        // PID numbers are below 2^22 on Linux.
        assert!(pin_process(u32::MAX / 2, &[0]).is_err());
    }
}
