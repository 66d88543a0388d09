//! `tcp`: connections established (active/passive, by address family), connect latency,
//! connection lifetime and bytes (summed at close), state transitions, retransmits, resets.
//! All from tracepoints: `sock:inet_sock_set_state` and three `tcp:*` ones. Every network
//! namespace, or the one `--collector.tcp.netns` names.

use std::sync::Arc;

use anyhow::Result;
use ksight_bpf::abi::{ks_sizes, ks_tcp_counter as C};

use crate::bpf::{self, LoadedObject};
use crate::collector::{Builder, Collector, Descriptor, Opt};
use crate::bpf::hooks::{Candidate, Hook};
use crate::metrics::model::{Family, FamilyDoc, Kind, Value};
use crate::decode;

const STATES: usize = ks_sizes::KS_TCP_STATES.0 as usize;

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "tcp",
    default: true,
    help: "connections, connect latency, connection lifetime, state transitions, retransmits, resets and bytes",
    object: ksight_bpf::objects::TCP,
    candidates: &[
        Candidate::own(
            Hook::TpBtf,
            &["state_btf", "retransmit_btf", "reset_sent_btf", "reset_received_btf"],
        ),
        Candidate::own(
            Hook::RawTp,
            &["state_raw", "retransmit_raw", "reset_sent_raw", "reset_received_raw"],
        ),
    ],
    options: &[Opt {
        name: "netns",
        help: "Count only the sockets of this network namespace, by inode (`stat -Lc %i /proc/PID/ns/net`); 0: every namespace",
        default: 0,
        min: 0,
        max: u32::MAX,
        alias: None,
    }],
    families: &[
        &CONNECTIONS,
        &CONNECT_LATENCY,
        &LIFETIME,
        &TRANSITIONS,
        &RETRANSMITS,
        &RESETS,
        &BYTES,
    ],
    build: |context| {
        Box::new(TcpBuilder {
            netns: context.option("netns"),
        })
    },
};

static CONNECTIONS: FamilyDoc = FamilyDoc {
    name: "ksight_tcp_connections_total",
    kind: Kind::Counter,
    labels: &["direction", "family"],
    help: "TCP connections established: active (connect) or passive (accepted).",
    notes: "connections established: `active` (connect: SYN_SENT → ESTABLISHED) or `passive` (accepted: SYN_RECV → ESTABLISHED, in softirq, so no process), `ipv4` or `ipv6`",
};
static CONNECT_LATENCY: FamilyDoc = FamilyDoc {
    name: "ksight_tcp_connect_latency_seconds",
    kind: Kind::Histogram,
    labels: &[],
    help: "Active opens: SYN sent to connection established.",
    notes: "",
};
static LIFETIME: FamilyDoc = FamilyDoc {
    name: "ksight_tcp_connection_lifetime_seconds",
    kind: Kind::Histogram,
    labels: &[],
    help: "Connections from established to closed (those established while ksight ran).",
    notes: "established → closed, both ends of every connection established while ksight ran",
};
static TRANSITIONS: FamilyDoc = FamilyDoc {
    name: "ksight_tcp_state_transitions_total",
    kind: Kind::Counter,
    labels: &["from", "to"],
    help: "TCP socket state changes, by old and new state.",
    notes: "every TCP state change (`SYN_SENT`, `ESTABLISHED`, `FIN_WAIT1`, …, as the kernel names them)",
};
static RETRANSMITS: FamilyDoc = FamilyDoc {
    name: "ksight_tcp_retransmits_total",
    kind: Kind::Counter,
    labels: &[],
    help: "TCP segments retransmitted (SYNs included).",
    notes: "",
};
static RESETS: FamilyDoc = FamilyDoc {
    name: "ksight_tcp_resets_total",
    kind: Kind::Counter,
    labels: &["direction"],
    help: "TCP resets sent and received.",
    notes: "resets `received`, and `sent` as far as the kernel's `tcp_send_reset` tracepoint sees them: resets of a socket (an abort, `SO_LINGER` 0) on every kernel; replies on behalf of no socket (a SYN to a closed port) only on newer kernels (not 6.1; yes 6.12, as the kernel matrix checks)",
};
static BYTES: FamilyDoc = FamilyDoc {
    name: "ksight_tcp_bytes_total",
    kind: Kind::Counter,
    labels: &["direction"],
    help: "Bytes of TCP connections (sent: acknowledged by the peer), added when each closes.",
    notes: "bytes of each connection, added when it closes: `sent` = acknowledged by the peer, `received`",
};

struct TcpBuilder {
    netns: u32,
}

impl Builder for TcpBuilder {
    fn sections(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![(".rodata.tcp", self.netns.to_ne_bytes().to_vec())]
    }

    fn start(&self, obj: Arc<LoadedObject>) -> Result<Box<dyn Collector>> {
        Ok(Box::new(Tcp { obj }))
    }
}

struct Tcp {
    obj: Arc<LoadedObject>,
}

impl Collector for Tcp {
    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()> {
        let obj = &self.obj;
        let counts = bpf::percpu_array_sums(&obj.map("tcp_counts")?)?;
        let at = |c: C| counts.get(c.0 as usize).copied().unwrap_or(0);
        out.push(connections(&at));
        out.push(super::hist_family(obj, "tcp_connect_lat", &CONNECT_LATENCY)?);
        out.push(super::hist_family(obj, "tcp_lifetime", &LIFETIME)?);
        out.push(transitions(&bpf::percpu_array_sums(
            &obj.map("tcp_transitions")?,
        )?));
        out.push(
            Family::of(&RETRANSMITS).with(vec![], Value::Int(at(C::KS_TCP_RETRANSMITS))),
        );
        out.push(by_direction(
            &RESETS,
            at(C::KS_TCP_RESETS_SENT),
            at(C::KS_TCP_RESETS_RECEIVED),
        ));
        out.push(by_direction(
            &BYTES,
            at(C::KS_TCP_BYTES_SENT),
            at(C::KS_TCP_BYTES_RECEIVED),
        ));
        Ok(())
    }

    fn object(&self) -> &Arc<LoadedObject> {
        &self.obj
    }
}

fn connections(at: &dyn Fn(C) -> u64) -> Family {
    let mut family = Family::of(&CONNECTIONS);
    for (direction, v4, v6) in [
        ("active", C::KS_TCP_ACTIVE_V4, C::KS_TCP_ACTIVE_V6),
        ("passive", C::KS_TCP_PASSIVE_V4, C::KS_TCP_PASSIVE_V6),
    ] {
        for (family_name, c) in [("ipv4", v4), ("ipv6", v6)] {
            family.add(
                vec![
                    ("direction", direction.to_string()),
                    ("family", family_name.to_string()),
                ],
                at(c),
            );
        }
    }
    family
}

fn by_direction(doc: &'static FamilyDoc, sent: u64, received: u64) -> Family {
    let mut family = Family::of(doc);
    family.add(vec![("direction", "sent".to_string())], sent);
    family.add(vec![("direction", "received".to_string())], received);
    family
}

/// Only transitions that happened: 256 pairs are possible, a dozen occur.
fn transitions(counts: &[u64]) -> Family {
    let mut family = Family::of(&TRANSITIONS);
    for (i, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        let (from, to) = ((i / STATES) as u32, (i % STATES) as u32);
        family.add(
            vec![
                ("from", decode::tcp_state(from).into_owned()),
                ("to", decode::tcp_state(to).into_owned()),
            ],
            n,
        );
    }
    family
}
