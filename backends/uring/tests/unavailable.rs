//! When io_uring is unavailable, binding fails with an error that says why; nothing falls
//! back to plain sockets. Checked for real: the test binary re-executes itself as a child
//! under a seccomp filter that makes `io_uring_setup` fail (as container runtimes and
//! systemd's `SystemCallFilter=` do), and the child binds.

use std::process::Command;

use stoq_core::{Backend, EndpointSpec, TransportConfig};
use stoq_uring::Unavailable;

const CHILD_ENV: &str = "STOQ_URING_TEST_SECCOMP_ERRNO";
const CHILD_TEST: &str = "child_binds_under_seccomp";

#[test]
fn bind_without_io_uring_says_why() {
    for (errno, expected) in [
        ("ENOSYS", "io_uring_setup is not implemented (ENOSYS)"),
        ("EPERM", "io_uring_setup was denied (EPERM)"),
    ] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, errno)
            .output()
            .expect("re-executing the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "child under a seccomp filter ({errno}) failed:\n{stdout}\n{stderr}"
        );
        let line = stdout
            .lines()
            .find_map(|l| l.find("UNAVAILABLE: ").map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("child printed no error ({errno}):\n{stdout}\n{stderr}"));
        assert!(line.contains(expected), "{errno}: {line}");
        assert!(
            line.contains("[::1]:0"),
            "the error names the address: {line}"
        );
    }
}

/// Runs only as the child of [`bind_without_io_uring_says_why`].
#[test]
#[ignore = "run by bind_without_io_uring_says_why in a child process under a seccomp filter"]
fn child_binds_under_seccomp() {
    let errno = match std::env::var(CHILD_ENV).as_deref() {
        Ok("ENOSYS") => libc::ENOSYS,
        Ok("EPERM") => libc::EPERM,
        other => panic!("only bind_without_io_uring_says_why runs this ({CHILD_ENV}={other:?})"),
    };
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
    deny_io_uring_setup(errno);
    // Only io_uring is blocked: plain sockets work, so a silent fallback would succeed.
    std::net::UdpSocket::bind("[::1]:0").expect("plain UDP works under the filter");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spec =
            EndpointSpec::server("[::1]:0".parse().unwrap(), TransportConfig::default(), tls);
        let err = match stoq_uring::UringBackend.bind(spec) {
            Ok(_) => panic!("bind succeeded although io_uring_setup fails"),
            Err(e) => e,
        };
        let why = Unavailable::find(&err).unwrap_or_else(|| panic!("untyped error: {err:?}"));
        match (errno, why) {
            (libc::ENOSYS, Unavailable::NotImplemented) => {}
            (libc::EPERM, Unavailable::DeniedByPolicy { .. }) => {}
            other => panic!("wrong reason: {other:?}"),
        }
        println!("UNAVAILABLE: {err}");
    });
}

/// Installs a seccomp filter on this thread (inherited by threads it starts) that makes
/// `io_uring_setup` fail with `errno` and allows every other system call.
fn deny_io_uring_setup(errno: i32) {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    const ARCH_OFFSET: u32 = 4; // offsetof(struct seccomp_data, arch)
    const NR_OFFSET: u32 = 0; // offsetof(struct seccomp_data, nr)
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    // SAFETY: BPF_STMT/BPF_JUMP only build structs.
    let mut filter = unsafe {
        [
            libc::BPF_STMT(ld, ARCH_OFFSET),
            libc::BPF_JUMP(jeq, AUDIT_ARCH, 1, 0),
            libc::BPF_STMT(ret, libc::SECCOMP_RET_ALLOW),
            libc::BPF_STMT(ld, NR_OFFSET),
            libc::BPF_JUMP(jeq, libc::SYS_io_uring_setup as u32, 0, 1),
            libc::BPF_STMT(
                ret,
                libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA),
            ),
            libc::BPF_STMT(ret, libc::SECCOMP_RET_ALLOW),
        ]
    };
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `prog` and `filter` outlive them (the kernel copies the
    // program).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog
            ),
            0,
            "installing the seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
}
