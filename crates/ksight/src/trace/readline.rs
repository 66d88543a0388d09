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
//! A file is held probed only while some process maps it (bash and libreadline where the
//! host keeps them excepted): a sweep every few seconds releases the others, detaching their
//! uprobes and closing their descriptors, and at most [`MAX_FILES`] are held at once, so
//! thousands of copies of a binary cannot make ksight hold thousands of descriptors or
//! spend minutes detaching at exit.
//!
//! The one gap: a readline() call already running when its file gets probed is not seen on
//! return, so the first line read by the first process of a file never seen before (found
//! at its exec) is missed.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
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

/// The most files held probed at once besides the host's bash and libreadline (two uprobe
/// links each, each link a BPF link and a perf event descriptor). Past it,
/// a newly found file is not probed until a sweep releases one that no process maps any
/// more; each such file is counted and named once on stderr.
pub const MAX_FILES: usize = 32;

/// How often every process's mappings are read to release files no process maps any more
/// (and to probe files refused at the bound once there is room).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A probed file: its two links (dropping them detaches the uprobes and closes their fds).
struct Held {
    _links: [Link; 2],
    /// bash or libreadline where the host keeps them: held whether mapped or not, so a
    /// process that starts later is traced from its first line.
    host: bool,
}

pub struct Probes<'a> {
    obj: &'a LoadedObject,
    /// The first attach that failed, for the error when nothing could be probed at start.
    first_failure: Option<String>,
    /// Files looked at and not to look at again while mapped: probed, without a readline()
    /// of their own, or that could not be probed.
    seen: HashSet<FileId>,
    /// The files probed now, by identity (one file behind many paths is held once).
    held: HashMap<FileId, Held>,
    /// Files that define readline() but found no room (MAX_FILES), while still mapped.
    refused: HashSet<FileId>,
    /// Files refused at the bound since start (each counted when first refused).
    refused_total: u64,
    /// Files released since start.
    released_total: u64,
    /// Processes to look at again (their libraries), and when.
    rescans: Vec<(u32, Instant)>,
    next_sweep: Instant,
    releaser: Releaser,
}

/// What became of a file looked at.
enum Outcome {
    /// Probed, or nothing to probe (no readline(), or the attach failed).
    Done,
    /// It defines readline() but MAX_FILES are held.
    NoRoom,
}

impl<'a> Probes<'a> {
    /// Probes the host's bash and libreadline, and every file that defines readline() in
    /// any running process; fails when such files exist and none could be probed.
    pub fn start(obj: &'a LoadedObject) -> Result<Probes<'a>> {
        let mut probes = Probes {
            obj,
            first_failure: None,
            seen: HashSet::new(),
            held: HashMap::new(),
            refused: HashSet::new(),
            refused_total: 0,
            released_total: 0,
            rescans: Vec::new(),
            next_sweep: Instant::now() + SWEEP_EVERY,
            releaser: Releaser::start(),
        };
        for path in host_candidates() {
            probes.consider_host_file(&path);
        }
        probes.sweep();
        if let (true, Some(why)) = (probes.held.is_empty(), &probes.first_failure) {
            bail!("could not probe readline in any file: {why}");
        }
        if probes.held.is_empty() {
            warn!("no file defines readline() yet: waiting for a process that execs one");
        }
        info!(files = probes.held.len(), "readline probes attached");
        Ok(probes)
    }

    /// A process just exec'd: its binary now, its libraries a little later.
    pub fn on_exec(&mut self, pid: u32) {
        self.scan_process(pid);
        self.rescans.push((pid, Instant::now() + RESCAN_AFTER));
    }

    /// Looks again at the processes whose time has come; sweeps when due.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.rescans.iter().partition(|(_, t)| *t <= now);
        self.rescans = later;
        for (pid, _) in due {
            self.scan_process(pid);
        }
        if now >= self.next_sweep {
            self.sweep();
            self.next_sweep = Instant::now() + SWEEP_EVERY;
        }
    }

    /// Files held now, refused at the bound since start, released since start.
    pub fn counts(&self) -> (usize, u64, u64) {
        (self.held.len(), self.refused_total, self.released_total)
    }

    fn scan_process(&mut self, pid: u32) {
        for m in mappings_of(pid) {
            self.look_at(pid, &m);
        }
    }

