//! Text any local user can choose (a process name, a path) printed by root's ksight: on a
//! terminal no control byte gets through, JSON stays valid and round-trips, and /metrics
//! stays clean for promtool, all in one unambiguous escaped form. Host only: nothing here
//! depends on the kernel (scripts/vmtest leaves this binary out of the kernel matrix).

#[macro_use]
mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// ESC [8m (hide what follows), BEL, CR, newline, quote, a literal `\x41`, and 0xff.
const HOSTILE: &[u8] = b"\x1b[8m\x07\r\n\"\\x41\xff";
/// The same bytes in the printable form: `\` doubled, controls and non-UTF-8 as `\xNN`.
const PRINTABLE: &str = "\\x1b[8m\\x07\\x0d\\x0a\"\\\\x41\\xff";
const PATH: &[u8] = b"/nonexistent-ksight/\x1b[2J\x07\\x41\xff";

/// A child that waits for the go, names itself `name`, fails to open PATH and exits 3.
struct Victim {
    pid: i32,
    go: File,
}

fn victim(name: &[u8]) -> Victim {
    let mut fds = [0; 2];
    // SAFETY: pipe fills the two fds we pass.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut name = name.to_vec();
    name.push(0);
    let mut path = PATH.to_vec();
    path.push(0);
    // SAFETY: fork; the child makes raw syscalls only (async-signal-safe) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let mut byte = 0u8;
        // SAFETY: raw syscalls on our own fds and NUL-terminated buffers.
        unsafe {
            libc::close(fds[1]);
            libc::read(fds[0], (&mut byte as *mut u8).cast(), 1);
            libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
            libc::open(path.as_ptr().cast(), libc::O_RDONLY);
            libc::_exit(3);
        }
    }
    // SAFETY: the read end is the child's; the write end is ours alone from here.
    let go = unsafe {
        libc::close(fds[0]);
        File::from_raw_fd(fds[1])
    };
    Victim { pid, go }
}

impl Victim {
    fn release(mut self) -> i32 {
        self.go.write_all(b"g").expect("release the victim");
        wait(self.pid)
    }
}

/// `ksight trace open,exit` of the victim `pid`, for its two events, with `extra` flags.
fn trace_victim(pid: i32, extra: &[&str]) -> Command {
    let mut command = Command::new(KSIGHT);
    command
        .args([
            "trace",
            "open,exit",
            "--pid",
            &pid.to_string(),
            "--count",
            "2",
        ])
        .args(extra)
        .args(["--log", "warn"]);
    command
}

