//! `ksight capture`: packets from TC (tcx, or clsact) into a pcapng file, each named with
//! the process behind it, every drop counted.
//!
//! One object (capture.bpf.c). Its TC programs copy each packet whose process passes
//! --pid/--comm/--container into a ring buffer; the cgroup socket hooks and a task_file
//! iterator tell them which process uses a socket (owners.rs). User space reads the ring
//! buffer in batches (crate::ring), runs the tcpdump expression (filter.rs), writes pcapng
//! (output.rs) and reports the kernel's per-interface counters: received, lost to a full ring
//! buffer, accepted, delivered — in statistics blocks every 10 s and at the end, on stderr as
//! losses happen, and in a summary at exit.

mod args;
mod bounded;
mod filter;
mod iface;
mod output;
mod owners;
mod process;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
pub use args::CaptureArgs;
use args::CommentMode;
use ksight_bpf::abi::{ks_cap_config, ks_cap_filter, ks_cap_hdr, ks_cap_ifstats};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::bpf::features::{self, Feature};
use crate::bpf::ring::BatchRing;
use crate::bpf::{self, LoadConfig, LoadSpec, LoadedObject};
use crate::common::clock::Clock;
use crate::common::exit::bad_input;
use crate::common::filters::{install as install_cgroups, resolve as resolve_cgroups};
use crate::common::stop::{install_stop_handler, stopping};
use crate::enrich::{Enricher, LabelSet};
use filter::Filter;
use iface::{Attachment, Interface};
use output::{IfCounts, Output, Packet, Plan};
use process::Namer;

/// The longest a packet waits in the ring buffer when no wakeup comes (the kernel wakes the
/// reader once a quarter of the buffer waits). Each wakeup costs about 100 µs of CPU on the
/// development VM (an idle capture with a 50-ms timer used 2.2 ms a second), which at 50,000
/// packets a second was 40 ns a packet: hence not shorter. tcpdump waits up to 1 s.
const POLL: Duration = Duration::from_millis(200);
/// How often the kernel's counters are read for losses to report (the report on stderr comes
/// at most once a second anyway).
const COUNTERS: Duration = Duration::from_secs(1);
/// How often `-i any` looks for new interfaces (the bound is a second).
const RESCAN: Duration = Duration::from_millis(250);
/// How often statistics blocks are written.
const STATISTICS: Duration = Duration::from_secs(10);

pub fn run(args: CaptureArgs, btf: Option<&'static Path>) -> Result<ExitCode> {
    let plan = plan(&args).map_err(bad_input)?;
    let filter = match args.filter() {
        Some(text) => Some(Filter::compile(&text, args.snaplen).map_err(bad_input)?),
        None => None,
    };
    let wanted = Wanted::parse(&args.interface).map_err(bad_input)?;
    let cgroups = resolve_cgroups(None, args.container.as_deref()).map_err(bad_input)?;
    let output = Output::open(plan).map_err(bad_input)?;
    crate::privileges::require_bpf_privileges()?;
    crate::bpf::btf::resolve_btf(btf)?;
    let config = capture_config(&args, cgroups.ids.is_some());
    let load = LoadConfig {
        include_self: false,
        cgroup_mode: cgroups.mode,
        btf,
    };
    let obj = load_object(&config, args.ring_bytes(), load)?;
    if let Some(ids) = &cgroups.ids {
        install_cgroups(&obj, "cap_cgroups", ids)?;
    }
    let owners = owners::start(&obj, load.cgroup_mode)?;
    let (enricher, _) = Enricher::new("cgroup,container".parse::<LabelSet>().unwrap_or_default());
    let mut session = Session {
        output,
        filter,
        namer: Namer::new(enricher, args.comment == CommentMode::Full),
        clock: Clock::now(),
        limit: args.count,
        known: BTreeMap::new(),
        attached: BTreeMap::new(),
        accepted: Vec::new(),
        handed: 0,
    };
    install_stop_handler();
    session.attach_wanted(&obj, &wanted)?;
    // Attached: from here on it parses packets and names processes; keep only what is used.
    let kept = still_needed(&wanted, &session, &args);
    crate::privileges::drop::drop_after_attach(&kept, || bpf::can_read_maps(&obj))?;
    let kinds: Vec<&str> = session.attached.values().map(|(_, a)| a.kind()).collect();
    tracing::info!(
        interfaces = %session.attached_names(),
        attach = kinds.first().copied().unwrap_or("none"),
        socket_hooks = owners.hooks_attached,
        sockets_before_start = owners.before_start,
        "capturing"
    );
    let result = capture_loop(&obj, &mut session, &wanted, args.duration);
    let s = &mut session;
    let stats = s.kernel_counts(&obj).unwrap_or_default();
    s.output.flush(); // the statistics then count every packet delivered
    s.write_statistics(&stats);
    s.output.close_file();
    s.summary(&stats);
    drop(owners);
    result.map(|()| ExitCode::SUCCESS)
}

