//! The arguments of `ksight profile`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::common::filters::{parse_comm, parse_container};
use crate::common::units::parse_ring_size;

/// The highest sampling frequency: beyond it the profiler's own cost stops being small.
pub const MAX_FREQUENCY: u64 = 999;

#[derive(Args, Debug)]
#[command(
    after_help = "Filters are applied in the kernel before any stack is walked. \
Ctrl-C stops sampling and still writes the profile.\n\
Frames: user frames, then kernel frames (suffix _[k]); the first frame of a folded line is \
the process name."
)]
pub struct ProfileArgs {
    /// Samples per second on each CPU (1 to 999).
    #[arg(short = 'F', long = "frequency", default_value_t = 49, value_parser = parse_frequency, value_name = "HZ")]
    pub frequency: u64,

    /// Stop after this long (e.g. 10s, 5m); by default at Ctrl-C.
    #[arg(short = 'd', long, value_parser = parse_profile_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Only this process (thread-group id).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Only processes with this name (the thread-group leader's comm, at most 15 bytes).
    #[arg(long, value_name = "NAME", value_parser = parse_comm)]
    pub comm: Option<String>,

    /// Only processes in this cgroup or below it (a hierarchy path, its directory, or an id).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,

    /// Only processes of this container (its id, or a prefix of at least 12 hex digits).
    #[arg(long, value_name = "ID", value_parser = parse_container)]
    pub container: Option<String>,

    /// Write the profile to this file (default: standard output).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// folded (flamegraph.pl / inferno input), svg (a flame graph), pprof (gzip'd profile.proto).
    #[arg(long, default_value = "folded", value_name = "FORMAT")]
    pub format: Format,

    /// How user stacks are taken: auto (each process judged from its first samples: frame
    /// pointers if its frame-pointer stacks are what its .eh_frame unwinding gives, else
    /// stack copies), fp (frame pointers only), dwarf (copies of the stack's top, unwound
    /// from .eh_frame in user space, for every process).
    #[arg(long, default_value = "auto", value_name = "HOW")]
    pub unwind: UnwindMode,

    /// Distinct stacks the kernel can hold (about 1 KiB each), plus a quarter as many for
    /// stacks whose slot was taken; a stack whose slot is taken in both is not kept (its
    /// samples are, and counted).
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..=1 << 20), value_name = "N")]
    pub stack_map_entries: u32,

    /// Distinct (thread, user stack, kernel stack) counts the kernel can hold; a sample that
    /// finds it full is lost, and counted.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=1 << 24), value_name = "N")]
    pub counts_map_entries: u32,

    /// Ring buffer for stack copies (about 16.5 KiB each), in bytes: a power of two, at least
    /// a page (suffixes K, M). A copy that finds it full is counted, and its sample kept with
    /// its frame-pointer stack.
    #[arg(long = "ring-buffer-size", default_value = "8M", value_parser = parse_ring_size, value_name = "BYTES")]
    pub ring_buffer_size: u32,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Folded,
    Svg,
    Pprof,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwindMode {
    Auto,
    Fp,
    Dwarf,
}

pub fn parse_frequency(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(hz) if (1..=MAX_FREQUENCY).contains(&hz) => Ok(hz),
        _ => Err(format!(
            "{text:?} is not a sampling frequency (1 to {MAX_FREQUENCY} Hz)"
        )),
    }
}

/// A duration (units.rs) that is not zero: an empty profile is a mistake.
fn parse_profile_duration(text: &str) -> Result<Duration, String> {
    match crate::common::units::parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?}: a profile lasts longer than 0")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies() {
        assert_eq!(parse_frequency("49"), Ok(49));
        assert_eq!(parse_frequency("999"), Ok(999));
        assert!(parse_frequency("0").is_err());
        assert!(parse_frequency("1000").is_err());
        assert!(parse_frequency("-1").is_err());
        assert!(parse_frequency("fast").is_err());
        assert!(parse_profile_duration("0s").is_err());
        assert_eq!(parse_profile_duration("2s"), Ok(Duration::from_secs(2)));
    }
}
