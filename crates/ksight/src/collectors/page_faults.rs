//! `page_faults` (opt-in: a table update per fault): page faults taken in user mode.

use ksight_bpf::abi::ks_comm_key;

use super::table_collector::{self, Spec};
use crate::collector::Descriptor;
use crate::metrics::model::{FamilyDoc, Kind};
use crate::bpf::hooks::{Candidate, Hook};
use crate::bpf::perf_event;
use crate::bpf::table::Tabled;

static PAGE_FAULTS: FamilyDoc = FamilyDoc {
    name: "ksight_page_faults_total",
    kind: Kind::Counter,
    labels: &["comm"],
    help: "Page faults taken in user mode, by process name.",
    notes: "user-mode page faults (`page_faults`, opt-in)",
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "page_faults",
    default: false,
    help: "page faults taken in user mode, by process name (a table update per fault)",
    object: ksight_bpf::objects::MEMORY,
    candidates: &[
        Candidate::own(Hook::TpBtf, &["fault_btf"]),
        Candidate::own(Hook::RawTp, &["fault_raw"]),
        // arm64 (and any kernel without x86's exceptions:page_fault_user): the software
        // page-fault event, user mode only.
        Candidate::perf_events(&["fault_perf"], perf_event::open_user_page_faults),
    ],
    options: &[],
    families: &[&PAGE_FAULTS],
    build: |context| table_collector::builder(&SPEC, context),
};

static SPEC: Spec = Spec {
    table: "faults",
    unused_tables: &["oom"],
    families: &[&PAGE_FAULTS],
    histograms: &[],
    start: Tabled::new::<ks_comm_key>,
    row: table_collector::comm_row,
    upkeep: None,
    switch: None,
};
