//! `ksight trace syscalls`: every interval, the busiest (process, syscall) pairs.
//!
//! The kernel counts into per-CPU hash maps keyed by (pid, nr), two used in turns: each
//! interval user space flips the live one, waits until no program can still be writing the
//! old one (a map-in-map update makes the kernel run synchronize_rcu), then reads and empties
//! it. No increment is lost on any kernel. exit/exit_group never return and are not counted.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ksight_bpf::abi::{ks_systop_key, ks_systop_val};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde_json::json;

use super::event;
use super::Kind;
use super::TraceArgs;
use crate::bpf::hooks::Hook;
use crate::bpf::{percpu_array_sums, LoadedObject};
use crate::common::clock::Clock;
use crate::common::stop::stopping;
use crate::decode;

struct Row {
    pid: u32,
    nr: u32,
    comm: String,
    count: u64,
    errors: u64,
}

pub fn run(obj: &LoadedObject, args: &TraceArgs, hook: Hook) -> Result<ExitCode> {
    let maps = [obj.map("trace_systop_a")?, obj.map("trace_systop_b")?];
    let lost_map = obj.map("trace_lost")?;
    let clock = Clock::now();
    let started = Instant::now();
    let mut lost_seen = 0u64;
    let mut out = std::io::stdout().lock();
    if args.json {
        // the same first record as the event stream: readers wait for it
        let now = clock.wall(crate::common::clock::monotonic_ns());
        writeln!(
            out,
            "{}",
            json!({"type": "start", "time_ns": now, "events": ["syscalls"],
            "hook": hook.as_str(), "interval_ns": args.interval.as_nanos() as u64})
        )?;
        out.flush()?;
    }
    loop {
        let begin = Instant::now();
        let stop = sleep_until(begin + args.interval, args);
        let rows = swap_and_read(obj, &maps)?;
        let elapsed = begin.elapsed();
        let now = clock.wall(crate::common::clock::monotonic_ns());
        let interval = Interval { now, elapsed, rows };
        if args.json {
            print_json(&mut out, &interval, args.top)?;
        } else {
            print_table(&mut out, &interval, args.top)?;
        }
        lost_seen = report_lost(&lost_map, lost_seen, args.json, now, &mut out)?;
        out.flush()?;
        let expired = args.duration.is_some_and(|d| started.elapsed() >= d);
        if stop || expired {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Sleeps in short steps so SIGINT and --duration end the interval early; true to stop.
fn sleep_until(until: Instant, args: &TraceArgs) -> bool {
    let end = args
        .duration
        .map_or(until, |d| until.min(Instant::now() + d));
    while Instant::now() < end {
        if stopping() {
            return true;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    stopping()
}

fn swap_and_read(obj: &LoadedObject, maps: &[MapHandle; 2]) -> Result<Vec<Row>> {
    let gen = obj.flip_table_gen()?;
    obj.barrier()?;
    // the map that was live until the flip: nothing writes it any more
    let old = &maps[((gen.wrapping_sub(1)) & 1) as usize];
    drain(old)
}

fn drain(map: &MapHandle) -> Result<Vec<Row>> {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    let mut rows = Vec::with_capacity(keys.len());
    for key in keys {
        let per_cpu = map.lookup_percpu(&key, MapFlags::ANY)?.unwrap_or_default();
        map.delete(&key)?;
        let mut k = ks_systop_key::default();
        plain::copy_from_bytes(&mut k, &key).map_err(|e| anyhow!("bad key: {e:?}"))?;
        let mut row = Row {
            pid: k.pid,
            nr: k.nr,
            comm: String::new(),
            count: 0,
            errors: 0,
        };
        for bytes in per_cpu {
            let mut v = ks_systop_val::default();
            plain::copy_from_bytes(&mut v, &bytes).map_err(|e| anyhow!("bad value: {e:?}"))?;
            row.count += v.count;
            row.errors += v.errors;
            if row.comm.is_empty() && v.comm[0] != 0 {
                row.comm = decode::c_str(&v.comm);
            }
        }
        rows.push(row);
    }
    rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
    Ok(rows)
}

/// One interval's top: when it ended (wall-clock ns), how long it was, its rows by count.
struct Interval {
    now: u64,
    elapsed: Duration,
    rows: Vec<Row>,
}

fn print_table(out: &mut impl Write, interval: &Interval, top: usize) -> Result<()> {
    let Interval { now, elapsed, rows } = interval;
    let total: u64 = rows.iter().map(|r| r.count).sum();
    let bold = std::io::stdout().is_terminal();
    let (b, o) = if bold {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("", "")
    };
    writeln!(
        out,
        "{} syscalls in {:.2}s: {total} calls, top {} of {} (process, syscall)",
        event::local_hms((now / 1_000_000_000) as i64),
        elapsed.as_secs_f64(),
        top.min(rows.len()),
        rows.len()
    )?;
    writeln!(
        out,
        "{b}{:<8} {:<16} {:<20} {:>10} {:>8}{o}",
        "PID", "COMM", "SYSCALL", "COUNT", "ERRORS"
    )?;
    for r in rows.iter().take(top) {
        writeln!(
            out,
            "{:<8} {:<16} {:<20} {:>10} {:>8}",
            r.pid,
            decode::escape_controls(&r.comm),
            decode::syscall(r.nr),
            r.count,
            r.errors
        )?;
    }
    writeln!(out)?;
    Ok(())
}

fn print_json(out: &mut impl Write, interval: &Interval, top: usize) -> Result<()> {
    let Interval { now, elapsed, rows } = interval;
    let list: Vec<_> = rows
        .iter()
        .take(top)
        .map(|r| {
            json!({"pid": r.pid, "comm": r.comm, "syscall": decode::syscall(r.nr),
                "nr": r.nr, "count": r.count, "errors": r.errors})
        })
        .collect();
    let total: u64 = rows.iter().map(|r| r.count).sum();
    let record = json!({"type": "syscalls", "time_ns": now, "interval_ns": elapsed.as_nanos() as u64,
        "total": total, "pairs": rows.len(), "rows": list});
    writeln!(out, "{record}")?;
    Ok(())
}

/// Counts the kernel could not store (both maps full): reported, never silent.
fn report_lost(
    map: &MapHandle,
    seen: u64,
    json: bool,
    now: u64,
    out: &mut impl Write,
) -> Result<u64> {
    let sums = percpu_array_sums(map)?;
    let total = sums
        .get(Kind::Syscalls.index() as usize)
        .copied()
        .unwrap_or(0);
    if total > seen {
        let new = total - seen;
        eprintln!("ksight: lost {new} syscall counts (map full; {total} in all)");
        if json {
            writeln!(
                out,
                "{}",
                json!({"type": "lost", "time_ns": now, "event": "syscalls", "count": new, "total": total})
            )?;
        }
    }
    Ok(total)
}
