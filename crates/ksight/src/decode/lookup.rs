//! What the decoders look up on the host: interface and block-device names, cgroup paths,
//! kernel symbols, PCI names. A trait, so the decoders' tests give fixed answers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::kallsyms::Kallsyms;
use super::pci::PciIds;
use crate::enrich::cgroup::{Hierarchy, Resolver};

pub trait Lookup {
    /// The name of network interface `index` in this network namespace.
    fn ifname(&mut self, index: u32) -> Option<String>;
    /// The name `/proc/partitions` gives block device `major:minor`.
    fn block_device(&mut self, major: u32, minor: u32) -> Option<String>;
    /// The full path of the cgroup whose id is `id` (`/sys/fs/cgroup/system.slice/…`).
    fn cgroup_path(&mut self, id: u64) -> Option<String>;
    /// The kernel's symbols; `reload` asks for a fresh read (a symbol was missing: a module
    /// may have been loaded since), which the host may refuse to do too often.
    fn kallsyms(&mut self, reload: bool) -> &Kallsyms;
    /// The PCI database; None when the host has none.
    fn pci(&mut self) -> Option<&PciIds>;
}

/// Lookups on this host, each cached and refreshed on a miss at most every [`MIN_REREAD`].
#[derive(Default)]
pub struct Host {
    kallsyms: Option<(Kallsyms, Instant)>,
    partitions: HashMap<(u32, u32), String>,
    partitions_read: Option<Instant>,
    cgroups: Option<Option<Resolver>>,
    pci: Option<Option<PciIds>>,
}

/// A miss re-reads a source (kallsyms, /proc/partitions, the cgroup tree) at most this often.
pub const MIN_REREAD: Duration = Duration::from_secs(10);

fn due(last: Option<Instant>) -> bool {
    last.is_none_or(|t| t.elapsed() >= MIN_REREAD)
}

impl Lookup for Host {
    fn ifname(&mut self, index: u32) -> Option<String> {
        let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires; on success
        // it holds a NUL-terminated name.
        let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
        if found.is_null() {
            return None;
        }
        // SAFETY: if_indextoname succeeded, so `name` is NUL-terminated within its length.
        let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
        Some(name.to_string_lossy().into_owned())
    }

    fn block_device(&mut self, major: u32, minor: u32) -> Option<String> {
        if !self.partitions.contains_key(&(major, minor)) && due(self.partitions_read) {
            self.partitions_read = Some(Instant::now());
            if let Ok(text) = std::fs::read_to_string("/proc/partitions") {
                self.partitions = parse_partitions(&text);
            }
        }
        self.partitions.get(&(major, minor)).cloned()
    }

    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        let resolver = self
            .cgroups
            .get_or_insert_with(|| Hierarchy::detect().ok().flatten().map(Resolver::new))
            .as_mut()?;
        let mount = resolver.hierarchy().mount.clone();
        let root = resolver.hierarchy().root.clone();
        let path = resolver.path_of(id)?;
        Some(full_cgroup_path(&mount.to_string_lossy(), &root, path))
    }

    fn kallsyms(&mut self, reload: bool) -> &Kallsyms {
        let stale = match &self.kallsyms {
            None => true,
            Some((_, read)) => reload && due(Some(*read)),
        };
        if stale {
            // unreadable (no /proc, say): an empty table; every address is then unknown. A
            // table that reads empty after one that did not is kallsyms hiding its addresses
            // from a process that dropped CAP_SYSLOG (serve does, after attaching): the
            // table read before stays.
            let fresh = Kallsyms::read().unwrap_or_default();
            let had = self.kallsyms.as_ref().is_some_and(|(t, _)| !t.is_empty());
            if !(fresh.is_empty() && had) {
                self.kallsyms = Some((fresh, Instant::now()));
            } else if let Some((_, read)) = &mut self.kallsyms {
                *read = Instant::now();
            }
        }
        &self
            .kallsyms
            .get_or_insert_with(|| (Kallsyms::default(), Instant::now()))
            .0
    }

    fn pci(&mut self) -> Option<&PciIds> {
        self.pci
            .get_or_insert_with(|| match PciIds::load() {
                Ok(found) => found.map(|(_, ids)| ids),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the PCI database; PCI ids stay numbers");
                    None
                }
            })
            .as_ref()
    }
}

/// `/proc/partitions`: `major minor #blocks name` per line, after a header.
fn parse_partitions(text: &str) -> HashMap<(u32, u32), String> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [major, minor, _blocks, name] = fields[..] else {
                return None;
            };
            Some(((major.parse().ok()?, minor.parse().ok()?), name.to_string()))
        })
        .collect()
}

/// The path under the mount of a hierarchy path (`/system.slice/x` in a mount whose root is
/// `/`): what ebpf_exporter's cgroup decoder prints.
fn full_cgroup_path(mount: &str, root: &str, path: &str) -> String {
    let below = path
        .strip_prefix(root)
        .unwrap_or(path)
        .trim_start_matches('/');
    if below.is_empty() {
        mount.to_string()
    } else {
        format!("{}/{below}", mount.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions() {
        let text =
            "major minor  #blocks  name\n\n   8        0  488386584 sda\n 259  1  1 nvme0n1p1\n";
        let p = parse_partitions(text);
        assert_eq!(p.get(&(8, 0)).map(String::as_str), Some("sda"));
        assert_eq!(p.get(&(259, 1)).map(String::as_str), Some("nvme0n1p1"));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn cgroup_paths_under_the_mount() {
        let m = "/sys/fs/cgroup";
        assert_eq!(full_cgroup_path(m, "/", "/"), "/sys/fs/cgroup");
        assert_eq!(
            full_cgroup_path(m, "/", "/system.slice/ssh.service"),
            "/sys/fs/cgroup/system.slice/ssh.service"
        );
        assert_eq!(
            full_cgroup_path(m, "/docker/abc", "/docker/abc/inner"),
            "/sys/fs/cgroup/inner"
        );
    }

    #[test]
    fn loopback_has_a_name() {
        // index 1 is lo in every network namespace
        assert_eq!(Host::default().ifname(1).as_deref(), Some("lo"));
        assert_eq!(Host::default().ifname(0), None);
    }
}
