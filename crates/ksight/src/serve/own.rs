//! ksight's own metrics: build, collectors, losses, maps, scrape time, process_*, BPF stats.

use ksight_bpf::abi::ks_loss;
use libbpf_rs::{MapCore, MapType};

use crate::metrics::model::{Family, Kind, Value};
use std::sync::Arc;

use crate::bpf::LoadedObject;

/// Each running collector's name and the object it reads.
pub type Objects<'a> = [(&'static str, &'a Arc<LoadedObject>)];

pub fn build_info() -> Family {
    Family::new(
        "ksight_build_info",
        Kind::Gauge,
        "ksight's version, git revision, the rustc that built it and the architecture; always 1.",
    )
    .with(
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
    let mut lost = Family::new(
        "ksight_events_lost_total",
        Kind::Counter,
        "Increments the kernel side could not store under their labels, by collector and reason.",
    );
    let mut entries = Family::new(
        "ksight_map_entries",
        Kind::Gauge,
        "Entries in a hash map now.",
    );
    let mut capacity = Family::new(
        "ksight_map_capacity",
        Kind::Gauge,
        "Maximum entries of a map.",
    );
    let mut memory = Family::new(
        "ksight_map_memory_bytes",
        Kind::Gauge,
        "Kernel memory of a map (fdinfo memlock).",
    );
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
    let mut misses = Family::new(
        "ksight_bpf_program_misses_total",
        Kind::Counter,
        "Runs of a BPF program the kernel skipped because it was already running on that CPU \
         (an event it interrupted); kernels from 5.12 count them.",
    );
    let mut time = Family::new(
        "ksight_bpf_program_run_seconds_total",
        Kind::Counter,
        "Time spent in a BPF program.",
    );
    let mut runs = Family::new(
        "ksight_bpf_program_runs_total",
        Kind::Counter,
        "Runs of a BPF program.",
    );
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
    // SAFETY: sysconf and getpagesize read constants.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as u64,
        )
    };
    if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
    {
        out.push(gauge(
            "process_cpu_seconds_total",
            Kind::Counter,
            "User and system CPU time spent.",
            Value::Float((stat.utime + stat.stime) as f64 / ticks),
        ));
        out.push(gauge(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size.",
            Value::Int(stat.rss_pages * page),
        ));
        out.push(gauge(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size.",
            Value::Int(stat.vsize),
        ));
        if let Some(btime) = boot_time() {
            out.push(gauge(
                "process_start_time_seconds",
                Kind::Gauge,
                "Start time since the epoch.",
                Value::Float(btime + stat.starttime as f64 / ticks),
            ));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        out.push(gauge(
            "process_open_fds",
            Kind::Gauge,
            "Open file descriptors.",
            Value::Int(dir.count() as u64),
        ));
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: limit is a valid rlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        out.push(gauge(
            "process_max_fds",
            Kind::Gauge,
            "Maximum open file descriptors.",
            Value::Int(limit.rlim_cur),
        ));
    }
    out
}

fn gauge(name: &'static str, kind: Kind, help: &'static str, value: Value) -> Family {
    Family::new(name, kind, help).with(vec![], value)
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
