//! `ksight profile`: CPU profiles with kernel and user stacks, symbolized on the host.
//!
//! A software cpu-clock perf event per online CPU runs profile.bpf.c, which checks the
//! filters, walks the kernel stack and the user stack (frame pointers) into a stack trace map
//! and counts samples per (process, thread, stacks) in the kernel; the samples of processes
//! without usable frame pointers come to user space as stack copies instead, unwound from
//! .eh_frame (copies.rs, unwind.rs). While it samples, user space remembers each new
//! process's mappings (symbols.rs), at exec and at its first sample, so a process that exits
//! before the end is still named. At the end (duration or Ctrl-C) the programs are detached, every
//! run is accounted for against the kernel's own run count (BPF stats), and the profile is
//! symbolized and written as folded stacks, an SVG flame graph or pprof.

mod args;
mod output;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
pub use args::ProfileArgs;
use ksight_bpf::abi::{ks_prof_config, ks_prof_filter, ks_prof_key};

use crate::bpf::perf_event as perf;
use crate::bpf::{self, LoadConfig, LoadSpec, LoadedObject};
use crate::common::exit::bad_input;
use crate::common::filters::{self as cgroups, CgroupFilter};
use crate::common::stop;
use crate::enrich::cgroup::{Hierarchy, Resolver};
use crate::profiler::{collect, copies, model, symbols, unwind};
use crate::{decode, privileges};
use args::UnwindMode;
use collect::{Stats, STAT_NAMES};
use copies::Copies;
use ksight_bpf::abi::ks_prof_unwind;
use libbpf_rs::RingBufferBuilder;
use model::{Frame, Profile, Stack};
use symbols::Symbols;

const PROGRAM: &str = "profile_sample";
/// How often new processes are looked for while sampling (their mappings remembered).
const POLL: Duration = Duration::from_millis(200);
/// How long a wait for stack copies and execs lasts at most.
const RING_POLL: Duration = Duration::from_millis(20);
const EFAULT: i32 = 14;

/// What the profiler cannot run without, each as its probe finds it (`ksight doctor`'s
/// profile row): a clear reason before anything is loaded, not a verifier log.
fn require_features() -> Result<()> {
    use crate::bpf::features::{check, Feature};
    for feature in [Feature::PerfEvent, Feature::StackMap, Feature::RingBuffer] {
        let answer = check(feature);
        if !answer.ok {
            bail!(
                "profile needs {} and this kernel refuses it: {}",
                feature.name(),
                answer.detail
            );
        }
    }
    Ok(())
}

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
    crate::bpf::btf::resolve_btf(btf)?;
    require_features()?;
    // Run counts and run time of the program: the independent count every sample is
    // accounted against, and the profiler's own cost. Enabled while the fd is open.
    let stats_fd = enable_bpf_stats()?;
    let mut obj = load(&args, &filter, btf)?;
    if let Some(ids) = &filter.ids {
        cgroups::install(&obj, "prof_cgroups", ids)?;
    }
    stop::install_stop_handler();
    // Every binary a sampled process maps stays open (symbols.rs): more than 1024 on a busy host.
    crate::common::limits::raise_open_files();
    let started = (SystemTime::now(), Instant::now());
    let clocks = perf::open_cpu_clocks(args.frequency)?;
    for fd in clocks {
        obj.attach_perf_event(PROGRAM, fd)?;
    }
    tracing::info!(frequency = args.frequency, "sampling");
    let state = RefCell::new(UserSide {
        symbols: Symbols::new(),
        copies: Copies::new(&obj, args.unwind == UnwindMode::Auto)?,
    });
    // Everything is attached: the rest reads other users' files and parses them.
    let kept = privileges::drop::keeping(&Default::default(), &still_needed(), STILL_NEEDED);
    privileges::drop::drop_after_attach(&kept, || bpf::can_read_maps(&obj))?;
    sample(&mut obj, &args, &state)?;
    let duration = started.1.elapsed();
    let (runs, run_ns) = run_stats(&obj);
    drop(stats_fd);
    let stats = Stats::read(&obj)?;
    let UserSide {
        mut symbols,
        copies,
    } = state.into_inner();
    let copied = CopyReport {
        received: copies.received,
        judged: (
            copies.judged.frame_pointers,
            copies.judged.stack_copies,
            copies.judged.again,
        ),
        ends: copies.unwinding.ends.clone(),
    };
    let mut counts = collect::counts(&obj)?;
    let (unwound_counts, unwound_stacks) = copies.into_counts();
    counts.extend(unwound_counts);
    let per_map = collect::stacks_per_map(&counts);
    let mut stacks = collect::stacks(&obj, &counts)?;
    stacks.extend(unwound_stacks);
    let profile = build(
        &counts,
        &stacks,
        &mut symbols,
        &args,
        (started.0, duration),
        &filter,
    );
    output::write(&profile, args.format, &mut *out)?;
    let failed = symbols.failed();
    summary(
        &profile,
        &stats,
        (runs, run_ns),
        per_map,
        &copied,
        failed.len(),
    );
    report_symbol_failures(failed);
    Ok(ExitCode::SUCCESS)
}

