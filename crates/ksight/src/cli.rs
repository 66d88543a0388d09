//! Command-line interface: composes the subcommands, each of which owns its arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::capture::CaptureArgs;
use crate::doctor::DoctorArgs;
use crate::profile::ProfileArgs;
use crate::serve::ServeArgs;
use crate::trace::TraceArgs;

/// `ksight --version`: version, git revision and the rustc that built it (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("KSIGHT_GIT_REVISION"),
    ", rustc ",
    env!("KSIGHT_RUSTC_VERSION"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "ksight",
    version = VERSION,
    about = "Linux kernel metrics with eBPF: one binary, exact counts, every kernel"
)]
pub struct Cli {
    /// BTF file for kernels without /sys/kernel/btf/vmlinux (`--btf.path`: ebpf_exporter's
    /// spelling).
    #[arg(long, alias = "btf.path", global = true, value_name = "FILE")]
    pub btf: Option<PathBuf>,

    /// Log level filter (error, warn, info, debug; or a tracing filter). `--log` is the old
    /// spelling.
    #[arg(
        long = "log.level",
        alias = "log",
        global = true,
        default_value = "info",
        env = "KSIGHT_LOG",
        value_name = "LEVEL"
    )]
    pub log: String,

    /// Log lines as logfmt (as exporter-toolkit) or JSON, on stderr.
    #[arg(
        long = "log.format",
        global = true,
        default_value = "logfmt",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve kernel metrics for Prometheus at /metrics.
    Serve(ServeArgs),
    /// What this kernel supports, and the hook each collector would attach with.
    Doctor(DoctorArgs),
    /// Print kernel events as they happen: exec, open, fork, exit, signal, tcp; or a
    /// periodic top of syscalls per process.
    Trace(TraceArgs),
    /// Remove the pins `serve --pin NAME` left behind (after a SIGKILL, say).
    Unpin(crate::bpf::pins::UnpinArgs),
    /// Sample on-CPU stacks (kernel and user) and write a profile: folded, SVG or pprof.
    Profile(ProfileArgs),
    /// Capture packets into a pcapng file, each named with its process; every drop counted.
    Capture(CaptureArgs),
}
