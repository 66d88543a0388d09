//! `ksight trace`: kernel events as they happen (exec, open, fork, exit, signal, tcp), lines
//! read by bash/readline (uprobes), or a periodic top of syscalls per process.
//!
//! One object (trace.bpf.c) with only the programs of the requested events loaded; filters
//! are constants of its `.rodata.trace`, checked in the kernel before ring-buffer space is
//! reserved. A reserve that fails is counted per kind in the kernel; after each drain of the
//! ring buffer the counts are read and every increase is reported (stderr, and a `lost`
//! record in JSON), with a summary at exit: delivered + lost is every event that matched.

mod args;
mod event;
mod readline;
mod stream;
mod top;

use std::path::Path;
use std::process::ExitCode;

use crate::common::filters::{self as cgroups, CgroupFilter};
use crate::common::stop::install_stop_handler;
use anyhow::{bail, Result};
pub use args::TraceArgs;
use ksight_bpf::abi::{ks_ev_kind, ks_trace_config, ks_trace_filter};
use tracing::debug;

use crate::bpf::fallback::{first_that_attaches, Attempt};
use crate::bpf::hooks::Hook;
use crate::bpf::{self, LoadConfig, LoadSpec, LoadedObject};
use crate::collector::broken_target;
use crate::privileges;

/// What `ksight trace` can report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Exec,
    Open,
    Fork,
    Exit,
    Signal,
    Tcp,
    Syscalls,
    Readline,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Exec,
        Kind::Open,
        Kind::Fork,
        Kind::Exit,
        Kind::Signal,
        Kind::Tcp,
        Kind::Syscalls,
        Kind::Readline,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Open => "open",
            Kind::Fork => "fork",
            Kind::Exit => "exit",
            Kind::Signal => "signal",
            Kind::Tcp => "tcp",
            Kind::Syscalls => "syscalls",
            Kind::Readline => "readline",
        }
    }

    /// The kernel's `enum ks_ev_kind` value: the index of the loss counters.
    pub fn index(self) -> u32 {
        let k = match self {
            Kind::Exec => ks_ev_kind::KS_EV_EXEC,
            Kind::Open => ks_ev_kind::KS_EV_OPEN,
            Kind::Fork => ks_ev_kind::KS_EV_FORK,
            Kind::Exit => ks_ev_kind::KS_EV_EXIT,
            Kind::Signal => ks_ev_kind::KS_EV_SIGNAL,
            Kind::Tcp => ks_ev_kind::KS_EV_TCP,
            Kind::Syscalls => ks_ev_kind::KS_EV_SYSCALLS,
            Kind::Readline => ks_ev_kind::KS_EV_READLINE,
        };
        k.0
    }

    pub fn from_index(index: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.index() == index)
    }

    /// The programs of trace.bpf.c this kind needs on `hook` (tp_btf, or raw_tp).
    fn programs(self, hook: Hook) -> &'static [&'static str] {
        let btf = hook == Hook::TpBtf;
        match (self, btf) {
            (Kind::Exec, true) => &["exec_btf", "sys_exit_btf"],
            (Kind::Exec, false) => &["exec_raw", "sys_exit_raw"],
            (Kind::Open | Kind::Syscalls, true) => &["sys_exit_btf"],
            (Kind::Open | Kind::Syscalls, false) => &["sys_exit_raw"],
            (Kind::Fork, true) => &["fork_btf"],
            (Kind::Fork, false) => &["fork_raw"],
            (Kind::Exit, true) => &["exit_btf"],
            (Kind::Exit, false) => &["exit_raw"],
            (Kind::Signal, true) => &["signal_btf"],
            (Kind::Signal, false) => &["signal_raw"],
            (Kind::Tcp, true) => &["tcp_state_btf"],
            (Kind::Tcp, false) => &["tcp_state_raw"],
            // uprobes attached by readline.rs; exec records tell it about new processes
            (Kind::Readline, true) => &["readline_entry", "readline_return", "exec_btf"],
            (Kind::Readline, false) => &["readline_entry", "readline_return", "exec_raw"],
        }
    }
}

const VALID_EVENTS: &str = "exec, open, fork, exit, signal, tcp, readline, syscalls";

pub fn parse_event(text: &str) -> Result<Kind, String> {
    let text = text.trim();
    Kind::ALL
        .into_iter()
        .find(|k| k.name() == text)
        .ok_or_else(|| format!("unknown event {text:?} (valid: {VALID_EVENTS})"))
}

pub fn run(args: TraceArgs, btf: Option<&'static Path>) -> Result<ExitCode> {
    let kinds = selection(&args.events)?;
    let cgroups = cgroups::resolve(args.cgroup.as_deref(), args.container.as_deref())?;
    let config = trace_config(&args, &kinds, &cgroups)?;
    privileges::require_bpf_privileges()?;
    crate::bpf::btf::resolve_btf(btf)?;
    let load = LoadConfig {
        include_self: false,
        cgroup_mode: cgroups.mode,
        btf,
    };
    let (obj, hook) = load_object(&kinds, &config, args.ring_buffer_size, load)?;
    if let Some(ids) = &cgroups.ids {
        cgroups::install(&obj, "trace_cgroups", ids)?;
    }
    debug!(hook = %hook, events = ?kinds, "attached");
    let probes = kinds
        .contains(&Kind::Readline)
        .then(|| readline::Probes::start(&obj))
        .transpose()?;
    let privileges = kept_privileges(&args, &kinds);
    crate::privileges::drop::drop_after_attach(&privileges, || bpf::can_read_maps(&obj))?;
    install_stop_handler();
    if kinds == [Kind::Syscalls] {
        top::run(&obj, &args, hook)
    } else {
        stream::run(&obj, &args, &kinds, hook, probes)
    }
}

