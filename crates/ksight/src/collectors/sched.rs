//! `sched`: run-queue latency (woken or preempted → running) and context switches, from one
//! sched_switch program plus the two wakeup tracepoints.

use std::sync::Arc;

use anyhow::Result;

use crate::bpf::{self, LoadedObject};
use crate::collector::{Collector, Descriptor, Simple};
use crate::bpf::hooks::{Candidate, Hook};
use crate::metrics::model::{Family, FamilyDoc, Kind, Value};

static RUNQUEUE_LATENCY: FamilyDoc = FamilyDoc {
    name: "ksight_runqueue_latency_seconds",
    kind: Kind::Histogram,
    labels: &[],
    help: "Time runnable tasks waited on a run queue: from wakeup (or preemption) to running.",
    notes: "wakeup (or preemption while runnable) → on CPU",
};
static CONTEXT_SWITCHES: FamilyDoc = FamilyDoc {
    name: "ksight_context_switches_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Context switches, on all CPUs.",
    notes: "all CPUs",
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "sched",
    default: true,
    help: "run-queue latency (wakeup or preemption to running) and context switches",
    object: ksight_bpf::objects::SCHED,
    candidates: &[
        // Queue times kept in the task itself (task storage, 5.11+): half the cost per event.
        Candidate::own(Hook::TpBtf, &["wakeup_ts", "wakeup_new_ts", "switch_ts"])
            .with_maps(&["sched_queued_at"]),
        Candidate::own(Hook::TpBtf, &["wakeup_btf", "wakeup_new_btf", "switch_btf"]),
        Candidate::own(Hook::RawTp, &["wakeup_raw", "wakeup_new_raw", "switch_raw"]),
    ],
    options: &[],
    families: &[&RUNQUEUE_LATENCY, &CONTEXT_SWITCHES],
    build: |_| Box::new(Simple(|obj| Ok(Box::new(Sched { obj })))),
};

struct Sched {
    obj: Arc<LoadedObject>,
}

impl Collector for Sched {
    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()> {
        let obj = &self.obj;
        let switches: u64 = bpf::percpu_array_sums(&obj.map("sched_switches")?)?
            .iter()
            .sum();
        out.push(super::hist_family(obj, "sched_runq_lat", &RUNQUEUE_LATENCY)?);
        out.push(Family::of(&CONTEXT_SWITCHES).with(vec![], Value::Int(switches)));
        Ok(())
    }

    fn object(&self) -> &Arc<LoadedObject> {
        &self.obj
    }
}
