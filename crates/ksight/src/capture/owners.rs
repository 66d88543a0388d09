//! Who is behind a socket: the cgroup socket hooks (attached to the cgroup v2 root, so they
//! run for every process) and one pass over the sockets that were already open, by the
//! task_file iterator or, where the kernel refuses it, from user space through pidfd_getfd.
//! Each fills the socket storage the TC programs read (capture.bpf.c).

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};
use ksight_bpf::abi::ks_cap_owner;
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle};

use crate::bpf::features::{self, Feature};
use crate::bpf::LoadedObject;
use crate::enrich::cgroup::{v2_root, Hierarchy};

/// The cgroup hooks: one program each (capture.bpf.c).
pub const HOOKS: [&str; 9] = [
    "cap_sock_create",
    "cap_connect4",
    "cap_connect6",
    "cap_bind4",
    "cap_bind6",
    "cap_sendmsg4",
    "cap_sendmsg6",
    "cap_recvmsg4",
    "cap_recvmsg6",
];

pub const ITERATOR: &str = "cap_sockets";

/// The attached hooks; dropping them detaches them.
pub struct Owners {
    _links: Vec<Link>,
    /// How many of the HOOKS are attached.
    pub hooks_attached: usize,
    /// How the sockets open at start were named: the iterator, pidfd_getfd, or none.
    pub before_start: &'static str,
}

/// Attaches every hook that was loaded to the cgroup v2 root (multi-attach links: programs
/// others put there stay), then names the owners of sockets already open: with the
/// iterator where the kernel allows it, else from user space (pidfd_getfd). A hook or a
/// walk that cannot run only costs attribution of the packets it would have named: a
/// warning, not an error. `cgroup_mode` is the object's (`enum ks_cgroup_mode`).
pub fn start(obj: &LoadedObject, cgroup_mode: u32) -> Result<Owners> {
    let mut links = Vec::new();
    let hooks_loaded = HOOKS.iter().any(|h| obj.program(h).is_ok());
    match v2_root() {
        Some(root) if hooks_loaded => attach_hooks(obj, &root, &mut links),
        Some(_) => tracing::warn!(
            "cgroup socket hooks refused ({}): packets are attributed only to sockets open at start",
            features::check(Feature::SockHooks).detail
        ),
        None => tracing::warn!(
            "no cgroup v2 mount: packets are attributed only to sockets open at start"
        ),
    }
    let hooks_attached = links.len();
    let before_start = match name_open_sockets(obj, cgroup_mode) {
        Ok(how) => how,
        Err(err) => {
            tracing::warn!("sockets open before the capture stay unattributed: {err:#}");
            "none"
        }
    };
    Ok(Owners {
        _links: links,
        hooks_attached,
        before_start,
    })
}

fn attach_hooks(obj: &LoadedObject, root: &Path, links: &mut Vec<Link>) {
    let dir = match std::fs::File::open(root) {
        Ok(dir) => dir,
        Err(err) => {
            tracing::warn!("cannot open the cgroup v2 root {}: {err}", root.display());
            return;
        }
    };
    for name in HOOKS {
        match features::attach_cgroup(obj, name, &dir) {
            Ok(link) => links.push(link),
            Err(err) => tracing::warn!("socket hook {name} not attached: {err:#}"),
        }
    }
}

/// Names the owner of every socket already open, once: the task_file iterator where it was
/// loaded, else each process's sockets taken with pidfd_getfd. Returns which.
fn name_open_sockets(obj: &LoadedObject, cgroup_mode: u32) -> Result<&'static str> {
    if obj.program(ITERATOR).is_ok() {
        features::run_iterator(obj, ITERATOR)?;
        return Ok("task_file iterator");
    }
    let pidfd = features::check(Feature::PidfdGetfd);
    if !pidfd.ok {
        anyhow::bail!(
            "the task_file iterator was refused ({}) and pidfd_getfd cannot be used ({})",
            features::check(Feature::TaskFileIter).detail,
            pidfd.detail
        );
    }
    let named = from_user_space(&obj.map("cap_owners")?, cgroup_mode)?;
    tracing::debug!(
        sockets = named,
        "sockets open before start named through pidfd_getfd"
    );
    Ok("pidfd_getfd")
}

/// What the iterator does, from user space: for each process in pid order, each socket it
/// holds is copied into ksight with pidfd_getfd and its storage is written with the owner
/// the iterator would write (the process, its real uid, its leader's comm, its cgroup),
/// unless a hook or an earlier process named it already (BPF_NOEXIST). Processes that end
/// meanwhile are skipped. Returns the sockets named.
fn from_user_space(owners: &MapHandle, cgroup_mode: u32) -> Result<usize> {
    let hierarchy = if cgroup_mode == 0 {
        None
    } else {
        Hierarchy::detect().ok().flatten()
    };
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .context("listing /proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let mut seen = HashSet::new();
    let mut named = 0;
    for pid in pids {
        named += name_sockets_of(owners, pid, hierarchy.as_ref(), &mut seen);
    }
    Ok(named)
}

/// The sockets of one process; 0 if it ended or cannot be read.
fn name_sockets_of(
    owners: &MapHandle,
    pid: u32,
    hierarchy: Option<&Hierarchy>,
    seen: &mut HashSet<u64>,
) -> usize {
    let Ok(pidfd) = features::pidfd_open(pid) else {
        return 0;
    };
    let Some(owner) = owner_of_process(pid, hierarchy) else {
        return 0;
    };
    // SAFETY: ks_cap_owner is Plain (a padding-free C struct); the slice borrows owner.
    let value = unsafe { plain::as_bytes(&owner) };
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let mut named = 0;
    for entry in fds.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(inode) = socket_inode(&entry.path()) else {
            continue;
        };
        if !seen.insert(inode) {
            continue; // a socket shared with a lower pid: that one owns it
        }
        let Ok(copy) = features::pidfd_getfd(&pidfd, fd) else {
            continue; // closed meanwhile
        };
        let key = copy.as_raw_fd().to_ne_bytes();
        if owners.update(&key, value, MapFlags::NO_EXIST).is_ok() {
            named += 1;
        }
    }
    named
}

/// The inode of the socket a /proc/PID/fd link points at (`socket:[INODE]`), else None.
fn socket_inode(link: &Path) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    let text = target.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The owner the iterator writes for a process's sockets: its thread-group leader, read from
/// /proc (the real uid, as `cred->uid`; the comm of the leader; the cgroup id in the
/// object's hierarchy, 0 without one).
fn owner_of_process(pid: u32, hierarchy: Option<&Hierarchy>) -> Option<ks_cap_owner> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let comm = std::fs::read(format!("/proc/{pid}/comm")).ok()?;
    let mut owner = ks_cap_owner {
        pid,
        tid: pid,
        uid,
        cgroup: hierarchy.map_or(0, |h| h.cgroup_id_of_pid(pid).unwrap_or(0)),
        ..Default::default()
    };
    let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
    let room = owner.comm.len() - 1; // NUL-terminated, as the kernel's copy is
    for (dst, src) in owner.comm.iter_mut().zip(comm.iter().take(room)) {
        *dst = *src as ksight_bpf::abi::AbiChar;
    }
    Some(owner)
}
