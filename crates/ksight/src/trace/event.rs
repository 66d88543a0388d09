//! One ring-buffer record, read with `plain` from the ABI structs of `abi.h`, and its two
//! renderings: a line of aligned columns and a JSON object (the schema in docs/trace.md).

use std::borrow::Cow;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};

use ksight_bpf::abi::{
    ks_af, ks_ev_exec, ks_ev_exit, ks_ev_fork, ks_ev_hdr, ks_ev_open, ks_ev_readline, ks_ev_signal,
    ks_ev_tcp, ks_sizes, ks_tcp_what,
};
use serde::Serialize;

use super::Kind;
use crate::common::clock::Clock;
use crate::decode;

/// Fields every event has: who did it, and when.
#[derive(Serialize, Debug)]
pub struct Common {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// The 64-hex id of the container whose cgroup the process is in (set by the reader
    /// from `cgroup_id`); None outside containers.
    pub container: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    Exec {
        #[serde(flatten)]
        common: Common,
        ppid: u32,
        filename: String,
        argv: Vec<String>,
        argv_truncated: bool,
        ret: i32,
        error: Option<Cow<'static, str>>,
    },
    Open {
        #[serde(flatten)]
        common: Common,
        syscall: Cow<'static, str>,
        path: String,
        flags: u64,
        flags_text: String,
        ret: i64,
        fd: Option<i64>,
        error: Option<Cow<'static, str>>,
    },
    Fork {
        #[serde(flatten)]
        common: Common,
        child_pid: u32,
    },
    Exit {
        #[serde(flatten)]
        common: Common,
        ppid: u32,
        exit_code: Option<u32>,
        signal: Option<Cow<'static, str>>,
        core_dumped: bool,
        lifetime_ns: u64,
    },
    Signal {
        #[serde(flatten)]
        common: Common,
        signal: Cow<'static, str>,
        signal_number: i32,
        target_pid: u32,
        target_tid: u32,
        target_comm: String,
        result: &'static str,
    },
    Tcp {
        #[serde(flatten)]
        common: Common,
        event: &'static str,
        failed: bool,
        family: &'static str,
        saddr: String,
        sport: u16,
        daddr: String,
        dport: u16,
        oldstate: Cow<'static, str>,
        newstate: Cow<'static, str>,
        duration_ns: Option<u64>,
    },
    Readline {
        #[serde(flatten)]
        common: Common,
        /// The line without its newline, `lossless` (JSON escapes control characters).
        line: String,
        /// Longer than the kernel copies (KS_LINE_LEN - 1 bytes): `line` is its start.
        truncated: bool,
        /// The returned line could not be read from the process's memory.
        unreadable: bool,
        /// Time spent in readline() (the prompt waiting); None when its entry was not seen.
        wait_ns: Option<u64>,
    },
}

/// HH:MM:SS of a Unix time, in local time.
pub fn local_hms(secs: i64) -> String {
    // SAFETY: localtime_r fills the zeroed tm we own; time_t is i64 on x86_64.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

fn read<T: plain::Plain + Default>(data: &[u8]) -> Option<T> {
    let mut v = T::default();
    plain::copy_from_bytes(&mut v, data).ok()?;
    Some(v)
}

/// The kind of a record, from its header.
pub fn kind_of(data: &[u8]) -> Option<Kind> {
    let h: ks_ev_hdr = read(data)?;
    Kind::from_index(h.kind)
}

/// The process of a record, from its header.
pub fn pid_of(data: &[u8]) -> Option<u32> {
    read::<ks_ev_hdr>(data).map(|h| h.pid)
}

/// Decodes a record; None for a short or unknown one.
pub fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    match kind_of(data)? {
        Kind::Exec => read::<ks_ev_exec>(data).map(|e| exec(&e, clock)),
        Kind::Open => read::<ks_ev_open>(data).map(|e| open(&e, clock)),
        Kind::Fork => read::<ks_ev_fork>(data).map(|e| fork(&e, clock)),
        Kind::Exit => read::<ks_ev_exit>(data).map(|e| exit(&e, clock)),
        Kind::Signal => read::<ks_ev_signal>(data).map(|e| signal(&e, clock)),
        Kind::Tcp => read::<ks_ev_tcp>(data).map(|e| tcp(&e, clock)),
        Kind::Readline => read::<ks_ev_readline>(data).map(|e| readline(&e, clock)),
        Kind::Syscalls => None,
    }
}

