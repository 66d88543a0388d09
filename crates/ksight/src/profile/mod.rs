//! `ksight profile`: CPU profiles with kernel and user stacks, symbolized on the host.
//!
//! A software cpu-clock perf event per online CPU runs profile.bpf.c, which checks the
//! filters, walks the kernel stack and the user stack (frame pointers) into a stack trace map
//! and counts samples per (process, thread, stacks) in the kernel. While it samples, user
//! space remembers each new process's mappings (symbols.rs), so a process that exits before
//! the end is still named. At the end (duration or Ctrl-C) the programs are detached, every
//! run is accounted for against the kernel's own run count (BPF stats), and the profile is
//! symbolized and written as folded stacks, an SVG flame graph or pprof.

mod args;
mod collect;
mod model;
mod output;
mod perf;
mod pprof;
mod symbols;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
pub use args::ProfileArgs;
use ksight_bpf::abi::{ks_prof_config, ks_prof_filter, ks_prof_key, ks_prof_stat};

use crate::bpf::{self, LoadConfig, LoadSpec, LoadedObject};
use crate::enrich::cgroup::{Hierarchy, Resolver};
use crate::trace::cgroups::{self, CgroupFilter};
use crate::{bad_input, names, privileges, trace};
use collect::{Stats, STAT_NAMES};
use model::{Frame, Profile, Stack};
use symbols::Symbols;

const PROGRAM: &str = "profile_sample";
/// How often new processes are looked for while sampling (their mappings remembered).
const POLL: Duration = Duration::from_millis(200);
const EFAULT: i32 = 14;

pub fn run(args: ProfileArgs, btf: Option<&'static Path>) -> Result<ExitCode> {
    if let Some(pid) = args.pid {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(bad_input(anyhow!("--pid {pid}: no such process")));
        }
    }
    let filter =
        cgroups::resolve(args.cgroup.as_deref(), args.container.as_deref()).map_err(bad_input)?;
    let mut out = open_output(args.output.as_deref())?;
    privileges::require_bpf_privileges()?;
    privileges::resolve_btf(btf)?;
    // Run counts and run time of the program: the independent count every sample is
    // accounted against, and the profiler's own cost. Enabled while the fd is open.
    let stats_fd = enable_bpf_stats()?;
    let mut obj = load(&args, &filter, btf)?;
    if let Some(ids) = &filter.ids {
        cgroups::install(&obj, "prof_cgroups", ids)?;
    }
    trace::install_stop_handler();
    // Every binary a sampled process maps stays open (symbols.rs): more than 1024 on a busy host.
    crate::serve::raise_open_files();
    let started = (SystemTime::now(), Instant::now());
    let clocks = perf::open_cpu_clocks(args.frequency)?;
    for fd in clocks {
        obj.attach_perf_event(PROGRAM, fd)?;
    }
    tracing::info!(frequency = args.frequency, "sampling");
    let mut symbols = Symbols::new();
    sample(&obj, &args, &mut symbols)?;
    obj.detach_all();
    let duration = started.1.elapsed();
    let (runs, run_ns) = run_stats(&obj);
    drop(stats_fd);
    let stats = Stats::read(&obj)?;
    let counts = collect::counts(&obj)?;
    let profile = build(
        &obj,
        &counts,
        &mut symbols,
        &args,
        (started.0, duration),
        &filter,
    )?;
    output::write(&profile, args.format, &mut *out)?;
    summary(
        &profile,
        &stats,
        (runs, run_ns),
        collect::stacks_per_map(&counts),
    );
    Ok(ExitCode::SUCCESS)
}

fn open_output(path: Option<&Path>) -> Result<Box<dyn Write>> {
    match path {
        None => Ok(Box::new(std::io::BufWriter::new(std::io::stdout()))),
        Some(p) => {
            let file = std::fs::File::create(p)
                .map_err(|e| bad_input(anyhow!("--output {}: {e}", p.display())))?;
            Ok(Box::new(std::io::BufWriter::new(file)))
        }
    }
}

