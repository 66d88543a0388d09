//! ksight's own metrics, every one declared here: build, collectors, losses, maps, scrape
//! and upkeep health, process_*, BPF stats.

use ksight_bpf::abi::ks_loss;
use libbpf_rs::{MapCore, MapType};

use crate::metrics::model::{Family, FamilyDoc, Kind, Value};
use std::sync::Arc;

use crate::bpf::LoadedObject;
use crate::collector::Attachment;

static BUILD_INFO: FamilyDoc = FamilyDoc {
    name: "ksight_build_info",
    kind: Kind::Gauge,
    labels: &["version", "revision", "rustc_version", "arch"],
    help: "ksight's version, git revision, the rustc that built it and the architecture; always 1.",
    notes: "1 (`ksight --version` prints the same)",
};
static EVENTS_LOST: FamilyDoc = FamilyDoc {
    name: "ksight_events_lost_total",
    kind: Kind::Counter,
    labels: &["collector", "reason"],
    help: "Increments the kernel side could not store under their labels, by collector and reason.",
    notes: "increments the kernel could not store: `map_full` (even the overflow map), `update_failed` (the kernel refused the update for another reason, e.g. EBUSY)",
};
static MAP_ENTRIES: FamilyDoc = FamilyDoc {
    name: "ksight_map_entries",
    kind: Kind::Gauge,
    labels: &["collector", "map"],
    help: "Entries in a hash map now.",
    notes: "",
};
static MAP_CAPACITY: FamilyDoc = FamilyDoc {
    name: "ksight_map_capacity",
    kind: Kind::Gauge,
    labels: &["collector", "map"],
    help: "Maximum entries of a map.",
    notes: "",
};
static MAP_MEMORY: FamilyDoc = FamilyDoc {
    name: "ksight_map_memory_bytes",
    kind: Kind::Gauge,
    labels: &["collector", "map"],
    help: "Kernel memory of a map (fdinfo memlock).",
    notes: "",
};
static PROGRAM_MISSES: FamilyDoc = FamilyDoc {
    name: "ksight_bpf_program_misses_total",
    kind: Kind::Counter,
    labels: &["collector", "program"],
    help: "Runs of a BPF program the kernel skipped because it was already running on that CPU (an event it interrupted); kernels from 5.12 count them.",
    notes: "runs the kernel skipped because the program was already running on that CPU (an event that interrupted another; counted by kernels from 5.12): events lost before ksight's code runs, shown rather than hidden",
};
static PROGRAM_RUN_SECONDS: FamilyDoc = FamilyDoc {
    name: "ksight_bpf_program_run_seconds_total",
    kind: Kind::Counter,
    labels: &["collector", "program"],
    help: "Time spent in a BPF program.",
    notes: "time spent in a BPF program, with `--bpf-stats`",
};
static PROGRAM_RUNS: FamilyDoc = FamilyDoc {
    name: "ksight_bpf_program_runs_total",
    kind: Kind::Counter,
    labels: &["collector", "program"],
    help: "Runs of a BPF program.",
    notes: "runs of a BPF program, with `--bpf-stats`",
};
static PROCESS_CPU: FamilyDoc = FamilyDoc {
    name: "process_cpu_seconds_total",
    kind: Kind::Counter,
    labels: &[],
    help: "User and system CPU time spent.",
    notes: "ksight's own process: user and system CPU time",
};
static PROCESS_RESIDENT: FamilyDoc = FamilyDoc {
    name: "process_resident_memory_bytes",
    kind: Kind::Gauge,
    labels: &[],
    help: "Resident memory size.",
    notes: "ksight's own process: resident memory",
};
static PROCESS_VIRTUAL: FamilyDoc = FamilyDoc {
    name: "process_virtual_memory_bytes",
    kind: Kind::Gauge,
    labels: &[],
    help: "Virtual memory size.",
    notes: "ksight's own process: virtual memory",
};
static PROCESS_OPEN_FDS: FamilyDoc = FamilyDoc {
    name: "process_open_fds",
    kind: Kind::Gauge,
    labels: &[],
    help: "Open file descriptors.",
    notes: "ksight's own process: open file descriptors",
};
static PROCESS_MAX_FDS: FamilyDoc = FamilyDoc {
    name: "process_max_fds",
    kind: Kind::Gauge,
    labels: &[],
    help: "Maximum open file descriptors.",
    notes: "ksight's own process: the open-file limit",
};
static PROCESS_START: FamilyDoc = FamilyDoc {
    name: "process_start_time_seconds",
    kind: Kind::Gauge,
    labels: &[],
    help: "Start time since the epoch.",
    notes: "ksight's own process: start time, Unix seconds",
};