fn common(h: &ks_ev_hdr, clock: &Clock) -> Common {
    Common {
        time_ns: clock.wall(h.ts_ns),
        pid: h.pid,
        tid: h.tid,
        uid: h.uid,
        comm: decode::c_str(&h.comm),
        cgroup_id: h.cgroup,
        container: None,
    }
}

fn error_of(ret: i64) -> Option<Cow<'static, str>> {
    (-(ks_sizes::KS_MAX_ERRNO.0 as i64)..0)
        .contains(&ret)
        .then(|| decode::errno((-ret) as u32))
}

/// At most this many arguments are shown (the kernel reads at most KS_ARGS_LEN bytes).
pub const MAX_ARGS: usize = 8;

fn exec(e: &ks_ev_exec, clock: &Clock) -> Event {
    let len = (e.args_len as usize).min(e.args.len());
    let raw = &decode::c_bytes(&e.args)[..len];
    let mut argv: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(decode::lossless)
        .collect();
    // The last argument may be cut by the byte bound: it is then incomplete.
    let mut truncated = e.args_size > e.args_len || argv.len() > MAX_ARGS;
    if raw.last().is_some_and(|&b| b != 0) {
        truncated = true;
    }
    argv.truncate(MAX_ARGS);
    Event::Exec {
        common: common(&e.h, clock),
        ppid: e.ppid,
        filename: decode::c_str(&e.filename),
        argv,
        argv_truncated: truncated,
        ret: e.ret,
        error: error_of(e.ret as i64),
    }
}

fn open(e: &ks_ev_open, clock: &Clock) -> Event {
    let error = error_of(e.ret);
    Event::Open {
        common: common(&e.h, clock),
        syscall: decode::syscall(e.nr),
        path: decode::c_str(&e.path),
        flags: e.flags,
        flags_text: open_flags(e.flags),
        ret: e.ret,
        fd: error.is_none().then_some(e.ret),
        error,
    }
}

fn fork(e: &ks_ev_fork, clock: &Clock) -> Event {
    Event::Fork {
        common: common(&e.h, clock),
        child_pid: e.child_pid,
    }
}

fn exit(e: &ks_ev_exit, clock: &Clock) -> Event {
    let sig = e.code & 0x7f;
    Event::Exit {
        common: common(&e.h, clock),
        ppid: e.ppid,
        exit_code: (sig == 0).then_some((e.code >> 8) & 0xff),
        signal: (sig != 0).then(|| decode::signal(sig)),
        core_dumped: sig != 0 && e.code & 0x80 != 0,
        lifetime_ns: e.lifetime_ns,
    }
}

/// TRACE_SIGNAL_* of include/trace/events/signal.h.
fn signal_result(result: i32) -> &'static str {
    match result {
        0 => "delivered",
        1 => "ignored",
        2 => "already_pending",
        3 => "overflow_fail",
        4 => "lose_info",
        _ => "unknown",
    }
}

fn signal(e: &ks_ev_signal, clock: &Clock) -> Event {
    Event::Signal {
        common: common(&e.h, clock),
        signal: decode::signal(e.sig.max(0) as u32),
        signal_number: e.sig,
        target_pid: e.target_pid,
        target_tid: e.target_tid,
        target_comm: decode::c_str(&e.target_comm),
        result: signal_result(e.result),
    }
}

const AF_INET6: u16 = ks_af::KS_AF_INET6.0 as u16;

fn address(family: u16, raw: &[u8; 16]) -> String {
    if family == AF_INET6 {
        Ipv6Addr::from(*raw).to_string()
    } else {
        Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string()
    }
}

