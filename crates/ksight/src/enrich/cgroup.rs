//! Which cgroup hierarchy ksight keys tasks by, cgroup id ↔ path, and task → cgroup id.
//!
//! # The hierarchy, and the mode the BPF side is configured with
//!
//! | mode | constant | kernel side reads | chosen when |
//! |---:|---|---|---|
//! | 0 | [`MODE_OFF`] | nothing: no cgroup keys | no cgroup filesystem is mounted |
//! | 1 | [`MODE_V2`] | `bpf_get_current_cgroup_id()` | cgroup v2 carries the `memory` controller (pure v2), or no v1 controller is mounted |
//! | 2 | [`MODE_V1`] | `task->cgroups->subsys[<ctl>_cgrp_id]->cgroup->kn->id` | hybrid or pure v1: the v1 `memory` hierarchy, else another mounted v1 controller ([`V1_FALLBACK`] order) |
//!
//! On hybrid hosts the v2 (`unified`) hierarchy can be nearly empty, so every task there has
//! the same v2 id: the v1 `memory` hierarchy is the one runtimes populate with container and
//! pod cgroups. For mode 2 the kernel side needs the controller's `enum cgroup_subsys_id`
//! value: take it from BTF (`bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id)`), not
//! from the line order of /proc/cgroups, which newer kernels leave gaps in (controllers without
//! v1 support are omitted) and which container tools sometimes mask.
//!
//! # Ids and paths
//!
//! On 64-bit kernels ≥ 5.5 a cgroup id is its kernfs node id, which is also the inode number
//! of the cgroup's directory in that hierarchy's mount: [`Resolver`] walks the mount once and
//! maps inode → path, so no BPF-side path building is needed. (Before 5.5 the id was the inode
//! in its low 32 bits plus a generation above; ksight's kernels start at 5.10.)
//!
//! Paths are hierarchy paths, the form /proc/PID/cgroup prints: `/` for the root,
//! `/system.slice/ssh.service` below it, prefixed with the mount's root when only a subtree is
//! mounted (a container without a cgroup namespace sees `/docker/<id>` as its mount root).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use super::container::CgroupInfo;

/// BPF mode 0: no cgroup keys.
#[allow(dead_code)] // The kernel side's default, named here for its documentation.
pub const MODE_OFF: u32 = 0;
/// BPF mode 1: the v2 cgroup id, `bpf_get_current_cgroup_id()`.
pub const MODE_V2: u32 = 1;
/// BPF mode 2: the kernfs id of the task's cgroup in one v1 controller's hierarchy.
pub const MODE_V1: u32 = 2;

/// v1 controllers to key by when `memory` is not mounted, most commonly populated first.
pub const V1_FALLBACK: [&str; 12] = [
    "pids",
    "cpu",
    "cpuacct",
    "blkio",
    "devices",
    "freezer",
    "cpuset",
    "perf_event",
    "net_cls",
    "net_prio",
    "hugetlb",
    "rdma",
];

/// Which kind of hierarchy: v2, or one v1 controller's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    V2,
    V1 { controller: String },
}

/// The hierarchy ksight keys tasks by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub kind: Kind,
    /// Where it is mounted (`/sys/fs/cgroup`, `/sys/fs/cgroup/memory`, …).
    pub mount: PathBuf,
    /// The hierarchy path the mount shows (mountinfo's root field): `/` unless a subtree.
    pub root: String,
}

/// One cgroup mount from /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CgroupMount {
    v2: bool,
    mount: PathBuf,
    root: String,
    /// v1: the controllers in the super options (`cpu,cpuacct`); v2: empty.
    controllers: Vec<String>,
}

impl Hierarchy {
    /// Look at this process's mounts; None when no cgroup filesystem is mounted.
    pub fn detect() -> io::Result<Option<Hierarchy>> {
        let text = fs::read_to_string("/proc/self/mountinfo")?;
        let mounts = parse_mountinfo(&text);
        Ok(choose(&mounts, |dir| {
            fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default()
        }))
    }

