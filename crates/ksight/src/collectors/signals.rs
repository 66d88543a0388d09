//! `signals`: signals generated, by signal and the target's process name.

use anyhow::{anyhow, Result};
use ksight_bpf::abi::ks_signal_key;

use super::table_collector::{self, Row, Spec};
use crate::collector::Descriptor;
use crate::metrics::model::{FamilyDoc, Kind};
use crate::bpf::hooks::{Candidate, Hook};
use crate::decode;
use crate::bpf::table::Tabled;

static SIGNALS: FamilyDoc = FamilyDoc {
    name: "ksight_signals_total",
    kind: Kind::Counter,
    labels: &["signal", "comm"],
    help: "Signals generated (sent, whether delivered, ignored or already pending), by signal and the target's process name.",
    notes: "signals generated (delivered, ignored or already pending), by the target's comm",
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "signals",
    default: true,
    help: "signals generated, by signal and the target's process name",
    object: ksight_bpf::objects::SIGNALS,
    candidates: &[
        Candidate::own(Hook::TpBtf, &["generate_btf"]),
        Candidate::own(Hook::RawTp, &["generate_raw"]),
    ],
    options: &[],
    families: &[&SIGNALS],
    build: |context| table_collector::builder(&SPEC, context),
};

static SPEC: Spec = Spec {
    table: "sig",
    unused_tables: &[],
    families: &[&SIGNALS],
    histograms: &[],
    start: Tabled::new::<ks_signal_key>,
    row,
    upkeep: None,
    switch: None,
};

fn row(key: &[u8]) -> Result<Option<Row>> {
    let k = plain::from_bytes::<ks_signal_key>(key).map_err(|e| anyhow!("{e:?}"))?;
    Ok(Some(Row {
        family: 0,
        labels: vec![
            ("signal", decode::signal(k.signal as u32).into_owned()),
            ("comm", decode::comm_or_overflow(&k.comm, k.overflow)),
        ],
        cgroup: k.cgroup,
    }))
}
