//! Command-line interface: thin parsing only; the work is in the subcommand modules.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::enrich::LabelSet;

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

#[derive(Args, Debug)]
#[command(
    after_help = "Collectors on by default: syscalls, process, files, tcp, sched, block, memory, signals.\n\
Opt-in: page_faults (ksight_page_faults_total{comm}; costs a table update per fault).\n\
Selection: --collectors sets the list (default: the defaults, or none with --collector.disable-defaults);\n\
then every --collector.NAME adds one and every --no-collector.NAME removes one."
)]
pub struct ServeArgs {
    /// Address to listen on for HTTP (host:port, or :port for every interface).
    #[arg(
        long = "web.listen-address",
        default_value = ":9712",
        value_name = "ADDR"
    )]
    pub listen: String,

    /// Comma-separated collectors to run (default: every default collector).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub collectors: Option<Vec<String>>,

    /// --collector.NAME, --no-collector.NAME, --collector.disable-defaults.
    #[command(flatten)]
    pub selection: crate::collectors::Selection,

    /// Fail when any selected collector cannot attach (default: run the others).
    #[arg(long)]
    pub strict: bool,

    /// Load and attach every selected collector, print the table, and exit 0 or 1.
    #[arg(long)]
    pub check: bool,

    /// Count ksight's own process too (left out by default).
    #[arg(long)]
    pub include_self: bool,

    /// Fold a series into comm="(other processes)" after this long without increments.
    #[arg(long = "series-ttl", default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub series_ttl: Duration,

    /// How often tables are drained and idle series folded.
    #[arg(long = "fold-interval", default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub fold_interval: Duration,

    /// Process names the syscalls collector keeps apart (one slot is the overflow).
    #[arg(long = "syscalls.max-comms", default_value_t = 256, value_name = "N")]
    pub max_comms: u32,

    /// Capacity of the (syscall, errno) map.
    #[arg(
        long = "syscalls.errors-capacity",
        default_value_t = 4096,
        value_name = "N"
    )]
    pub errors_capacity: u32,

    /// Capacity of each labelled counter map (process, files, memory, signals, page_faults).
    #[arg(long = "table.capacity", default_value_t = 4096, value_name = "N")]
    pub table_capacity: u32,

    /// Export the programs' run time and run count (turns on kernel BPF statistics).
    #[arg(long = "bpf-stats")]
    pub bpf_stats: bool,

    /// Cgroup labels to add to per-process series: a comma list of cgroup (path), container
    /// (64-hex id), pod (Kubernetes pod UID), unit (systemd unit). Default: none.
    #[arg(
        long,
        default_value = "",
        value_name = "LIST",
        hide_default_value = true
    )]
    pub labels: LabelSet,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Events: exec, open, fork, exit, signal, tcp (several: exec,open,tcp); \
or syscalls alone (a top per --interval).\n\
Filters are applied in the kernel before an event takes ring-buffer space. They match the \
process doing the action (for exec the new image; for fork the parent; for signal the \
sender; for tcp the socket's owner: the connecting or the listening process).\n\
JSON schema: see README.md, section `ksight trace`."
)]
pub struct TraceArgs {
    /// Comma-separated events: exec, open, fork, exit, signal, tcp; or syscalls.
    #[arg(value_name = "EVENTS", value_parser = crate::trace::parse_event, value_delimiter = ',')]
    pub events: Vec<crate::trace::Kind>,

    /// Only this process (thread-group id).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Only processes with this name (the thread-group leader's comm, at most 15 bytes).
    #[arg(long, value_name = "NAME", value_parser = crate::trace::parse_comm)]
    pub comm: Option<String>,

    /// Only this user id.
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,

    /// Only processes in this cgroup or below it (a hierarchy path such as
    /// /system.slice, its directory, or a numeric id).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,

    /// Only processes of this container (its id, or a prefix of at least 12 hex digits).
    #[arg(long, value_name = "ID", value_parser = crate::trace::parse_container)]
    pub container: Option<String>,

    /// Only failed events: exec/open errors, non-zero exits and kills, undelivered signals,
    /// failed connects.
    #[arg(long)]
    pub failed: bool,

    /// JSON lines (one object per event; schema in README.md).
    #[arg(long)]
    pub json: bool,

    /// Stop after this long (e.g. 10s, 5m).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Ring buffer size in bytes: a power of two, at least 4096 (suffixes K, M).
    #[arg(long = "ring-buffer-size", default_value = "8M", value_parser = crate::trace::parse_ring_size, value_name = "BYTES")]
    pub ring_buffer_size: u32,

    /// trace syscalls: how often to print the top.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,

    /// trace syscalls: rows per interval.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,

    /// Colours: auto (only on a terminal), always, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"], value_name = "WHEN")]
    pub color: String,
}

/// Durations as `250ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (use e.g. 30s, 5m, 1h)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("x").is_err());
    }
}