    /// The `u32` the BPF side is configured with ([`MODE_V2`] or [`MODE_V1`]).
    pub fn bpf_mode(&self) -> u32 {
        match self.kind {
            Kind::V2 => MODE_V2,
            Kind::V1 { .. } => MODE_V1,
        }
    }

    /// The v1 controller keyed by, None on v2.
    pub fn controller(&self) -> Option<&str> {
        match &self.kind {
            Kind::V2 => None,
            Kind::V1 { controller } => Some(controller),
        }
    }

    /// One line for logs: `v1 memory hierarchy at /sys/fs/cgroup/memory`.
    pub fn describe(&self) -> String {
        match self.controller() {
            None => format!("v2 hierarchy at {}", self.mount.display()),
            Some(controller) => format!("v1 {controller} hierarchy at {}", self.mount.display()),
        }
    }

    /// The id of a cgroup given by its hierarchy path (`/system.slice`, `system.slice`) or by
    /// its directory under the mount (`/sys/fs/cgroup/memory/system.slice`): for `--cgroup`.
    pub fn id_of(&self, path: &str) -> io::Result<u64> {
        let dir = self.dir_of(path)?;
        let meta = fs::metadata(&dir)?;
        let mount_dev = fs::metadata(&self.mount)?.dev();
        if !meta.is_dir() || meta.dev() != mount_dev {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a cgroup of the {}",
                    dir.display(),
                    self.describe()
                ),
            ));
        }
        Ok(meta.ino())
    }

    /// The directory of a cgroup under the mount.
    fn dir_of(&self, path: &str) -> io::Result<PathBuf> {
        let given = Path::new(path);
        if given.starts_with(&self.mount) {
            return Ok(given.to_path_buf());
        }
        let outside = || {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("cgroup {path:?} is outside the {}", self.describe()),
            )
        };
        let relative = Path::new("/").join(given);
        let below_root = relative.strip_prefix(&self.root).map_err(|_| outside())?;
        if below_root
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(outside());
        }
        Ok(self.mount.join(below_root))
    }

    /// The hierarchy path of a task's cgroup, from /proc/PID/cgroup.
    pub fn cgroup_path_of_pid(&self, pid: u32) -> io::Result<String> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        path_in_proc_cgroup(&text, &self.kind)
            .map(str::to_string)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("/proc/{pid}/cgroup has no line for the {}", self.describe()),
                )
            })
    }

    /// Every cgroup of the hierarchy now, id → hierarchy path (at most `max`): for filters
    /// that name a subtree or a container (`ksight trace --cgroup/--container`).
    pub fn cgroups(&self, max: usize) -> HashMap<u64, Box<str>> {
        walk(&self.mount, &self.root, max).0
    }

    /// The id the kernel side would report for a task (of its thread-group leader): capture
    /// names the sockets open before start with it where the iterator is refused.
    pub fn cgroup_id_of_pid(&self, pid: u32) -> io::Result<u64> {
        self.id_of(&self.cgroup_path_of_pid(pid)?)
    }
}

/// Pick the hierarchy from the cgroup mounts; `v2_controllers` reads a v2 mount's
/// `cgroup.controllers`.
fn choose(mounts: &[CgroupMount], v2_controllers: impl Fn(&Path) -> String) -> Option<Hierarchy> {
    // A whole hierarchy beats a mounted subtree of it.
    let mut mounts: Vec<&CgroupMount> = mounts.iter().collect();
    mounts.sort_by_key(|m| m.root != "/");
    let v2 = mounts.iter().find(|m| m.v2);
    let v1_with = |name: &str| {
        mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == name))
    };
    let pick = |m: &CgroupMount, kind: Kind| Hierarchy {
        kind,
        mount: m.mount.clone(),
        root: m.root.clone(),
    };
    // Pure v2 (or v2 with memory while some other controller stays on v1): key by v2.
    if let Some(m) = v2.filter(|m| {
        v2_controllers(&m.mount)
            .split_whitespace()
            .any(|c| c == "memory")
    }) {
        return Some(pick(m, Kind::V2));
    }
    let v1_order = std::iter::once("memory").chain(V1_FALLBACK);
    for name in v1_order {
        if let Some(m) = v1_with(name) {
            let controller = name.to_string();
            return Some(pick(m, Kind::V1 { controller }));
        }
    }
    v2.map(|m| pick(m, Kind::V2))
}