fn tcp(e: &ks_ev_tcp, clock: &Clock) -> Event {
    let event = match ks_tcp_what(e.what as u32) {
        ks_tcp_what::KS_TCP_CONNECT => "connect",
        ks_tcp_what::KS_TCP_ACCEPT => "accept",
        ks_tcp_what::KS_TCP_CLOSE => "close",
        _ => "unknown",
    };
    Event::Tcp {
        common: common(&e.h, clock),
        event,
        failed: e.failed != 0,
        family: if e.family == AF_INET6 { "ipv6" } else { "ipv4" },
        saddr: address(e.family, &e.saddr),
        sport: e.sport,
        daddr: address(e.family, &e.daddr),
        dport: e.dport,
        oldstate: decode::tcp_state(e.oldstate as u32),
        newstate: decode::tcp_state(e.newstate as u32),
        duration_ns: (event == "close" && e.duration_ns > 0).then_some(e.duration_ns),
    }
}

fn readline(e: &ks_ev_readline, clock: &Clock) -> Event {
    let len = (e.len as usize).min(e.line.len());
    Event::Readline {
        common: common(&e.h, clock),
        line: decode::lossless(&decode::c_bytes(&e.line)[..len]),
        truncated: e.truncated != 0,
        unreadable: e.unreadable != 0,
        wait_ns: (e.wait_ns > 0).then_some(e.wait_ns),
    }
}

/// O_LARGEFILE as the kernel sets it on every 64-bit open (libc's is 0 there).
#[cfg(target_arch = "x86_64")]
const KERNEL_O_LARGEFILE: u64 = 0o100000;
#[cfg(target_arch = "aarch64")]
const KERNEL_O_LARGEFILE: u64 = 0o400000;

/// O_* flags (the target's values: arm64 places O_DIRECT and O_DIRECTORY elsewhere) as
/// `O_RDONLY|O_CLOEXEC`.
pub fn open_flags(flags: u64) -> String {
    const fn bits(flag: libc::c_int) -> u64 {
        flag as u32 as u64
    }
    const NAMES: [(u64, &str); 14] = [
        (bits(libc::O_CREAT), "O_CREAT"),
        (bits(libc::O_EXCL), "O_EXCL"),
        (bits(libc::O_NOCTTY), "O_NOCTTY"),
        (bits(libc::O_TRUNC), "O_TRUNC"),
        (bits(libc::O_APPEND), "O_APPEND"),
        (bits(libc::O_NONBLOCK), "O_NONBLOCK"),
        (bits(libc::O_DSYNC), "O_DSYNC"),
        (bits(libc::O_DIRECT), "O_DIRECT"),
        (bits(libc::O_DIRECTORY), "O_DIRECTORY"),
        (bits(libc::O_NOFOLLOW), "O_NOFOLLOW"),
        (bits(libc::O_NOATIME), "O_NOATIME"),
        (bits(libc::O_CLOEXEC), "O_CLOEXEC"),
        (bits(libc::O_SYNC), "O_SYNC"),
        (bits(libc::O_PATH), "O_PATH"),
    ];
    let mut out = String::from(match flags & 3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    });
    let mut rest = flags & !3 & !KERNEL_O_LARGEFILE; // implied on 64-bit
    for (bit, name) in NAMES.iter().rev() {
        if rest & bit == *bit {
            out.push('|');
            out.push_str(name);
            rest &= !bit;
        }
    }
    if rest != 0 {
        out.push_str(&format!("|0{rest:o}"));
    }
    out
}

/// The text columns: EVENT, RESULT and DETAIL follow TIME, PID, UID, COMM.
pub const HEADER: &str =
    "TIME            EVENT    PID      UID    COMM             RESULT         DETAIL";

/// The `common` field of any event, by reference or mutable reference as `$event` is.
macro_rules! common_of {
    ($event:expr) => {
        match $event {
            Event::Exec { common, .. }
            | Event::Open { common, .. }
            | Event::Fork { common, .. }
            | Event::Exit { common, .. }
            | Event::Signal { common, .. }
            | Event::Tcp { common, .. }
            | Event::Readline { common, .. } => common,
        }
    };
}

impl Event {
    pub fn common(&self) -> &Common {
        common_of!(self)
    }

    pub fn common_mut(&mut self) -> &mut Common {
        common_of!(self)
    }