/// A pseudo-terminal: (master, slave).
fn pty() -> (File, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills the two fds; null name, termios and winsize are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both fds were just opened and are owned by nobody else.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

fn wait_for(what: &str, deadline: Instant, mut done: impl FnMut() -> bool) {
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_hostile_name_reaches_the_terminal_escaped() {
    require_root!();
    let v = victim(HOSTILE);
    let (mut master, slave) = pty();
    let mut tracer = trace_victim(v.pid, &["--color", "never"])
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ksight trace");
    let screen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let screen = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // The read fails (EIO) once ksight, the last holder of the slave, has exited.
            while let Ok(n @ 1..) = master.read(&mut buf) {
                screen.lock().expect("screen").extend_from_slice(&buf[..n]);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = |text: &str| {
        let screen = screen.lock().expect("screen");
        String::from_utf8_lossy(&screen).contains(text)
    };
    wait_for("the header", deadline, || seen("COMM"));
    assert_eq!(v.release() >> 8, 3, "the victim's exit status");
    wait_for("ksight to exit", deadline, || {
        tracer.try_wait().expect("wait").is_some()
    });
    reader.join().expect("reader");
    let screen = screen.lock().expect("screen").clone();
    let text = String::from_utf8_lossy(&screen);
    for (i, b) in screen.iter().enumerate() {
        let control = *b < 0x20 && *b != b'\r' && *b != b'\n' || *b == 0x7f;
        assert!(
            !control,
            "raw control byte {b:#04x} at {i} reached the terminal: {text}"
        );
    }
    assert!(
        !text.contains('\u{9b}'),
        "a C1 CSI reached the terminal: {text}"
    );
    assert!(
        text.contains(PRINTABLE),
        "the comm is not in its printable form: {text}"
    );
    let path = "/nonexistent-ksight/\\x1b[2J\\x07\\\\x41\\xff";
    assert!(
        text.contains(path),
        "the path is not in its printable form: {text}"
    );
}

/// The bytes behind the lossless form JSON carries (`\\` and `\xNN`; controls as such).
fn unescape(text: &str) -> Vec<u8> {
    let (mut out, mut rest) = (Vec::new(), text.as_bytes());
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match (b, rest) {
            (b'\\', [b'\\', tail @ ..]) => {
                out.push(b'\\');
                rest = tail;
            }
            (b'\\', [b'x', hi, lo, tail @ ..]) => {
                let hex = String::from_utf8(vec![*hi, *lo]).expect("hex digits");
                out.push(u8::from_str_radix(&hex, 16).expect("hex"));
                rest = tail;
            }
            (b, _) => out.push(b),
        }
    }
    out
}

#[test]
fn a_hostile_name_in_json_parses_and_round_trips() {
    require_root!();
    let v = victim(HOSTILE);
    let mut tracer = trace_victim(v.pid, &["--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ksight trace");
    let mut stdout = tracer.stdout.take().expect("stdout");
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).expect("read") == 1 && byte[0] != b'\n' {
        first.push(byte[0]); // the start record: attached
    }
    assert!(String::from_utf8_lossy(&first).contains("\"start\""));
    assert_eq!(v.release() >> 8, 3);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read");
    assert!(tracer.wait().expect("wait").success());
    let records: Vec<serde_json::Value> = rest
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let events: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["type"] == "open" || r["type"] == "exit")
        .collect();
    assert_eq!(events.len(), 2, "{rest}");
    for e in events {
        let comm = e["comm"].as_str().expect("comm");
        assert_eq!(unescape(comm), HOSTILE, "comm {comm:?}");
        if e["type"] == "open" {
            let path = e["path"].as_str().expect("path");
            assert_eq!(unescape(path), PATH, "path {path:?}");
        }
    }
}

#[test]
fn a_hostile_name_in_metrics_is_clean_for_promtool() {
    require_root!();
    let server = Server::start(&["--collectors", "process"]);
    // Its own name: the other tests' victims (HOSTILE) may exit while this server counts.
    let mut name = b"M".to_vec();
    name.extend_from_slice(HOSTILE);
    assert_eq!(victim(&name).release() >> 8, 3);
    let (_, body) = http_get(server.port, "/metrics", None).expect("scrape");
    // The printable form, then the exposition's own escapes of `\` and `"`.
    let label = format!("M{PRINTABLE}")
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let line = format!("ksight_process_exits_total{{comm=\"{label}\"}} 1");
    assert!(body.contains(&line), "no line {line:?} in:\n{body}");
    assert!(
        body.bytes().all(|b| b >= 0x20 || b == b'\n'),
        "a control byte in /metrics"
    );
    assert_promtool_clean(&body);
}

#[test]
fn a_hostile_flag_value_is_named_escaped_in_one_line() {
    // Not a terminal, so clap itself drops ANSI sequences and most C0 bytes; a carriage
    // return stays, and would let the value overwrite the start of the line.
    let out = Command::new(KSIGHT)
        .args(["profile", "--format", "svg\r\x07\x08fake"])
        .output()
        .expect("run ksight");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains("svg\\x0d"), "{stderr:?}");
    assert!(
        !stderr.chars().any(|c| c.is_control() && c != '\n'),
        "a control byte reached stderr: {stderr:?}"
    );
}

#[test]
fn a_report_whose_reader_went_away_ends_without_a_panic() {
    require_root!();
    // `ksight doctor | head -1`: the reader closes after one line; ksight must end by
    // SIGPIPE (as other tools do) or quietly, never with a panic about a broken pipe.
    let mut child = Command::new(KSIGHT)
        .arg("doctor")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ksight doctor");
    drop(child.stdout.take());
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).expect("stderr");
    }
    let status = child.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{status}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