/// What profile still does after attaching, and the capabilities that lets it (see
/// `still_needed`); every other one is dropped and no-new-privileges set.
const STILL_NEEDED: &str = "to read the mappings, binaries and perf maps of other users' \
processes and the kernel's symbols";

/// CAP_SYS_PTRACE: /proc/PID/maps, /proc/PID/root and /proc/PID/map_files of other users'
/// processes; CAP_CHECKPOINT_RESTORE (5.9+; CAP_SYS_ADMIN before, kept only then): opening
/// /proc/PID/map_files; CAP_DAC_READ_SEARCH: binaries and perf maps only their owner may
/// read; CAP_SYSLOG: kallsyms' real addresses. The programs stay attached through the fds
/// ksight holds; reading their maps needs nothing more (or CAP_BPF, kept where the kernel
/// checks every bpf() call: drop.rs).
fn still_needed() -> Vec<caps::Capability> {
    use caps::Capability::*;
    let restore = match caps::read(None, caps::CapSet::Permitted) {
        Ok(permitted) if !permitted.contains(&CAP_CHECKPOINT_RESTORE) => CAP_SYS_ADMIN,
        _ => CAP_CHECKPOINT_RESTORE,
    };
    vec![CAP_SYS_PTRACE, restore, CAP_DAC_READ_SEARCH, CAP_SYSLOG]
}

/// What user space keeps while sampling: the processes' mappings and the stack copies.
struct UserSide {
    symbols: Symbols,
    copies: Copies,
}

/// The stack copies, for the summary.
struct CopyReport {
    received: u64,
    /// Processes judged to use frame pointers, to need stack copies, and judged again after
    /// mapping more code.
    judged: (u64, u64, u64),
    ends: std::collections::BTreeMap<&'static str, u64>,
}

