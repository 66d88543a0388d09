//! `ksight trace`, end to end: the real binary with `--json` and filters, workloads in
//! children with unique names, exact counts. The tracer is stopped with SIGINT after the
//! workload has finished: it then drains the ring buffer, so every event the workload
//! generated has been delivered or counted as lost by the time it exits.
//! Bad-input tests at the end need no root.

#[macro_use]
mod common;

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::tracer::*;
use common::*;
use serde_json::Value;

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn my_pid() -> u64 {
    std::process::id() as u64
}

#[test]
fn exec_reports_each_exec_with_filename_ppid_and_argv() {
    require_root!();
    let name = unique_comm("exec");
    let bin = copy_named("/bin/true", &name);
    let path = bin.to_string_lossy().to_string();
    let tracer = Tracer::start(&["exec", "--comm", &name]);
    const N: usize = 5;
    for i in 0..N {
        let status = Command::new(&bin)
            .args(["first", &format!("arg {i}")])
            .status()
            .expect("run the copy");
        assert!(status.success());
    }
    let out = tracer.finish();
    let execs = out.of_type("exec");
    assert_eq!(execs.len(), N, "exec events: {:?}", out.records);
    for (i, e) in execs.iter().enumerate() {
        assert_eq!(e["filename"], path.as_str());
        assert_eq!(e["comm"], name.as_str());
        assert_eq!(e["ppid"], my_pid());
        assert_eq!(e["ret"], 0);
        assert!(e["error"].is_null());
        let argv: Vec<&str> = e["argv"]
            .as_array()
            .expect("argv")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(argv, [path.as_str(), "first", &format!("arg {i}")]);
        assert_eq!(e["argv_truncated"], false);
    }
    assert_eq!(out.summary("exec"), (N as u64, 0, N as u64));
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "breaks hooks on purpose: needs --features fault-injection (scripts/test)"
)]
fn exec_falls_back_to_raw_tp() {
    require_root!();
    let name = unique_comm("exraw");
    let bin = copy_named("/bin/true", &name);
    let tracer = Tracer::start_with(
        &["exec,exit", "--comm", &name],
        &[("KSIGHT_BREAK_HOOK", "trace:tp_btf")],
    );
    assert_eq!(tracer.start["hook"], "raw_tp");
    const N: usize = 3;
    for _ in 0..N {
        assert!(Command::new(&bin).status().expect("run").success());
    }
    let out = tracer.finish();
    assert_eq!(out.of_type("exec").len(), N, "{:?}", out.records);
    assert_eq!(out.of_type("exit").len(), N, "{:?}", out.records);
}

#[test]
fn failed_exec_reports_the_errno() {
    require_root!();
    let name = unique_comm("exfail");
    let missing = cstr(&format!("/nonexistent/{name}"));
    let tracer = Tracer::start(&["exec", "--comm", &name, "--failed"]);
    const N: usize = 4;
    in_child(&name, || {
        let argv = [missing.as_ptr(), std::ptr::null()];
        for _ in 0..N {
            // SAFETY: a NUL-terminated path and argv; the call fails with ENOENT.
            unsafe { libc::execv(missing.as_ptr(), argv.as_ptr()) };
        }
    });
    let out = tracer.finish();
    let execs = out.of_type("exec");
    assert_eq!(execs.len(), N, "{:?}", out.records);
    for e in execs {
        assert_eq!(e["error"], "ENOENT");
        assert_eq!(e["ret"], -2);
        assert_eq!(e["filename"], missing.to_str().expect("utf-8"));
    }
}

/// Opens `ok` existing paths and `missing` absent ones, in a child named `comm`.
fn open_workload(comm: &str, ok: &[CString], missing: &[CString]) {
    in_child(comm, || {
        for p in ok {
            // SAFETY: a NUL-terminated path; the fd is closed at once.
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            // SAFETY: closing the fd just opened.
            unsafe { libc::close(fd) };
        }
        for p in missing {
            // SAFETY: a NUL-terminated path; the open fails.
            unsafe { libc::openat(libc::AT_FDCWD, p.as_ptr(), libc::O_RDONLY) };
        }
    });
}

