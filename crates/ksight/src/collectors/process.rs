//! `process`: execs, forks, exits and signal deaths of processes (thread groups), and their
//! lifetime as a histogram.

use anyhow::{anyhow, Result};
use ksight_bpf::abi::{ks_proc_key, ks_proc_kind};

use super::table_collector::{self, Row, Spec};
use crate::bpf::LoadedObject;
use crate::collector::Descriptor;
use crate::metrics::model::{FamilyDoc, Kind};
use crate::bpf::hooks::{Candidate, Hook};
use crate::decode;
use crate::bpf::table::Tabled;

static EXECS: FamilyDoc = FamilyDoc {
    name: "ksight_process_execs_total",
    kind: Kind::Counter,
    labels: &["comm"],
    help: "Successful execs, by the new image's process name.",
    notes: "successful execs, by the new image's comm",
};
static FORKS: FamilyDoc = FamilyDoc {
    name: "ksight_process_forks_total",
    kind: Kind::Counter,
    labels: &["comm"],
    help: "New processes (not threads), by the parent's process name.",
    notes: "new processes (not threads), by the parent's comm",
};
static EXITS: FamilyDoc = FamilyDoc {
    name: "ksight_process_exits_total",
    kind: Kind::Counter,
    labels: &["comm"],
    help: "Processes whose last thread exited, by process name.",
    notes: "processes whose last thread exited",
};
static KILLED: FamilyDoc = FamilyDoc {
    name: "ksight_process_killed_total",
    kind: Kind::Counter,
    labels: &["signal", "comm"],
    help: "Processes that died by a signal (from the exit status), by signal and process name.",
    notes: "processes that died by a signal (from the exit status)",
};
static LIFETIME: FamilyDoc = FamilyDoc {
    name: "ksight_process_lifetime_seconds",
    kind: Kind::Histogram,
    labels: &[],
    help: "Process lifetime, from the leader's fork to the death of the thread group.",
    notes: "leader's fork to the death of the thread group",
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "process",
    default: true,
    help: "execs, forks, exits and deaths by signal of processes, and their lifetime",
    object: ksight_bpf::objects::PROCESS,
    candidates: &[
        Candidate::own(Hook::TpBtf, &["exec_btf", "fork_btf", "exit_btf"]),
        Candidate::own(Hook::RawTp, &["exec_raw", "fork_raw", "exit_raw"]),
    ],
    options: &[],
    families: &[&EXECS, &FORKS, &EXITS, &KILLED, &LIFETIME],
    build: |context| table_collector::builder(&SPEC, context),
};

static SPEC: Spec = Spec {
    table: "proc",
    unused_tables: &[],
    // In the order of enum ks_proc_kind.
    families: &[&EXECS, &FORKS, &EXITS, &KILLED],
    histograms: &[("proc_lifetime", &LIFETIME)],
    start: Tabled::new::<ks_proc_key>,
    row,
    upkeep: Some(forget_dead_groups),
    switch: None,
};

fn row(key: &[u8]) -> Result<Option<Row>> {
    let k = plain::from_bytes::<ks_proc_key>(key).map_err(|e| anyhow!("{e:?}"))?;
    let mut labels = Vec::new();
    let kind = ks_proc_kind(k.kind as u32);
    match kind {
        ks_proc_kind::KS_PROC_EXEC | ks_proc_kind::KS_PROC_FORK | ks_proc_kind::KS_PROC_EXIT => {}
        ks_proc_kind::KS_PROC_KILLED => {
            labels.push(("signal", decode::signal(k.signal as u32).into_owned()))
        }
        _ => return Ok(None),
    }
    labels.push(("comm", decode::comm_or_overflow(&k.comm, k.overflow)));
    Ok(Some(Row {
        family: kind.0 as usize,
        labels,
        cgroup: k.cgroup,
    }))
}

fn forget_dead_groups(obj: &LoadedObject) -> Result<()> {
    crate::bpf::dead_groups::forget_old(obj, "proc_dead")
}