/// The cgroup mounts in mountinfo text (see proc(5)).
fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
    // id parent dev root mountpoint options [optional…] - fstype source superoptions
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.split(' ').collect();
    let (root, mount) = (left.get(3)?, left.get(4)?);
    let (fstype, super_options) = (*right.first()?, right.get(2).copied().unwrap_or(""));
    let v2 = match fstype {
        "cgroup2" => true,
        "cgroup" => false,
        _ => return None,
    };
    let controllers = if v2 {
        Vec::new()
    } else {
        super_options
            .split(',')
            .filter(|o| is_v1_controller(o))
            .map(str::to_string)
            .collect()
    };
    Some(CgroupMount {
        v2,
        mount: PathBuf::from(unescape(mount)),
        root: unescape(root),
        controllers,
    })
}

/// Controller names (not `rw`, `name=systemd`, `xattr`, `release_agent=…`).
fn is_v1_controller(option: &str) -> bool {
    option == "memory" || option == "misc" || V1_FALLBACK.contains(&option)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(o)) => {
                out.push(
                    o.iter()
                        .fold(0u8, |v, d| v.wrapping_mul(8).wrapping_add(d - b'0')),
                );
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path on the /proc/PID/cgroup line of this hierarchy (`0::/p` on v2;
/// `4:memory:/p` or `2:cpu,cpuacct:/p` on v1).
fn path_in_proc_cgroup<'a>(text: &'a str, kind: &Kind) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let wanted = match kind {
            Kind::V2 => id == "0" && controllers.is_empty(),
            Kind::V1 { controller } => controllers.split(',').any(|c| c == controller),
        };
        wanted.then_some(path)
    })
}

/// Cgroup id → hierarchy path, from walks of the mount.
///
/// Two generations bound the memory: each walk replaces the current map, and entries the walk
/// no longer finds (cgroups removed since) stay one more generation, so a late event from a
/// just-removed container still resolves. A miss re-walks at most once per `min_rewalk`.
pub struct Resolver {
    hierarchy: Hierarchy,
    current: HashMap<u64, Box<str>>,
    previous: HashMap<u64, Box<str>>,
    last_walk: Option<Instant>,
    min_rewalk: Duration,
    max_entries: usize,
    warned_full: bool,
}

/// Cgroups remembered per generation (a busy Kubernetes node has a few thousand).
pub const DEFAULT_MAX_ENTRIES: usize = 65_536;
/// Cgroups come and go; walking a large tree costs milliseconds: at most once a second, and
/// once per scrape (`allow_rewalk`).
pub const DEFAULT_MIN_REWALK: Duration = Duration::from_secs(1);

impl Resolver {
    pub fn new(hierarchy: Hierarchy) -> Self {
        Self::with_limits(hierarchy, DEFAULT_MAX_ENTRIES, DEFAULT_MIN_REWALK)
    }

    pub fn with_limits(hierarchy: Hierarchy, max_entries: usize, min_rewalk: Duration) -> Self {
        Resolver {
            hierarchy,
            current: HashMap::new(),
            previous: HashMap::new(),
            last_walk: None,
            min_rewalk,
            max_entries,
            warned_full: false,
        }
    }

