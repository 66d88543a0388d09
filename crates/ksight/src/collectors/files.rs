//! `files`: ksight_file_opens_total{comm,result} for open, openat, openat2 and creat. Counted
//! in syscalls' sys_exit program when syscalls runs (a switch in its object turns it on).

use anyhow::{anyhow, Result};
use ksight_bpf::abi::ks_file_key;

use super::table_collector::{self, Row, Spec};
use crate::bpf::LoadedObject;
use crate::collector::Descriptor;
use crate::metrics::model::{FamilyDoc, Kind};
use crate::bpf::hooks::{Candidate, Hook};
use crate::decode;
use crate::bpf::table::Tabled;

static OPENS: FamilyDoc = FamilyDoc {
    name: "ksight_file_opens_total",
    kind: Kind::Counter,
    labels: &["comm", "result"],
    help: "open, openat, openat2 and creat calls, by process name and result (ok or errno name).",
    notes: "open, openat, openat2, creat; result `ok` or the errno name. io_uring opens are not counted",
};

/// One program per open syscall: arm64 has neither open nor creat (openat does both).
#[cfg(target_arch = "x86_64")]
const FEXIT_PROGRAMS: &[&str] = &["fexit_open", "fexit_openat", "fexit_openat2", "fexit_creat"];
#[cfg(target_arch = "aarch64")]
const FEXIT_PROGRAMS: &[&str] = &["fexit_openat", "fexit_openat2"];
#[cfg(target_arch = "x86_64")]
const TRACEPOINT_PROGRAMS: &[&str] = &["exit_open", "exit_openat", "exit_openat2", "exit_creat"];
#[cfg(target_arch = "aarch64")]
const TRACEPOINT_PROGRAMS: &[&str] = &["exit_openat", "exit_openat2"];

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "files",
    default: true,
    help: "open, openat, openat2 and creat calls, by process name and result",
    object: ksight_bpf::objects::FILES,
    candidates: &[
        Candidate::shared("syscalls"),
        Candidate::own(
            Hook::Fentry,
            FEXIT_PROGRAMS,
        ),
        Candidate::own(
            Hook::Tracepoint,
            TRACEPOINT_PROGRAMS,
        ),
    ],
    options: &[],
    families: &[&OPENS],
    build: |context| table_collector::builder(&SPEC, context),
};

static SPEC: Spec = Spec {
    table: "files",
    unused_tables: &[],
    families: &[&OPENS],
    histograms: &[],
    start: Tabled::new::<ks_file_key>,
    row,
    upkeep: None,
    switch: Some(LoadedObject::set_count_opens),
};

fn row(key: &[u8]) -> Result<Option<Row>> {
    let k = plain::from_bytes::<ks_file_key>(key).map_err(|e| anyhow!("{e:?}"))?;
    let result = match k.err {
        0 => "ok".to_string(),
        err => decode::errno(err as u32).into_owned(),
    };
    Ok(Some(Row {
        family: 0,
        labels: vec![
            ("comm", decode::comm_or_overflow(&k.comm, k.overflow)),
            ("result", result),
        ],
        cgroup: k.cgroup,
    }))
}
