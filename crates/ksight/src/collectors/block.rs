//! `block`: block I/O latency (issued to the driver → completed) as a histogram, and bytes,
//! by device and operation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use ksight_bpf::abi::{ks_block_key, ks_hist};

use crate::bpf::{LoadedObject, TypedMap};
use crate::collector::{Builder, Collector, Descriptor};
use crate::bpf::hooks::{Candidate, Hook};
use crate::metrics::model::{Family, FamilyDoc, Kind, Labels, Value};
use crate::decode;

static LATENCY: FamilyDoc = FamilyDoc {
    name: "ksight_block_io_latency_seconds",
    kind: Kind::Histogram,
    labels: &["device", "major_minor", "op"],
    help: "Block I/O requests from issue to the driver to completion, by device and operation.",
    notes: "request issued to the driver → completed; `device` as in /dev (`nvme0n1`, `loop3`), `op` `read`, `write`, `flush`, `discard`, …",
};
static BYTES: FamilyDoc = FamilyDoc {
    name: "ksight_block_io_bytes_total",
    kind: Kind::Counter,
    labels: &["device", "major_minor", "op"],
    help: "Bytes of completed block I/O requests, by device and operation.",
    notes: "bytes of completed requests",
};

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "block",
    default: true,
    help: "block I/O latency (issue to completion) and bytes, by device and operation",
    object: ksight_bpf::objects::BLOCK,
    candidates: &[
        Candidate::own(Hook::TpBtf, &["issue_btf", "complete_btf"]),
        Candidate::own(Hook::RawTp, &["issue_raw", "complete_raw"]),
    ],
    options: &[],
    families: &[&LATENCY, &BYTES],
    build: |context| Box::new(BlockBuilder { btf: context.btf }),
};

struct BlockBuilder {
    btf: Option<&'static Path>,
}

impl Builder for BlockBuilder {
    fn sections(&self) -> Vec<(&'static str, Vec<u8>)> {
        let takes_queue = issue_takes_queue(self.btf) as u32;
        vec![(".rodata.block", takes_queue.to_ne_bytes().to_vec())]
    }

    fn start(&self, obj: Arc<LoadedObject>) -> Result<Box<dyn Collector>> {
        Ok(Box::new(Block {
            obj,
            devices: HashMap::new(),
        }))
    }
}

struct Block {
    obj: Arc<LoadedObject>,
    /// Device names by the kernel's dev_t, read from sysfs once per device.
    devices: HashMap<u32, String>,
}

impl Collector for Block {
    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()> {
        let obj = self.obj.clone();
        let mut latency = Family::of(&LATENCY);
        for (key, parts) in TypedMap::<ks_block_key, ks_hist>::open(&obj, "block_lat")?.entries()? {
            let h = super::merge_hists(&parts);
            latency.set(self.labels(&key), Value::Histogram(h));
        }
        let mut bytes = Family::of(&BYTES);
        for (key, parts) in TypedMap::<ks_block_key, u64>::open(&obj, "block_bytes")?.entries()? {
            bytes.add(self.labels(&key), parts.iter().sum());
        }
        out.push(latency.sorted());
        out.push(bytes.sorted());
        Ok(())
    }

    fn object(&self) -> &Arc<LoadedObject> {
        &self.obj
    }
}

impl Block {
    fn labels(&mut self, key: &ks_block_key) -> Labels {
        let number = format!("{}:{}", key.dev >> 20, key.dev & 0xfffff);
        let name = self
            .devices
            .entry(key.dev)
            .or_insert_with(|| device_name(&number).unwrap_or_else(|| number.clone()))
            .clone();
        vec![
            ("device", name),
            ("major_minor", number),
            ("op", decode::block_op(key.op).into_owned()),
        ]
    }
}

/// `DEVNAME` from /sys/dev/block/MAJ:MIN/uevent (e.g. `loop3`, `nvme0n1`).
fn device_name(number: &str) -> Option<String> {
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{number}/uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(str::to_string)
}

/// True on kernels before 5.11, whose block_rq_issue passes (queue, request): read from the
/// kernel's BTF (the first parameter of a `btf_trace_*` is the tracepoint's private data), or
/// its version when there is no BTF.
fn issue_takes_queue(btf: Option<&Path>) -> bool {
    match crate::bpf::btf::tracepoint_params(btf, "block_rq_issue") {
        Some(params) => params == 3,
        None => crate::common::kernel::version() < (5, 11),
    }
}
