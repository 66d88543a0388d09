//! Facts about the running kernel: release, version, clocks, BTF declarations.

use std::path::Path;

/// The kernel release as `uname -r` prints it ("unknown" if /proc cannot say).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// (major, minor) of a release string; (0, 0) where it has no numbers.
pub fn version_of(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// A clock in ns.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns().
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// (major, minor) of the running kernel.
pub fn version() -> (u32, u32) {
    version_of(&release())
}

/// Parameter count of tracepoint `name` as the kernel's BTF declares it (its `btf_trace_NAME`
/// typedef, a pointer to a function prototype); `btf` is `--btf`, else the kernel's own.
pub fn tracepoint_params(btf: Option<&Path>, name: &str) -> Option<usize> {
    use libbpf_rs::btf::{types::FuncProto, Btf, BtfType};
    let btf = match btf {
        Some(path) => Btf::from_path(path).ok()?,
        None => Btf::from_vmlinux().ok()?,
    };
    let typedef: BtfType<'_> = btf.type_by_name(&format!("btf_trace_{name}"))?;
    let proto = typedef.next_type()?.next_type()?;
    FuncProto::try_from(proto).ok().map(|p| p.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(version_of("5.10.0-46-amd64"), (5, 10));
        assert_eq!(version_of("7.3.4+deb13-amd64"), (7, 3));
        assert_eq!(version_of("6.18.44-fc-v782"), (6, 18));
        assert_eq!(version_of("unknown"), (0, 0));
    }

    #[test]
    fn tracepoint_parameters_from_btf() {
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            return; // nothing to read: the version fallback applies
        }
        let issue = tracepoint_params(None, "block_rq_issue");
        assert!(matches!(issue, Some(2) | Some(3)), "{issue:?}");
        assert_eq!(tracepoint_params(None, "ksight_no_such_tracepoint"), None);
        let missing = Path::new("/nonexistent/btf");
        assert_eq!(tracepoint_params(Some(missing), "block_rq_issue"), None);
    }
}
