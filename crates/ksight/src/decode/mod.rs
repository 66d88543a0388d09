//! Names for the numbers the kernel hands over (syscalls of x86_64 or aarch64, errnos, signals, TCP
//! states, block operations), and the one rule for text from outside (`lossless`,
//! `printable`): the only decoder of the bytes the kernel copies. [`labels`] turns map keys
//! into label values through decoder chains (ebpf_exporter's v2 schema), with what they look
//! up on the host in [`lookup`], [`kallsyms`] and [`pci`].

pub mod kallsyms;
pub mod labels;
pub mod lookup;
pub mod pci;
mod tables;

use std::borrow::Cow;

/// The syscall's name, or `sys_<nr>` for a number this table does not know.
pub fn syscall(nr: u32) -> Cow<'static, str> {
    match syscall_name(nr) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("sys_{nr}")),
    }
}

/// The name of syscall `nr` on this architecture, if it has one.
pub fn syscall_name(nr: u32) -> Option<&'static str> {
    let i = tables::SYSCALLS
        .binary_search_by_key(&nr, |&(n, _)| n)
        .ok()?;
    Some(tables::SYSCALLS[i].1)
}

/// The errno's symbolic name, or `E<value>` for a value without one.
pub fn errno(value: u32) -> Cow<'static, str> {
    match errno_name(value) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("E{value}")),
    }
}

/// The symbolic name of errno `value`, if it has one.
pub fn errno_name(value: u32) -> Option<&'static str> {
    let i = tables::ERRNOS
        .binary_search_by_key(&value, |&(n, _)| n)
        .ok()?;
    Some(tables::ERRNOS[i].1)
}

const SIGNALS: [&str; 32] = [
    "0",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// The signal's name; real-time signals as `SIGRTMIN+n` (SIGRTMIN is 32 in the kernel).
pub fn signal(number: u32) -> Cow<'static, str> {
    match number {
        n if (n as usize) < SIGNALS.len() => Cow::Borrowed(SIGNALS[n as usize]),
        32 => Cow::Borrowed("SIGRTMIN"),
        n if n <= 64 => Cow::Owned(format!("SIGRTMIN+{}", n - 32)),
        n => Cow::Owned(format!("SIG{n}")),
    }
}

/// TCP states as the kernel's `tcp_states.h` names them (without `TCP_`).
const TCP_STATES: [&str; 14] = [
    "0",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
    "BOUND_INACTIVE",
];

pub fn tcp_state(number: u32) -> Cow<'static, str> {
    match TCP_STATES.get(number as usize) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(number.to_string()),
    }
}

/// Block request operations (`REQ_OP_*` in blk_types.h), lower case.
pub fn block_op(op: u32) -> Cow<'static, str> {
    Cow::Borrowed(match op {
        0 => "read",
        1 => "write",
        2 => "flush",
        3 => "discard",
        5 => "secure_erase",
        7 => "zone_append",
        9 => "write_zeroes",
        10 => "zone_open",
        11 => "zone_close",
        12 => "zone_finish",
        13 => "zone_reset",
        15 => "zone_reset_all",
        34 => "drv_in",
        35 => "drv_out",
        n => return Cow::Owned(format!("op{n}")),
    })
}

/// The label of counts that did not fit or went idle: 17 bytes, so no comm (<= 15) can be it.
pub const OVERFLOW_COMM: &str = "(other processes)";

/// A table key's comm label: the comm, or the overflow series.
pub fn comm_or_overflow(raw: &[ksight_bpf::abi::AbiChar], overflow: u8) -> String {
    if overflow != 0 {
        return OVERFLOW_COMM.to_string();
    }
    comm(c_bytes(raw))
}

/// The bytes of a C char array (the generated ABI types hold `AbiChar`).
pub fn c_bytes(raw: &[ksight_bpf::abi::AbiChar]) -> &[u8] {
    // SAFETY: AbiChar (i8) and u8 have the same size and alignment; the slice stays borrowed.
    unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len()) }
}

/// A NUL-terminated string the kernel filled (comm, path, argument), decoded by `lossless`.
pub fn c_str(raw: &[ksight_bpf::abi::AbiChar]) -> String {
    lossless(until_nul(c_bytes(raw)))
}

/// A kernel comm (NUL-terminated, <= 16 bytes) as a label value, in the printable form.
pub fn comm(raw: &[u8]) -> String {
    printable(until_nul(raw))
}

fn until_nul(raw: &[u8]) -> &[u8] {
    raw.split(|&b| b == 0).next().unwrap_or_default()
}

