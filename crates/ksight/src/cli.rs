//! Command-line interface: composes the subcommands, each of which owns its arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::doctor::DoctorArgs;
use crate::serve::ServeArgs;
use crate::trace::TraceArgs;

#[derive(Parser, Debug)]
#[command(
    name = "ksight",
    version,
    about = "Linux kernel metrics with eBPF: one binary, exact counts, every kernel"
)]
pub struct Cli {
    /// BTF file for kernels without /sys/kernel/btf/vmlinux.
    #[arg(long, global = true, value_name = "FILE")]
    pub btf: Option<PathBuf>,

    /// Log level filter (error, warn, info, debug; or a tracing filter).
    #[arg(long, global = true, default_value = "info", env = "KSIGHT_LOG")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
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
}
