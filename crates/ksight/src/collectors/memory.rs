//! `memory`: OOM kills, counted when the victim's thread-group leader exits (the same code on
//! every kernel: `oom:mark_victim` gave only a pid before 6.8).

use ksight_bpf::abi::ks_comm_key;

use super::table_collector::{self, Spec};
use crate::collector::Descriptor;
use crate::metrics::model::{FamilyDoc, Kind};
use crate::bpf::hooks::{Candidate, Hook};
use crate::bpf::table::Tabled;

static OOM_KILLS: FamilyDoc = FamilyDoc {
    name: "ksight_oom_kills_total",
    kind: Kind::Counter,
    labels: &["comm"],
    help: "Processes killed by the OOM killer (global or a cgroup's limit), by the victim's process name; counted when the victim's thread-group leader exits.",
    notes: "processes killed by the OOM killer (global or a cgroup's limit), counted when the victim's leader exits, by the victim's comm",
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "memory",
    default: true,
    help: "OOM kills, by the victim's process name",
    object: ksight_bpf::objects::MEMORY,
    candidates: &[
        Candidate::own(Hook::TpBtf, &["oom_exit_btf"]),
        Candidate::own(Hook::RawTp, &["oom_exit_raw"]),
    ],
    options: &[],
    families: &[&OOM_KILLS],
    build: |context| table_collector::builder(&SPEC, context),
};

static SPEC: Spec = Spec {
    table: "oom",
    unused_tables: &["faults"],
    families: &[&OOM_KILLS],
    histograms: &[],
    start: Tabled::new::<ks_comm_key>,
    row: table_collector::comm_row,
    upkeep: None,
    switch: None,
};
