//! Privileged end-to-end tests of `ksight serve`: every test generates its own workload in a
//! child process with a unique comm and asserts the exact change of its series.

#[macro_use]
mod common;

use std::os::unix::process::CommandExt;

use common::*;

const N: u64 = 1000;

fn delta(server: &Server, name: &str, labels: &[(&str, &str)], work: impl FnOnce()) -> f64 {
    let before = server.scrape().sum(name, labels);
    work();
    server.scrape().sum(name, labels) - before
}

#[test]
fn getppid_calls_are_counted_exactly() {
    require_root!();
    let server = Server::start(&[]);
    let comm = unique_comm("ppid");
    let d = delta(
        &server,
        "ksight_syscalls_total",
        &[("syscall", "getppid"), ("comm", &comm)],
        || {
            in_child(&comm, || {
                for _ in 0..N {
                    // SAFETY: getppid has no arguments and cannot fail.
                    unsafe { libc::getppid() };
                }
            });
        },
    );
    assert_eq!(d, N as f64);
}

#[test]
fn exit_and_exit_group_are_counted_when_the_thread_dies() {
    require_root!();
    let server = Server::start(&[]);
    let comm = unique_comm("exit");
    let exits = [("syscall", "exit"), ("comm", comm.as_str())];
    let groups = [("syscall", "exit_group"), ("comm", comm.as_str())];
    let before = server.scrape();
    for i in 0..10 {
        in_child(&comm, move || {
            let nr = if i % 2 == 0 {
                libc::SYS_exit
            } else {
                libc::SYS_exit_group
            };
            // SAFETY: ends this single-threaded child.
            unsafe { libc::syscall(nr, 0) };
        });
    }
    let after = server.scrape();
    assert_eq!(
        after.sum("ksight_syscalls_total", &exits) - before.sum("ksight_syscalls_total", &exits),
        5.0
    );
    assert_eq!(
        after.sum("ksight_syscalls_total", &groups) - before.sum("ksight_syscalls_total", &groups),
        5.0
    );
}

#[test]
fn syscall_errors_are_counted_by_errno() {
    require_root!();
    let server = Server::start(&[]);
    let comm = unique_comm("kcmp");
    // kcmp on a pid that cannot exist fails with ESRCH; nothing else on a test box calls it.
    let d = delta(
        &server,
        "ksight_syscall_errors_total",
        &[("syscall", "kcmp"), ("errno", "ESRCH")],
        || {
            in_child(&comm, || {
                for _ in 0..N {
                    // SAFETY: kcmp with an invalid pid only returns an error.
                    unsafe { libc::syscall(libc::SYS_kcmp, i32::MAX, i32::MAX, 0, 0, 0) };
                }
            });
        },
    );
    assert_eq!(d, N as f64);
}

#[test]
fn execs_and_exits_of_a_unique_binary() {
    require_root!();
    let server = Server::start(&[]);
    let comm = unique_comm("true");
    let binary = copy_named("/bin/true", &comm);
    let labels = [("comm", comm.as_str())];
    let before = server.scrape();
    for _ in 0..25 {
        let status = std::process::Command::new(&binary)
            .status()
            .expect("run copy of true");
        assert!(status.success());
    }
    let after = server.scrape();
    let d = |name: &str| after.sum(name, &labels) - before.sum(name, &labels);
    assert_eq!(d("ksight_process_execs_total"), 25.0);
    assert_eq!(d("ksight_process_exits_total"), 25.0);
    assert_eq!(d("ksight_process_killed_total"), 0.0);
}

