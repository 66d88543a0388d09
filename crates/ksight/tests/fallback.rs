//! Every hook path counts exactly, and a broken hook falls back and says so: each test breaks
//! the better candidates on purpose (KSIGHT_BREAK_HOOK) and repeats the exact-count checks.

#[macro_use]
mod common;

use common::*;

const N: u64 = 500;

fn hook_of(server: &Server, collector: &str) -> String {
    let s = server.scrape();
    if s.sum("ksight_collector_up", &[("collector", collector)]) != 1.0 {
        return "none".into();
    }
    let info = s
        .0
        .iter()
        .find(|(n, l, v)| n == "ksight_collector_info" && l["collector"] == collector && *v == 1.0);
    info.map(|(_, l, _)| l["hook"].clone())
        .unwrap_or_else(|| "none".into())
}

/// getppid, exit_group, forks, exits and opens of one unique process, exactly.
fn assert_exact_counts(server: &Server, tag: &str) {
    let comm = unique_comm(tag);
    let path = std::ffi::CString::new(format!("/nonexistent-ksight/{comm}")).expect("path");
    let before = server.scrape();
    in_child(&comm, || {
        for _ in 0..N {
            // SAFETY: getppid cannot fail; openat on a missing path only fails.
            unsafe {
                libc::getppid();
                libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::O_RDONLY,
                );
            }
        }
        for _ in 0..3 {
            // SAFETY: fork in a single-threaded child; the grandchild leaves at once.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: leave without atexit handlers.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    });
    let after = server.scrape();
    let d =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let c = comm.as_str();
    if hook_of(server, "syscalls") != "none" {
        assert_eq!(
            d(
                "ksight_syscalls_total",
                &[("syscall", "getppid"), ("comm", c)]
            ),
            N as f64
        );
        assert_eq!(
            d(
                "ksight_syscalls_total",
                &[("syscall", "exit_group"), ("comm", c)]
            ),
            4.0
        );
    }
    if hook_of(server, "process") != "none" {
        assert_eq!(d("ksight_process_forks_total", &[("comm", c)]), 3.0);
        assert_eq!(d("ksight_process_exits_total", &[("comm", c)]), 4.0);
    }
    if hook_of(server, "files") != "none" {
        assert_eq!(
            d(
                "ksight_file_opens_total",
                &[("comm", c), ("result", "ENOENT")]
            ),
            N as f64
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "breaks hooks on purpose: needs --features fault-injection (scripts/test)"
)]
fn raw_tp_when_tp_btf_is_broken() {
    require_root!();
    let server = Server::start_broken("syscalls:tp_btf,process:tp_btf", &[]);
    assert_eq!(hook_of(&server, "syscalls"), "raw_tp");
    assert_eq!(hook_of(&server, "process"), "raw_tp");
    assert_eq!(
        hook_of(&server, "files"),
        "raw_tp",
        "files shares the syscalls program"
    );
    assert_exact_counts(&server, "rawtp");
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "breaks hooks on purpose: needs --features fault-injection (scripts/test)"
)]
fn tracepoint_when_tp_btf_and_raw_tp_are_broken() {
    require_root!();
    let server = Server::start_broken(
        "syscalls:tp_btf,syscalls:raw_tp",
        &["--collectors", "syscalls,files"],
    );
    assert_eq!(hook_of(&server, "syscalls"), "tracepoint");
    assert_eq!(
        hook_of(&server, "files"),
        "tracepoint",
        "files shares the syscalls program"
    );
    assert_exact_counts(&server, "tp");
}

#[test]
fn files_alone_uses_fentry_where_the_kernel_has_it() {
    require_root!();
    let server = Server::start(&["--collectors", "files"]);
    let expected = if hook_works("fentry") {
        "fentry"
    } else {
        "tracepoint"
    };
    assert_eq!(hook_of(&server, "files"), expected);
    assert_exact_counts(&server, "fent");
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "breaks hooks on purpose: needs --features fault-injection (scripts/test)"
)]
fn files_falls_back_to_tracepoints_when_fentry_is_broken() {
    require_root!();
    let server = Server::start_broken("files:fentry", &["--collectors", "files"]);
    assert_eq!(hook_of(&server, "files"), "tracepoint");
    assert_exact_counts(&server, "ftp");
    let out = std::process::Command::new(KSIGHT)
        .args(["serve", "--check", "--collectors", "files"])
        .env("KSIGHT_BREAK_HOOK", "files:fentry")
        .output()
        .expect("run --check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("files")
            && l.contains("tracepoint")
            && l.contains("fell back: fentry")),
        "{text}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "breaks hooks on purpose: needs --features fault-injection (scripts/test)"
)]
fn broken_everything_reports_none_and_check_fails() {
    require_root!();
    let out = std::process::Command::new(KSIGHT)
        .args(["serve", "--check", "--collectors", "process"])
        .env("KSIGHT_BREAK_HOOK", "process:tp_btf,process:raw_tp")
        .output()
        .expect("run --check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "--check passed with no hook: {text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("process") && l.contains("none")),
        "{text}"
    );
}

/// In a chroot whose "/" is a plain directory (not a mount point) and whose sysfs has no
/// tracefs, ksight still mounts a private tracefs (making "/" private fails there with EINVAL;
/// the mount above tracefs's directory is made private instead) and classic tracepoints work.
#[test]
fn tracefs_is_mounted_privately_in_a_chroot_whose_root_is_not_a_mount_point() {
    require_root!();
    let root = std::env::temp_dir().join(format!("ksight-chroot-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("chroot dir");
    let out = chroot::run(&root, KSIGHT, chroot::HOST_LIBRARIES, &["doctor", "--json"]);
    // The mounts lived in the child's own namespace: only empty directories and links remain.
    let _ = std::fs::remove_dir_all(&root);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "doctor in a chroot: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).expect("doctor --json");
    assert!(
        report["tracefs"]
            .as_str()
            .is_some_and(|t| t.contains("its own mount namespace")),
        "{text}"
    );
    let tracepoint = report["hooks"]
        .as_array()
        .and_then(|hooks| hooks.iter().find(|h| h["name"] == "tracepoint"))
        .expect("a tracepoint hook row");
    assert_eq!(tracepoint["ok"], true, "{text}");
}
