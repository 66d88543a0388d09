//! tracefs, where classic tracepoints (and legacy kprobes) find their ids: the host's, or one
//! ksight mounts in a mount namespace of its own.

use std::path::Path;

use crate::privileges::{can_load_tracing, effective_caps};

/// Where classic tracepoints (and legacy kprobes) find their ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracefs {
    Host,
    /// The host had none: ksight mounted one in a mount namespace of its own.
    Private,
    Missing,
}

impl Tracefs {
    pub fn describe(self) -> &'static str {
        match self {
            Tracefs::Host => "mounted",
            Tracefs::Private => {
                "not mounted on the host; ksight mounted one in its own mount namespace"
            }
            Tracefs::Missing => {
                "not mounted, and ksight could not mount one (classic tracepoints unavailable)"
            }
        }
    }
}

/// Where the mount that holds /sys/kernel/tracing can be, nearest first after "/". "/" is
/// tried first (the usual case, and it covers every mount below it); in a chroot whose "/" is
/// not a mount point that fails with EINVAL, and the nearest mount point above tracefs's
/// directory is made private instead: a mount is propagated through the mount it is made on,
/// so that is the one that must not share with the host.
const TRACEFS_MOUNT_POINTS: &[&std::ffi::CStr] =
    &[c"/", c"/sys/kernel/tracing", c"/sys/kernel", c"/sys"];

/// Makes the first of `candidates` that is a mount point private, with everything below it.
fn make_private_above(candidates: &[&std::ffi::CStr]) -> bool {
    candidates.iter().any(|path| {
        // SAFETY: a valid NUL-terminated path; no source, type or data.
        unsafe {
            libc::mount(
                std::ptr::null(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
        }
    })
}

/// Makes tracefs available to this process without changing the host: when no tracefs is
/// mounted, ksight moves to a private mount namespace and mounts one there. Must run while
/// the process is single-threaded (unshare(CLONE_NEWNS) refuses otherwise).
pub fn ensure_tracefs() -> Tracefs {
    let mounted = |p: &str| Path::new(p).join("events").is_dir();
    if mounted("/sys/kernel/tracing") || mounted("/sys/kernel/debug/tracing") {
        return Tracefs::Host;
    }
    if !can_load_tracing(effective_caps()) {
        return Tracefs::Missing;
    }
    // SAFETY: a plain syscall; the process is single-threaded (unshare refuses otherwise).
    let ok = unsafe { libc::unshare(libc::CLONE_NEWNS) == 0 }
        && make_private_above(TRACEFS_MOUNT_POINTS)
        // SAFETY: valid NUL-terminated strings, no data argument.
        && unsafe {
            libc::mount(
                c"tracefs".as_ptr(),
                c"/sys/kernel/tracing".as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            ) == 0
        };
    if ok && mounted("/sys/kernel/tracing") {
        Tracefs::Private
    } else {
        Tracefs::Missing
    }
}