    /// Every process's mappings: files no process maps any more are released, then files
    /// not seen yet (or refused for room before) are looked at.
    fn sweep(&mut self) {
        let mut mapped = HashSet::new();
        let mut unseen = Vec::new();
        for pid in all_pids() {
            for m in mappings_of(pid) {
                if mapped.insert(m.id) && !self.seen.contains(&m.id) {
                    unseen.push((pid, m));
                }
            }
        }
        let unmapped: Vec<FileId> = (self.held.iter())
            .filter(|(id, held)| !held.host && !mapped.contains(*id))
            .map(|(id, _)| *id)
            .collect();
        if !unmapped.is_empty() {
            let gone: Vec<Held> = unmapped
                .iter()
                .filter_map(|id| self.held.remove(id))
                .collect();
            self.released_total += gone.len() as u64;
            self.releaser.send(gone);
            debug!(
                released = unmapped.len(),
                held = self.held.len(),
                "readline probes released"
            );
        }
        let held = &self.held;
        // Forgotten when unmapped: a file mapped again later is looked at again.
        self.seen
            .retain(|id| mapped.contains(id) || held.contains_key(id));
        self.refused.retain(|id| mapped.contains(id));
        for (pid, m) in unseen {
            self.look_at(pid, &m);
        }
    }

    fn look_at(&mut self, pid: u32, m: &Mapping) {
        // A file refused for room is read again only once there is room: thousands of copies
        // cost one ELF reading each, not one per sweep.
        if self.seen.contains(&m.id) || (self.refused.contains(&m.id) && self.full()) {
            return;
        }
        let mapped = PathBuf::from(format!("/proc/{pid}/map_files/{}", m.range));
        match self.consider(&mapped, &m.path, m.id, false) {
            Outcome::Done => {
                self.seen.insert(m.id);
            }
            Outcome::NoRoom => {
                if self.refused.insert(m.id) {
                    self.refused_total += 1;
                    let file = crate::decode::printable(m.path.as_bytes());
                    eprintln!(
                        "ksight: readline not probed in {file}: {MAX_FILES} files are probed \
                         already (the bound; room is made as no process maps one any more)"
                    );
                }
            }
        }
    }

    fn consider_host_file(&mut self, path: &Path) {
        let Some(id) = mapped_identity(path) else {
            return;
        };
        if self.seen.insert(id) {
            let shown = path.to_string_lossy().into_owned();
            self.consider(path, &shown, id, true);
        }
    }

    /// Whether MAX_FILES files besides the host's are held.
    fn full(&self) -> bool {
        self.held.values().filter(|h| !h.host).count() >= MAX_FILES
    }

    /// Probes the file at `path` if it defines readline() and there is room; `shown` is its
    /// path for logs.
    fn consider(&mut self, path: &Path, shown: &str, id: FileId, host: bool) -> Outcome {
        let Some(offset) = File::open(path)
            .ok()
            .and_then(|f| elf::function_offset(&f, "readline"))
        else {
            return Outcome::Done;
        };
        if !host && self.full() {
            return Outcome::NoRoom;
        }
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
                self.held.insert(
                    id,
                    Held {
                        _links: links,
                        host,
                    },
                );
            }
            Err(err) => {
                warn!(file = %shown, "could not probe readline: {err:#}");
                let why = format!("{shown}: {err:#}");
                self.first_failure.get_or_insert(why);
            }
        }
        Outcome::Done
    }
}

impl Drop for Probes<'_> {
    fn drop(&mut self) {
        self.releaser
            .send(self.held.drain().map(|(_, held)| held).collect());
        self.releaser.finish();
    }
}

/// Detaching a uprobe is slow: the kernel waits for several RCU grace periods under a global
/// mutex (event_mutex), 100 to 200 ms a link measured on this 6.18 host, one after another
/// whatever the number of threads. Files released by a sweep are dropped on a thread of
/// their own, so the trace goes on reading events meanwhile; at exit, ksight waits for it.
struct Releaser {
    tx: Option<mpsc::Sender<Vec<Held>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Releaser {
    fn start() -> Releaser {
        let (tx, rx) = mpsc::channel::<Vec<Held>>();
        let thread = std::thread::Builder::new()
            .name("ksight-release".into())
            .spawn(move || rx.into_iter().for_each(drop));
        match thread {
            Ok(thread) => Releaser {
                tx: Some(tx),
                thread: Some(thread),
            },
            // No thread to be had: files are released where they are let go.
            Err(_) => Releaser {
                tx: None,
                thread: None,
            },
        }
    }

    fn send(&self, files: Vec<Held>) {
        match &self.tx {
            // A send fails only when the thread is gone: the files come back and drop here.
            Some(tx) => drop(tx.send(files)),
            None => drop(files),
        }
    }

    /// Waits until every file sent is released.
    fn finish(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The executable file mappings of a process (none when it is gone).
fn mappings_of(pid: u32) -> Vec<Mapping> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    maps.lines().filter_map(executable_mapping).collect()
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
