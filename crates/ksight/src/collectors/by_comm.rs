//! Collectors that are one labelled counter table keyed by process name (plus a label or two):
//! `memory` (OOM kills), `page_faults` and `signals`. Each is a `Spec`; the table machinery
//! (drain, TTL fold, overflow series) is `table.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ksight_bpf::abi::{ks_comm_key, ks_signal_key};

use crate::bpf::LoadedObject;
use crate::collector::Collector;
use crate::collectors::Limits;
use crate::enrich::SharedEnricher;
use crate::hooks::{Candidate, Hook};
use crate::metrics::model::{Family, Kind, Labels};
use crate::names;
use crate::table::Tabled;

pub struct Spec {
    pub name: &'static str,
    pub object: &'static [u8],
    pub candidates: &'static [Candidate],
    /// The KS_TABLE this collector reads.
    pub table: &'static str,
    /// Tables of the same object this collector leaves empty (shrunk to one entry).
    pub unused_tables: &'static [&'static str],
    pub family: &'static str,
    pub help: &'static str,
    pub start: fn(Arc<LoadedObject>, &str, Duration) -> Result<Tabled>,
    /// A key's labels and cgroup id.
    pub labels: fn(&[u8]) -> Result<(Labels, u64)>,
}

pub const MEMORY: Spec = Spec {
    name: "memory",
    object: ksight_bpf::objects::MEMORY,
    candidates: &[
        Candidate::own(Hook::TpBtf, &["oom_exit_btf"]),
        Candidate::own(Hook::RawTp, &["oom_exit_raw"]),
    ],
    table: "oom",
    unused_tables: &["faults"],
    family: "ksight_oom_kills_total",
    help: "Processes killed by the OOM killer (global or a cgroup's limit), by the victim's \
           process name; counted when the victim's thread-group leader exits.",
    start: Tabled::new::<ks_comm_key>,
    labels: comm_labels,
};

pub const PAGE_FAULTS: Spec = Spec {
    name: "page_faults",
    object: ksight_bpf::objects::MEMORY,
    candidates: &[
        Candidate::own(Hook::TpBtf, &["fault_btf"]),
        Candidate::own(Hook::RawTp, &["fault_raw"]),
    ],
    table: "faults",
    unused_tables: &["oom"],
    family: "ksight_page_faults_total",
    help: "Page faults taken in user mode (x86 exceptions:page_fault_user), by process name.",
    start: Tabled::new::<ks_comm_key>,
    labels: comm_labels,
};

pub const SIGNALS: Spec = Spec {
    name: "signals",
    object: ksight_bpf::objects::SIGNALS,
    candidates: &[
        Candidate::own(Hook::TpBtf, &["generate_btf"]),
        Candidate::own(Hook::RawTp, &["generate_raw"]),
    ],
    table: "sig",
    unused_tables: &[],
    family: "ksight_signals_total",
    help: "Signals generated (sent, whether delivered, ignored or already pending), by signal \
           and the target's process name.",
    start: Tabled::new::<ks_signal_key>,
    labels: signal_labels,
};

fn comm_labels(key: &[u8]) -> Result<(Labels, u64)> {
    let k = plain::from_bytes::<ks_comm_key>(key).map_err(|e| anyhow!("{e:?}"))?;
    let labels = vec![("comm", names::comm_or_overflow(&k.comm, k.overflow))];
    Ok((labels, k.cgroup))
}

fn signal_labels(key: &[u8]) -> Result<(Labels, u64)> {
    let k = plain::from_bytes::<ks_signal_key>(key).map_err(|e| anyhow!("{e:?}"))?;
    let labels = vec![
        ("signal", names::signal(k.signal as u32).into_owned()),
        ("comm", names::comm_or_overflow(&k.comm, k.overflow)),
    ];
    Ok((labels, k.cgroup))
}

pub struct ByComm {
    spec: &'static Spec,
    capacity: u32,
    ttl: Duration,
    enricher: SharedEnricher,
    state: Option<Tabled>,
}

impl ByComm {
    pub fn new(spec: &'static Spec, limits: Limits, enricher: SharedEnricher) -> Self {
        Self {
            spec,
            capacity: limits.table_capacity,
            ttl: limits.series_ttl,
            enricher,
            state: None,
        }
    }

    fn state(&mut self) -> Result<&mut Tabled> {
        let name = self.spec.name;
        self.state
            .as_mut()
            .ok_or_else(|| anyhow!("{name} not started"))
    }
}

impl Collector for ByComm {
    fn name(&self) -> &'static str {
        self.spec.name
    }

    fn object(&self) -> &'static [u8] {
        self.spec.object
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.spec.candidates.to_vec()
    }

    fn max_entries(&self) -> Vec<(String, u32)> {
        let own = ["_a", "_b"].map(|s| (format!("{}{s}", self.spec.table), self.capacity));
        let unused = self
            .spec
            .unused_tables
            .iter()
            .flat_map(|t| ["_a", "_b", "_ovf"].map(|s| (format!("{t}{s}"), 1)));
        own.into_iter().chain(unused).collect()
    }

    fn started(&mut self, obj: Arc<LoadedObject>) -> Result<()> {
        self.state = Some((self.spec.start)(obj, self.spec.table, self.ttl)?);
        Ok(())
    }

    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()> {
        let spec = self.spec;
        let mut family = Family::new(spec.family, Kind::Counter, spec.help);
        let enricher = self.enricher.clone();
        for (key, n) in self.state()?.read()? {
            let (labels, cgroup) = (spec.labels)(&key)?;
            family.add(super::enriched(labels, &enricher, cgroup), n);
        }
        out.push(family.sorted());
        Ok(())
    }

    fn maintain(&mut self, now: Instant) -> Result<()> {
        self.state()?.maintain(now)
    }

    fn object_ref(&self) -> Option<&Arc<LoadedObject>> {
        self.state.as_ref().map(|t| &t.obj)
    }
}
