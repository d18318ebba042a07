//! Why io_uring cannot be used here: the typed error [`bind`](crate::bind) returns instead
//! of falling back to plain sockets.

use std::fmt;
use std::io;

/// Why this process cannot use io_uring (or not the parts this backend needs).
///
/// [`bind`](crate::bind) returns it inside [`stoq_core::Error::Io`]: the error's `source`
/// is an [`io::Error`] of kind [`io::ErrorKind::Unsupported`] carrying this value, and
/// [`Unavailable::find`] recovers it. stoq-core has no variant for "the engine's kernel
/// interface is missing", and `Error::Unsupported` names a STOQ capability, which this is
/// not.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// `/proc/sys/kernel/io_uring_disabled` is 2: io_uring is off for every process.
    DisabledBySysctl,
    /// `/proc/sys/kernel/io_uring_disabled` is 1 and this process is neither in
    /// `kernel.io_uring_group` nor privileged (`CAP_SYS_ADMIN`).
    RestrictedToGroup {
        /// The value of `/proc/sys/kernel/io_uring_group` (-1: no group may use it).
        group: i64,
    },
    /// `io_uring_setup` failed with `EPERM` although the sysctl allows io_uring: a
    /// security policy denies it (a seccomp filter such as Docker's default profile, or
    /// an LSM such as SELinux or AppArmor).
    DeniedByPolicy {
        /// The value of `/proc/sys/kernel/io_uring_disabled`, when the file exists.
        sysctl: Option<i64>,
    },
    /// `io_uring_setup` failed with `ENOSYS`: the kernel is older than 5.1 or built
    /// without `CONFIG_IO_URING`, or a seccomp filter answers `ENOSYS` for it (systemd's
    /// `SystemCallFilter=`, gVisor and some container runtimes do).
    NotImplemented,
    /// The kernel has io_uring but lacks a feature this backend uses.
    KernelTooOld {
        /// The running kernel's release (`uname -r`).
        release: String,
        /// The missing feature and the first kernel that has it.
        missing: &'static str,
    },
    /// Creating or setting up the ring failed for another reason (the OS error says
    /// which; `ENOMEM` on kernels before 5.12 usually means `RLIMIT_MEMLOCK` is too low).
    Setup {
        /// The step that failed.
        step: &'static str,
        /// The OS error number.
        errno: i32,
    },
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::DisabledBySysctl => write!(
                f,
                "io_uring is disabled for all processes: /proc/sys/kernel/io_uring_disabled is 2 \
                 (set it to 0, or to 1 and add this process to kernel.io_uring_group)"
            ),
            Unavailable::RestrictedToGroup { group } => write!(
                f,
                "io_uring is restricted: /proc/sys/kernel/io_uring_disabled is 1 and this \
                 process is not in kernel.io_uring_group ({group}) and lacks CAP_SYS_ADMIN"
            ),
            Unavailable::DeniedByPolicy { sysctl } => write!(
                f,
                "io_uring_setup was denied (EPERM) although kernel.io_uring_disabled is {}: a \
                 seccomp filter (e.g. a container runtime's default profile) or an LSM forbids \
                 io_uring for this process",
                sysctl.map_or_else(|| "absent".to_string(), |v| v.to_string())
            ),
            Unavailable::NotImplemented => write!(
                f,
                "io_uring_setup is not implemented (ENOSYS): the kernel is older than 5.1 or \
                 built without CONFIG_IO_URING, or a seccomp filter blocks the system call"
            ),
            Unavailable::KernelTooOld { release, missing } => write!(
                f,
                "kernel {release} lacks {missing}, which the io_uring backend needs"
            ),
            Unavailable::Setup { step, errno } => {
                write!(f, "{step} failed: {}", io::Error::from_raw_os_error(*errno))
            }
        }
    }
}

impl std::error::Error for Unavailable {}

impl Unavailable {
    /// Classifies a failed `io_uring_setup` from its OS error, reading the sysctls and
    /// this process's groups as needed.
    pub(crate) fn from_setup_error(e: &io::Error) -> Self {
        let errno = e.raw_os_error().unwrap_or(0);
        let sysctl = read_sysctl("/proc/sys/kernel/io_uring_disabled");
        let group = read_sysctl("/proc/sys/kernel/io_uring_group");
        let in_group = group.is_some_and(|g| g >= 0 && process_in_group(g as libc::gid_t));
        classify(errno, sysctl, group, in_group)
    }