pub static COLLECTOR_UP: FamilyDoc = FamilyDoc {
    name: "ksight_collector_up",
    kind: Kind::Gauge,
    labels: &["collector"],
    help: "1 when the collector is attached, 0 when it could not attach.",
    notes: "",
};
pub static COLLECTOR_INFO: FamilyDoc = FamilyDoc {
    name: "ksight_collector_info",
    kind: Kind::Gauge,
    labels: &["collector", "hook"],
    help: "The hook each collector uses (none: it could not attach); always 1.",
    notes: "always 1: the hook the collector uses (`none` when it could not attach)",
};

/// `ksight_collector_up{collector}`: 1 attached, 0 not; and `ksight_collector_info{collector,
/// hook} 1` naming the hook each uses (`none` when it could not attach).
pub fn up_families(attachments: &[Attachment]) -> [Family; 2] {
    let mut up = Family::of(&COLLECTOR_UP);
    let mut info = Family::of(&COLLECTOR_INFO);
    for a in attachments {
        let hook = a.hook.map_or("none", |h| h.as_str());
        up.set(
            vec![("collector", a.collector.into())],
            Value::Int(a.hook.is_some() as u64),
        );
        info.set(
            vec![("collector", a.collector.into()), ("hook", hook.into())],
            Value::Int(1),
        );
    }
    [up, info]
}

pub static SCRAPE_DURATION: FamilyDoc = FamilyDoc {
    name: "ksight_scrape_duration_seconds",
    kind: Kind::Gauge,
    labels: &[],
    help: "Time to read the maps for this scrape.",
    notes: "time to read the maps for this scrape",
};
pub static COLLECTOR_SCRAPE_SUCCESS: FamilyDoc = FamilyDoc {
    name: "ksight_collector_scrape_success",
    kind: Kind::Gauge,
    labels: &["collector"],
    help: "1 when the collector's part of this scrape succeeded, 0 when it failed (left out).",
    notes: "1 when the collector's part of this scrape succeeded, 0 when it failed (its families are then left out)",
};
pub static COLLECTOR_SCRAPE_DURATION: FamilyDoc = FamilyDoc {
    name: "ksight_collector_scrape_duration_seconds",
    kind: Kind::Gauge,
    labels: &["collector"],
    help: "Time the collector took for its part of this scrape.",
    notes: "its part of this scrape",
};
pub static UPKEEP_FAILURES: FamilyDoc = FamilyDoc {
    name: "ksight_upkeep_failures_total",
    kind: Kind::Counter,
    labels: &["collector", "step"],
    help: "Upkeep rounds that failed, by collector and step (flip, barrier, drain, other); each is retried the next round without losing counts.",
    notes: "upkeep rounds that failed at `flip`, `barrier`, `drain` or `other`; each is retried the next round",
};
pub static UPKEEP_LAST_SUCCESS: FamilyDoc = FamilyDoc {
    name: "ksight_upkeep_last_success_timestamp_seconds",
    kind: Kind::Gauge,
    labels: &["collector"],
    help: "Unix time of the collector's last successful upkeep (0: none yet).",
    notes: "Unix time of its last successful upkeep (alert when it lags `--fold-interval`)",
};
pub static UPKEEP_DURATION: FamilyDoc = FamilyDoc {
    name: "ksight_upkeep_duration_seconds",
    kind: Kind::Gauge,
    labels: &[],
    help: "Time the last upkeep round took (every collector).",
    notes: "the last upkeep round, every collector",
};
pub static SERIES_FOLDED: FamilyDoc = FamilyDoc {
    name: "ksight_series_folded_total",
    kind: Kind::Counter,
    labels: &["collector"],
    help: "Series ended because they were idle past --series-ttl or over the table's budget.",
    notes: "series ended by `--series-ttl` or by the table budget",
};
pub static WEB_CONFIG_RELOAD_FAILURES: FamilyDoc = FamilyDoc {
    name: "ksight_web_config_reload_failures_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Changes of --web.config.file not applied: unreadable, invalid, or removing TLS or authentication (those need a restart).",
    notes: "changes of `--web.config.file` not applied (the running configuration stays): unreadable, invalid, or removing TLS or authentication, which needs a restart; 0 without `--web.config.file`",
};

