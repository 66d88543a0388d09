//! The arguments of `ksight capture` (tcpdump's letters where tcpdump has one).

use std::time::Duration;

use clap::Args;

use crate::common::filters::{parse_comm, parse_container};

#[derive(Args, Debug)]
#[command(
    after_help = "EXPRESSION is tcpdump's filter language (pcap-filter(7)), compiled \
by libpcap and applied to each copied packet. --pid/--comm/--container are checked in the \
kernel before the copy; a packet whose process is unknown matches none of them.\n\
Each packet's process (pid, tid, comm, uid, cgroup or container) is a packet comment in the \
pcapng file; tshark shows it with -V or `-T fields -e frame.comment`."
)]
pub struct CaptureArgs {
    /// Interface to capture on, or `any`: every interface of this network namespace, and
    /// those that appear later.
    #[arg(
        short = 'i',
        long = "interface",
        default_value = "any",
        value_name = "IFACE"
    )]
    pub interface: String,

    /// Write the packets as pcapng to FILE, or `-` for stdout (a pipe: `| tshark -r -`).
    #[arg(short = 'w', long = "write", default_value = "-", value_name = "FILE")]
    pub write: String,

    /// Bytes copied from each packet at most (1 to 65535).
    #[arg(short = 's', long = "snapshot-length", default_value_t = 65535,
          value_parser = clap::value_parser!(u32).range(1..=65535), value_name = "SNAPLEN")]
    pub snaplen: u32,

    /// Stop after writing this many packets.
    #[arg(short = 'c', long = "count", value_name = "N")]
    pub count: Option<u64>,

    /// Stop after this long (e.g. 10s, 5m).
    #[arg(short = 'd', long = "duration", value_parser = crate::common::units::parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Ring buffer between kernel and ksight, in KiB (rounded up to a power of two, at
    /// least 4).
    #[arg(short = 'B', long = "buffer-size", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576), value_name = "KiB")]
    pub buffer_kib: u32,

    /// Start a new file once the current one holds this many million bytes: FILE, FILE1,
    /// FILE2, … (as tcpdump).
    #[arg(short = 'C', value_name = "MB", value_parser = clap::value_parser!(u64).range(1..))]
    pub file_size_mb: Option<u64>,

    /// Start a new file every SECONDS; FILE may hold strftime(3) conversions (%H%M%S),
    /// otherwise files are numbered as with -C.
    #[arg(short = 'G', value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub rotate_seconds: Option<u64>,

    /// Only packets of this process's sockets (thread-group id).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Only packets of sockets of processes with this name (at most 15 bytes).
    #[arg(long, value_name = "NAME", value_parser = parse_comm)]
    pub comm: Option<String>,

    /// Only packets of sockets of this container's processes (its id, or a prefix of at
    /// least 12 hex digits).
    #[arg(long, value_name = "ID", value_parser = parse_container)]
    pub container: Option<String>,

    /// What each packet's comment says of its process: short (PID, Comm, ThreadId, UserId,
    /// ContainerId; the first packet of each thread in each file also Cmd, Args and Cgroup)
    /// or full (all of them on every packet, as ptcpdump; about 2.5 times the bytes written
    /// per small packet).
    #[arg(long, default_value = "short", value_name = "HOW")]
    pub comment: CommentMode,

    /// tcpdump filter expression (several words are joined with spaces).
    #[arg(
        value_name = "EXPRESSION",
        trailing_var_arg = true,
        allow_hyphen_values = false
    )]
    pub expression: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommentMode {
    Short,
    Full,
}

impl CaptureArgs {
    /// The ring buffer size in bytes: a power of two of at least a page.
    pub fn ring_bytes(&self) -> u32 {
        (u64::from(self.buffer_kib) * 1024)
            .next_power_of_two()
            .clamp(crate::common::kernel::page_size(), 1 << 30) as u32
    }

    /// The filter expression, or None when there is none.
    pub fn filter(&self) -> Option<String> {
        let text = self.expression.join(" ");
        (!text.trim().is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CaptureArgs,
    }

    fn parse(argv: &[&str]) -> Result<CaptureArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("capture").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn tcpdump_letters_and_expression() {
        let a = parse(&[
            "-i", "eth0", "-w", "x.pcapng", "-c", "5", "udp", "and", "port", "53",
        ])
        .expect("parses");
        assert_eq!(a.interface, "eth0");
        assert_eq!(a.count, Some(5));
        assert_eq!(a.filter().as_deref(), Some("udp and port 53"));
        assert!(parse(&["-s", "0"]).is_err());
        assert!(parse(&["-s", "65536"]).is_err());
    }

    #[test]
    fn buffer_rounds_up_to_a_power_of_two() {
        let a = parse(&["-B", "3"]).expect("parses");
        // 3 KiB: one page (4 KiB on x86_64, more on some arm64 kernels)
        assert_eq!(
            u64::from(a.ring_bytes()),
            crate::common::kernel::page_size()
        );
        let a = parse(&["-B", "100"]).expect("parses");
        assert_eq!(a.ring_bytes(), 128 * 1024);
    }
}