    #[allow(dead_code)] // for the tracer's --cgroup filter; tests use it now
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Lets the next miss walk again at once (a new scrape: misses within one scrape share
    /// one walk, and a cgroup made since the last scrape resolves).
    pub fn allow_rewalk(&mut self) {
        self.last_walk = None;
    }

    /// The hierarchy path of cgroup `id`; None if no walk has found it.
    pub fn path_of(&mut self, id: u64) -> Option<&str> {
        let known = self.current.contains_key(&id) || self.previous.contains_key(&id);
        let due = self
            .last_walk
            .is_none_or(|t| t.elapsed() >= self.min_rewalk);
        if !known && due {
            self.rewalk();
        }
        let path = self.current.get(&id).or_else(|| self.previous.get(&id));
        path.map(|p| &**p)
    }

    /// What the path of cgroup `id` says (container, pod, unit); only the id if unresolved.
    pub fn info(&mut self, id: u64) -> CgroupInfo {
        match self.path_of(id) {
            Some(path) => CgroupInfo::parse(id, path),
            None => CgroupInfo::unresolved(id),
        }
    }

    /// Path → id (see [`Hierarchy::id_of`]).
    #[allow(dead_code)] // for the tracer's --cgroup filter; tests use it now
    pub fn id_of(&self, path: &str) -> io::Result<u64> {
        self.hierarchy.id_of(path)
    }

    fn rewalk(&mut self) {
        self.last_walk = Some(Instant::now());
        let (fresh, full) = walk(
            &self.hierarchy.mount,
            &self.hierarchy.root,
            self.max_entries,
        );
        if full && !self.warned_full {
            tracing::warn!(
                "more than {} cgroups in the {}: the others show as ids",
                self.max_entries,
                self.hierarchy.describe()
            );
            self.warned_full = true;
        }
        let mut gone = std::mem::replace(&mut self.current, fresh);
        gone.retain(|id, _| !self.current.contains_key(id));
        self.previous = gone;
    }
}

/// Every cgroup directory under `mount`: inode → hierarchy path (`root` + path below the
/// mount), at most `max` of them; true when it stopped at `max`.
fn walk(mount: &Path, root: &str, max: usize) -> (HashMap<u64, Box<str>>, bool) {
    let mut found = HashMap::new();
    let Ok(meta) = fs::metadata(mount) else {
        return (found, false);
    };
    let root = root.trim_end_matches('/').to_string();
    found.insert(meta.ino(), display_path(&root).into());
    let mut stack = vec![(mount.to_path_buf(), root)];
    while let Some((dir, path)) = stack.pop() {
        // A cgroup removed during the walk: skip it, the next walk will not see it either.
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if found.len() >= max {
                return (found, true);
            }
            // kernfs reports the node id as d_ino: no stat per cgroup. A delegated subtree's
            // owner names its cgroups: the printable form keeps every byte apart and prints
            // nothing a terminal acts on.
            let name = crate::decode::printable(entry.file_name().as_bytes());
            let child = format!("{path}/{name}");
            found.insert(entry.ino(), child.clone().into());
            stack.push((entry.path(), child));
        }
    }
    (found, false)
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// mountinfo lines as hostile as a mount's path can make them: no panic.
        #[test]
        fn any_mountinfo_text_parses_or_is_skipped(text in "([0-9 :/a-z\\\\-]{0,60}\n){0,6}") {
            let _ = parse_mountinfo(&text);
        }

        #[test]
        fn arbitrary_mountinfo_bytes(text in ".{0,400}") {
            let _ = parse_mountinfo(&text);
        }

        /// `\ooo` octal escapes of mountinfo: any text unescapes without panic.
        #[test]
        fn unescape_never_panics(text in "(\\\\[0-9]{0,4}|.){0,40}") {
            let _ = unescape(&text);
        }
    }

    const PURE_V2: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 21 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