/// ksight's own families, in docs/metrics.md's order (after the collectors' families).
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "read by the docs generator (docs.rs, a test)")
)]
pub static OWN_FAMILIES: &[&FamilyDoc] = &[
    &BUILD_INFO,
    &COLLECTOR_UP,
    &COLLECTOR_INFO,
    &EVENTS_LOST,
    &MAP_ENTRIES,
    &MAP_CAPACITY,
    &MAP_MEMORY,
    &SCRAPE_DURATION,
    &COLLECTOR_SCRAPE_SUCCESS,
    &COLLECTOR_SCRAPE_DURATION,
    &UPKEEP_FAILURES,
    &UPKEEP_LAST_SUCCESS,
    &UPKEEP_DURATION,
    &SERIES_FOLDED,
    &WEB_CONFIG_RELOAD_FAILURES,
    &PROGRAM_MISSES,
    &PROGRAM_RUN_SECONDS,
    &PROGRAM_RUNS,
    &crate::configs::collector::PROGRAM_ATTACHED,
    &crate::configs::collector::DECODER_ERRORS,
    &PROCESS_CPU,
    &PROCESS_RESIDENT,
    &PROCESS_VIRTUAL,
    &PROCESS_OPEN_FDS,
    &PROCESS_MAX_FDS,
    &PROCESS_START,
];

/// Each running collector's name and the object it reads.
pub type Objects<'a> = [(&'static str, &'a Arc<LoadedObject>)];

pub fn build_info() -> Family {
    Family::of(&BUILD_INFO).with(
        vec![
            ("version", env!("CARGO_PKG_VERSION").into()),
            ("revision", env!("KSIGHT_GIT_REVISION").into()),
            ("rustc_version", env!("KSIGHT_RUSTC_VERSION").into()),
            ("arch", std::env::consts::ARCH.into()),
        ],
        Value::Int(1),
    )
}

/// Losses counted in the kernel (ks_losses of each object), and map figures.
pub fn object_families(objects: &Objects<'_>, out: &mut Vec<Family>) {
    let mut lost = Family::of(&EVENTS_LOST);
    let mut entries = Family::of(&MAP_ENTRIES);
    let mut capacity = Family::of(&MAP_CAPACITY);
    let mut memory = Family::of(&MAP_MEMORY);
    let mut seen: Vec<&Arc<LoadedObject>> = Vec::new();
    for &(collector, obj) in objects {
        if seen.iter().any(|o| Arc::ptr_eq(o, obj)) {
            continue; // shared with a collector already reported
        }
        seen.push(obj);
        for (name, map) in obj.maps() {
            // Internal maps: global data (name.rodata, .data.ctl …) and the barrier.
            if name.contains('.') || name.starts_with("ks_barrier") {
                continue;
            }
            let labels = vec![("collector", collector.into()), ("map", name.clone())];
            if name == "ks_losses" {
                add_losses(&map, collector, &mut lost);
                continue;
            }
            capacity.set(labels.clone(), Value::Int(map.max_entries() as u64));
            if let Ok(info) = map.query_fdinfo() {
                if let Some(bytes) = info.memlock {
                    memory.set(labels.clone(), Value::Int(bytes));
                }
            }
            if matches!(map.map_type(), MapType::Hash | MapType::PercpuHash) {
                if let Ok(n) = crate::bpf::hash_entry_count(&map) {
                    entries.set(labels, Value::Int(n));
                }
            }
        }
    }
    out.extend([lost, entries, capacity, memory]);
}