    /// The `Unavailable` inside an error returned by [`bind`](crate::bind), if that is
    /// why it failed.
    pub fn find(e: &stoq_core::Error) -> Option<&Unavailable> {
        match e {
            stoq_core::Error::Io { source, .. } => source.get_ref()?.downcast_ref(),
            _ => None,
        }
    }

    /// Wraps this reason as the error [`bind`](crate::bind) returns for `addr`.
    pub(crate) fn into_error(self, addr: std::net::SocketAddr) -> stoq_core::Error {
        stoq_core::Error::io(
            format!("io_uring unavailable, cannot bind the uring endpoint {addr}"),
            io::Error::new(io::ErrorKind::Unsupported, self),
        )
    }
}

/// The decision table behind [`Unavailable::from_setup_error`], kept pure so every row
/// can be checked: `errno` from `io_uring_setup`, the two sysctls (None when absent) and
/// whether this process is in `kernel.io_uring_group`.
pub(crate) fn classify(
    errno: i32,
    sysctl: Option<i64>,
    group: Option<i64>,
    in_group: bool,
) -> Unavailable {
    match errno {
        libc::ENOSYS => Unavailable::NotImplemented,
        libc::EPERM => match sysctl {
            Some(2) => Unavailable::DisabledBySysctl,
            Some(1) if !in_group => Unavailable::RestrictedToGroup {
                group: group.unwrap_or(-1),
            },
            other => Unavailable::DeniedByPolicy { sysctl: other },
        },
        errno => Unavailable::Setup {
            step: "io_uring_setup",
            errno,
        },
    }
}

fn read_sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn process_in_group(gid: libc::gid_t) -> bool {
    // SAFETY: getegid has no preconditions.
    if unsafe { libc::getegid() } == gid {
        return true;
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    // SAFETY: the buffer holds `groups.len()` gids; getgroups writes at most that many.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    n > 0 && groups[..n as usize].contains(&gid)
}

/// Checks that the running kernel is at least `major.minor`.
pub(crate) fn require_kernel(
    major: u32,
    minor: u32,
    missing: &'static str,
) -> Result<(), Unavailable> {
    let release = kernel_release();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (have_major, have_minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (have_major, have_minor) >= (major, minor) {
        Ok(())
    } else {
        Err(Unavailable::KernelTooOld { release, missing })
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "(unknown)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setup_failure_says_why() {
        assert_eq!(
            classify(libc::EPERM, Some(2), Some(-1), false),
            Unavailable::DisabledBySysctl
        );
        assert_eq!(
            classify(libc::EPERM, Some(1), Some(1234), false),
            Unavailable::RestrictedToGroup { group: 1234 }
        );
        assert_eq!(
            classify(libc::EPERM, Some(1), Some(1234), true),
            Unavailable::DeniedByPolicy { sysctl: Some(1) }
        );
        assert_eq!(
            classify(libc::EPERM, Some(0), None, false),
            Unavailable::DeniedByPolicy { sysctl: Some(0) }
        );
        assert_eq!(
            classify(libc::EPERM, None, None, false),
            Unavailable::DeniedByPolicy { sysctl: None }
        );
        assert_eq!(
            classify(libc::ENOSYS, Some(0), None, false),
            Unavailable::NotImplemented
        );
        let other = classify(libc::ENOMEM, Some(0), None, false);
        assert!(
            other.to_string().contains("io_uring_setup failed"),
            "{other}"
        );
        assert!(Unavailable::DisabledBySysctl
            .to_string()
            .contains("io_uring_disabled is 2"));
    }

    #[test]
    fn unavailable_survives_the_core_error() {
        let e = Unavailable::NotImplemented.into_error("[::1]:0".parse().unwrap());
        assert_eq!(Unavailable::find(&e), Some(&Unavailable::NotImplemented));
        assert!(e.to_string().contains("ENOSYS"), "{e}");
        assert!(Unavailable::find(&stoq_core::Error::EndpointClosed).is_none());
    }

    #[test]
    fn kernel_version_check_compares_numbers() {
        assert!(require_kernel(2, 6, "anything").is_ok());
        match require_kernel(999, 0, "a future feature (999.0)") {
            Err(Unavailable::KernelTooOld { missing, .. }) => {
                assert_eq!(missing, "a future feature (999.0)")
            }
            other => panic!("{other:?}"),
        }
    }
}
