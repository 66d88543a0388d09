//! Reading the kernel side: the counts, the stacks, and what became of every run.

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use ksight_bpf::abi::{ks_prof_key, ks_prof_sizes, ks_prof_stack, ks_prof_stat};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::bpf::{percpu_array_sums, LoadedObject};

/// The names of `enum ks_prof_stat`, in its order (the summary's keys).
pub const STAT_NAMES: [&str; ks_prof_stat::KS_PROF_NR_STATS.0 as usize] = [
    "stored",
    "idle",
    "filtered",
    "lost_map_full",
    "lost_update_failed",
    "user_stack_collision",
    "user_stack_map_full",
    "kernel_stack_collision",
    "kernel_stack_map_full",
    "stack_error_other",
    "pids_update_failed",
    "copied",
    "copy_ringbuf_full",
    "copy_no_user_regs",
    "copy_unreadable",
    "exec_lost",
];

/// prof_stats summed over CPUs, indexed by `enum ks_prof_stat`.
pub struct Stats(pub Vec<u64>);

impl Stats {
    pub fn read(obj: &LoadedObject) -> Result<Stats> {
        Ok(Stats(percpu_array_sums(&obj.map("prof_stats")?)?))
    }

    pub fn get(&self, stat: ks_prof_stat) -> u64 {
        self.0.get(stat.0 as usize).copied().unwrap_or(0)
    }

    /// Stacks of kept samples that the stack map could not hold (or another stack error).
    pub fn stack_errors(&self) -> u64 {
        use ks_prof_stat as S;
        [
            S::KS_PROF_USTACK_COLLISION,
            S::KS_PROF_USTACK_FULL,
            S::KS_PROF_KSTACK_COLLISION,
            S::KS_PROF_KSTACK_FULL,
            S::KS_PROF_STACK_OTHER,
        ]
        .into_iter()
        .map(|s| self.get(s))
        .sum()
    }

    /// Samples kept: counted in the kernel, or sent to user space as stack copies.
    pub fn kept(&self) -> u64 {
        self.get(ks_prof_stat::KS_PROF_STORED) + self.get(ks_prof_stat::KS_PROF_COPIED)
    }

    /// Samples that matched the filters and could not be kept.
    pub fn lost(&self) -> u64 {
        self.get(ks_prof_stat::KS_PROF_LOST_FULL) + self.get(ks_prof_stat::KS_PROF_LOST_FAILED)
    }
}

/// Every (key, count) of prof_counts.
pub fn counts(obj: &LoadedObject) -> Result<Vec<(ks_prof_key, u64)>> {
    let map = obj.map("prof_counts")?;
    let mut out = Vec::new();
    for raw in map.keys() {
        let Some(value) = map.lookup(&raw, MapFlags::ANY)? else {
            continue;
        };
        let mut key = ks_prof_key::default();
        plain::copy_from_bytes(&mut key, &raw).map_err(|e| anyhow!("bad counts key: {e:?}"))?;
        let count = value
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
            .ok_or_else(|| anyhow!("bad counts value"))?;
        out.push((key, count));
    }
    Ok(out)
}

/// The processes with counts now, from prof_pids (to remember their mappings while they
/// live).
pub fn pids(obj: &LoadedObject) -> Result<Vec<u32>> {
    let map = obj.map("prof_pids")?;
    Ok(map
        .keys()
        .filter_map(|raw| Some(u32::from_ne_bytes(raw.get(..4)?.try_into().ok()?)))
        .collect())
}

/// Stack ids with this bit are stacks unwound in user space (the kernel's are slots below
/// 2^20, --stack-map-entries' limit, with KS_PROF_IN_MAP_B for the second map).
pub const UNWOUND: i32 = 1 << 29;

pub fn is_unwound(id: i32) -> bool {
    id >= 0 && id & UNWOUND != 0
}

/// The stacks the counts refer to, by id (either map): return addresses, innermost first.
pub fn stacks(obj: &LoadedObject, counts: &[(ks_prof_key, u64)]) -> Result<HashMap<i32, Vec<u64>>> {
    let maps = StackMaps::open(obj)?;
    let mut out = HashMap::new();
    let ids = counts
        .iter()
        .flat_map(|(k, _)| [k.user_stack, k.kernel_stack])
        .filter(|id| *id >= 0 && !is_unwound(*id));
    for id in ids {
        if out.contains_key(&id) {
            continue;
        }
        if let Some(ips) = maps.read(id)? {
            out.insert(id, ips);
        }
    }
    Ok(out)
}

/// The two stack maps, to read a stack by id.
pub struct StackMaps(MapHandle, MapHandle);

impl StackMaps {
    pub fn open(obj: &LoadedObject) -> Result<StackMaps> {
        Ok(StackMaps(
            obj.map("prof_stacks")?,
            obj.map("prof_stacks_b")?,
        ))
    }

    /// The stack of `id` (either map): return addresses, innermost first.
    pub fn read(&self, id: i32) -> Result<Option<Vec<u64>>> {
        let in_b = ks_prof_sizes::KS_PROF_IN_MAP_B.0 as i32;
        let (map, slot) = match id & in_b {
            0 => (&self.0, id),
            _ => (&self.1, id & !in_b),
        };
        let Some(raw) = map.lookup(&slot.to_ne_bytes(), MapFlags::ANY)? else {
            return Ok(None);
        };
        let mut stack = ks_prof_stack::default();
        plain::copy_from_bytes(&mut stack, &raw).map_err(|e| anyhow!("bad stack: {e:?}"))?;
        Ok(Some(
            stack
                .ips
                .iter()
                .copied()
                .take_while(|ip| *ip != 0)
                .collect(),
        ))
    }
}

/// Distinct stacks the counts refer to in prof_stacks and in prof_stacks_b.
pub fn stacks_per_map(counts: &[(ks_prof_key, u64)]) -> (usize, usize) {
    let in_b = ks_prof_sizes::KS_PROF_IN_MAP_B.0 as i32;
    let mut ids: Vec<i32> = counts
        .iter()
        .flat_map(|(k, _)| [k.user_stack, k.kernel_stack])
        .filter(|id| *id >= 0 && !is_unwound(*id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let b = ids.iter().filter(|id| *id & in_b != 0).count();
    (ids.len() - b, b)
}
