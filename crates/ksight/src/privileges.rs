//! Who we are and what the kernel offers before anything is loaded: capabilities and BTF.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The effective capability set, from /proc/self/status.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn has_cap(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Names of the capabilities that matter for loading tracing programs.
pub fn relevant_caps(caps: u64) -> Vec<&'static str> {
    [
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE"),
    ]
    .into_iter()
    .filter(|(c, _)| has_cap(caps, *c))
    .map(|(_, n)| n)
    .collect()
}

/// The smallest capability set that lets ksight load and attach here, as `setcap` spells it:
/// CAP_BPF and CAP_PERFMON (5.8+); CAP_SYS_RESOURCE where map memory is still charged to
/// RLIMIT_MEMLOCK (before 5.11); CAP_SYS_ADMIN where tracefs is not mounted (ksight mounts
/// one in a mount namespace of its own).
pub fn minimal_caps(kernel: (u32, u32), tracefs_mounted: bool) -> Vec<&'static str> {
    let mut caps = vec!["cap_bpf", "cap_perfmon"];
    if kernel < (5, 11) {
        caps.push("cap_sys_resource");
    }
    if !tracefs_mounted {
        caps.push("cap_sys_admin");
    }
    caps
}

pub fn can_load_tracing(caps: u64) -> bool {
    has_cap(caps, CAP_SYS_ADMIN) || (has_cap(caps, CAP_BPF) && has_cap(caps, CAP_PERFMON))
}

/// Fails with one clear line unless this process may load tracing programs.
pub fn require_bpf_privileges() -> Result<()> {
    if !can_load_tracing(effective_caps()) {
        bail!("loading BPF programs needs root (or CAP_BPF and CAP_PERFMON); run ksight with sudo");
    }
    Ok(())
}

/// The BTF to relocate against: `--btf FILE` when given (checked to be BTF), else the kernel's.
pub fn resolve_btf(custom: Option<&Path>) -> Result<Option<PathBuf>> {
    match custom {
        Some(path) => {
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => bail!("--btf {}: {e}", path.display()),
            };
            if !is_btf(&bytes) {
                bail!(
                    "--btf {}: not a BTF file (no BTF magic, no .BTF section)",
                    path.display()
                );
            }
            Ok(Some(path.to_path_buf()))
        }
        None if Path::new(VMLINUX_BTF).exists() => Ok(None),
        None => bail!(
            "this kernel has no BTF ({VMLINUX_BTF} is missing); pass --btf FILE (e.g. from BTFHub)"
        ),
    }
}

/// Raw BTF (magic 0xeB9F, either byte order) or an ELF file with a .BTF section.
pub fn is_btf(bytes: &[u8]) -> bool {
    if bytes.len() >= 24 && (bytes[..2] == [0x9f, 0xeb] || bytes[..2] == [0xeb, 0x9f]) {
        return true;
    }
    bytes.starts_with(b"\x7fELF") && bytes.windows(5).any(|w| w == b".BTF\0")
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimal_set_follows_the_kernel() {
        assert_eq!(minimal_caps((6, 1), true), ["cap_bpf", "cap_perfmon"]);
        assert_eq!(
            minimal_caps((5, 10), false),
            [
                "cap_bpf",
                "cap_perfmon",
                "cap_sys_resource",
                "cap_sys_admin"
            ]
        );
    }

    #[test]
    fn btf_magic() {
        let mut raw = vec![0x9f, 0xeb, 1, 0];
        raw.resize(32, 0);
        assert!(is_btf(&raw));
        assert!(!is_btf(b"hello, this is not a BTF file at all"));
    }

    #[test]
    fn caps() {
        assert!(can_load_tracing(1 << CAP_SYS_ADMIN));
        assert!(can_load_tracing((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!can_load_tracing(1 << CAP_BPF));
        assert!(!can_load_tracing(0));
    }
}