fn open_output(path: Option<&Path>) -> Result<Box<dyn Write>> {
    match path {
        None => Ok(Box::new(std::io::BufWriter::new(std::io::stdout()))),
        Some(p) => {
            // Never through a user's symlink or hard link (common/files.rs); mode 0600.
            let file = crate::common::files::create_output(p).map_err(|e| {
                bad_input(anyhow!(
                    "--output {}: {e}",
                    crate::decode::printable(p.as_os_str().as_bytes())
                ))
            })?;
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
        ("prof_copies".to_string(), args.ring_buffer_size),
    ];
    let spec = LoadSpec {
        name: "profile",
        bytes: ksight_bpf::objects::PROFILE,
        programs: &[PROGRAM, "profile_exec", "profile_mmap"],
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
    c.unwind = match args.unwind {
        UnwindMode::Auto => ks_prof_unwind::KS_PROF_UNWIND_AUTO.0,
        UnwindMode::Fp => ks_prof_unwind::KS_PROF_UNWIND_FP.0,
        UnwindMode::Dwarf => ks_prof_unwind::KS_PROF_UNWIND_COPY.0,
    };
    c
}

/// Samples until the duration is over or a stop signal came, then detaches; meanwhile
/// unwinds the stack copies, remembers every new process and shows progress on a terminal.
fn sample(obj: &mut LoadedObject, args: &ProfileArgs, state: &RefCell<UserSide>) -> Result<()> {
    let (copies_map, execs_map) = (obj.map("prof_copies")?, obj.map("prof_execs")?);
    let mut builder = RingBufferBuilder::new();
    builder.add(&copies_map, |data: &[u8]| {
        let s = &mut *state.borrow_mut();
        s.copies.record(&mut s.symbols, data);
        0
    })?;
    builder.add(&execs_map, |data: &[u8]| {
        let s = &mut *state.borrow_mut();
        s.copies.exec(&mut s.symbols, data);
        0
    })?;
    let ring = builder.build()?;
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut shown = Duration::ZERO;
    let mut next_poll = start + POLL;
    loop {
        let elapsed = start.elapsed();
        let left = args.duration.map(|d| d.saturating_sub(elapsed));
        if stop::stopping() || left == Some(Duration::ZERO) {
            break;
        }
        bpf::poll_ring(
            &ring,
            left.map_or(RING_POLL, |l| l.min(RING_POLL)),
            "the stack copies",
        )?;
        {
            let s = &mut *state.borrow_mut();
            s.copies.settle_execs(&mut s.symbols);
        }
        if Instant::now() < next_poll {
            continue;
        }
        next_poll = Instant::now() + POLL;
        let symbols = &mut state.borrow_mut().symbols;
        for pid in collect::pids(obj)? {
            if !symbols.knows(pid) {
                symbols.remember(pid);
            }
        }
        symbols.refresh_perf_maps();
        if tty && elapsed >= shown + Duration::from_secs(1) {
            shown = elapsed;
            let stored = Stats::read(obj).map_or(0, |s| s.kept());
            eprint!(
                "\rksight profile: {} s, {stored} samples ",
                elapsed.as_secs()
            );
        }
    }
    if tty {
        eprintln!();
    }
    obj.detach_all();
    // The copies still in the buffer were taken before the stop.
    bpf::poll_ring(&ring, Duration::ZERO, "the stack copies")?;
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
    counts: &[(ks_prof_key, u64)],
    stacks: &HashMap<i32, Vec<u64>>,
    symbols: &mut Symbols,
    args: &ProfileArgs,
    (started, duration): (SystemTime, Duration),
    filter: &CgroupFilter,
) -> Profile {
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
                stacks,
            );
            frames.extend(stack_frames(
                key.kernel_stack,
                true,
                |ips| symbols.kernel_frames(ips),
                stacks,
            ));
            Stack {
                pid: key.pid,
                tid: key.tid,
                comm: decode::comm(decode::c_bytes(&key.comm)),
                thread: decode::comm(decode::c_bytes(&key.thread)),
                container: containers.of(key.cgroup),
                frames,
                count: *count,
            }
        })
        .collect();
    Profile {
        stacks: out,
        frequency: args.frequency,
        started,
        duration,
    }
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

/// A line per file that gave no symbols because its symbolizer failed (a hostile or broken
/// binary); the summary line counts them (`symbol_files_failed`).
fn report_symbol_failures(failed: &[(String, String)]) {
    for (name, why) in failed {
        eprintln!(
            "ksight profile: no symbols from {}: {why}",
            crate::decode::printable(name.as_bytes())
        );
    }
}

/// One line on stderr: samples kept, every run of the program by what became of it (their
/// sum is `runs`, the kernel's count), the program's own CPU time per run, and the distinct
/// stacks kept in each stack map, the files whose symbols were lost.
fn summary(
    profile: &Profile,
    stats: &Stats,
    (runs, run_ns): (u64, u64),
    stacks: (usize, usize),
    copied: &CopyReport,
    symbol_files_failed: usize,
) {
    let mut line = format!(
        "ksight profile: samples={} lost={} runs={runs} bpf_ns_per_run={} duration_s={:.1} stacks={} stacks_second_map={} copies_received={} judged_frame_pointers={} judged_stack_copies={} judged_again={} symbol_files_failed={symbol_files_failed}",
        profile.samples(),
        stats.lost(),
        run_ns.checked_div(runs).unwrap_or(0),
        profile.duration.as_secs_f64(),
        stacks.0,
        stacks.1,
        copied.received,
        copied.judged.0,
        copied.judged.1,
        copied.judged.2,
    );
    for (name, value) in STAT_NAMES.iter().zip(&stats.0) {
        line.push_str(&format!(" {name}={value}"));
    }
    for (end, n) in &copied.ends {
        line.push_str(&format!(" unwind_{end}={n}"));
    }
    eprintln!("{line}");
    let early: Vec<String> = copied
        .ends
        .iter()
        .filter(|(end, _)| **end != unwind::COMPLETE)
        .map(|(end, n)| format!("{end}={n}"))
        .collect();
    if !early.is_empty() {
        eprintln!(
            "ksight profile: user stacks unwound from stack copies that stopped early: {}",
            early.join(" ")
        );
    }
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