26 21 0:24 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
";

    // A systemd hybrid host (Debian 10, Ubuntu 20.04 defaults).
    const HYBRID: &str = "\
24 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
25 24 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
26 24 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
29 24 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
32 24 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
35 24 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:20 - cgroup cgroup rw,pids
";

    // Pure v1 (CentOS 7), memory mounted at an unusual place, with a space in the path.
    const PURE_V1: &str = "\
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:6 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:7 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
27 24 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,cpuacct,cpu
31 24 0:27 / /cg/mem\\040ory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
";

    fn none(_: &Path) -> String {
        String::new()
    }

    fn v2_with_memory(_: &Path) -> String {
        "cpuset cpu io memory hugetlb pids rdma misc\n".to_string()
    }

    fn v1(controller: &str) -> Kind {
        Kind::V1 {
            controller: controller.to_string(),
        }
    }

    #[test]
    fn mountinfo_pure_v2() {
        let mounts = parse_mountinfo(PURE_V2);
        assert_eq!(
            mounts,
            vec![CgroupMount {
                v2: true,
                mount: "/sys/fs/cgroup".into(),
                root: "/".into(),
                controllers: vec![],
            }]
        );
        let h = choose(&mounts, v2_with_memory).unwrap();
        assert_eq!((h.kind.clone(), h.bpf_mode()), (Kind::V2, MODE_V2));
        assert_eq!(h.mount, Path::new("/sys/fs/cgroup"));
        // v2 with every controller disabled still beats nothing.
        assert_eq!(choose(&mounts, none).unwrap().kind, Kind::V2);
    }

    #[test]
    fn mountinfo_hybrid_picks_v1_memory() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 5, "tmpfs is not a cgroup mount");
        assert_eq!(mounts[1].controllers, Vec::<String>::new(), "name=systemd");
        assert_eq!(mounts[2].controllers, vec!["cpu", "cpuacct"]);
        // The unified mount lists only what v1 left over (here: hugetlb).
        let h = choose(&mounts, |_| "hugetlb\n".to_string()).unwrap();
        assert_eq!(h.kind, v1("memory"));
        assert_eq!((h.bpf_mode(), h.controller()), (MODE_V1, Some("memory")));
        assert_eq!(h.mount, Path::new("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn mountinfo_v1_falls_back_when_memory_is_missing() {
        let without_memory: String = HYBRID
            .lines()
            .filter(|l| !l.contains("memory"))
            .map(|l| format!("{l}\n"))
            .collect();
        let h = choose(&parse_mountinfo(&without_memory), none).unwrap();
        assert_eq!(
            (h.kind, h.mount),
            (v1("pids"), "/sys/fs/cgroup/pids".into())
        );
        // Only name=systemd and v2: the v2 hierarchy.
        let only_named: String = HYBRID
            .lines()
            .filter(|l| l.contains("unified") || l.contains("name="))
            .map(|l| format!("{l}\n"))
            .collect();
        let h = choose(&parse_mountinfo(&only_named), none).unwrap();
        assert_eq!(
            (h.kind, h.mount),
            (Kind::V2, "/sys/fs/cgroup/unified".into())
        );
        assert_eq!(
            choose(
                &parse_mountinfo("22 1 0:21 / /proc rw - proc proc rw\n"),
                none
            ),
            None
        );
    }

    #[test]
    fn mountinfo_pure_v1_unescapes_and_keeps_the_root() {
        let mounts = parse_mountinfo(PURE_V1);
        let h = choose(&mounts, none).unwrap();
        assert_eq!((h.kind, h.mount), (v1("memory"), "/cg/mem ory".into()));
        assert_eq!(mounts[1].controllers, vec!["cpuacct", "cpu"]);
        // A container without a cgroup namespace sees its own subtree mounted.
        let sub =
            "40 30 0:31 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n\
41 30 0:31 / /host/memory rw - cgroup cgroup rw,memory\n";
        let mounts = parse_mountinfo(sub);
        assert_eq!(mounts[0].root, "/docker/abc");
        let h = choose(&mounts, none).unwrap();
        assert_eq!(
            (h.mount, h.root),
            ("/host/memory".into(), "/".to_string()),
            "whole beats subtree"
        );
    }

    #[test]
    fn proc_pid_cgroup_lines() {
        let text = "12:pids:/system.slice/ssh.service\n4:memory:/docker/abc\n\
2:cpu,cpuacct:/docker/abc/cpu\n1:name=systemd:/init.scope\n0::/init.scope\n";
        assert_eq!(path_in_proc_cgroup(text, &Kind::V2), Some("/init.scope"));
        assert_eq!(
            path_in_proc_cgroup(text, &v1("memory")),
            Some("/docker/abc")
        );
        assert_eq!(
            path_in_proc_cgroup(text, &v1("cpuacct")),
            Some("/docker/abc/cpu")
        );
        assert_eq!(path_in_proc_cgroup(text, &v1("blkio")), None);
        assert_eq!(path_in_proc_cgroup("0::/\n", &Kind::V2), Some("/"));
    }

    #[test]
    fn paths_map_under_the_mount() {
        let h = Hierarchy {
            kind: v1("memory"),
            mount: "/sys/fs/cgroup/memory".into(),
            root: "/".into(),
        };
        let dir = |p: &str| h.dir_of(p).map_err(|e| e.to_string());
        assert_eq!(dir("/a/b"), Ok("/sys/fs/cgroup/memory/a/b".into()));
        assert_eq!(dir("a/b"), Ok("/sys/fs/cgroup/memory/a/b".into()));
        assert_eq!(dir("/"), Ok("/sys/fs/cgroup/memory".into()));
        assert_eq!(
            dir("/sys/fs/cgroup/memory/x"),
            Ok("/sys/fs/cgroup/memory/x".into())
        );
        assert!(dir("/a/../../etc").is_err());
        let sub = Hierarchy {
            root: "/docker/abc".into(),
            ..h.clone()
        };
        assert_eq!(
            sub.dir_of("/docker/abc/x").ok(),
            Some("/sys/fs/cgroup/memory/x".into())
        );
        assert!(sub.dir_of("/system.slice").is_err());
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }

    /// A directory tree removed on drop, standing in for a cgroup mount.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(tag: &str) -> TempTree {
            let dir = std::env::temp_dir().join(format!("ksight-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempTree(dir)
        }

        fn ino(&self, rel: &str) -> u64 {
            fs::metadata(self.0.join(rel)).unwrap().ino()
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tree_hierarchy(tree: &TempTree, root: &str) -> Hierarchy {
        Hierarchy {
            kind: Kind::V2,
            mount: tree.0.clone(),
            root: root.into(),
        }
    }

    #[test]
    fn resolver_walks_and_rewalks_at_most_once_per_interval() {
        let tree = TempTree::new("walk");
        fs::create_dir_all(tree.0.join("system.slice/ssh.service")).unwrap();
        fs::write(tree.0.join("system.slice/cgroup.procs"), "").unwrap();
        let mut r =
            Resolver::with_limits(tree_hierarchy(&tree, "/"), 100, Duration::from_secs(3600));
        assert_eq!(r.path_of(tree.ino("")), Some("/"));
        assert_eq!(
            r.path_of(tree.ino("system.slice/ssh.service")),
            Some("/system.slice/ssh.service")
        );
        let file = tree.ino("system.slice/cgroup.procs");
        assert_eq!(r.path_of(file), None, "files are not cgroups");
        // A cgroup created after the walk stays unknown until the interval has passed.
        fs::create_dir(tree.0.join("late")).unwrap();
        assert_eq!(r.path_of(tree.ino("late")), None);
        r.min_rewalk = Duration::ZERO;
        assert_eq!(r.path_of(tree.ino("late")), Some("/late"));
        assert_eq!(r.id_of("/system.slice").unwrap(), tree.ino("system.slice"));
        let info = r.info(tree.ino("system.slice/ssh.service"));
        assert_eq!(info.unit.as_deref(), Some("ssh.service"));
        assert_eq!(r.info(u64::MAX).cgroup_label(), u64::MAX.to_string());
    }

    #[test]
    fn resolver_keeps_removed_cgroups_one_generation() {
        let tree = TempTree::new("gone");
        fs::create_dir_all(tree.0.join("a")).unwrap();
        fs::create_dir_all(tree.0.join("b")).unwrap();
        let (a, b) = (tree.ino("a"), tree.ino("b"));
        let mut r = Resolver::with_limits(tree_hierarchy(&tree, "/"), 100, Duration::ZERO);
        assert_eq!(r.path_of(a), Some("/a"));
        fs::remove_dir(tree.0.join("a")).unwrap();
        r.rewalk();
        assert_eq!(
            r.path_of(a),
            Some("/a"),
            "removed one walk ago: still known"
        );
        assert_eq!(r.path_of(b), Some("/b"));
        r.rewalk();
        r.min_rewalk = Duration::from_secs(3600);
        assert_eq!(r.path_of(a), None, "two walks ago: forgotten");
    }

    #[test]
    fn resolver_is_bounded_and_prefixes_the_mount_root() {
        let tree = TempTree::new("bound");
        for i in 0..10 {
            fs::create_dir(tree.0.join(format!("c{i}"))).unwrap();
        }
        let (found, full) = walk(&tree.0, "/", 4);
        assert_eq!((found.len(), full), (4, true));
        let (found, full) = walk(&tree.0, "/docker/abc", 100);
        assert_eq!((found.len(), full), (11, false));
        assert_eq!(found.get(&tree.ino("")).map(|p| &**p), Some("/docker/abc"));
        assert_eq!(
            found.get(&tree.ino("c3")).map(|p| &**p),
            Some("/docker/abc/c3")
        );
    }

    /// Root-only checks against the real hierarchy (v1 memory on a hybrid host, v2 in the VMs).
    mod privileged {
        use super::super::*;
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        use std::process::{Child, Command};

        /// True when root. Outside CI a non-root run skips loudly; in CI it fails.
        fn root(test: &str) -> bool {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } == 0 {
                return true;
            }
            if std::env::var_os("CI").is_some() {
                panic!("{test}: needs root (it creates cgroups), and CI is set");
            }
            // Straight to fd 2: libtest's capture would hide an eprintln! of a passing test.
            let line = format!("\n*** SKIPPED {test}: creates cgroups and needs root (sudo) ***\n");
            let _ = io::Write::write_all(&mut io::stderr(), line.as_bytes());
            false
        }

        /// Cgroup directories removed (innermost first) when the test ends, pass or fail.
        struct Cgroups(Vec<PathBuf>);

        impl Drop for Cgroups {
            fn drop(&mut self) {
                for dir in self.0.iter().rev() {
                    // A just-reaped task can keep a cgroup busy for a moment.
                    for _ in 0..50 {
                        if fs::remove_dir(dir).is_ok() || !dir.exists() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }

        /// A child killed and reaped on drop (before the cgroups: declared after them).
        struct Reaped(Child);

        impl Drop for Reaped {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }

        /// The id in the kernfs file handle of `dir` (cgroup2 exports ids as 8-byte handles).
        fn handle_id(dir: &Path) -> io::Result<u64> {
            #[repr(C)]
            struct Handle {
                bytes: u32,
                kind: i32,
                data: [u8; 128],
            }
            let path = CString::new(dir.as_os_str().as_bytes())?;
            let mut handle = Handle {
                bytes: 128,
                kind: 0,
                data: [0; 128],
            };
            let mut mount_id = 0;
            // SAFETY: `path` is NUL-terminated; `handle` is a file_handle header followed by
            // the 128 bytes its `bytes` field announces; `mount_id` is a valid int.
            let rc = unsafe {
                libc::name_to_handle_at(
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    (&mut handle as *mut Handle).cast(),
                    &mut mount_id,
                    0,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            let id: [u8; 8] = handle.data[..8].try_into().map_err(io::Error::other)?;
            assert_eq!(handle.bytes, 8, "a kernfs handle is the 8-byte node id");
            Ok(u64::from_ne_bytes(id))
        }

        #[test]
        fn privileged_cgroup_id_path_and_pid_agree() {
            if !root("privileged_cgroup_id_path_and_pid_agree") {
                return;
            }
            let h = Hierarchy::detect()
                .unwrap()
                .expect("a cgroup hierarchy is mounted");
            eprintln!("keying by the {} (mode {})", h.describe(), h.bpf_mode());
            let name = format!("ksight-test-{}", std::process::id());
            let outer = h.mount.join(&name);
            let inner = outer.join("inner");
            let mut made = Cgroups(Vec::new());
            for dir in [&outer, &inner] {
                fs::create_dir(dir).unwrap();
                made.0.push(dir.clone());
            }
            let prefix = h.root.trim_end_matches('/');
            let (outer_path, inner_path) =
                (format!("{prefix}/{name}"), format!("{prefix}/{name}/inner"));
            let outer_id = fs::metadata(&outer).unwrap().ino();
            let inner_id = fs::metadata(&inner).unwrap().ino();

            let mut resolver = Resolver::new(h.clone());
            assert_eq!(resolver.path_of(inner_id), Some(inner_path.as_str()));
            assert_eq!(resolver.path_of(outer_id), Some(outer_path.as_str()));
            assert_eq!(h.id_of(&inner_path).unwrap(), inner_id);
            assert_eq!(h.id_of(&format!("{name}/inner")).unwrap(), inner_id);
            assert_eq!(h.id_of(&inner.to_string_lossy()).unwrap(), inner_id);
            assert!(h.id_of(&format!("/{name}/missing")).is_err());
            match handle_id(&inner) {
                Ok(id) => assert_eq!(id, inner_id, "file handle id = inode"),
                Err(e) => eprintln!("name_to_handle_at on {}: {e} (not checked)", h.describe()),
            }

            let child = Reaped(Command::new("sleep").arg("60").spawn().unwrap());
            let pid = child.0.id();
            fs::write(inner.join("cgroup.procs"), pid.to_string()).unwrap();
            assert_eq!(h.cgroup_path_of_pid(pid).unwrap(), inner_path);
            assert_eq!(h.cgroup_id_of_pid(pid).unwrap(), inner_id);
            assert_ne!(h.cgroup_id_of_pid(std::process::id()).unwrap(), inner_id);
            drop(child);
        }

        #[test]
        fn privileged_detect_matches_this_host() {
            if !root("privileged_detect_matches_this_host") {
                return;
            }
            let h = Hierarchy::detect()
                .unwrap()
                .expect("a cgroup hierarchy is mounted");
            let pure_v2 = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
            if pure_v2 {
                assert_eq!((h.kind.clone(), h.bpf_mode()), (Kind::V2, MODE_V2));
            } else {
                assert_eq!(h.bpf_mode(), MODE_V1, "hybrid or v1: {}", h.describe());
                let memory_mounted = fs::read_to_string("/proc/self/mountinfo")
                    .unwrap()
                    .lines()
                    .any(|l| l.contains(" - cgroup ") && l.split(',').any(|o| o == "memory"));
                assert_eq!(h.controller() == Some("memory"), memory_mounted);
            }
            // This process has a line for the hierarchy in /proc/self/cgroup.
            let own = h.cgroup_path_of_pid(std::process::id()).unwrap();
            assert!(own.starts_with('/'), "{own}");
            // The root cgroup of a whole hierarchy resolves to "/".
            if h.root == "/" {
                let root_id = fs::metadata(&h.mount).unwrap().ino();
                assert_eq!(Resolver::new(h).path_of(root_id), Some("/"));
            }
        }
    }
}