/// The capabilities capture still uses after attaching, each only when it does: every
/// other one is dropped and no-new-privileges set (privileges/drop.rs).
/// - CAP_NET_ADMIN and CAP_BPF: `-i any` attaches to interfaces that appear later; CAP_NET_ADMIN
///   also detaches a tc clsact filter at exit (netlink; a tcx link needs nothing to close).
/// - CAP_DAC_OVERRIDE and CAP_FOWNER: -C / -G create files later, in a directory root may
///   not own, replacing (common/files.rs) an entry another user may own in a sticky one.
fn still_needed(
    wanted: &Wanted,
    session: &Session,
    args: &CaptureArgs,
) -> crate::privileges::drop::DropArgs {
    use caps::Capability::*;
    let mut needed = Vec::new();
    let clsact = session
        .attached
        .values()
        .any(|(_, a)| a.kind() == "tc clsact");
    if matches!(wanted, Wanted::Any) {
        needed.extend([CAP_NET_ADMIN, CAP_BPF]);
    } else if clsact {
        needed.push(CAP_NET_ADMIN);
    }
    if args.file_size_mb.is_some() || args.rotate_seconds.is_some() {
        needed.extend([CAP_DAC_OVERRIDE, CAP_FOWNER]);
    }
    crate::privileges::drop::keeping(
        &Default::default(),
        &needed,
        "to attach to new interfaces, detach tc filters or start rotated files",
    )
}

/// Which interfaces to capture on.
enum Wanted {
    Any,
    One(Interface),
}

impl Wanted {
    fn parse(name: &str) -> Result<Wanted> {
        if name == "any" {
            return Ok(Wanted::Any);
        }
        match iface::by_name(name)? {
            Some(i) => Ok(Wanted::One(i)),
            None => bail!(
                "-i {}: no such interface in this network namespace",
                crate::decode::printable(name.as_bytes())
            ),
        }
    }
}

fn plan(args: &CaptureArgs) -> Result<Plan> {
    let stdout = args.write == "-";
    if stdout && (args.file_size_mb.is_some() || args.rotate_seconds.is_some()) {
        bail!("-C and -G need a file (-w FILE), not stdout");
    }
    if stdout && std::io::stdout().is_terminal() {
        bail!("-w -: stdout is a terminal; give -w FILE or pipe it (| tshark -r -)");
    }
    Ok(Plan {
        name: args.write.clone(),
        max_bytes: args.file_size_mb.map(|mb| mb.saturating_mul(1_000_000)),
        every: args.rotate_seconds.map(Duration::from_secs),
        snaplen: args.snaplen,
    })
}

fn capture_config(args: &CaptureArgs, cgroups: bool) -> ks_cap_config {
    let mut c = ks_cap_config {
        snaplen: args.snaplen,
        wakeup_bytes: args.ring_bytes() / 4,
        ..Default::default()
    };
    if let Some(pid) = args.pid {
        c.flags |= ks_cap_filter::KS_CF_PID.0;
        c.pid = pid;
    }
    if let Some(comm) = &args.comm {
        c.flags |= ks_cap_filter::KS_CF_COMM.0;
        for (dst, src) in c.comm.iter_mut().zip(comm.bytes()) {
            *dst = src as ksight_bpf::abi::AbiChar;
        }
    }
    if cgroups {
        c.flags |= ks_cap_filter::KS_CF_CGROUP.0;
    }
    c
}

/// Capture's optional programs, each kept only where its feature probe says the kernel
/// allows it (crate::bpf::features): a refused feature costs only what depends on it.
const TCX: [&str; 2] = ["cap_tcx_ingress", "cap_tcx_egress"];
const TC: [&str; 2] = ["cap_tc_ingress", "cap_tc_egress"];