    fn name(&self) -> &'static str {
        match self {
            Event::Exec { .. } => "exec",
            Event::Open { .. } => "open",
            Event::Fork { .. } => "fork",
            Event::Exit { .. } => "exit",
            Event::Signal { .. } => "signal",
            Event::Tcp { .. } => "tcp",
            Event::Readline { .. } => "readline",
        }
    }

    /// Whether the RESULT column says something went wrong (shown in red on a terminal).
    fn failed(&self) -> bool {
        match self {
            Event::Exec { error, .. } | Event::Open { error, .. } => error.is_some(),
            Event::Exit {
                exit_code, signal, ..
            } => signal.is_some() || exit_code.is_some_and(|c| c != 0),
            Event::Signal { result, .. } => !matches!(*result, "delivered" | "lose_info"),
            Event::Tcp { failed, .. } => *failed,
            Event::Readline { unreadable, .. } => *unreadable,
            Event::Fork { .. } => false,
        }
    }

    fn result(&self) -> String {
        match self {
            Event::Exec { error, ret, .. } => {
                error.as_deref().map_or(ret.to_string(), str::to_string)
            }
            Event::Open { error, fd, .. } => match (error, fd) {
                (Some(e), _) => e.to_string(),
                (None, Some(fd)) => format!("fd={fd}"),
                _ => String::new(),
            },
            Event::Fork { child_pid, .. } => format!("child={child_pid}"),
            Event::Exit {
                exit_code,
                signal,
                core_dumped,
                ..
            } => match (signal, exit_code) {
                (Some(s), _) if *core_dumped => format!("{s}(core)"),
                (Some(s), _) => s.to_string(),
                (None, Some(c)) => format!("code={c}"),
                _ => String::new(),
            },
            Event::Signal { result, .. } => result.to_string(),
            Event::Tcp { event, failed, .. } => {
                format!("{event}{}", if *failed { " failed" } else { "" })
            }
            Event::Readline {
                unreadable,
                truncated,
                ..
            } => match (unreadable, truncated) {
                (true, _) => "unreadable".into(),
                (false, true) => "truncated".into(),
                _ => String::new(),
            },
        }
    }

    fn detail(&self) -> String {
        match self {
            Event::Exec {
                ppid,
                filename,
                argv,
                argv_truncated,
                ..
            } => format!(
                "ppid={ppid} {filename} {}{}",
                argv.join(" "),
                if *argv_truncated { " ..." } else { "" }
            ),
            Event::Open {
                path, flags_text, ..
            } => format!("{path} {flags_text}"),
            Event::Fork { .. } => String::new(),
            Event::Exit {
                ppid, lifetime_ns, ..
            } => format!("ppid={ppid} lifetime={}", seconds(*lifetime_ns)),
            Event::Signal {
                signal,
                target_pid,
                target_comm,
                ..
            } => format!("{signal} -> {target_pid} ({target_comm})"),
            Event::Tcp {
                saddr,
                sport,
                daddr,
                dport,
                oldstate,
                newstate,
                duration_ns,
                family,
                ..
            } => {
                let (l, r) = if *family == "ipv6" {
                    (format!("[{saddr}]:{sport}"), format!("[{daddr}]:{dport}"))
                } else {
                    (format!("{saddr}:{sport}"), format!("{daddr}:{dport}"))
                };
                let took = duration_ns.map_or(String::new(), |d| format!(" {}", seconds(d)));
                format!("{l} -> {r} {oldstate}->{newstate}{took}")
            }
            Event::Readline {
                line, truncated, ..
            } => format!("{line}{}", if *truncated { " ..." } else { "" }),
        }
    }

    /// One line of aligned columns; `time` is the TIME column, `color` adds ANSI colours.
    pub fn write_text(&self, out: &mut impl Write, time: &str, color: bool) -> io::Result<()> {
        let c = self.common();
        let (on, red, off) = if color {
            (kind_color(self.name()), "\x1b[31m", "\x1b[0m")
        } else {
            ("", "", "")
        };
        let result = self.result();
        let (ron, roff) = if color && self.failed() {
            (red, off)
        } else {
            ("", "")
        };
        writeln!(
            out,
            "{time:<15} {on}{:<8}{off} {:<8} {:<6} {:<16} {ron}{:<14}{roff} {}",
            self.name(),
            c.pid,
            c.uid,
            decode::escape_controls(&c.comm),
            result,
            decode::escape_controls(&self.detail())
        )
    }
}