fn enable_bpf_stats() -> Result<OwnedFd> {
    // SAFETY: a bpf() command with no pointer argument; a non-negative result is a new fd.
    let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    if fd < 0 {
        bail!(
            "enabling BPF run-time statistics: {}",
            std::io::Error::from_raw_os_error(-fd)
        );
    }
    // SAFETY: fd is a new descriptor no one else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn load(
    args: &ProfileArgs,
    filter: &CgroupFilter,
    btf: Option<&'static Path>,
) -> Result<LoadedObject> {
    let config = prof_config(args, filter);
    // SAFETY: ks_prof_config is Plain (a padding-free C struct); the slice borrows config.
    let bytes = unsafe { plain::as_bytes(&config) };
    let sections = [(".rodata.prof", bytes)];
    let max_entries = [
        ("prof_stacks".to_string(), args.stack_map_entries),
        (
            "prof_stacks_b".to_string(),
            (args.stack_map_entries / 4).max(1),
        ),
        ("prof_counts".to_string(), args.counts_map_entries),
        ("prof_pids".to_string(), args.counts_map_entries),
    ];
    let spec = LoadSpec {
        name: "profile",
        bytes: ksight_bpf::objects::PROFILE,
        programs: &[PROGRAM],
        max_entries: &max_entries,
        broken_target: None,
        sections: &sections,
        skip_maps: &[],
    };
    let load = LoadConfig {
        include_self: false,
        cgroup_mode: filter.mode,
        btf,
    };
    bpf::load(&spec, load).context("loading the profile program")
}

fn prof_config(args: &ProfileArgs, filter: &CgroupFilter) -> ks_prof_config {
    let mut c = ks_prof_config::default();
    if let Some(pid) = args.pid {
        c.flags |= ks_prof_filter::KS_PF_PID.0;
        c.pid = pid;
    }
    if let Some(comm) = &args.comm {
        c.flags |= ks_prof_filter::KS_PF_COMM.0;
        for (dst, src) in c.comm.iter_mut().zip(comm.bytes()) {
            *dst = src as i8;
        }
    }
    if filter.ids.is_some() {
        c.flags |= ks_prof_filter::KS_PF_CGROUP.0;
    }
    c
}

/// Samples until the duration is over or a stop signal came; meanwhile remembers every new
/// process and shows progress on a terminal.
fn sample(obj: &LoadedObject, args: &ProfileArgs, symbols: &mut Symbols) -> Result<()> {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut shown = Duration::ZERO;
    loop {
        let elapsed = start.elapsed();
        let left = args.duration.map(|d| d.saturating_sub(elapsed));
        if trace::stopping() || left == Some(Duration::ZERO) {
            break;
        }
        std::thread::sleep(left.map_or(POLL, |l| l.min(POLL)));
        for pid in collect::pids(obj)? {
            if !symbols.knows(pid) {
                symbols.remember(pid);
            }
        }
        symbols.refresh_perf_maps();
        if tty && elapsed >= shown + Duration::from_secs(1) {
            shown = elapsed;
            let stored = Stats::read(obj).map_or(0, |s| s.get(ks_prof_stat::KS_PROF_STORED));
            eprint!(
                "\rksight profile: {} s, {stored} samples ",
                elapsed.as_secs()
            );
        }
    }
    if tty {
        eprintln!();
    }
    Ok(())
}

/// The program's run count and run time, from the kernel's BPF statistics.
fn run_stats(obj: &LoadedObject) -> (u64, u64) {
    obj.program_infos()
        .into_iter()
        .find(|(name, _)| name == PROGRAM)
        .map_or((0, 0), |(_, info)| (info.run_cnt, info.run_time_ns))
}

