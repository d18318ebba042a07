//! SQPOLL (`UringOptions::sqpoll`): real transfers through `TunedUringBackend` with the
//! kernel's submission-queue polling thread, unpinned and pinned to a CPU. The receiver
//! hashes what it got (SHA-256) and the sender compares it with the hash of what it sent.
//! The tests also check that the polling thread exists (`iou-sqp-<pid>` among this
//! process's threads) and, when pinned, runs on the CPU asked for only.

use std::time::Duration;

use sha2::{Digest, Sha256};
use stoq_core::{Backend, EndpointSpec, TransportConfig};
use stoq_uring::{SqPoll, TunedUringBackend, UringOptions};

/// Enough for thousands of GSO sends (and for the send pool to run dry at times).
const BYTES: usize = 48 << 20;

fn payload() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The io_uring SQPOLL threads of this process, with their allowed CPUs.
fn sqpoll_threads() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("iou-sqp-") {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let cpus = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap_or("")
                .trim()
                .to_string();
            out.push((comm.trim().to_string(), cpus));
        }
    }
    out
}

/// The last CPU this process may run on.
fn last_allowed_cpu() -> u32 {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("at least one CPU") as u32
    }
}

async fn transfer(sqpoll: SqPoll) {
    let pinned = sqpoll.cpu;
    let mut options = UringOptions::default();
    options.sqpoll = Some(sqpoll);
    let backend = TunedUringBackend(options);
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
    let server = backend
        .bind(EndpointSpec::server(
            "[::1]:0".parse().unwrap(),
            TransportConfig::default(),
            tls.clone(),
        ))
        .expect("binding an SQPOLL server");
    let addr = server.local_addr().unwrap();
    let client = backend
        .bind(EndpointSpec::client(addr, TransportConfig::default(), tls))
        .expect("binding an SQPOLL client");

    // The kernel names its polling thread (`iou-sqp-<pid>`) when the thread first runs,
    // which on a busy machine can be a moment after io_uring_setup returned.
    let mut threads = sqpoll_threads();
    let settled = |t: &[(String, String)]| {
        t.len() >= 2 && pinned.is_none_or(|cpu| t.iter().all(|(_, cpus)| *cpus == cpu.to_string()))
    };
    for _ in 0..200 {
        if settled(&threads) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        threads = sqpoll_threads();
    }
    assert!(
        threads.len() >= 2,
        "one polling thread per endpoint expected, found {threads:?}"
    );
    if let Some(cpu) = pinned {
        for (name, cpus) in &threads {
            assert_eq!(cpus, &cpu.to_string(), "{name} is not pinned to CPU {cpu}");
        }
    }

    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut hash = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = recv.read_chunk(usize::MAX).await.unwrap() {
            hash.update(&chunk);
            bytes += chunk.len() as u64;
        }
        send.write_all(&hash.finalize()).await.unwrap();
        send.write_all(&bytes.to_be_bytes()).await.unwrap();
        send.finish().await.unwrap();
        let _ = send.stopped().await;
        (conn, server)
    });

    let data = payload();
    let conn = client.connect(addr, "localhost").await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    for chunk in data.chunks(256 * 1024) {
        send.write_all(chunk).await.unwrap();
    }
    send.finish().await.unwrap();
    let reply = recv.read_to_end(1024).await.unwrap().expect("a reply");
    assert_eq!(reply.len(), 40, "hash and length");
    assert_eq!(
        u64::from_be_bytes(reply[32..].try_into().unwrap()),
        BYTES as u64,
        "bytes received"
    );
    assert_eq!(
        &reply[..32],
        Sha256::digest(&data).as_slice(),
        "SHA-256 at the receiver"
    );
    conn.close(0, b"done");
    drop(receiver.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_with_an_unpinned_sqpoll_thread() {
    tokio::time::timeout(Duration::from_secs(60), transfer(SqPoll::default()))
        .await
        .expect("transfer within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_with_the_sqpoll_thread_pinned_to_a_cpu() {
    let sqpoll = SqPoll {
        cpu: Some(last_allowed_cpu()),
        idle: Duration::from_millis(10),
    };
    tokio::time::timeout(Duration::from_secs(60), transfer(sqpoll))
        .await
        .expect("transfer within 60 s");
}

/// On tokio's current-thread runtime the rings ask for COOP_TASKRUN, which the kernel
/// refuses together with SQPOLL; the send ring with SQPOLL must go without it.
#[tokio::test]
async fn transfer_with_sqpoll_on_a_current_thread_runtime() {
    tokio::time::timeout(Duration::from_secs(60), transfer(SqPoll::default()))
        .await
        .expect("transfer within 60 s");
}