fn test_paths(tag: &str, n: usize) -> (Vec<CString>, Vec<CString>) {
    let dir = std::env::temp_dir().join(format!("ksight-open-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ok = (0..n)
        .map(|i| {
            let p = dir.join(format!("present-{i}"));
            std::fs::write(&p, b"x").expect("write");
            cstr(&p.to_string_lossy())
        })
        .collect();
    let missing = (0..n)
        .map(|i| cstr(&dir.join(format!("missing-{i}")).to_string_lossy()))
        .collect();
    (ok, missing)
}

#[test]
fn open_reports_paths_and_results() {
    require_root!();
    let name = unique_comm("open");
    const N: usize = 6;
    let (ok, missing) = test_paths(&name, N);
    let tracer = Tracer::start(&["open", "--comm", &name]);
    open_workload(&name, &ok, &missing);
    let out = tracer.finish();
    let opens = out.of_type("open");
    assert_eq!(opens.len(), 2 * N, "{:?}", out.records);
    for (i, p) in ok.iter().enumerate() {
        let e = opens[i];
        assert_eq!(e["path"], p.to_str().expect("utf-8"));
        assert!(e["fd"].as_i64().is_some_and(|fd| fd >= 0), "{e}");
        assert!(e["error"].is_null());
        assert_eq!(e["flags_text"], "O_RDONLY|O_CLOEXEC");
    }
    for (i, p) in missing.iter().enumerate() {
        let e = opens[N + i];
        assert_eq!(e["path"], p.to_str().expect("utf-8"));
        assert_eq!(e["error"], "ENOENT");
        assert_eq!(e["ret"], -2);
        assert_eq!(e["syscall"], "openat");
    }
}

#[test]
fn failed_and_uid_filters_apply_in_the_kernel() {
    require_root!();
    let name = unique_comm("ofail");
    const N: usize = 5;
    let (ok, missing) = test_paths(&name, N);
    let tracer = Tracer::start(&["open", "--comm", &name, "--failed", "--uid", "65534"]);
    // Same workload as root (filtered out by --uid) and as nobody.
    open_workload(&name, &ok, &missing);
    in_child(&name, || {
        // SAFETY: dropping privileges in the child only.
        unsafe { libc::setuid(65534) };
        for p in ok.iter().chain(&missing) {
            // SAFETY: a NUL-terminated path; the fd (if any) stays open until _exit.
            unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
        }
    });
    let out = tracer.finish();
    let opens = out.of_type("open");
    // nobody may read the files (mode 0644) but the missing ones fail: N events, all failed
    assert_eq!(opens.len(), N, "{:?}", out.records);
    for e in opens {
        assert_eq!(e["uid"], 65534);
        assert_eq!(e["error"], "ENOENT");
    }
    // Nothing filtered out counts as generated: no ring-buffer space, no loss.
    assert_eq!(out.summary("open"), (N as u64, 0, N as u64));
}

#[test]
fn pid_filter_keeps_one_process() {
    require_root!();
    let name = unique_comm("opid");
    let (ok, missing) = test_paths(&name, 3);
    let mut fds = [0; 2];
    // SAFETY: a pipe into a local array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fork; the child only makes raw syscalls and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut b = 0u8;
        // SAFETY: reading one byte into a local; the parent writes it once tracing.
        unsafe { libc::read(fds[0], (&raw mut b).cast(), 1) };
        for p in ok.iter().chain(&missing) {
            // SAFETY: a NUL-terminated path.
            unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
        }
        // SAFETY: ends the child.
        unsafe { libc::_exit(0) };
    }
    let tracer = Tracer::start(&["open", "--pid", &pid.to_string()]);
    open_workload(&name, &ok, &missing); // another process: filtered out
                                         // SAFETY: writing one byte to the pipe we own.
    unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) };
    wait(pid);
    let out = tracer.finish();
    let opens = out.of_type("open");
    assert_eq!(opens.len(), 6, "{:?}", out.records);
    assert!(opens.iter().all(|e| e["pid"] == pid as u64));
}

