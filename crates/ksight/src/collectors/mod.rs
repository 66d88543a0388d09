//! The metric collectors. Names are a contract: they appear in flags and in
//! `ksight_collector_up{collector}`.

pub mod block;
pub mod by_comm;
pub mod files;
pub mod process;
pub mod sched;
pub mod syscalls;
pub mod tcp;

use std::time::Duration;

use anyhow::Result;
use ksight_bpf::abi::ks_hist;

use crate::bpf::{self, LoadedObject};
use crate::collector::Collector;
use crate::enrich::SharedEnricher;
use crate::metrics::model::{slot_histogram, Family, Histogram, Kind, Labels, Value};
use by_comm::ByComm;

/// Collectors on by default, in the order they are started and reported.
pub const DEFAULT: &[&str] = &[
    "syscalls", "process", "files", "tcp", "sched", "block", "memory", "signals",
];
/// Every collector that exists: the defaults, then the opt-in ones.
pub const ALL: &[&str] = &[
    "syscalls",
    "process",
    "files",
    "tcp",
    "sched",
    "block",
    "memory",
    "signals",
    "page_faults",
];

/// Sizes and TTL shared by all collectors (flags of `serve`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_comms: u32,
    pub table_capacity: u32,
    pub errors_capacity: u32,
    pub series_ttl: Duration,
}

/// Builds a collector; per-process ones label their series through `enricher`.
pub fn build(name: &str, limits: Limits, enricher: &SharedEnricher) -> Option<Box<dyn Collector>> {
    let enricher = enricher.clone();
    Some(match name {
        "syscalls" => Box::new(syscalls::Syscalls::new(limits, enricher)),
        "process" => Box::new(process::Process::new(limits, enricher)),
        "files" => Box::new(files::Files::new(limits, enricher)),
        "tcp" => Box::new(tcp::Tcp::default()),
        "sched" => Box::new(sched::Sched::default()),
        "block" => Box::new(block::Block::default()),
        "memory" => Box::new(ByComm::new(&by_comm::MEMORY, limits, enricher)),
        "page_faults" => Box::new(ByComm::new(&by_comm::PAGE_FAULTS, limits, enricher)),
        "signals" => Box::new(ByComm::new(&by_comm::SIGNALS, limits, enricher)),
        _ => return None,
    })
}

/// Appends the enrichment labels of `cgroup` (none without --labels).
pub fn enriched(mut labels: Labels, enricher: &SharedEnricher, cgroup: u64) -> Labels {
    if let Ok(mut e) = enricher.lock() {
        labels.extend(e.labels(cgroup));
    }
    labels
}

/// A per-CPU `struct ks_hist` map as one histogram family with no labels.
pub fn hist_family(
    obj: &LoadedObject,
    map: &str,
    name: &'static str,
    help: &'static str,
) -> Result<Family> {
    let per_cpu: Vec<ks_hist> = bpf::percpu_value(&obj.map(map)?, 0)?;
    Ok(Family::new(name, Kind::Histogram, help)
        .with(vec![], Value::Histogram(merge_hists(&per_cpu))))
}

/// Per-CPU (or per-key) kernel histograms summed into one, in seconds.
pub fn merge_hists(parts: &[ks_hist]) -> Histogram {
    let mut slots = [0u64; ksight_bpf::hist::SLOTS];
    let (mut sum_ns, mut count) = (0u64, 0u64);
    for h in parts {
        for (s, b) in slots.iter_mut().zip(h.buckets.iter()) {
            *s += b;
        }
        sum_ns += h.sum_ns;
        count += h.count;
    }
    slot_histogram(&slots, sum_ns as f64 / 1e9, count)
}
