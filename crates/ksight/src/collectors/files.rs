//! `files`: ksight_file_opens_total{comm,result} for open, openat, openat2 and creat.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ksight_bpf::abi::ks_file_key;

use crate::bpf::LoadedObject;
use crate::collector::{self, Collector};
use crate::collectors::Limits;
use crate::enrich::SharedEnricher;
use crate::hooks::{Candidate, Hook};
use crate::metrics::model::{Family, Kind};
use crate::names;
use crate::table::Tabled;

pub struct Files {
    capacity: u32,
    ttl: Duration,
    enricher: SharedEnricher,
    state: Option<Tabled>,
}

impl Files {
    pub fn new(limits: Limits, enricher: SharedEnricher) -> Self {
        Self {
            capacity: limits.table_capacity,
            ttl: limits.series_ttl,
            enricher,
            state: None,
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        if let Some(tabled) = &self.state {
            tabled.obj.set_count_opens(false);
        }
    }
}

impl Collector for Files {
    fn name(&self) -> &'static str {
        "files"
    }

    fn object(&self) -> &'static [u8] {
        ksight_bpf::objects::FILES
    }

    fn candidates(&self) -> Vec<Candidate> {
        vec![
            Candidate::shared("syscalls"),
            Candidate::own(
                Hook::Fentry,
                &["fexit_open", "fexit_openat", "fexit_openat2", "fexit_creat"],
            ),
            Candidate::own(
                Hook::Tracepoint,
                &["exit_open", "exit_openat", "exit_openat2", "exit_creat"],
            ),
        ]
    }

    fn max_entries(&self) -> Vec<(String, u32)> {
        collector::sizes(&[("files_a", self.capacity), ("files_b", self.capacity)])
    }

    fn started(&mut self, obj: Arc<LoadedObject>) -> Result<()> {
        obj.set_count_opens(true);
        self.state = Some(Tabled::new::<ks_file_key>(obj, "files", self.ttl)?);
        Ok(())
    }

    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()> {
        let tabled = self
            .state
            .as_ref()
            .ok_or_else(|| anyhow!("files not started"))?;
        let mut opens = Family::new(
            "ksight_file_opens_total",
            Kind::Counter,
            "open, openat, openat2 and creat calls, by process name and result (ok or errno name).",
        );
        for (key, n) in tabled.read()? {
            let k = plain::from_bytes::<ks_file_key>(&key).map_err(|e| anyhow!("{e:?}"))?;
            let comm = names::comm_or_overflow(&k.comm, k.overflow);
            let result = if k.err == 0 {
                "ok".to_string()
            } else {
                names::errno(k.err as u32).into_owned()
            };
            let labels = vec![("comm", comm), ("result", result)];
            opens.add(super::enriched(labels, &self.enricher, k.cgroup), n);
        }
        out.push(opens.sorted());
        Ok(())
    }

    fn maintain(&mut self, now: Instant) -> Result<()> {
        let tabled = self
            .state
            .as_mut()
            .ok_or_else(|| anyhow!("files not started"))?;
        tabled.maintain(now)
    }

    fn object_ref(&self) -> Option<&Arc<LoadedObject>> {
        self.state.as_ref().map(|t| &t.obj)
    }
}