fn add_losses(map: &libbpf_rs::MapHandle, collector: &'static str, lost: &mut Family) {
    for (reason, idx) in [
        ("map_full", ks_loss::KS_LOSS_MAP_FULL),
        ("update_failed", ks_loss::KS_LOSS_UPDATE_FAILED),
    ] {
        let n: u64 = crate::bpf::percpu_value::<u64>(map, idx.0)
            .map(|v| v.iter().sum())
            .unwrap_or(0);
        lost.add(
            vec![("collector", collector.into()), ("reason", reason.into())],
            n,
        );
    }
}

/// Per program: runs the kernel skipped (always: they are lost events) and, with kernel BPF
/// statistics on, run time and count.
pub fn bpf_programs(objects: &Objects<'_>, with_stats: bool, out: &mut Vec<Family>) {
    let mut misses = Family::of(&PROGRAM_MISSES);
    let mut time = Family::of(&PROGRAM_RUN_SECONDS);
    let mut runs = Family::of(&PROGRAM_RUNS);
    for &(collector, obj) in objects {
        for (name, info) in obj.program_infos() {
            let labels = vec![("collector", collector.into()), ("program", name)];
            misses.set(labels.clone(), Value::Int(info.recursion_misses));
            if with_stats {
                time.set(labels.clone(), Value::Float(info.run_time_ns as f64 / 1e9));
                runs.set(labels, Value::Int(info.run_cnt));
            }
        }
    }
    out.push(misses);
    if with_stats {
        out.extend([time, runs]);
    }
}

/// The standard process_* metrics, from /proc/self.
pub fn process_families() -> Vec<Family> {
    let mut out = Vec::new();
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let page = crate::common::kernel::page_size();
    if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
    {
        out.push(gauge(
            &PROCESS_CPU,
            Value::Float((stat.utime + stat.stime) as f64 / ticks),
        ));
        out.push(gauge(&PROCESS_RESIDENT, Value::Int(stat.rss_pages * page)));
        out.push(gauge(&PROCESS_VIRTUAL, Value::Int(stat.vsize)));
        if let Some(btime) = boot_time() {
            out.push(gauge(
                &PROCESS_START,
                Value::Float(btime + stat.starttime as f64 / ticks),
            ));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        out.push(gauge(&PROCESS_OPEN_FDS, Value::Int(dir.count() as u64)));
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: limit is a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        out.push(gauge(&PROCESS_MAX_FDS, Value::Int(limit.rlim_cur)));
    }
    out
}

fn gauge(doc: &'static FamilyDoc, value: Value) -> Family {
    Family::of(doc).with(vec![], value)
}

struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

/// /proc/self/stat: fields after the parenthesised comm (which may hold spaces).
fn parse_stat(text: &str) -> Option<Stat> {
    // The comm is the process's own choice (spaces, parentheses): its last `)` ends it.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): field n is f[n - 3].
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// /proc/self/stat with any comm (a process names itself): no panic, and the fields
        /// after the comm's last `)` are read whatever the comm holds.
        #[test]
        fn any_comm_in_a_stat_line(comm in ".{0,16}") {
            let line = format!("42 ({comm}) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 4 0 12345 1000000 250 18446744073709551615");
            let s = parse_stat(&line);
            proptest::prop_assert!(s.is_some());
            let s = s.unwrap_or_else(|| unreachable!());
            proptest::prop_assert_eq!((s.utime, s.stime, s.starttime), (7, 3, 12345));
        }

        #[test]
        fn arbitrary_stat_text(text in ".{0,300}") {
            let _ = parse_stat(&text);
        }
    }

    #[test]
    fn stat_with_spaces_in_comm() {
        let line = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 4 0 12345 1000000 250 18446744073709551615";
        let s = parse_stat(line).expect("parses");
        assert_eq!(
            (s.utime, s.stime, s.starttime, s.vsize, s.rss_pages),
            (7, 3, 12345, 1000000, 250)
        );
    }
}