#[test]
fn forks_kills_and_lifetimes() {
    require_root!();
    let server = Server::start(&[]);
    let comm = unique_comm("fork");
    let labels = [("comm", comm.as_str())];
    let killed = [("comm", comm.as_str()), ("signal", "SIGUSR1")];
    let before = server.scrape();
    in_child(&comm, || {
        for i in 0..20 {
            // SAFETY: fork in a single-threaded child; the grandchild only raises or _exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                if i % 4 == 0 {
                    // SAFETY: default action of SIGUSR1 terminates this process.
                    unsafe { libc::raise(libc::SIGUSR1) };
                }
                // SAFETY: leave without atexit handlers.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    });
    let after = server.scrape();
    let d = |name: &str, l: &[(&str, &str)]| after.sum(name, l) - before.sum(name, l);
    assert_eq!(d("ksight_process_forks_total", &labels), 20.0);
    // 20 children and the child itself; 5 of the children died by SIGUSR1.
    assert_eq!(d("ksight_process_exits_total", &labels), 21.0);
    assert_eq!(d("ksight_process_killed_total", &killed), 5.0);
    assert!(d("ksight_process_lifetime_seconds_count", &[]) >= 21.0);
}

#[test]
fn a_group_dying_at_once_is_one_exit() {
    require_root!();
    let server = Server::start(&[]);
    let comm = unique_comm("grp");
    let labels = [("comm", comm.as_str())];
    let before = server.scrape();
    for _ in 0..10 {
        // exit_group with 8 sleeping threads: all 9 threads die together, each reads the
        // group's live count; the group must still be counted once.
        in_child(&comm, || {
            for _ in 0..8 {
                std::thread::spawn(|| loop {
                    std::thread::sleep(std::time::Duration::from_secs(60));
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
    }
    let after = server.scrape();
    let d = |name: &str| after.sum(name, &labels) - before.sum(name, &labels);
    assert_eq!(d("ksight_process_exits_total"), 10.0);
    assert_eq!(d("ksight_process_killed_total"), 0.0);
}

#[test]
fn threads_are_not_processes() {
    require_root!();
    let server = Server::start(&[]);
    let comm = unique_comm("thr");
    let labels = [("comm", comm.as_str())];
    let before = server.scrape();
    in_child(&comm, || {
        let handles: Vec<_> = (0..8).map(|_| std::thread::spawn(|| ())).collect();
        for h in handles {
            let _ = h.join();
        }
    });
    let after = server.scrape();
    let d = |name: &str| after.sum(name, &labels) - before.sum(name, &labels);
    assert_eq!(
        d("ksight_process_forks_total"),
        0.0,
        "threads are not forks"
    );
    assert_eq!(d("ksight_process_exits_total"), 1.0, "one process died");
    let exits = [("syscall", "exit"), ("comm", comm.as_str())];
    assert_counted(
        after.sum("ksight_syscalls_total", &exits) - before.sum("ksight_syscalls_total", &exits),
        8.0,
        after.skipped_runs("syscalls") - before.skipped_runs("syscalls"),
        "exit syscalls of 8 threads",
    );
}

#[test]
fn opens_counted_in_the_shared_sys_exit_program() {
    require_root!();
    let server = Server::start(&[]);
    let up = server.scrape();
    // the syscalls collector's hook, which files shares: tp_btf where its probe works
    let hook = if hook_works("tp_btf") {
        "tp_btf"
    } else {
        "raw_tp"
    };
    assert_eq!(
        up.sum(
            "ksight_collector_info",
            &[("collector", "files"), ("hook", hook)]
        ),
        1.0
    );
    assert_eq!(
        up.sum("ksight_collector_up", &[("collector", "files")]),
        1.0
    );
    opens_of_a_missing_path_by_every_open_syscall(&server);
}

#[test]
fn opens_counted_on_their_own_hook_without_syscalls() {
    require_root!();
    let server = Server::start(&["--no-collector.syscalls"]);
    let up = server.scrape();
    let hook = if hook_works("fentry") {
        "fentry"
    } else {
        "tracepoint"
    };
    assert_eq!(
        up.sum(
            "ksight_collector_info",
            &[("collector", "files"), ("hook", hook)]
        ),
        1.0
    );
    assert_eq!(
        up.sum("ksight_collector_up", &[("collector", "files")]),
        1.0
    );
    opens_of_a_missing_path_by_every_open_syscall(&server);
}

fn opens_of_a_missing_path_by_every_open_syscall(server: &Server) {
    let comm = unique_comm("open");
    let path = std::ffi::CString::new(format!("/nonexistent-ksight/{comm}")).expect("path");
    let labels = [("comm", comm.as_str()), ("result", "ENOENT")];
    let ok_labels = [("comm", comm.as_str()), ("result", "ok")];
    let before = server.scrape();
    in_child(&comm, || {
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: 0,
            mode: 0,
            resolve: 0,
        };
        for _ in 0..N {
            // SAFETY: open-family syscalls on a valid C string; they fail with ENOENT.
            unsafe {
                #[cfg(target_arch = "x86_64")]
                libc::syscall(libc::SYS_open, path.as_ptr(), libc::O_RDONLY);
                libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::O_RDONLY,
                );
                #[cfg(target_arch = "x86_64")]
                libc::syscall(libc::SYS_creat, path.as_ptr(), 0o600);
                libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    &how,
                    std::mem::size_of::<OpenHow>(),
                );
            }
        }
        // One successful open, closed again.
        // SAFETY: a valid path; the fd is closed right away.
        unsafe {
            libc::close(libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/".as_ptr(),
                libc::O_RDONLY,
            ) as i32)
        };
    });
    let after = server.scrape();
    // arm64 has neither open nor creat: openat and openat2 only.
    let syscalls = if cfg!(target_arch = "x86_64") {
        4.0
    } else {
        2.0
    };
    assert_eq!(
        after.sum("ksight_file_opens_total", &labels)
            - before.sum("ksight_file_opens_total", &labels),
        syscalls * N as f64
    );
    assert_eq!(
        after.sum("ksight_file_opens_total", &ok_labels)
            - before.sum("ksight_file_opens_total", &ok_labels),
        1.0
    );
}

#[test]
fn own_process_is_left_out_unless_asked() {
    require_root!();
    // A copy of ksight under a unique name, so other tests' instances cannot be mistaken for it.
    let comm = unique_comm("self");
    let binary = copy_named(KSIGHT, &comm);
    let bpf_calls = [("syscall", "bpf"), ("comm", comm.as_str())];
    let server = Server::start_binary(&binary, &[]);
    server.scrape();
    assert_eq!(
        server.scrape().sum("ksight_syscalls_total", &bpf_calls),
        0.0
    );
    drop(server);
    let counting = Server::start_binary(&binary, &["--include-self"]);
    counting.scrape();
    assert!(counting.scrape().sum("ksight_syscalls_total", &bpf_calls) > 0.0);
}

#[test]
fn overflow_folds_what_does_not_fit_without_losing_increments() {
    require_root!();
    // 4 slots: the overflow and 3 comms; 2 entries per table.
    let server = Server::start(&["--syscalls.max-comms", "4", "--table.capacity", "2"]);
    let comms: Vec<String> = (0..8).map(|_| unique_comm("ovf")).collect();
    let before = server.scrape();
    for comm in &comms {
        in_child(comm, || {
            for _ in 0..N {
                // SAFETY: getppid cannot fail.
                unsafe { libc::getppid() };
            }
        });
    }
    let after = server.scrape();
    let getppid = |s: &Samples, comm: &str| {
        s.sum(
            "ksight_syscalls_total",
            &[("syscall", "getppid"), ("comm", comm)],
        )
    };
    let named: f64 = comms
        .iter()
        .map(|c| getppid(&after, c) - getppid(&before, c))
        .sum();
    let named_series = comms.iter().filter(|c| getppid(&after, c) > 0.0).count();
    let other = getppid(&after, "(other processes)") - getppid(&before, "(other processes)");
    assert!(
        named_series <= 3,
        "{named_series} comms got their own series with 3 slots"
    );
    assert!(
        named + other >= (8 * N) as f64,
        "named {named} + overflow {other} < {}",
        8 * N
    );
    assert!(other >= (8 * N) as f64 - named);
    assert_eq!(after.sum("ksight_events_lost_total", &[]), 0.0);
    // The tables: each comm exited once; those that did not fit are under the overflow comm.
    let exits: f64 = comms
        .iter()
        .map(|c| after.sum("ksight_process_exits_total", &[("comm", c)]))
        .sum();
    let other_exits = after.sum(
        "ksight_process_exits_total",
        &[("comm", "(other processes)")],
    );
    assert!(
        exits < 8.0,
        "table capacity 2 kept {exits} of 8 comms apart"
    );
    assert!(exits + other_exits >= 8.0);
}

#[test]
fn idle_series_end_after_the_ttl_without_raising_the_overflow() {
    require_root!();
    let server = Server::start(&["--series-ttl", "1s", "--fold-interval", "300ms"]);
    let comm = unique_comm("ttl");
    let labels = [("syscall", "getppid"), ("comm", comm.as_str())];
    let other = [("syscall", "getppid"), ("comm", "(other processes)")];
    // A large total: moved into the overflow series, it would read as a burst there.
    let calls = 100_000;
    in_child(&comm, || {
        for _ in 0..calls {
            // SAFETY: getppid cannot fail.
            unsafe { libc::getppid() };
        }
    });
    let live = server.scrape();
    assert_eq!(live.sum("ksight_syscalls_total", &labels), calls as f64);
    let other_before = live.sum("ksight_syscalls_total", &other);
    let folded_before = live.sum("ksight_series_folded_total", &[]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let folded = server.scrape();
    assert_eq!(
        folded.count("ksight_syscalls_total", &labels),
        0,
        "idle series still exported"
    );
    let raised = folded.sum("ksight_syscalls_total", &other) - other_before;
    assert!(
        raised < (calls / 2) as f64,
        "the overflow series rose by {raised}: the folded history moved into it"
    );
    let exits = [("comm", comm.as_str())];
    assert_eq!(
        folded.count("ksight_process_exits_total", &exits),
        0,
        "idle table series still exported"
    );
    for collector in ["syscalls", "process"] {
        let n = |s: &Samples| s.sum("ksight_series_folded_total", &[("collector", collector)]);
        assert!(n(&folded) > n(&live), "{collector}: no fold counted");
    }
    assert!(folded.sum("ksight_series_folded_total", &[]) >= folded_before + 2.0);
}

#[test]
fn metrics_pass_promtool_and_openmetrics_is_served_on_request() {
    require_root!();
    let server = Server::start(&[]);
    let (head, body) = http_get(server.port, "/metrics", None).expect("scrape");
    assert!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert_promtool_clean(&body);
    let (head, body) = http_get(
        server.port,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .expect("scrape");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"));
    for name in [
        "ksight_build_info",
        "ksight_collector_up",
        "ksight_collector_info",
        "ksight_map_capacity",
        "ksight_map_memory_bytes",
        "ksight_scrape_duration_seconds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(body.lines().any(|l| l.starts_with(name)), "{name} missing");
    }
    let (_, landing) = http_get(server.port, "/", None).expect("landing page");
    assert!(landing.contains("/metrics"));
}

#[test]
fn bpf_stats_report_program_runs() {
    require_root!();
    let server = Server::start(&["--bpf-stats", "--collectors", "syscalls"]);
    let s = server.scrape();
    // the programs of the hook the probes chose: tp_btf, else the raw_tp twins
    let suffix = if hook_works("tp_btf") { "btf" } else { "raw" };
    let sys_exit = format!("sys_exit_{suffix}");
    assert!(
        s.sum(
            "ksight_bpf_program_runs_total",
            &[("program", sys_exit.as_str())]
        ) > 0.0
    );
    assert_eq!(
        s.count("ksight_collector_up", &[("collector", "process")]),
        0,
        "--collectors limits the set"
    );
    // skipped runs are exported for every attached program, with or without --bpf-stats
    for program in ["sys_exit", "task_exit", "exec"].map(|p| format!("{p}_{suffix}")) {
        let labels = [("collector", "syscalls"), ("program", program.as_str())];
        assert_eq!(s.count("ksight_bpf_program_misses_total", &labels), 1);
    }
}

/// `CapEff`, `CapPrm`, `CapBnd` (hex) and `NoNewPrivs` of a process.
fn privileges_of(pid: i32) -> (u64, u64, u64, u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let hex = |name: &str| u64::from_str_radix(&field(name), 16).expect("hex caps");
    let uid = field("Uid:")
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok());
    (
        hex("CapEff:"),
        hex("CapPrm:"),
        hex("CapBnd:"),
        field("NoNewPrivs:").parse().expect("NoNewPrivs"),
        uid.expect("effective uid"),
    )
}

#[test]
fn after_attach_serve_keeps_no_capability_and_still_counts() {
    require_root!();
    let server = Server::start(&["--collectors", "syscalls,process"]);
    let (eff, prm, bnd, nnp, _) = privileges_of(server.pid());
    assert!(kept_after_attach(eff, 0), "CapEff {eff:x}");
    assert_eq!((prm, bnd, nnp), (eff, eff, 1), "CapPrm/CapBnd/NoNewPrivs");
    let comm = unique_comm("nocap");
    let before = server.scrape();
    in_child(&comm, || {
        for _ in 0..N {
            // SAFETY: getppid cannot fail.
            unsafe { libc::getppid() };
        }
    });
    let after = server.scrape();
    let getppid = [("comm", comm.as_str()), ("syscall", "getppid")];
    assert_eq!(
        after.sum("ksight_syscalls_total", &getppid)
            - before.sum("ksight_syscalls_total", &getppid),
        N as f64
    );
}

#[test]
fn capabilities_keep_and_user_are_honoured() {
    require_root!();
    let server = Server::start(&[
        "--collectors",
        "process",
        "--capabilities.keep",
        "cap_net_bind_service",
        "--user",
        "65534:65534",
    ]);
    let (eff, prm, bnd, nnp, uid) = privileges_of(server.pid());
    let kept = 1 << 10; // CAP_NET_BIND_SERVICE
    assert!(kept_after_attach(eff, kept), "CapEff {eff:x}");
    assert_eq!((prm, bnd, nnp), (eff, eff, 1));
    assert_eq!(uid, 65534);
    let comm = unique_comm("nobdy");
    in_child(&comm, || {});
    let exits = server
        .scrape()
        .sum("ksight_process_exits_total", &[("comm", comm.as_str())]);
    assert_eq!(exits, 1.0);
}

#[test]
fn a_copy_with_file_capabilities_serves_as_nobody() {
    require_root!();
    // A directory nobody can reach, with a copy of ksight given only what loading needs.
    let dir = std::env::temp_dir().join(format!("ksight-filecaps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let binary = dir.join("ksight");
    std::fs::copy(KSIGHT, &binary).expect("copy ksight");
    // CAP_SYS_RESOURCE (for the memlock limit of kernels before 5.11) where this process may
    // grant it: exec fails for a file asking for more than the bounding set.
    let (_, _, bounding, _, _) = privileges_of(std::process::id() as i32);
    let file_caps = if bounding & (1 << 24) != 0 {
        "cap_bpf,cap_perfmon,cap_sys_resource+ep"
    } else {
        "cap_bpf,cap_perfmon+ep"
    };
    let setcap = std::process::Command::new("setcap")
        .arg(file_caps)
        .arg(&binary)
        .status()
        .expect("setcap runs (Debian package libcap2-bin)");
    assert!(setcap.success(), "setcap failed");
    let port = free_port();
    let mut child = process_only_serve(&binary, port)
        .args(["--log", "warn"])
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn as nobody");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let answer = loop {
        if let Ok(answer) = http_get(port, "/metrics", None) {
            break answer;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ksight as nobody exited ({status}); its stderr is above");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ksight as nobody never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (eff, _, _, nnp, uid) = privileges_of(child.id() as i32);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        answer
            .1
            .contains("ksight_collector_up{collector=\"process\"} 1"),
        "{}",
        answer.1
    );
    assert!(kept_after_attach(eff, 0), "CapEff {eff:x}");
    assert_eq!((nnp, uid), (1, 65534));
}
