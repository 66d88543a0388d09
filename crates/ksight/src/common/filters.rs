//! `--comm`, `--cgroup` and `--container`, shared by trace, profile and capture.
//!
//! `--cgroup` and `--container`: the cgroup ids to keep, in the hierarchy `enrich::cgroup`
//! picks (v2; or the v1 memory hierarchy on hybrid hosts, where every task sits in the v2
//! root). The kernel reads each event's cgroup id in that hierarchy (cgroup_mode) and keeps it
//! when it is a key of trace_cgroups. Cgroups are taken as they are at start: one created
//! later below a `--cgroup` directory is not in the set.

use anyhow::{anyhow, bail, Result};
use libbpf_rs::{MapCore, MapFlags};

use crate::bpf::LoadedObject;
use crate::enrich::cgroup::{Hierarchy, DEFAULT_MAX_ENTRIES, MODE_OFF};
use crate::enrich::CgroupInfo;

/// Capacity of trace_cgroups (trace.bpf.c).
const MAX_IDS: usize = 4096;

/// The cgroup mode for the kernel side, and the ids to keep when a filter is set.
pub struct CgroupFilter {
    pub mode: u32,
    pub ids: Option<Vec<u64>>,
}

pub fn parse_container(text: &str) -> Result<String, String> {
    let ok = (12..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(format!(
            "{text:?} is not a container id (12 to 64 hex digits)"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

pub fn resolve(cgroup: Option<&str>, container: Option<&str>) -> Result<CgroupFilter> {
    let hierarchy = Hierarchy::detect().ok().flatten();
    // The kernel side reads v2 ids or the v1 memory controller's; anything else: the helper.
    let usable = hierarchy
        .as_ref()
        .filter(|h| h.controller().is_none_or(|c| c == "memory"));
    let mode = usable.map_or(MODE_OFF, Hierarchy::bpf_mode);
    if cgroup.is_none() && container.is_none() {
        return Ok(CgroupFilter { mode, ids: None });
    }
    let h = match (usable, &hierarchy) {
        (Some(h), _) => h,
        (None, Some(h)) => bail!("--cgroup/--container: the {} cannot be filtered on (only v2 or the v1 memory hierarchy)", h.describe()),
        (None, None) => bail!("--cgroup/--container: no cgroup filesystem is mounted"),
    };
    let all = h.cgroups(DEFAULT_MAX_ENTRIES);
    let mut ids = match cgroup {
        Some(spec) => subtree(h, &all, spec)?,
        None => all.keys().copied().collect(),
    };
    if let Some(prefix) = container {
        let of_container = container_cgroups(h, &all, prefix)?;
        ids.retain(|id| of_container.contains(id));
    }
    if ids.is_empty() {
        bail!("--cgroup/--container: no cgroup matches");
    }
    if ids.len() > MAX_IDS {
        bail!(
            "--cgroup: {} cgroups match, at most {MAX_IDS} can be filtered on",
            ids.len()
        );
    }
    Ok(CgroupFilter {
        mode,
        ids: Some(ids),
    })
}

/// A cgroup (a numeric id, a hierarchy path or its directory) and every cgroup below it.
fn subtree(
    h: &Hierarchy,
    all: &std::collections::HashMap<u64, Box<str>>,
    spec: &str,
) -> Result<Vec<u64>> {
    if let Ok(id) = spec.parse::<u64>() {
        return Ok(vec![id]);
    }
    let root = h
        .id_of(spec)
        .map_err(|e| anyhow!("--cgroup {spec}: {e} (a cgroup of the {})", h.describe()))?;
    let Some(path) = all.get(&root) else {
        return Ok(vec![root]);
    };
    let below = format!("{}/", path.trim_end_matches('/'));
    Ok(all
        .iter()
        .filter(|(_, p)| p == &path || p.starts_with(&below))
        .map(|(id, _)| *id)
        .collect())
}

/// Every cgroup whose path names a container whose id starts with `prefix`.
fn container_cgroups(
    h: &Hierarchy,
    all: &std::collections::HashMap<u64, Box<str>>,
    prefix: &str,
) -> Result<Vec<u64>> {
    let mut containers = Vec::new();
    let mut ids = Vec::new();
    for (id, path) in all {
        let info = CgroupInfo::parse(*id, path);
        if let Some(c) = info.container.filter(|c| c.starts_with(prefix)) {
            ids.push(*id);
            if !containers.contains(&c) {
                containers.push(c);
            }
        }
    }
    match containers.len() {
        0 => bail!(
            "--container {prefix}: no cgroup of such a container in the {}",
            h.describe()
        ),
        1 => Ok(ids),
        n => bail!("--container {prefix}: {n} containers start with it; give more digits"),
    }
}

/// Fills the object's set of cgroup ids to keep (trace_cgroups, cap_cgroups, prof_cgroups):
/// events are kept from here on.
pub fn install(obj: &LoadedObject, map: &str, ids: &[u64]) -> Result<()> {
    let map = obj.map(map)?;
    for id in ids {
        map.update(&id.to_ne_bytes(), &[1u8], MapFlags::ANY)?;
    }
    Ok(())
}

/// `--comm NAME`: a process name as the kernel keeps it.
pub fn parse_comm(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 15 || text.contains('\0') {
        return Err(format!(
            "{text:?} cannot be a process name (1 to 15 bytes, no NUL)"
        ));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comms() {
        assert!(parse_comm("bash").is_ok());
        assert!(parse_comm("0123456789abcdef").is_err());
        assert!(parse_comm("").is_err());
    }
}
