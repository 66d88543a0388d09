//! The event stream: drain the ring buffer, print each record, report losses as they happen
//! and in a summary at exit.

use std::cell::RefCell;
use std::io::{BufWriter, IsTerminal, Stdout, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use libbpf_rs::RingBufferBuilder;
use serde_json::json;

use super::event;
use super::readline::Probes;
use super::Kind;
use super::TraceArgs;
use crate::bpf::hooks::Hook;
use crate::bpf::{percpu_array_sums, LoadedObject};
use crate::common::clock::Clock;
use crate::common::stop::stopping;
use crate::enrich::cgroup::{Hierarchy, Resolver};

/// How long a poll waits when no wakeup comes: the kernel wakes the reader only once a
/// quarter of the buffer is waiting, so this is the longest an event sits unseen.
const POLL: Duration = Duration::from_millis(20);

const KINDS: usize = Kind::ALL.len();

struct Sink<'a> {
    out: BufWriter<Stdout>,
    /// The kinds asked for: others (exec records feeding `probes`) are counted, not printed.
    shown: Vec<Kind>,
    /// readline's uprobes, told about every exec.
    probes: Option<Probes<'a>>,
    /// cgroup id → container, for every record's `container`.
    containers: Option<Resolver>,
    json: bool,
    color: bool,
    clock: Clock,
    delivered: [u64; KINDS],
    printed: u64,
    limit: Option<u64>,
    /// stdout is gone (e.g. `| head`): stop quietly.
    closed: bool,
    /// The TIME column of the last second printed, recomputed when the second changes.
    second: u64,
    second_text: String,
}

impl Sink<'_> {
    fn record(&mut self, data: &[u8]) -> i32 {
        let Some(kind) = event::kind_of(data) else {
            return 0;
        };
        self.delivered[kind.index() as usize] += 1;
        if let (Kind::Exec, Some(probes)) = (kind, self.probes.as_mut()) {
            if let Some(pid) = event::pid_of(data) {
                probes.on_exec(pid);
            }
        }
        if !self.shown.contains(&kind) {
            return 0;
        }
        if self.closed || self.limit.is_some_and(|n| self.printed >= n) {
            return 0;
        }
        let Some(mut ev) = event::decode(data, &self.clock) else {
            return 0;
        };
        if let Some(resolver) = self.containers.as_mut() {
            let common = ev.common_mut();
            if common.cgroup_id != 0 {
                common.container = resolver.info(common.cgroup_id).container;
            }
        }
        let written = if self.json {
            serde_json::to_writer(&mut self.out, &ev)
                .map_err(std::io::Error::from)
                .and_then(|()| self.out.write_all(b"\n"))
        } else {
            let time = self.time_column(ev.common().time_ns);
            ev.write_text(&mut self.out, &time, self.color)
        };
        self.printed += 1;
        if written.is_err() {
            self.closed = true;
        }
        0
    }

    /// HH:MM:SS.micro in local time.
    fn time_column(&mut self, ns: u64) -> String {
        let secs = ns / 1_000_000_000;
        if secs != self.second || self.second_text.is_empty() {
            self.second = secs;
            self.second_text = event::local_hms(secs as i64);
        }
        format!("{}.{:06}", self.second_text, (ns % 1_000_000_000) / 1000)
    }

    fn line(&mut self, value: serde_json::Value) {
        if writeln!(self.out, "{value}").is_err() {
            self.closed = true;
        }
    }

    fn flush(&mut self) {
        if self.out.flush().is_err() {
            self.closed = true;
        }
    }

    fn done(&self) -> bool {
        self.closed || self.limit.is_some_and(|n| self.printed >= n)
    }
}

fn use_color(args: &TraceArgs) -> bool {
    match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => {
            !args.json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    }
}

pub fn run(
    obj: &LoadedObject,
    args: &TraceArgs,
    shown: &[Kind],
    hook: Hook,
    probes: Option<Probes<'_>>,
) -> Result<ExitCode> {
    // readline's exec records are lost like any other: their losses are reported too.
    let mut kinds = shown.to_vec();
    if probes.is_some() && !kinds.contains(&Kind::Exec) {
        kinds.push(Kind::Exec);
        kinds.sort();
    }
    let kinds = &kinds[..];
    let sink = RefCell::new(Sink {
        out: BufWriter::with_capacity(1 << 16, std::io::stdout()),
        shown: shown.to_vec(),
        containers: Hierarchy::detect().ok().flatten().map(Resolver::new),
        probes,
        json: args.json,
        color: use_color(args),
        clock: Clock::now(),
        delivered: [0; KINDS],
        printed: 0,
        limit: args.count,
        closed: false,
        second: 0,
        second_text: String::new(),
    });
    let events = obj.map("trace_events")?;
    let lost_map = obj.map("trace_lost")?;
    let mut builder = RingBufferBuilder::new();
    builder.add(&events, |data: &[u8]| sink.borrow_mut().record(data))?;
    let ring = builder.build()?;
    start_line(&mut sink.borrow_mut(), args, shown, hook);
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut lost = Losses::default();
    let mut next_upkeep = Instant::now();
    // Kernels with preemptible tracepoint programs (7.x with lazy preemption) skip a run
    // that starts on a CPU where the same program was preempted: counted by the kernel.
    let skipped_before = obj.skipped_runs();
    loop {
        crate::bpf::poll_ring(&ring, POLL, "the ring buffer")?;
        lost.report(&lost_map, kinds, &mut sink.borrow_mut(), false)?;
        sink.borrow_mut().flush();
        if let Some(probes) = sink.borrow_mut().probes.as_mut() {
            probes.tick();
        }
        if Instant::now() >= next_upkeep {
            crate::bpf::dead_groups::forget_old(obj, "trace_dead")?;
            next_upkeep = Instant::now() + Duration::from_secs(1);
        }
        let expired = deadline.is_some_and(|d| Instant::now() >= d);
        if stopping() || expired || sink.borrow().done() {
            break;
        }
    }
    // What is still in the buffer was generated before we stopped: drain it, then count.
    if !sink.borrow().done() {
        ring.consume_raw();
    }
    lost.report(&lost_map, kinds, &mut sink.borrow_mut(), true)?;
    let skipped = obj.skipped_runs().saturating_sub(skipped_before);
    let mut s = sink.borrow_mut();
    summary(&mut s, kinds, &lost, skipped);
    if let Some(probes) = &s.probes {
        let (held, refused, released) = probes.counts();
        eprintln!(
            "ksight: readline: {held} files probed at exit, {released} released (no process \
             mapped them any more), {refused} not probed (the bound of {} held at once)",
            super::readline::MAX_FILES
        );
    }
    s.flush();
    Ok(ExitCode::SUCCESS)
}

