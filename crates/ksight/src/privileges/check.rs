//! Who we are: the capabilities this process holds, and the ones ksight needs.

use anyhow::{bail, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

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
    fn caps() {
        assert!(can_load_tracing(1 << CAP_SYS_ADMIN));
        assert!(can_load_tracing((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!can_load_tracing(1 << CAP_BPF));
        assert!(!can_load_tracing(0));
    }
}
