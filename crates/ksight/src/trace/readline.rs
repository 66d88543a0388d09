//! `trace readline`: a uprobe and a uretprobe on readline() in every file that defines it
//! (bash carries readline inside itself on Debian; other programs map libreadline.so).
//!
//! A uprobe belongs to a file (an inode), so one attachment covers every process that maps
//! it, started before or after. Files are found per process, through the mapping itself
//! (`/proc/PID/map_files/START-END`, a link to the very file mapped), so a container's bash,
//! which exists only in its mount namespace, is found too, whatever path /proc/PID/maps
//! prints for it (a path from that namespace's root, which is not ksight's when ksight runs
//! in a chroot): every process at start, and each process that execs afterwards (the exec
//! records of trace.bpf.c, not printed unless asked for). A file is known by the device and
//! inode /proc/PID/maps shows (the real file under overlayfs), so one file is probed once
//! however many paths lead to it.
//!
//! The one gap: a readline() call already running when its file gets probed is not seen on
//! return, so the first line read by the first process of a file never seen before (found
//! at its exec) is missed.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use libbpf_rs::Link;
use tracing::{debug, info, warn};

use crate::bpf::LoadedObject;
use crate::common::elf;

/// A file as the kernel knows it: device (major, minor) and inode.
type FileId = (u32, u32, u64);

/// Libraries are mapped by the dynamic loader after exec: a process is looked at again
/// this long after its exec.
const RESCAN_AFTER: Duration = Duration::from_millis(200);

/// Debian's multiarch triplet of the target (its library directory's name).
#[cfg(target_arch = "x86_64")]
macro_rules! multiarch {
    () => {
        "x86_64-linux-gnu"
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! multiarch {
    () => {
        "aarch64-linux-gnu"
    };
}

/// Where a host without any bash or readline process running yet keeps them.
const HOST_BINARIES: &[&str] = &["/bin/bash", "/usr/bin/bash", "/usr/local/bin/bash"];
const HOST_LIBRARY_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    concat!("/lib/", multiarch!()),
    concat!("/usr/lib/", multiarch!()),
];

pub struct Probes<'a> {
    obj: &'a LoadedObject,
    /// The first attach that failed, for the error when nothing could be probed at start.
    first_failure: Option<String>,
    /// Files looked at: probed, or without a readline() of their own.
    seen: HashSet<FileId>,
    links: Vec<Link>,
    /// Processes to look at again (their libraries), and when.
    rescans: Vec<(u32, Instant)>,
}

impl<'a> Probes<'a> {
    /// Probes the host's bash and libreadline, and every file that defines readline() in
    /// any running process; fails when such files exist and none could be probed.
    pub fn start(obj: &'a LoadedObject) -> Result<Probes<'a>> {
        let mut probes = Probes {
            obj,
            first_failure: None,
            seen: HashSet::new(),
            links: Vec::new(),
            rescans: Vec::new(),
        };
        for path in host_candidates() {
            probes.consider_host_file(&path);
        }
        for pid in all_pids() {
            probes.scan_process(pid);
        }
        if let (true, Some(why)) = (probes.links.is_empty(), &probes.first_failure) {
            bail!("could not probe readline in any file: {why}");
        }
        if probes.links.is_empty() {
            warn!("no file defines readline() yet: waiting for a process that execs one");
        }
        info!(files = probes.links.len() / 2, "readline probes attached");
        Ok(probes)
    }

    /// A process just exec'd: its binary now, its libraries a little later.
    pub fn on_exec(&mut self, pid: u32) {
        self.scan_process(pid);
        self.rescans.push((pid, Instant::now() + RESCAN_AFTER));
    }

    /// Looks again at the processes whose time has come.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.rescans.iter().partition(|(_, t)| *t <= now);
        self.rescans = later;
        for (pid, _) in due {
            self.scan_process(pid);
        }
    }

    fn scan_process(&mut self, pid: u32) {
        // A process that is gone has nothing to probe.
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        for m in maps.lines().filter_map(executable_mapping) {
            if self.seen.insert(m.id) {
                let mapped = PathBuf::from(format!("/proc/{pid}/map_files/{}", m.range));
                self.consider(&mapped, &m.path);
            }
        }
    }

    fn consider_host_file(&mut self, path: &Path) {
        let Some(id) = mapped_identity(path) else {
            return;
        };
        if self.seen.insert(id) {
            let shown = path.to_string_lossy().into_owned();
            self.consider(path, &shown);
        }
    }