/// The first output: the header, or in JSON a `start` record (readers wait for it).
fn start_line(s: &mut Sink, args: &TraceArgs, kinds: &[Kind], hook: Hook) {
    if s.json {
        let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        let now = s.clock.wall(crate::common::clock::monotonic_ns());
        s.line(
            json!({"type": "start", "time_ns": now, "events": names, "hook": hook.as_str(),
            "ring_buffer_size": args.ring_buffer_size}),
        );
    } else if s.color {
        let _ = writeln!(s.out, "\x1b[1m{}\x1b[0m", event::HEADER);
    } else {
        let _ = writeln!(s.out, "{}", event::HEADER);
    }
    s.flush();
}

/// Kernel loss counters as last reported.
#[derive(Default)]
struct Losses {
    /// Totals read so far (JSON `lost` records follow every increase).
    seen: [u64; KINDS],
    /// Totals as last printed to stderr: at most once a second, so a flood does not flood it.
    printed: [u64; KINDS],
    last_print: Option<Instant>,
}

impl Losses {
    /// Reads the per-CPU counters (after a drain) and reports every increase; `last` forces
    /// the stderr line (at exit).
    fn report(
        &mut self,
        map: &libbpf_rs::MapHandle,
        kinds: &[Kind],
        s: &mut Sink,
        last: bool,
    ) -> Result<()> {
        let sums = percpu_array_sums(map)?;
        for k in kinds {
            let i = k.index() as usize;
            let total = sums.get(i).copied().unwrap_or(0);
            let new = total.saturating_sub(self.seen[i]);
            self.seen[i] = total;
            if new > 0 && s.json && !s.closed {
                let now = s.clock.wall(crate::common::clock::monotonic_ns());
                s.line(json!({"type": "lost", "time_ns": now, "event": k.name(),
                    "count": new, "total": total}));
            }
        }
        let due = last
            || self
                .last_print
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            self.print(kinds);
        }
        Ok(())
    }

    fn print(&mut self, kinds: &[Kind]) {
        let mut printed_any = false;
        for k in kinds {
            let i = k.index() as usize;
            let new = self.seen[i] - self.printed[i];
            if new == 0 {
                continue;
            }
            self.printed[i] = self.seen[i];
            printed_any = true;
            eprintln!(
                "ksight: lost {new} {} events (ring buffer full; {} in all; try a larger --ring-buffer-size)",
                k.name(),
                self.seen[i]
            );
        }
        if printed_any {
            self.last_print = Some(Instant::now());
        }
    }
}

/// At exit: per kind, delivered and lost (their sum is every event that matched).
fn summary(s: &mut Sink, kinds: &[Kind], lost: &Losses, skipped: u64) {
    let mut parts = Vec::new();
    let mut per_kind = serde_json::Map::new();
    for k in kinds {
        let i = k.index() as usize;
        let (d, l) = (s.delivered[i], lost.seen[i]);
        if s.shown.contains(k) {
            parts.push(format!("{} {d} delivered, {l} lost", k.name()));
        } else {
            parts.push(format!(
                "{} {d} read to find binaries to probe (not printed), {l} lost",
                k.name()
            ));
        }
        per_kind.insert(
            k.name().to_string(),
            json!({"delivered": d, "lost": l, "generated": d + l}),
        );
    }
    eprintln!("ksight: {}", parts.join("; "));
    if skipped > 0 {
        eprintln!(
            "ksight: the kernel skipped {skipped} runs of the tracing programs (each already \
             running on that CPU); events in them, of any process, are lost and not in the counts above"
        );
    }
    if s.json && !s.closed {
        let now = s.clock.wall(crate::common::clock::monotonic_ns());
        s.line(
            json!({"type": "summary", "time_ns": now, "events": per_kind,
            "skipped_runs": skipped}),
        );
    }
}