fn build(
    obj: &LoadedObject,
    counts: &[(ks_prof_key, u64)],
    symbols: &mut Symbols,
    args: &ProfileArgs,
    (started, duration): (SystemTime, Duration),
    filter: &CgroupFilter,
) -> Result<Profile> {
    let stacks = collect::stacks(obj, counts)?;
    for (key, _) in counts {
        if !symbols.knows(key.pid) {
            symbols.remember(key.pid);
        }
    }
    let ips = |id: i32| stacks.get(&id).map(Vec::as_slice);
    symbols.prepare(
        counts
            .iter()
            .filter_map(|(k, _)| Some((k.pid, ips(k.user_stack)?))),
        counts.iter().filter_map(|(k, _)| ips(k.kernel_stack)),
    );
    let mut containers = ContainerNames::new(filter.mode);
    let out = counts
        .iter()
        .map(|(key, count)| {
            let mut frames = stack_frames(
                key.user_stack,
                false,
                |ips| symbols.user_frames(key.pid, ips),
                &stacks,
            );
            frames.extend(stack_frames(
                key.kernel_stack,
                true,
                |ips| symbols.kernel_frames(ips),
                &stacks,
            ));
            Stack {
                pid: key.pid,
                tid: key.tid,
                comm: names::comm(names::c_bytes(&key.comm)),
                thread: names::comm(names::c_bytes(&key.thread)),
                container: containers.of(key.cgroup),
                frames,
                count: *count,
            }
        })
        .collect();
    Ok(Profile {
        stacks: out,
        frequency: args.frequency,
        started,
        duration,
    })
}

/// The frames of one stack id; a stack the kernel could not record is one frame saying so.
fn stack_frames(
    id: i32,
    kernel: bool,
    names: impl Fn(&[u64]) -> Vec<String>,
    stacks: &HashMap<i32, Vec<u64>>,
) -> Vec<Frame> {
    let names = match stacks.get(&id) {
        Some(ips) => names(ips),
        None if id == -EFAULT => Vec::new(),
        None if kernel => vec!["[kernel stack lost]".to_string()],
        None => vec!["[user stack lost]".to_string()],
    };
    names
        .into_iter()
        .map(|name| Frame { name, kernel })
        .collect()
}

/// Container ids of cgroup ids (the pprof label), when the kernel reported cgroups.
struct ContainerNames(Option<Resolver>);

impl ContainerNames {
    fn new(mode: u32) -> Self {
        let hierarchy = (mode != 0)
            .then(|| Hierarchy::detect().ok().flatten())
            .flatten();
        ContainerNames(hierarchy.map(Resolver::new))
    }

    fn of(&mut self, cgroup: u64) -> Option<String> {
        let resolver = self.0.as_mut()?;
        (cgroup != 0)
            .then(|| resolver.info(cgroup).container)
            .flatten()
    }
}

/// One line on stderr: samples kept, every run of the program by what became of it (their
/// sum is `runs`, the kernel's count), the program's own CPU time per run, and the distinct
/// stacks kept in each stack map.
fn summary(profile: &Profile, stats: &Stats, (runs, run_ns): (u64, u64), stacks: (usize, usize)) {
    let mut line = format!(
        "ksight profile: samples={} lost={} runs={runs} bpf_ns_per_run={} duration_s={:.1} stacks={} stacks_second_map={}",
        profile.samples(),
        stats.lost(),
        run_ns.checked_div(runs).unwrap_or(0),
        profile.duration.as_secs_f64(),
        stacks.0,
        stacks.1,
    );
    for (name, value) in STAT_NAMES.iter().zip(&stats.0) {
        line.push_str(&format!(" {name}={value}"));
    }
    eprintln!("{line}");
    if stats.lost() > 0 {
        eprintln!(
            "ksight profile: {} samples lost (the counts map was full: raise --counts-map-entries or shorten the profile)",
            stats.lost()
        );
    }
    let stackless = stats.stack_errors();
    if stackless > 0 {
        eprintln!(
            "ksight profile: {stackless} stacks could not be kept (their samples are counted under [user stack lost] or [kernel stack lost]; a larger --stack-map-entries makes it rarer)"
        );
    }
}
