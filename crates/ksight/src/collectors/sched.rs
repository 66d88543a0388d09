//! `sched`: run-queue latency (woken or preempted → running) and context switches, from one
//! sched_switch program plus the two wakeup tracepoints.

use std::sync::Arc;

use anyhow::{anyhow, Result};

use crate::bpf::{self, LoadedObject};
use crate::collector::Collector;
use crate::hooks::{Candidate, Hook};
use crate::metrics::model::{Family, Kind, Value};

#[derive(Default)]
pub struct Sched {
    obj: Option<Arc<LoadedObject>>,
}

impl Collector for Sched {
    fn name(&self) -> &'static str {
        "sched"
    }

    fn object(&self) -> &'static [u8] {
        ksight_bpf::objects::SCHED
    }

    fn candidates(&self) -> Vec<Candidate> {
        vec![
            Candidate::own(Hook::TpBtf, &["wakeup_btf", "wakeup_new_btf", "switch_btf"]),
            Candidate::own(Hook::RawTp, &["wakeup_raw", "wakeup_new_raw", "switch_raw"]),
        ]
    }

    fn started(&mut self, obj: Arc<LoadedObject>) -> Result<()> {
        self.obj = Some(obj);
        Ok(())
    }

    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()> {
        let obj = self
            .obj
            .as_ref()
            .ok_or_else(|| anyhow!("sched not started"))?;
        let switches: u64 = bpf::percpu_array_sums(&obj.map("sched_switches")?)?
            .iter()
            .sum();
        out.push(super::hist_family(
            obj,
            "sched_runq_lat",
            "ksight_runqueue_latency_seconds",
            "Time runnable tasks waited on a run queue: from wakeup (or preemption) to running.",
        )?);
        out.push(
            Family::new(
                "ksight_context_switches_total",
                Kind::Counter,
                "Context switches, on all CPUs.",
            )
            .with(vec![], Value::Int(switches)),
        );
        Ok(())
    }

    fn object_ref(&self) -> Option<&Arc<LoadedObject>> {
        self.obj.as_ref()
    }
}