    /// Probes the file at `path` if it defines readline(); `shown` is its path for logs.
    fn consider(&mut self, path: &Path, shown: &str) {
        let Some(offset) = File::open(path)
            .ok()
            .and_then(|f| elf::function_offset(&f, "readline"))
        else {
            return;
        };
        let shown = crate::decode::printable(shown.as_bytes());
        // The uretprobe first: it alone makes the records (the entry only adds wait_ns).
        let attached = self
            .obj
            .attach_uprobe("readline_return", true, path, offset)
            .and_then(|ret| {
                let entry = self
                    .obj
                    .attach_uprobe("readline_entry", false, path, offset)?;
                Ok([ret, entry])
            });
        match attached {
            Ok(links) => {
                debug!(file = %shown, offset, "readline probed");
                self.links.extend(links);
            }
            Err(err) => {
                warn!(file = %shown, "could not probe readline: {err:#}");
                let why = format!("{shown}: {err:#}");
                self.first_failure.get_or_insert(why);
            }
        }
    }
}

/// An executable file mapping of /proc/PID/maps.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    id: FileId,
    /// `start-end`, as /proc/PID/map_files names the mapping.
    range: String,
    /// The path maps prints (for logs).
    path: String,
}

/// The executable file mapping of a /proc/PID/maps line (`start-end perms offset
/// major:minor inode path`); None for anything else.
fn executable_mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, ' ');
    let (range, perms, _, dev, inode) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let path = fields.next()?.trim_start();
    if perms.as_bytes().get(2) != Some(&b'x') || !path.starts_with('/') {
        return None;
    }
    // A file deleted since (an upgraded binary) is not worth probing: nothing new maps it.
    if path.ends_with(" (deleted)") {
        return None;
    }
    let (major, minor) = dev.split_once(':')?;
    let id = (
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
        inode.parse().ok()?,
    );
    (id.2 != 0).then(|| Mapping {
        id,
        range: range.to_string(),
        path: path.to_string(),
    })
}

/// The identity /proc/self/maps gives `path` once mapped: under overlayfs that is the real
/// file's, as in every other process's maps (stat would give the overlay's).
fn mapped_identity(path: &Path) -> Option<FileId> {
    use std::os::fd::AsRawFd;
    let file = File::open(path).ok()?;
    if file.metadata().ok()?.len() == 0 {
        return None;
    }
    // SAFETY: a private read-only mapping of one page of a file we hold open, unmapped below.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if at == libc::MAP_FAILED {
        return None;
    }
    let start = format!("{:x}-", at as usize);
    let id = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| {
            let line = maps.lines().find(|l| l.starts_with(&start))?;
            let mut fields = line.split_whitespace().skip(3);
            let (major, minor) = fields.next()?.split_once(':')?;
            Some((
                u32::from_str_radix(major, 16).ok()?,
                u32::from_str_radix(minor, 16).ok()?,
                fields.next()?.parse().ok()?,
            ))
        });
    // SAFETY: unmapping the page mapped above.
    unsafe { libc::munmap(at, 4096) };
    id
}

/// bash and libreadline where the host keeps them.
fn host_candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = HOST_BINARIES.iter().map(PathBuf::from).collect();
    for dir in HOST_LIBRARY_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        out.extend(
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("libreadline.so")
                })
                .map(|e| e.path()),
        );
    }
    out
}

fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let line = "55d0c-55d0d r-xp 00020000 fd:01 1835021                    /usr/bin/bash";
        assert_eq!(
            executable_mapping(line),
            Some(Mapping {
                id: (0xfd, 1, 1835021),
                range: "55d0c-55d0d".into(),
                path: "/usr/bin/bash".into()
            })
        );
        let spaced = "1-2 r-xp 0 08:02 7 /tmp/a b";
        assert_eq!(
            executable_mapping(spaced).map(|m| m.path),
            Some("/tmp/a b".into())
        );
        for skipped in [
            "1-2 r--p 0 fd:01 7 /usr/bin/bash",
            "1-2 r-xp 0 00:00 0 [vdso]",
            "1-2 r-xp 0 fd:01 7 /usr/bin/bash (deleted)",
            "1-2 rw-p 0 00:00 0",
        ] {
            assert_eq!(executable_mapping(skipped), None, "{skipped}");
        }
    }

    #[test]
    fn own_binary_is_identified_as_maps_shows_it() {
        let exe = std::fs::read_link("/proc/self/exe").expect("own path");
        let id = mapped_identity(&exe).expect("identity");
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        assert!(maps
            .lines()
            .filter_map(executable_mapping)
            .any(|m| m.id == id));
    }
}