#[test]
fn fork_and_exit_with_codes_and_signals() {
    require_root!();
    let name = unique_comm("fork");
    let tracer = Tracer::start(&["fork,exit", "--comm", &name]);
    const N: i32 = 4;
    in_child(&name, || {
        for i in 0..N {
            // SAFETY: fork in a single-threaded child; the grandchild only exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                if i == N - 1 {
                    // SAFETY: killing ourselves.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
                // SAFETY: ends the grandchild with code i + 1.
                unsafe { libc::_exit(i + 1) };
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    });
    let out = tracer.finish();
    let forks = out.of_type("fork");
    let exits = out.of_type("exit");
    assert_eq!(forks.len(), N as usize, "{:?}", out.records);
    assert_eq!(exits.len(), N as usize + 1, "{:?}", out.records);
    let child_pid = forks[0]["pid"].as_u64().expect("pid");
    for (i, f) in forks.iter().enumerate() {
        assert_eq!(f["pid"], child_pid);
        let e = exits[i];
        assert_eq!(e["pid"], f["child_pid"]);
        assert_eq!(e["ppid"], child_pid);
        if i as i32 == N - 1 {
            assert_eq!(e["signal"], "SIGKILL");
            assert!(e["exit_code"].is_null());
        } else {
            assert_eq!(e["exit_code"], i as u64 + 1);
            assert!(e["signal"].is_null());
        }
    }
    let last = exits[N as usize];
    assert_eq!(last["pid"], child_pid);
    assert_eq!(last["ppid"], my_pid());
    assert_eq!(last["exit_code"], 0);
    assert!(last["lifetime_ns"].as_u64().is_some_and(|ns| ns > 0));
}

extern "C" fn ignore_signal(_: libc::c_int) {}

#[test]
fn signals_with_sender_target_and_result() {
    require_root!();
    let name = unique_comm("sig");
    let tracer = Tracer::start(&["signal", "--comm", &name]);
    const N: usize = 5;
    in_child(&name, || {
        // SAFETY: installing a handler that does nothing, then signalling ourselves.
        unsafe {
            libc::signal(
                libc::SIGUSR1,
                ignore_signal as *const () as libc::sighandler_t,
            );
            for _ in 0..N {
                libc::kill(libc::getpid(), libc::SIGUSR1);
            }
        }
    });
    let out = tracer.finish();
    let usr1: Vec<&Value> = out
        .of_type("signal")
        .into_iter()
        .filter(|e| e["signal"] == "SIGUSR1")
        .collect();
    assert_eq!(usr1.len(), N, "{:?}", out.records);
    for e in &usr1 {
        assert_eq!(e["target_pid"], e["pid"]);
        assert_eq!(e["target_comm"], name.as_str());
        assert_eq!(e["result"], "delivered");
        assert_eq!(e["signal_number"], 10);
    }
    // The child's death sends SIGCHLD to us: the only other signal it generated.
    let others: Vec<&Value> = out
        .of_type("signal")
        .into_iter()
        .filter(|e| e["signal"] != "SIGUSR1")
        .collect();
    assert_eq!(others.len(), 1, "{others:?}");
    assert_eq!(others[0]["signal"], "SIGCHLD");
    assert_eq!(others[0]["target_pid"], my_pid());
}

/// N loopback connections, each accepted and closed, in one child (listener and client).
fn tcp_workload(comm: &str, n: usize) {
    in_child(comm, || {
        // SAFETY: plain socket syscalls on local fds and a zeroed sockaddr_in.
        unsafe {
            let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as u16;
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
            libc::bind(l, (&raw const addr).cast(), len);
            libc::listen(l, 16);
            let mut bound = len;
            libc::getsockname(l, (&raw mut addr).cast(), &mut bound);
            for _ in 0..n {
                let c = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                libc::connect(c, (&raw const addr).cast(), len);
                let a = libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut());
                libc::close(c);
                libc::close(a);
            }
            libc::close(l);
        }
    });
}

#[test]
fn tcp_connect_accept_close_with_ports() {
    require_root!();
    let name = unique_comm("tcp");
    let tracer = Tracer::start(&["tcp", "--comm", &name]);
    const N: usize = 4;
    tcp_workload(&name, N);
    std::thread::sleep(Duration::from_millis(200)); // the last FIN/ACK exchange on loopback
    let out = tracer.finish();
    let of = |what: &str| -> Vec<&Value> {
        out.of_type("tcp")
            .into_iter()
            .filter(|e| e["event"] == what)
            .collect()
    };
    let (connects, accepts, closes) = (of("connect"), of("accept"), of("close"));
    assert_eq!(connects.len(), N, "{:?}", out.records);
    assert_eq!(accepts.len(), N, "{:?}", out.records);
    let port = accepts[0]["sport"].clone();
    for (c, a) in connects.iter().zip(&accepts) {
        assert_eq!(c["dport"], port);
        assert_eq!(a["sport"], port);
        assert_eq!(
            a["dport"], c["sport"],
            "accept's peer is the connecting socket"
        );
        assert_eq!(c["daddr"], "127.0.0.1");
        assert_eq!(c["family"], "ipv4");
        assert_eq!(c["newstate"], "ESTABLISHED");
        assert_eq!(c["comm"], name.as_str());
        assert_eq!(a["comm"], name.as_str(), "accepts belong to the listener");
    }
    assert_eq!(closes.len(), 2 * N, "{:?}", out.records);
    for c in &closes {
        assert!(c["duration_ns"].as_u64().is_some_and(|d| d > 0), "{c}");
        assert!(c["sport"].as_u64().is_some_and(|p| p > 0), "{c}");
    }
}

