//! `syscalls`: ksight_syscalls_total{syscall,comm} and ksight_syscall_errors_total{syscall,errno}.
//!
//! The kernel counts into [comm slot][syscall nr] (bpf/collectors/syscalls.bpf.c). Slot 0 is the overflow.
//! Counters only grow; user space keeps a baseline per slot, so handing a slot to another
//! comm never shows one comm's counts under another's name:
//! - fold (slot idle longer than the TTL): delete its comm from the kernel's slot map, make
//!   the per-CPU caches stale, end its series (its history leaves with it: moved into the
//!   overflow it would read as a burst), keep the slot in quarantine;
//! - after one more upkeep round (stale caches are gone by then), add what came in since to
//!   the overflow and give the slot back to the kernel's free queue.
//!
//! Any slot not mapped to a comm reports to the overflow series.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use ksight_bpf::abi::{ks_comm, ks_errno_key, ks_sizes};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::bpf::{self, LoadedObject, TypedMap};
use crate::collector::{self, Builder, Collector, Descriptor, Opt};
use crate::enrich::SharedEnricher;
use crate::bpf::hooks::{Candidate, Hook};
use crate::metrics::model::{Family, FamilyDoc, Kind, Labels};
use crate::decode;

const NR: usize = ks_sizes::KS_SYSCALL_SLOTS.0 as usize;

static CALLS: FamilyDoc = FamilyDoc {
    name: "ksight_syscalls_total",
    kind: Kind::Counter,
    labels: &["syscall", "comm"],
    help: "Syscalls completed, by syscall and process name (exit and exit_group when the thread ends).",
    notes: "every syscall that completed; `exit` and `exit_group` (which never return) are counted when the thread dies, from the syscall number in its saved registers; `execve` counts under the new image's name; unknown numbers as `sys_<nr>`",
};
static ERRORS: FamilyDoc = FamilyDoc {
    name: "ksight_syscall_errors_total",
    kind: Kind::Counter,
    labels: &["syscall", "errno"],
    help: "Syscalls that returned an error in [-4095, -1], by syscall and errno.",
    notes: "returns in [-4095, -1], errno by name (kernel-internal ones such as `ERESTARTSYS` too)",
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "syscalls",
    default: true,
    help: "syscalls by syscall and process name, and their errors by errno",
    object: ksight_bpf::objects::SYSCALLS,
    candidates: &[
        Candidate::own(
            Hook::TpBtf,
            &["sys_exit_btf", "task_exit_btf", "exec_btf", "rename_btf", "cgroup_attach_btf"],
        ),
        Candidate::own(
            Hook::RawTp,
            &["sys_exit_raw", "task_exit_raw", "exec_raw", "rename_raw", "cgroup_attach_raw"],
        ),
        Candidate::own(
            Hook::Tracepoint,
            &["sys_exit_tp", "task_exit_tp", "exec_tp", "rename_tp", "cgroup_attach_tp"],
        ),
    ],
    options: &[
        Opt {
            name: "max-comms",
            help: "Process names kept apart (slot 0 is the overflow); each costs 4 KiB per CPU",
            default: 256,
            min: 2,
            max: 4096,
            alias: Some("syscalls.max-comms"),
        },
        Opt {
            name: "errors-capacity",
            help: "Entries of the (syscall, errno) map",
            default: 4096,
            min: 1,
            max: 1 << 20,
            alias: Some("syscalls.errors-capacity"),
        },
    ],
    families: &[&CALLS, &ERRORS],
    build: |context| {
        Box::new(SyscallsBuilder {
            enricher: context.enricher.clone(),
            max_comms: context.option("max-comms"),
            max_errors: context.option("errors-capacity"),
            files_capacity: context.limits.table_capacity,
            ttl: context.limits.series_ttl,
        })
    },
};

struct SyscallsBuilder {
    enricher: SharedEnricher,
    max_comms: u32,
    max_errors: u32,
    /// Capacity of the files tables its sys_exit program fills when `files` shares it.
    files_capacity: u32,
    ttl: Duration,
}

struct Syscalls {
    enricher: SharedEnricher,
    max_comms: u32,
    ttl: Duration,
    state: State,
}

struct State {
    obj: Arc<LoadedObject>,
    counts: MapHandle,
    comm_slots: MapHandle,
    free_slots: MapHandle,
    errors: TypedMap<ks_errno_key, u64>,
    ledger: Ledger,
    activity: HashMap<u32, (u64, Instant)>,
    quarantine: Vec<u32>,
}

