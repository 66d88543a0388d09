//! Who is behind a socket: the cgroup socket hooks (attached to the cgroup v2 root, so they
//! run for every process) and one pass of the task_file iterator over the sockets that were
//! already open. Both fill the socket storage the TC programs read (capture.bpf.c).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libbpf_rs::{AsRawLibbpf, Iter, Link};

use crate::bpf::{link_from_raw, LoadedObject};

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
}

/// Where cgroup v2 is mounted: its root is where hooks see every process (hybrid hosts
/// mount it at /sys/fs/cgroup/unified, pure v2 ones at /sys/fs/cgroup).
pub fn v2_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let mount = fields.next()?;
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(mount))
    })
}

/// Attaches every hook to the cgroup v2 root (multi-attach links: programs others put there
/// stay), then names the owners of sockets already open. A hook that cannot attach only costs
/// attribution of the packets it would have named: a warning, not an error.
pub fn start(obj: &LoadedObject) -> Result<Owners> {
    let mut links = Vec::new();
    match v2_root() {
        Some(root) => attach_hooks(obj, &root, &mut links),
        None => tracing::warn!(
            "no cgroup v2 mount: packets are attributed only to sockets open at start"
        ),
    }
    let hooks_attached = links.len();
    if let Err(err) = walk_open_sockets(obj) {
        tracing::warn!("sockets open before the capture stay unattributed: {err:#}");
    }
    Ok(Owners {
        _links: links,
        hooks_attached,
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
        let attached = obj.program(name).and_then(|prog| {
            // SAFETY: a loaded program of a live object and an open cgroup directory; libbpf
            // makes a multi-attach link (BPF_F_ALLOW_MULTI semantics): nothing is replaced.
            link_from_raw(unsafe {
                libbpf_sys::bpf_program__attach_cgroup(
                    prog.as_libbpf_object().as_ptr(),
                    dir.as_raw_fd(),
                )
            })
        });
        match attached {
            Ok(link) => links.push(link),
            Err(err) => tracing::warn!("socket hook {name} not attached: {err:#}"),
        }
    }
}

/// Runs the task_file iterator once: it fills the storage of every open socket it finds.
fn walk_open_sockets(obj: &LoadedObject) -> Result<()> {
    let prog = obj.program(ITERATOR)?;
    // SAFETY: a loaded iterator program of a live object; no options (every task).
    let link = link_from_raw(unsafe {
        libbpf_sys::bpf_program__attach_iter(prog.as_libbpf_object().as_ptr(), std::ptr::null())
    })?;
    let mut iter = Iter::new(&link).context("creating the iterator")?;
    let mut sink = Vec::new();
    iter.read_to_end(&mut sink)
        .context("running the iterator")?;
    Ok(())
}