/// A child in a network namespace of its own: brings up its loopback, listens on `port`,
/// says so on `ready`, waits for `go`, then connects to itself and accepts once.
fn netns_listener(comm: &str, port: u16, ready: i32, go: i32) -> i32 {
    let name = std::ffi::CString::new(comm).expect("comm");
    // SAFETY: fork; the child makes raw syscalls only (async-signal-safe) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid != 0 {
        return pid;
    }
    // SAFETY: raw syscalls on local fds and zeroed C structs.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            libc::_exit(10);
        }
        let ctl = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let mut lo: libc::ifreq = std::mem::zeroed();
        for (d, s) in lo.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        lo.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(ctl, libc::SIOCSIFFLAGS, &lo) != 0 {
            libc::_exit(11);
        }
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as u16;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if libc::bind(l, (&raw const addr).cast(), len) != 0 || libc::listen(l, 4) != 0 {
            libc::_exit(12);
        }
        let mut byte = 1u8;
        libc::write(ready, (&raw const byte).cast(), 1);
        libc::read(go, (&raw mut byte).cast(), 1);
        let c = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if libc::connect(c, (&raw const addr).cast(), len) != 0 {
            libc::_exit(13);
        }
        let a = libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut());
        libc::close(c);
        libc::close(a);
        libc::close(l);
        libc::_exit(0);
    }
}

fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: pipe fills the two fds we pass.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

#[test]
fn listeners_on_one_port_in_two_network_namespaces_keep_their_own_accepts() {
    require_root!();
    let prefix = unique_comm("ns");
    let (a_name, b_name) = (format!("{prefix}a"), format!("{prefix}b"));
    let tracer = Tracer::start(&["tcp"]);
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let (ready_r, ready_w) = pipe();
    let (go_a_r, go_a_w) = pipe();
    let (go_b_r, go_b_w) = pipe();
    let a = netns_listener(&a_name, port, ready_w, go_a_r);
    let b = netns_listener(&b_name, port, ready_w, go_b_r);
    let mut byte = [0u8; 1];
    // SAFETY: reads and writes on our own pipe fds.
    unsafe {
        // Both listen at once (b's listen came last), then each connects to itself in turn.
        for _ in 0..2 {
            assert_eq!(libc::read(ready_r, byte.as_mut_ptr().cast(), 1), 1);
        }
        libc::write(go_a_w, byte.as_ptr().cast(), 1);
    }
    assert_eq!(wait(a), 0, "namespace a's child");
    // SAFETY: as above.
    unsafe { libc::write(go_b_w, byte.as_ptr().cast(), 1) };
    assert_eq!(wait(b), 0, "namespace b's child");
    std::thread::sleep(Duration::from_millis(200));
    let out = tracer.finish();
    for (pid, comm) in [(a, &a_name), (b, &b_name)] {
        let accepts: Vec<&Value> = out
            .of_type("tcp")
            .into_iter()
            .filter(|e| e["event"] == "accept" && e["sport"] == port && e["pid"] == pid)
            .collect();
        assert_eq!(
            accepts.len(),
            1,
            "accepts of {comm} (pid {pid}): {:?}",
            out.records
        );
        assert_eq!(accepts[0]["comm"], comm.as_str());
    }
}

#[test]
fn after_attach_trace_keeps_no_capability_and_still_delivers() {
    require_root!();
    let name = unique_comm("trnocap");
    let tracer = Tracer::start(&["exit", "--comm", &name]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", tracer.child.id()))
        .expect("the tracer's status");
    let field = |f: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(f))
            .map(str::trim)
    };
    let eff = field("CapEff:").and_then(|h| u64::from_str_radix(h, 16).ok());
    assert!(eff.is_some_and(|e| kept_after_attach(e, 0)), "{status}");
    assert_eq!(field("NoNewPrivs:"), Some("1"));
    in_child(&name, || {});
    let out = tracer.finish();
    assert_eq!(out.of_type("exit").len(), 1, "{:?}", out.records);
}