/// What user space keeps per slot, apart from any map (so its arithmetic is tested alone):
/// the kernel's counters only grow, and a slot reports what it counted past its baseline.
struct Ledger {
    /// Counts already reported elsewhere (or ended with a series), per slot and syscall.
    baseline: Vec<u64>,
    /// Counts per syscall reported under the overflow comm.
    folded: Vec<u64>,
    /// Series ended by the TTL, since start.
    folded_series: u64,
}

impl Ledger {
    fn new(slots: usize) -> Self {
        Self {
            baseline: vec![0; slots * NR],
            folded: vec![0; NR],
            folded_series: 0,
        }
    }

    /// What `slot` counted per syscall past its baseline, given the kernel's sums.
    fn since_baseline<'a>(&'a self, slot: u32, sums: &'a [u64]) -> impl Iterator<Item = u64> + 'a {
        let range = slot as usize * NR..(slot as usize + 1) * NR;
        sums[range.clone()]
            .iter()
            .zip(&self.baseline[range])
            .map(|(sum, base)| sum.saturating_sub(*base))
    }

    /// Ends a slot's series: what it counted so far leaves with it (moved into the overflow,
    /// it would show there as a burst that never happened).
    fn end_series(&mut self, slot: u32, sums: &[u64]) {
        let range = slot as usize * NR..(slot as usize + 1) * NR;
        self.baseline[range.clone()].copy_from_slice(&sums[range]);
        self.folded_series += 1;
    }

    /// Moves what a slot counted since its baseline into the overflow: increments that came
    /// after its series ended (from per-CPU caches that still named it).
    fn fold_slot(&mut self, slot: u32, sums: &[u64]) {
        let range = slot as usize * NR..(slot as usize + 1) * NR;
        let slot_sums = &sums[range.clone()];
        for ((folded, base), sum) in self
            .folded
            .iter_mut()
            .zip(&mut self.baseline[range])
            .zip(slot_sums)
        {
            *folded += sum.saturating_sub(*base);
            *base = *sum;
        }
    }
}

impl Builder for SyscallsBuilder {
    fn max_entries(&self) -> Vec<(String, u32)> {
        collector::sizes(&[
            ("sys_counts", self.max_comms),
            ("sys_comm_slots", self.max_comms),
            ("sys_free_slots", self.max_comms),
            ("sys_errors", self.max_errors),
            ("files_a", self.files_capacity),
            ("files_b", self.files_capacity),
        ])
    }

    fn start(&self, obj: Arc<LoadedObject>) -> Result<Box<dyn Collector>> {
        let free_slots = obj.map("sys_free_slots")?;
        for slot in 1..self.max_comms {
            free_slots.update(&[], &slot.to_ne_bytes(), MapFlags::ANY)?;
        }
        let state = State {
            counts: obj.map("sys_counts")?,
            comm_slots: obj.map("sys_comm_slots")?,
            errors: TypedMap::open(&obj, "sys_errors")?,
            free_slots,
            obj,
            ledger: Ledger::new(self.max_comms as usize),
            activity: HashMap::new(),
            quarantine: Vec::new(),
        };
        Ok(Box::new(Syscalls {
            enricher: self.enricher.clone(),
            max_comms: self.max_comms,
            ttl: self.ttl,
            state,
        }))
    }
}

impl Collector for Syscalls {

    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()> {
        let state = &mut self.state;
        let sums = bpf::percpu_array_sums(&state.counts)?;
        let assigned = state.assigned()?;
        let mut calls = Family::of(&CALLS);
        let mut overflow = state.ledger.folded.clone();
        for slot in 0..self.max_comms {
            let owner = assigned.get(&slot);
            let extra = owner.map(|(_, cgroup)| super::enriched(vec![], &self.enricher, *cgroup));
            for (nr, n) in state.ledger.since_baseline(slot, &sums).enumerate() {
                match (owner, &extra) {
                    (Some((comm, _)), Some(extra)) if n > 0 => {
                        calls.add(labels(nr, comm, extra), n)
                    }
                    (None, _) => overflow[nr] += n,
                    _ => {}
                }
            }
        }
        let extra = super::enriched(vec![], &self.enricher, 0);
        for (nr, n) in overflow.iter().enumerate().filter(|(_, n)| **n > 0) {
            calls.add(labels(nr, decode::OVERFLOW_COMM, &extra), *n);
        }
        out.push(calls.sorted());
        out.push(state.errors_family()?);
        Ok(())
    }

