//! The arguments of `ksight trace`.

use std::time::Duration;

use clap::Args;

use super::{parse_event, Kind};
use crate::common::filters::{parse_comm, parse_container};
use crate::common::units::parse_ring_size;

#[derive(Args, Debug)]
#[command(
    after_help = "Events: exec, open, fork, exit, signal, tcp, readline (several: exec,open,tcp); \
or syscalls alone (a top per --interval). readline: every line bash or libreadline \
reads, in any mount namespace (uprobes).\n\
Filters are applied in the kernel before an event takes ring-buffer space. They match the \
process doing the action (for exec the new image; for fork the parent; for signal the \
sender; for tcp the socket's owner: the connecting or the listening process).\n\
JSON schema: see docs/trace.md, section `JSON schema`."
)]
pub struct TraceArgs {
    /// Comma-separated events: exec, open, fork, exit, signal, tcp, readline; or syscalls.
    #[arg(value_name = "EVENTS", value_parser = parse_event, value_delimiter = ',')]
    pub events: Vec<Kind>,

    /// Only this process (thread-group id).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Only processes with this name (the thread-group leader's comm, at most 15 bytes).
    #[arg(long, value_name = "NAME", value_parser = parse_comm)]
    pub comm: Option<String>,

    /// Only this user id.
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,

    /// Only processes in this cgroup or below it (a hierarchy path such as
    /// /system.slice, its directory, or a numeric id).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,

    /// Only processes of this container (its id, or a prefix of at least 12 hex digits).
    #[arg(long, value_name = "ID", value_parser = parse_container)]
    pub container: Option<String>,

    /// Only failed events: exec/open errors, non-zero exits and kills, undelivered signals,
    /// failed connects.
    #[arg(long)]
    pub failed: bool,

    /// JSON lines (one object per event; schema in docs/trace.md).
    #[arg(long)]
    pub json: bool,

    /// Stop after this long (e.g. 10s, 5m).
    #[arg(long, value_parser = crate::common::units::parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Ring buffer size in bytes: a power of two, at least a page (4096 on x86_64; suffixes K,
    /// M).
    #[arg(long = "ring-buffer-size", default_value = "8M", value_parser = parse_ring_size, value_name = "BYTES")]
    pub ring_buffer_size: u32,

    /// trace syscalls: how often to print the top.
    #[arg(long, default_value = "1s", value_parser = crate::common::units::parse_duration, value_name = "DURATION")]
    pub interval: Duration,

    /// trace syscalls: rows per interval.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,

    /// --capabilities.keep and --user: what is kept after attaching (by default nothing).
    #[command(flatten)]
    pub privileges: crate::privileges::drop::DropArgs,

    /// Colours: auto (only on a terminal), always, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"], value_name = "WHEN")]
    pub color: String,
}