#[test]
fn flood_into_a_tiny_ring_buffer_counts_every_loss() {
    require_root!();
    let name = unique_comm("flood");
    let tracer = Tracer::start(&["open", "--comm", &name, "--ring-buffer-size", "4096"]);
    const N: u64 = 20_000;
    let path = cstr(&format!("/nonexistent/{name}"));
    in_child(&name, || {
        for _ in 0..N {
            // SAFETY: a NUL-terminated path; the open fails.
            unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        }
    });
    let out = tracer.finish();
    let (delivered, lost, generated) = out.summary("open");
    // Exact, unless the kernel skipped runs of the program (preemptible tracepoint programs,
    // e.g. Debian 7.3's lazy preemption): those are counted apart, and may be any process's.
    let skipped = out.of_type("summary")[0]["skipped_runs"]
        .as_u64()
        .expect("skipped_runs");
    assert_eq!(generated, delivered + lost);
    assert!(
        generated <= N && N <= generated + skipped,
        "delivered {delivered} + lost {lost} (skipped runs {skipped}) against {N}"
    );
    assert!(lost > 0, "a 4 KiB buffer should overflow on {N} events");
    assert_eq!(out.of_type("open").len() as u64, delivered);
    let reported: u64 = out
        .of_type("lost")
        .iter()
        .map(|r| r["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(reported, lost, "lost records add up to the summary");
    assert!(out.stderr.contains("lost"), "stderr: {}", out.stderr);
}

#[test]
fn syscalls_top_counts_exactly() {
    require_root!();
    let name = unique_comm("top");
    let tracer = Tracer::start(&["syscalls", "--comm", &name, "--interval", "300ms"]);
    const N: u64 = 1000;
    in_child(&name, || {
        for _ in 0..N {
            // SAFETY: getppid cannot fail.
            unsafe { libc::getppid() };
        }
    });
    let out = tracer.finish();
    let count: u64 = out
        .of_type("syscalls")
        .iter()
        .flat_map(|r| r["rows"].as_array().cloned().unwrap_or_default())
        .filter(|row| row["syscall"] == "getppid" && row["comm"] == name.as_str())
        .map(|row| row["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(count, N, "{:?}", out.records);
}

#[test]
fn several_events_at_once_in_text() {
    require_root!();
    let name = unique_comm("text");
    let bin = copy_named("/bin/true", &name);
    let mut child = Command::new(KSIGHT)
        .args(["trace", "exec,exit", "--comm", &name, "--count", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut header = String::new();
    out.read_line(&mut header).expect("header");
    assert!(
        header.starts_with("TIME") && header.contains("COMM"),
        "{header}"
    );
    assert!(Command::new(&bin).status().expect("run").success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "--count 2 ends the trace");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("lines");
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.len(), 2, "{rest}");
    assert!(
        lines[0].contains(" exec ") && lines[0].contains(&name),
        "{rest}"
    );
    assert!(
        lines[1].contains(" exit ") && lines[1].contains("code=0"),
        "{rest}"
    );
    assert!(!rest.contains('\x1b'), "no colours when not on a terminal");
}

/// The hierarchy ksight filters on (as `enrich::cgroup` picks it): v2 when it carries the
/// memory controller or no v1 memory hierarchy is mounted, else the v1 memory hierarchy
/// (hybrid hosts); with no cgroup filesystem at all, a private cgroup2 mount of our own.
fn cgroup_root() -> std::path::PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let fields: Vec<Vec<&str>> = mounts
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let v2 = fields
        .iter()
        .find(|f| f.len() > 3 && f[2] == "cgroup2")
        .map(|f| f[1]);
    let v1_memory = fields
        .iter()
        .find(|f| f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
        .map(|f| f[1]);
    let v2_has_memory = v2.is_some_and(|d| {
        std::fs::read_to_string(format!("{d}/cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == "memory")
    });
    match (v2, v1_memory) {
        (Some(d), _) if v2_has_memory => return d.into(),
        (_, Some(d)) => return d.into(),
        (Some(d), None) => return d.into(),
        (None, None) => {}
    }
    let dir = std::env::temp_dir().join(format!("ksight-cgroup2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mount point");
    let target = cstr(&dir.to_string_lossy());
    // SAFETY: mounting cgroup2 on a directory we created; NUL-terminated strings.
    let ret = unsafe {
        libc::mount(
            c"none".as_ptr(),
            target.as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(ret, 0, "mount cgroup2: {}", std::io::Error::last_os_error());
    dir
}

/// Runs the open workload outside any new cgroup (filtered out), then in a child moved into
/// the cgroup `dir`; returns the events of a trace with `filter`.
fn opens_in_cgroup(name: &str, dir: &std::path::Path, filter: &[&str], n: usize) -> Finished {
    std::fs::create_dir_all(dir).expect("create a cgroup");
    let procs = cstr(&dir.join("cgroup.procs").to_string_lossy());
    let (ok, missing) = test_paths(name, n);
    let mut args = vec!["open"];
    args.extend_from_slice(filter);
    let tracer = Tracer::start(&args);
    open_workload(name, &ok, &missing); // outside the cgroup: filtered out
    in_child(name, || {
        // SAFETY: writing "0" (this process) into cgroup.procs moves the child; then opens.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            for p in &missing {
                libc::open(p.as_ptr(), libc::O_RDONLY);
            }
        }
    });
    let out = tracer.finish();
    let _ = std::fs::remove_dir(dir);
    out
}

#[test]
fn cgroup_filter_keeps_processes_of_one_cgroup() {
    require_root!();
    let name = unique_comm("cgrp");
    let root = cgroup_root();
    let dir = root.join(format!("ksight-{name}"));
    const N: usize = 4;
    let out = opens_in_cgroup(&name, &dir, &["--cgroup", &dir.to_string_lossy()], N);
    let opens = out.of_type("open");
    assert_eq!(opens.len(), N, "{:?}", out.records);
    let id = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&root).map(|m| m.ino()).unwrap_or(0)
    };
    for e in opens {
        assert_eq!(e["comm"], name.as_str());
        assert_eq!(e["error"], "ENOENT");
        assert_ne!(e["cgroup_id"], id, "not the root cgroup");
    }
}

#[test]
fn container_filter_finds_the_containers_cgroup() {
    require_root!();
    let name = unique_comm("ctr");
    // A container's cgroup where docker's cgroupfs driver puts it (only such places name a
    // container), with a made-up id unique to this run.
    // Unique in its first 12 digits (the prefix given) to this test process: other runs'
    // made-up ids must not match the prefix too.
    let id = format!("{:08x}c0ff{}", std::process::id(), "e".repeat(52));
    let dir = cgroup_root().join(format!("docker/{id}"));
    const N: usize = 3;
    let out = opens_in_cgroup(&name, &dir, &["--container", &id[..12]], N);
    let _ = std::fs::remove_dir(cgroup_root().join("docker")); // left if docker uses it
    let opens = out.of_type("open");
    assert_eq!(opens.len(), N, "{:?}", out.records);
    for e in opens {
        assert_eq!(
            e["container"],
            id.as_str(),
            "every record names its container: {e}"
        );
    }
}

// ---- bad input: no root needed -------------------------------------------------------

fn ksight(args: &[&str]) -> std::process::Output {
    Command::new(KSIGHT)
        .args(args)
        .output()
        .expect("run ksight")
}

fn assert_one_line_failure(args: &[&str], expect: &str) {
    let out = ksight(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?}: exit 0");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("ksight")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
    assert!(errors[0].contains(expect), "{args:?}: {stderr}");
}

#[test]
fn unknown_event_lists_the_valid_ones() {
    assert_one_line_failure(
        &["trace", "exec,bogus"],
        "unknown event \"bogus\" (valid: exec, open, fork, exit, signal, tcp, readline, syscalls)",
    );
    assert_one_line_failure(&["trace"], "name the events to trace (valid: exec, open,");
}

#[test]
fn bad_filters_say_what_is_valid() {
    assert_one_line_failure(&["trace", "exec", "--pid", "abc"], "invalid value 'abc'");
    assert_one_line_failure(
        &["trace", "exec", "--comm", "0123456789abcdefgh"],
        "1 to 15 bytes",
    );
    assert_one_line_failure(
        &["trace", "open", "--ring-buffer-size", "5000"],
        "a power of two",
    );
    assert_one_line_failure(
        &["trace", "syscalls,exec"],
        "cannot be combined with other events",
    );
    assert_one_line_failure(
        &["trace", "exec", "--container", "xyz"],
        "not a container id (12 to 64 hex digits)",
    );
}