    fn maintain(&mut self, now: Instant) -> Result<()> {
        let ttl = self.ttl;
        let state = &mut self.state;
        let sums = bpf::percpu_array_sums(&state.counts)?;
        for slot in std::mem::take(&mut state.quarantine) {
            state.ledger.fold_slot(slot, &sums);
            state
                .free_slots
                .update(&[], &slot.to_ne_bytes(), MapFlags::ANY)?;
        }
        let assigned = state.assigned_keys()?;
        for (slot, key) in assigned {
            let total: u64 = (0..NR).map(|nr| sums[slot as usize * NR + nr]).sum();
            let (last, since) = state.activity.entry(slot).or_insert((total, now));
            if *last != total {
                (*last, *since) = (total, now);
            } else if now.duration_since(*since) > ttl {
                state.comm_slots.delete(&key)?;
                state.obj.bump_epoch();
                state.ledger.end_series(slot, &sums);
                state.activity.remove(&slot);
                state.quarantine.push(slot);
            }
        }
        Ok(())
    }

    fn object(&self) -> &Arc<LoadedObject> {
        &self.state.obj
    }

    fn series_folded(&self) -> u64 {
        self.state.ledger.folded_series
    }
}

impl State {
    fn assigned_keys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let mut out = Vec::new();
        for key in self.comm_slots.keys() {
            if let Some(v) = self.comm_slots.lookup(&key, MapFlags::ANY)? {
                let slot = u32::from_ne_bytes(v[..4].try_into()?);
                out.push((slot, key));
            }
        }
        Ok(out)
    }

    /// Each assigned slot's process name and cgroup id.
    fn assigned(&self) -> Result<HashMap<u32, (String, u64)>> {
        Ok(self
            .assigned_keys()?
            .into_iter()
            .filter_map(|(slot, key)| {
                let owner = plain::from_bytes::<ks_comm>(&key).ok()?;
                let comm = decode::comm(decode::c_bytes(&owner.comm));
                Some((slot, (comm, owner.cgroup)))
            })
            .collect())
    }

    fn errors_family(&self) -> Result<Family> {
        let mut errors = Family::of(&ERRORS);
        for (k, values) in self.errors.entries()? {
            let n = values.iter().sum();
            errors.add(
                vec![
                    ("syscall", syscall_name(k.nr as usize)),
                    ("errno", decode::errno(k.err).into_owned()),
                ],
                n,
            );
        }
        Ok(errors.sorted())
    }
}

fn syscall_name(nr: usize) -> String {
    if nr == ks_sizes::KS_SYSCALL_INVALID.0 as usize {
        "sys_invalid".into()
    } else {
        decode::syscall(nr as u32).into_owned()
    }
}

fn labels(nr: usize, comm: &str, extra: &Labels) -> Labels {
    let mut labels = vec![("syscall", syscall_name(nr)), ("comm", comm.to_string())];
    labels.extend(extra.iter().cloned());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kernel sums for 3 slots: `counts` of (slot, syscall, total).
    fn sums(counts: &[(u32, usize, u64)]) -> Vec<u64> {
        let mut sums = vec![0; 3 * NR];
        for &(slot, nr, n) in counts {
            sums[slot as usize * NR + nr] = n;
        }
        sums
    }

    #[test]
    fn an_ended_series_takes_its_history_and_later_counts_go_to_the_overflow() {
        let mut ledger = Ledger::new(3);
        let before = sums(&[(1, 39, 1_000), (2, 0, 5)]);
        assert_eq!(ledger.since_baseline(1, &before).nth(39), Some(1_000));
        ledger.end_series(1, &before);
        assert_eq!(ledger.folded_series, 1);
        assert!(ledger.since_baseline(1, &before).all(|n| n == 0), "nothing left to report");
        assert!(ledger.folded.iter().all(|&n| n == 0), "no history in the overflow");
        // Stale per-CPU caches still counted 3 under the slot; the quarantine round folds them.
        let later = sums(&[(1, 39, 1_003), (2, 0, 5)]);
        ledger.fold_slot(1, &later);
        assert_eq!(ledger.folded[39], 3);
        assert_eq!(ledger.since_baseline(2, &later).next(), Some(5), "other slots untouched");
        // The slot, handed to another comm, reports only what it counts from here.
        let reused = sums(&[(1, 39, 1_010)]);
        assert_eq!(ledger.since_baseline(1, &reused).nth(39), Some(7));
    }
}
