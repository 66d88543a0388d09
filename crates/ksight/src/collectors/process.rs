//! `process`: execs, forks, exits and signal deaths of processes (thread groups), and their
//! lifetime as a histogram.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ksight_bpf::abi::{ks_proc_key, ks_proc_kind};

use crate::bpf::LoadedObject;
use crate::collector::{self, Collector};
use crate::collectors::Limits;
use crate::enrich::SharedEnricher;
use crate::hooks::{Candidate, Hook};
use crate::metrics::model::{Family, Kind};
use crate::names;
use crate::table::Tabled;

pub struct Process {
    capacity: u32,
    ttl: Duration,
    enricher: SharedEnricher,
    state: Option<Tabled>,
}

impl Process {
    pub fn new(limits: Limits, enricher: SharedEnricher) -> Self {
        Self {
            capacity: limits.table_capacity,
            ttl: limits.series_ttl,
            enricher,
            state: None,
        }
    }
}

impl Collector for Process {
    fn name(&self) -> &'static str {
        "process"
    }

    fn object(&self) -> &'static [u8] {
        ksight_bpf::objects::PROCESS
    }

    fn candidates(&self) -> Vec<Candidate> {
        vec![
            Candidate::own(Hook::TpBtf, &["exec_btf", "fork_btf", "exit_btf"]),
            Candidate::own(Hook::RawTp, &["exec_raw", "fork_raw", "exit_raw"]),
        ]
    }

    fn max_entries(&self) -> Vec<(String, u32)> {
        collector::sizes(&[("proc_a", self.capacity), ("proc_b", self.capacity)])
    }

    fn started(&mut self, obj: Arc<LoadedObject>) -> Result<()> {
        self.state = Some(Tabled::new::<ks_proc_key>(obj, "proc", self.ttl)?);
        Ok(())
    }

    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()> {
        let tabled = self
            .state
            .as_ref()
            .ok_or_else(|| anyhow!("process not started"))?;
        let mut execs = Family::new(
            "ksight_process_execs_total",
            Kind::Counter,
            "Successful execs, by the new image's process name.",
        );
        let mut forks = Family::new(
            "ksight_process_forks_total",
            Kind::Counter,
            "New processes (not threads), by the parent's process name.",
        );
        let mut exits = Family::new(
            "ksight_process_exits_total",
            Kind::Counter,
            "Processes whose last thread exited, by process name.",
        );
        let mut killed = Family::new(
            "ksight_process_killed_total",
            Kind::Counter,
            "Processes that died by a signal (from the exit status), by signal and process name.",
        );
        for (key, n) in tabled.read()? {
            let k = plain::from_bytes::<ks_proc_key>(&key).map_err(|e| anyhow!("{e:?}"))?;
            let comm = names::comm_or_overflow(&k.comm, k.overflow);
            let (family, mut labels) = match ks_proc_kind(k.kind as u32) {
                ks_proc_kind::KS_PROC_EXEC => (&mut execs, vec![]),
                ks_proc_kind::KS_PROC_FORK => (&mut forks, vec![]),
                ks_proc_kind::KS_PROC_EXIT => (&mut exits, vec![]),
                ks_proc_kind::KS_PROC_KILLED => (
                    &mut killed,
                    vec![("signal", names::signal(k.signal as u32).into_owned())],
                ),
                _ => continue,
            };
            labels.push(("comm", comm));
            family.add(super::enriched(labels, &self.enricher, k.cgroup), n);
        }
        let lifetime = super::hist_family(
            &tabled.obj,
            "proc_lifetime",
            "ksight_process_lifetime_seconds",
            "Process lifetime, from the leader's fork to the death of the thread group.",
        )?;
        out.extend([
            execs.sorted(),
            forks.sorted(),
            exits.sorted(),
            killed.sorted(),
            lifetime,
        ]);
        Ok(())
    }

    fn maintain(&mut self, now: Instant) -> Result<()> {
        let tabled = self
            .state
            .as_mut()
            .ok_or_else(|| anyhow!("process not started"))?;
        tabled.maintain(now)?;
        crate::dead_groups::forget_old(&tabled.obj, "proc_dead")
    }

    fn object_ref(&self) -> Option<&Arc<LoadedObject>> {
        self.state.as_ref().map(|t| &t.obj)
    }
}