/// The optional groups of programs and the feature each needs.
fn optional_groups() -> [(Feature, Vec<&'static str>); 3] {
    [
        (Feature::Tcx, TCX.to_vec()),
        (Feature::TaskFileIter, vec![owners::ITERATOR]),
        (Feature::SockHooks, owners::HOOKS.to_vec()),
    ]
}

/// The programs to load, best first: every group the probes allow, then, should the kernel
/// still refuse the whole (a probe is a small program; the real one may meet a stricter
/// verifier), the same with one group left out, then two, then all three.
fn program_sets() -> Vec<Vec<&'static str>> {
    let groups: Vec<Vec<&'static str>> = optional_groups()
        .into_iter()
        .filter(|(feature, _)| features::has(*feature))
        .map(|(_, programs)| programs)
        .collect();
    sets_leaving_out(&groups)
}

/// The TC programs with every subset of `groups`, the fullest first.
fn sets_leaving_out(groups: &[Vec<&'static str>]) -> Vec<Vec<&'static str>> {
    let n = groups.len();
    let mut masks: Vec<u32> = (0..1u32 << n).collect();
    // Fewest groups left out first; among equals, the earlier groups kept longest.
    masks.sort_by_key(|m| (m.count_ones(), m.reverse_bits()));
    masks
        .into_iter()
        .map(|left_out| {
            let mut programs = TC.to_vec();
            for (i, group) in groups.iter().enumerate() {
                if left_out & (1 << i) == 0 {
                    programs.extend(group);
                }
            }
            programs
        })
        .collect()
}

fn load_object(config: &ks_cap_config, ring_bytes: u32, load: LoadConfig) -> Result<LoadedObject> {
    let cpus = libbpf_rs::num_possible_cpus()? as u32;
    // SAFETY: ks_cap_config is Plain (a padding-free C struct); the slice borrows config.
    let bytes = unsafe { plain::as_bytes(config) };
    let sections = [(".rodata.capture", bytes)];
    let max_entries = [
        ("cap_events".to_string(), ring_bytes),
        ("cap_scratch".to_string(), cpus),
    ];
    let mut failures = Vec::new();
    for programs in program_sets() {
        let spec = LoadSpec {
            name: "capture",
            bytes: ksight_bpf::objects::CAPTURE,
            programs: &programs,
            max_entries: &max_entries,
            broken_target: None,
            sections: &sections,
            skip_maps: &[],
        };
        match bpf::load_unattached(&spec, load) {
            Ok(obj) => {
                for (feature, group) in optional_groups() {
                    if !group.iter().all(|p| programs.contains(p)) {
                        let why = features::check(feature).detail;
                        tracing::info!(feature = feature.name(), reason = %why, "capture goes without {}", feature.name());
                    }
                }
                if !failures.is_empty() {
                    tracing::warn!(refused = ?failures, "the kernel refused capture programs its probes allowed: left out");
                }
                return Ok(obj);
            }
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    bail!(
        "loading the capture programs: {}",
        failures.join("; then: ")
    )
}

struct Session {
    output: Output,
    filter: Option<Filter>,
    namer: Namer,
    clock: Clock,
    limit: Option<u64>,
    /// Every interface seen, by index (packets name theirs by index).
    known: BTreeMap<u32, Interface>,
    /// Interfaces with the programs on them.
    attached: BTreeMap<u32, (Interface, Attachment)>,
    /// Packets accepted, by interface: (ifindex, count), searched in order (a few entries;
    /// cheaper per packet than hashing the index).
    accepted: Vec<(u32, u64)>,
    /// Packets given to the output (what -c counts).
    handed: u64,
}

/// The kernel's counters of one interface, summed over CPUs.
type KernelCounts = BTreeMap<u32, ks_cap_ifstats>;

impl Session {
    fn attached_names(&self) -> String {
        let names: Vec<String> = self
            .attached
            .values()
            .map(|(i, _)| crate::decode::printable(i.name.as_bytes()))
            .collect();
        names.join(",")
    }

    /// Attaches to what is wanted and not attached yet; forgets interfaces that are gone.
    fn attach_wanted(&mut self, obj: &LoadedObject, wanted: &Wanted) -> Result<()> {
        let now = match wanted {
            Wanted::One(i) => BTreeMap::from([(i.index, i.clone())]),
            Wanted::Any => iface::list()?,
        };
        self.attached.retain(|index, _| now.contains_key(index));
        let stats = obj.map("cap_ifstats")?;
        for (index, iface) in now {
            if self.attached.contains_key(&index) {
                continue;
            }
            let fresh = !self.known.contains_key(&index);
            self.known.insert(index, iface.clone());
            zero_counters(&stats, index)?;
            match iface::attach(obj, index) {
                Ok(a) => {
                    if fresh && !self.attached.is_empty() {
                        tracing::info!(interface = %crate::decode::printable(iface.name.as_bytes()), attach = a.kind(), "capturing on a new interface");
                    }
                    self.output.add_interface(&iface);
                    self.attached.insert(index, (iface, a));
                }
                Err(err) if matches!(wanted, Wanted::One(_)) => {
                    bail!("attaching to {}: {err:#}", iface.name)
                }
                Err(err) => {
                    // -i any: an interface that refuses TC (or vanished meanwhile) is
                    // skipped; it is tried again at the next scan.
                    tracing::debug!("not capturing on {}: {err:#}", iface.name);
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, data: &[u8]) {
        let size = std::mem::size_of::<ks_cap_hdr>();
        // Records start 8-byte aligned in the ring, so the header is read in place.
        let Ok(h) = plain::from_bytes::<ks_cap_hdr>(data) else {
            return;
        };
        let end = (size + h.caplen as usize).min(data.len());
        let frame = &data[size..end];
        if let Some(f) = &self.filter {
            let framing = self
                .known
                .get(&h.ifindex)
                .map_or(iface::Framing::Ethernet, |i| i.framing);
            if !f.matches(framing, frame, h.len) {
                return;
            }
        }
        match self.accepted.iter_mut().find(|(i, _)| *i == h.ifindex) {
            Some((_, n)) => *n += 1,
            None => self.accepted.push((h.ifindex, 1)),
        }
        if self.done() {
            return;
        }
        self.output.maybe_rotate();
        let comment = self.namer.comment(&h.owner, self.output.generation);
        let packet = Packet {
            ifindex: h.ifindex,
            wall_ns: self.clock.wall(h.ts_ns),
            original_len: h.len,
            data: frame,
            direction: h.direction,
            comment: &comment,
        };
        let known = &self.known;
        self.output.write(&packet, &|i| known.get(&i).cloned());
        self.handed += 1;
    }

    fn done(&self) -> bool {
        self.limit.is_some_and(|n| self.handed >= n)
    }

    fn kernel_counts(&self, obj: &LoadedObject) -> Result<KernelCounts> {
        let map = obj.map("cap_ifstats")?;
        let mut out = BTreeMap::new();
        for index in self.known.keys() {
            out.insert(*index, sum_counters(&map, *index)?);
        }
        Ok(out)
    }

    fn write_statistics(&mut self, k: &KernelCounts) {
        let delivered = self.output.delivered.clone();
        let counts = |index: u32| {
            let kc = k.get(&index).copied().unwrap_or_default();
            IfCounts {
                received: kc.seen,
                dropped: kc.lost,
                accepted: self
                    .accepted
                    .iter()
                    .find(|(i, _)| *i == index)
                    .map_or(0, |(_, n)| *n),
                delivered: delivered.get(&index).copied().unwrap_or(0),
            }
        };
        let now = self.clock.wall(crate::common::clock::monotonic_ns());
        self.output.statistics(now, &counts);
    }

    fn summary(&self, k: &KernelCounts) {
        let seen: u64 = k.values().map(|c| c.seen).sum();
        let matched: u64 = k.values().map(|c| c.matched).sum();
        let lost: u64 = k.values().map(|c| c.lost).sum();
        let accepted: u64 = self.accepted.iter().map(|(_, n)| n).sum();
        eprintln!(
            "ksight: {seen} packets seen, {matched} matched the process filters, {lost} lost \
             (ring buffer full), {accepted} accepted by the expression, {} written",
            self.output.written
        );
        if self.output.lost > 0 {
            eprintln!(
                "ksight: {} packets not written: {}",
                self.output.lost,
                self.output.last_error.as_deref().unwrap_or("write error")
            );
        }
        for f in &self.output.files {
            tracing::debug!(file = %f.display(), "written");
        }
    }
}

fn zero_counters(map: &MapHandle, index: u32) -> Result<()> {
    let cpus = libbpf_rs::num_possible_cpus()?;
    let zero = vec![vec![0u8; std::mem::size_of::<ks_cap_ifstats>()]; cpus];
    // NOEXIST: an interface seen again (a rescan) keeps its counts.
    match map.update_percpu(&index.to_ne_bytes(), &zero, MapFlags::NO_EXIST) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow!("cap_ifstats: {e}")),
    }
}

fn sum_counters(map: &MapHandle, index: u32) -> Result<ks_cap_ifstats> {
    let mut sum = ks_cap_ifstats::default();
    let per_cpu = map
        .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)?
        .unwrap_or_default();
    for bytes in per_cpu {
        let mut v = ks_cap_ifstats::default();
        plain::copy_from_bytes(&mut v, &bytes).map_err(|e| anyhow!("cap_ifstats: {e:?}"))?;
        sum.seen += v.seen;
        sum.matched += v.matched;
        sum.lost += v.lost;
    }
    Ok(sum)
}

/// Losses as last printed on stderr (at most once a second).
#[derive(Default)]
struct LossReport {
    ring: u64,
    output: u64,
    last: Option<Instant>,
}

impl LossReport {
    fn report(&mut self, ring: u64, output: &Output, last: bool) {
        let due = last
            || self
                .last
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if !due {
            return;
        }
        if ring > self.ring {
            eprintln!(
                "ksight: lost {} packets (ring buffer full; {ring} in all; try a larger -B)",
                ring - self.ring
            );
            self.ring = ring;
            self.last = Some(Instant::now());
        }
        if output.lost > self.output {
            eprintln!(
                "ksight: {} packets not written ({}; {} in all)",
                output.lost - self.output,
                output.last_error.as_deref().unwrap_or("write error"),
                output.lost
            );
            self.output = output.lost;
            self.last = Some(Instant::now());
        }
    }
}

fn capture_loop(
    obj: &LoadedObject,
    s: &mut Session,
    wanted: &Wanted,
    duration: Option<Duration>,
) -> Result<()> {
    let ring = BatchRing::new(&obj.map("cap_events")?)?;
    let deadline = duration.map(|d| Instant::now() + d);
    let mut next_scan = Instant::now() + RESCAN;
    let mut next_stats = Instant::now() + STATISTICS;
    let mut next_counts = Instant::now();
    let mut losses = LossReport::default();
    loop {
        ring.wait(POLL)?;
        ring.consume(|data| s.record(data));
        s.output.flush();
        if Instant::now() >= next_counts {
            let counts = s.kernel_counts(obj)?;
            losses.report(counts.values().map(|c| c.lost).sum(), &s.output, false);
            if Instant::now() >= next_stats {
                s.write_statistics(&counts);
                next_stats = Instant::now() + STATISTICS;
            }
            next_counts = Instant::now() + COUNTERS;
        }
        if matches!(wanted, Wanted::Any) && Instant::now() >= next_scan {
            s.attach_wanted(obj, wanted)?;
            next_scan = Instant::now() + RESCAN;
        }
        let expired = deadline.is_some_and(|d| Instant::now() >= d);
        if stopping() || expired || s.done() {
            break;
        }
    }
    // What is in the buffer was captured before the stop: write it, then count.
    if !s.done() {
        ring.consume(|data| s.record(data));
    }
    let lost = s.kernel_counts(obj)?.values().map(|c| c.lost).sum();
    losses.report(lost, &s.output, true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refused_group_costs_only_itself() {
        let groups = vec![vec!["x1", "x2"], vec!["i"], vec!["h"]];
        let sets = sets_leaving_out(&groups);
        assert_eq!(sets.len(), 8);
        assert_eq!(sets[0], [TC[0], TC[1], "x1", "x2", "i", "h"]);
        // one group left out at a time, the last first, before any two
        assert_eq!(sets[1], [TC[0], TC[1], "x1", "x2", "i"]);
        assert_eq!(sets[2], [TC[0], TC[1], "x1", "x2", "h"]);
        assert_eq!(sets[3], [TC[0], TC[1], "i", "h"]);
        assert_eq!(sets[7], TC);
        assert_eq!(sets_leaving_out(&[]), [TC.to_vec()]);
    }
}