fn kind_color(name: &str) -> &'static str {
    match name {
        "exec" => "\x1b[32m",
        "open" => "\x1b[36m",
        "fork" | "exit" => "\x1b[33m",
        "signal" => "\x1b[35m",
        _ => "\x1b[34m",
    }
}

/// A duration as `1.234567s` or `12.345ms`.
pub fn seconds(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.6}s", ns as f64 / 1e9)
    } else {
        format!("{:.3}ms", ns as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any bytes read from the ring buffer: a record or None, never a panic.
        #[test]
        fn arbitrary_ring_records(data in proptest::collection::vec(proptest::num::u8::ANY, 0..700)) {
            let _ = decode(&data, &Clock::now());
        }

        /// Every kind byte with arbitrary payloads of every record size.
        #[test]
        fn records_of_every_kind(kind in 0u32..10, fill in proptest::num::u8::ANY, len in 0usize..700) {
            let mut data = vec![fill; len];
            if data.len() >= 4 {
                // the kind is the header's first field read as u32 (abi.h)
                let at = std::mem::offset_of!(ks_ev_hdr, kind);
                if data.len() >= at + 4 {
                    data[at..at + 4].copy_from_slice(&kind.to_ne_bytes());
                }
            }
            if let Some(event) = decode(&data, &Clock::now()) {
                let mut out = Vec::new();
                proptest::prop_assert!(event.write_text(&mut out, "t", false).is_ok());
                proptest::prop_assert!(serde_json::to_string(&event).is_ok());
                proptest::prop_assert!(out.iter().all(|&b| b >= 0x20 || b == b'\n'));
            }
        }
    }

    #[test]
    fn flags() {
        // libc's values are the target's (arm64 moves O_DIRECT, O_DIRECTORY, O_LARGEFILE).
        let bits = |f: libc::c_int| f as u32 as u64;
        assert_eq!(open_flags(0), "O_RDONLY");
        assert_eq!(open_flags(bits(libc::O_CLOEXEC)), "O_RDONLY|O_CLOEXEC");
        let created = bits(libc::O_WRONLY | libc::O_TRUNC | libc::O_CREAT);
        assert_eq!(open_flags(created), "O_WRONLY|O_TRUNC|O_CREAT");
        assert_eq!(open_flags(KERNEL_O_LARGEFILE), "O_RDONLY");
        let directory = bits(libc::O_DIRECTORY | libc::O_NOFOLLOW);
        assert_eq!(open_flags(directory), "O_RDONLY|O_NOFOLLOW|O_DIRECTORY");
    }

    #[test]
    fn exit_status() {
        let clock = Clock::identity();
        let e = ks_ev_exit {
            code: 9,
            ..Default::default()
        };
        let Event::Exit {
            exit_code, signal, ..
        } = exit(&e, &clock)
        else {
            panic!("not an exit")
        };
        assert_eq!((exit_code, signal.as_deref()), (None, Some("SIGKILL")));
        let e = ks_ev_exit {
            code: 3 << 8,
            ..Default::default()
        };
        let Event::Exit { exit_code, .. } = exit(&e, &clock) else {
            panic!("not an exit")
        };
        assert_eq!(exit_code, Some(3));
    }

    #[test]
    fn argv_split_and_truncation() {
        let clock = Clock::identity();
        let mut e = ks_ev_exec::default();
        for (i, b) in b"ls\0-l\0/tmp\0".iter().enumerate() {
            e.args[i] = *b as i8;
        }
        e.args_len = 11;
        e.args_size = 11;
        let Event::Exec {
            argv,
            argv_truncated,
            ..
        } = exec(&e, &clock)
        else {
            panic!("not an exec")
        };
        assert_eq!(argv, ["ls", "-l", "/tmp"]);
        assert!(!argv_truncated);
    }

    #[test]
    fn json_has_type_and_common_fields() {
        let clock = Clock::identity();
        let e = ks_ev_fork {
            child_pid: 7,
            ..Default::default()
        };
        let v = serde_json::to_value(fork(&e, &clock)).unwrap_or_default();
        assert_eq!(v["type"], "fork");
        assert_eq!(v["child_pid"], 7);
        assert!(v["time_ns"].is_u64() && v["comm"].is_string());
    }
}