/// Text from outside (a comm, path, argument, cgroup name: anyone can choose it) as a string
/// that keeps every byte apart: `\` becomes `\\` and a byte that is not UTF-8 `\xNN`, so
/// two different inputs never read the same and the bytes can be recovered (`unescape`).
/// Control characters are kept: JSON escapes them its own way; everything printed as text
/// goes through `escape_controls` too.
pub fn lossless(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The one rule for outside text wherever ksight prints it (trace columns, labels, doctor,
/// logs): `lossless`, and every control character (C0, DEL, C1) as `\xNN` of its UTF-8
/// bytes, so nothing printed can move a cursor, ring a bell or end a line.
pub fn printable(raw: &[u8]) -> String {
    escape_controls(&lossless(raw)).into_owned()
}

/// A `lossless` string with its control characters written `\xNN` (the printable form).
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The bytes behind a `lossless` or `printable` string (`None` if it is neither).
#[cfg(test)]
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match rest {
            [b'\\', tail @ ..] => {
                out.push(b'\\');
                rest = tail;
            }
            [b'x', hi, lo, tail @ ..] => {
                let hex = std::str::from_utf8(&[*hi, *lo]).ok()?.to_owned();
                out.push(u8::from_str_radix(&hex, 16).ok()?);
                rest = tail;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The one rule: every input round-trips, and nothing printable holds a control.
        #[test]
        fn outside_text_round_trips(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let shown = printable(&raw);
            proptest::prop_assert!(!shown.chars().any(char::is_control), "{:?}", shown);
            proptest::prop_assert_eq!(unescape(&shown), Some(raw.clone()));
            proptest::prop_assert_eq!(unescape(&lossless(&raw)), Some(raw));
        }

        #[test]
        fn distinct_inputs_print_differently(
            a in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
            b in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
        ) {
            if a != b {
                proptest::prop_assert_ne!(printable(&a), printable(&b));
            }
        }
    }

    #[test]
    fn comm_labels() {
        assert_eq!(comm(b"bash\0\0\0"), "bash");
        assert_eq!(comm(b"0123456789abcde\0"), "0123456789abcde");
        assert_eq!(comm(b"a\xffb\0"), "a\\xffb");
        assert!(OVERFLOW_COMM.len() > 15);
    }

    #[test]
    fn one_unambiguous_printable_form() {
        // A literal backslash-x and the byte it would name no longer read the same.
        assert_eq!(printable(b"\\x41"), "\\\\x41");
        assert_eq!(printable(b"A"), "A");
        assert_eq!(printable(b"ev\x1b[8mil\x07"), "ev\\x1b[8mil\\x07");
        assert_eq!(printable(b"a\r\nb\t\x7f"), "a\\x0d\\x0ab\\x09\\x7f");
        assert_eq!(printable("\u{9b}".as_bytes()), "\\xc2\\x9b", "C1 CSI");
        assert_eq!(printable(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(printable("é✓".as_bytes()), "é✓");
        // JSON keeps controls for its own escapes, everything else as printable.
        assert_eq!(lossless(b"a\x1b\\\xff"), "a\x1b\\\\\\xff");
    }

    #[test]
    fn printed_forms_round_trip() {
        for raw in [
            &b"plain"[..],
            b"\\x41",
            b"ev\x1b[8mil\x07",
            b"\xff\\\x00\xc2",
            "\u{9b}é".as_bytes(),
        ] {
            assert_eq!(unescape(&printable(raw)).as_deref(), Some(raw));
            assert_eq!(unescape(&lossless(raw)).as_deref(), Some(raw));
        }
        assert_eq!(unescape("bad\\q"), None);
        assert_eq!(unescape("short\\x4"), None);
    }

    #[test]
    fn tables_are_sorted_for_binary_search() {
        for table in [
            tables::X86_64_SYSCALLS,
            tables::AARCH64_SYSCALLS,
            tables::ERRNOS,
        ] {
            assert!(table.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }

    #[test]
    fn syscall_names_follow_the_architecture() {
        // libc's numbers are the target's: the same names must come back on every target.
        for (nr, name) in [
            (libc::SYS_read, "read"),
            (libc::SYS_getpid, "getpid"),
            (libc::SYS_exit, "exit"),
            (libc::SYS_getppid, "getppid"),
            (libc::SYS_exit_group, "exit_group"),
            (libc::SYS_openat, "openat"),
            (libc::SYS_openat2, "openat2"),
            (libc::SYS_execve, "execve"),
        ] {
            assert_eq!(syscall(nr as u32), name);
        }
        assert_eq!(syscall(462), "mseal"); // numbers from 424 on are every architecture's
        assert_eq!(syscall(500), "sys_500");
    }

    #[test]
    fn both_architectures_tables() {
        let name = |table: &[(u32, &'static str)], nr: u32| {
            table.iter().find(|&&(n, _)| n == nr).map(|&(_, name)| name)
        };
        assert_eq!(name(tables::X86_64_SYSCALLS, 257), Some("openat"));
        assert_eq!(name(tables::X86_64_SYSCALLS, 2), Some("open"));
        assert_eq!(name(tables::AARCH64_SYSCALLS, 56), Some("openat"));
        assert_eq!(name(tables::AARCH64_SYSCALLS, 25), Some("fcntl")); // __NR3264_fcntl
        assert_eq!(name(tables::AARCH64_SYSCALLS, 221), Some("execve"));
        assert_eq!(name(tables::AARCH64_SYSCALLS, 94), Some("exit_group"));
        assert!(tables::AARCH64_SYSCALLS.iter().all(|&(_, n)| n != "open"));
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno(1), "EPERM");
        assert_eq!(errno(2), "ENOENT");
        assert_eq!(errno(11), "EAGAIN");
        assert_eq!(errno(35), "EDEADLK");
        assert_eq!(errno(133), "EHWPOISON");
        assert_eq!(errno(512), "ERESTARTSYS");
        assert_eq!(errno(4000), "E4000");
    }

    #[test]
    fn tcp_and_block_names() {
        assert_eq!(tcp_state(1), "ESTABLISHED");
        assert_eq!(tcp_state(7), "CLOSE");
        assert_eq!(tcp_state(10), "LISTEN");
        assert_eq!(tcp_state(99), "99");
        assert_eq!(block_op(0), "read");
        assert_eq!(block_op(1), "write");
        assert_eq!(block_op(63), "op63");
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal(9), "SIGKILL");
        assert_eq!(signal(15), "SIGTERM");
        assert_eq!(signal(31), "SIGSYS");
        assert_eq!(signal(32), "SIGRTMIN");
        assert_eq!(signal(34), "SIGRTMIN+2");
    }
}