/// What to keep after attaching: `--capabilities.keep`, and for readline what attaching to
/// binaries that start later needs, among those ksight has: a uprobe perf event (6.18 refuses
/// one with CAP_PERFMON alone: EACCES unless CAP_SYS_ADMIN is kept too, measured), the BPF
/// link, and reading other processes' files through /proc/PID/root.
fn kept_privileges(args: &TraceArgs, kinds: &[Kind]) -> crate::privileges::drop::DropArgs {
    use caps::Capability::*;
    if !kinds.contains(&Kind::Readline) {
        return args.privileges.clone();
    }
    let needed = [
        CAP_PERFMON,
        CAP_SYS_ADMIN,
        CAP_BPF,
        CAP_SYS_PTRACE,
        CAP_DAC_READ_SEARCH,
    ];
    crate::privileges::drop::keeping(
        &args.privileges,
        &needed,
        "to probe readline in binaries that start later",
    )
}

/// The requested kinds, deduplicated; `syscalls` (a periodic table) only alone.
fn selection(events: &[Kind]) -> Result<Vec<Kind>> {
    if events.is_empty() {
        bail!("name the events to trace (valid: {VALID_EVENTS})");
    }
    let mut kinds = events.to_vec();
    kinds.sort();
    kinds.dedup();
    if kinds.contains(&Kind::Syscalls) && kinds.len() > 1 {
        bail!("syscalls is a periodic table and cannot be combined with other events (valid together: exec, open, fork, exit, signal, tcp, readline)");
    }
    Ok(kinds)
}

fn trace_config(
    args: &TraceArgs,
    kinds: &[Kind],
    cgroups: &CgroupFilter,
) -> Result<ks_trace_config> {
    let mut c = ks_trace_config {
        kinds: kinds.iter().fold(0, |m, k| m | 1 << k.index()),
        // Wake the reader when a quarter of the buffer waits; it also polls every few ms.
        wakeup_bytes: args.ring_buffer_size / 4,
        ..Default::default()
    };
    let mut flag = |f: ks_trace_filter| c.flags |= f.0;
    if args.failed {
        flag(ks_trace_filter::KS_TF_FAILED);
    }
    if let Some(pid) = args.pid {
        flag(ks_trace_filter::KS_TF_PID);
        c.pid = pid;
    }
    if let Some(uid) = args.uid {
        flag(ks_trace_filter::KS_TF_UID);
        c.uid = uid;
    }
    if cgroups.ids.is_some() {
        flag(ks_trace_filter::KS_TF_CGROUP);
    }
    if let Some(comm) = &args.comm {
        flag(ks_trace_filter::KS_TF_COMM);
        for (dst, src) in c.comm.iter_mut().zip(comm.bytes()) {
            *dst = src as i8;
        }
    }
    Ok(c)
}

fn config_bytes(c: &ks_trace_config) -> &[u8] {
    // SAFETY: ks_trace_config is Plain (padding-free C struct); the slice borrows c.
    unsafe { plain::as_bytes(c) }
}

/// tp_btf programs, else their raw_tp twins (kernels without tp_btf, or a refused one).
fn load_object(
    kinds: &[Kind],
    config: &ks_trace_config,
    ring_size: u32,
    load: LoadConfig,
) -> Result<(LoadedObject, Hook)> {
    let sections = [(".rodata.trace", config_bytes(config))];
    let max_entries = [("trace_events".to_string(), ring_size)];
    let attempts = [Hook::TpBtf, Hook::RawTp].map(|hook| {
        let mut programs: Vec<&str> = kinds
            .iter()
            .flat_map(|k| k.programs(hook))
            .copied()
            .collect();
        programs.sort();
        programs.dedup();
        let (sections, max_entries) = (&sections, &max_entries);
        Attempt::Load(
            hook,
            Box::new(move || {
                let spec = LoadSpec {
                    name: "trace",
                    bytes: ksight_bpf::objects::TRACE,
                    programs: &programs,
                    max_entries,
                    broken_target: broken_target("trace", hook),
                    sections,
                    skip_maps: &[],
                };
                bpf::load(&spec, load)
            }),
        )
    });
    let outcome = first_that_attaches(attempts);
    match outcome.attached {
        Some(attached) => Ok(attached),
        None => {
            let failures: Vec<String> = outcome
                .failures
                .iter()
                .map(|(hook, why)| format!("{hook}: {why}"))
                .collect();
            bail!(
                "could not attach the trace programs: {}",
                failures.join("; ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::filters::{parse_comm, parse_container};
    use crate::common::units::parse_ring_size;

    proptest::proptest! {
        /// The trace flags' own parsers: a value or one line of error, never a panic.
        #[test]
        fn flag_parsers_take_any_text(text in ".{0,80}") {
            let _ = parse_event(&text);
            let _ = parse_comm(&text);
            let _ = parse_ring_size(&text);
            let _ = parse_container(&text);
        }
    }

    #[test]
    fn events_parse_with_the_list_of_valid_ones() {
        assert_eq!(parse_event("exec"), Ok(Kind::Exec));
        let err = parse_event("bogus").unwrap_err();
        assert!(err.contains("exec, open, fork, exit, signal, tcp, readline, syscalls"));
        assert!(selection(&[Kind::Syscalls, Kind::Exec]).is_err());
        assert_eq!(
            selection(&[Kind::Open, Kind::Exec, Kind::Open]).ok(),
            Some(vec![Kind::Exec, Kind::Open])
        );
    }

    #[test]
    fn kinds_match_the_kernel_enum() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_index(k.index()), Some(k));
        }
        assert_eq!(Kind::ALL.len() as u32, ks_ev_kind::KS_EV_KINDS.0);
    }
}
