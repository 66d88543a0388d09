//! The command line: bad input gets one clear line and a non-zero exit, never a panic;
//! `doctor` and `serve --check` report hooks; SIGKILL leaves nothing loaded.

#[macro_use]
mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

fn ksight(args: &[&str]) -> Output {
    Command::new(KSIGHT)
        .args(args)
        .output()
        .expect("run ksight")
}

/// Exits non-zero with one line on stderr that says `expect`, and no panic or backtrace.
fn assert_clear_failure(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit 0 for bad input; stderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "panic: {stderr}"
    );
    let first = stderr
        .lines()
        .find(|l| l.starts_with("ksight"))
        .unwrap_or_default();
    assert!(first.contains(expect), "stderr lacks {expect:?}: {stderr}");
    let error_lines = stderr.lines().filter(|l| l.starts_with("ksight")).count();
    assert_eq!(error_lines, 1, "more than one error line: {stderr}");
}

#[test]
fn version_and_help_on_every_subcommand() {
    let out = ksight(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ksight "));
    for sub in ["serve", "doctor"] {
        let out = ksight(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: ksight"),
            "{sub} --help"
        );
    }
    let help = String::from_utf8_lossy(&ksight(&["serve", "--help"]).stdout).to_string();
    for collector in ["syscalls", "process", "files"] {
        assert!(
            help.contains(collector),
            "serve --help does not list {collector}"
        );
    }
}

#[test]
fn unknown_subcommand_and_flag() {
    assert_clear_failure(
        &ksight(&["frobnicate"]),
        "unrecognized subcommand 'frobnicate'",
    );
    assert_clear_failure(
        &ksight(&["serve", "--frobnicate"]),
        "unexpected argument '--frobnicate'",
    );
    assert_clear_failure(
        &ksight(&["serve", "--series-ttl", "5 parsecs"]),
        "invalid duration",
    );
}

#[test]
fn zero_negative_or_absurd_durations_and_capacities_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--fold-interval", "0"], "below 1ms"),
        (&["serve", "--fold-interval", "0.0001ms"], "below 1ms"),
        (&["serve", "--series-ttl=-5s"], "invalid duration"),
        (&["serve", "--series-ttl", "100000h"], "too long"),
        (&["serve", "--series-ttl", &"9".repeat(400)], "too long"),
        (&["serve", "--web.write-timeout", "0s"], "below 1ms"),
        (&["trace", "exec", "--duration", "0"], "below 1ms"),
        (&["serve", "--table.capacity", "0"], "not in 1..=4194304"),
        (&["serve", "--table.capacity", "99999999999"], "invalid"),
        (
            &["serve", "--collector.syscalls.max-comms", "1"],
            "not in 2..=4096",
        ),
        (
            &["serve", "--syscalls.max-comms", "100000"],
            "not in 2..=4096",
        ),
        (
            &["serve", "--collector.syscalls.errors-capacity", "-1"],
            "unexpected argument",
        ),
        (
            &["serve", "--web.max-connections", "0"],
            "not in 1..=1000000",
        ),
        (&["serve", "--web.max-requests", "0"], "not in 1..=10000"),
    ];
    for (args, expect) in cases {
        let out = ksight(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_clear_failure(&out, expect);
    }
}

#[test]
fn version_names_the_revision_and_rustc() {
    let out = ksight(&["--version"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let line = text.trim();
    assert!(
        line.starts_with(&format!("ksight {} (revision ", env!("CARGO_PKG_VERSION")))
            && line.contains(", rustc 1."),
        "{line}"
    );
}

#[test]
fn logs_as_logfmt_by_default_or_json() {
    require_root!();
    let logfmt = ksight(&["doctor"]);
    let first = String::from_utf8_lossy(&logfmt.stderr);
    let first = first.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("ts=") && first.contains(" level=info ") && first.contains("message="),
        "{first}"
    );
    let json = ksight(&["doctor", "--log.format", "json"]);
    let stderr = String::from_utf8_lossy(&json.stderr);
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(stderr.lines().count() > 0);
}

#[test]
fn unknown_collector_lists_the_valid_ones() {
    let out = ksight(&["serve", "--collectors", "syscalls,bogus"]);
    assert_clear_failure(
        &out,
        "unknown collector \"bogus\"; valid collectors: syscalls, process, files",
    );
}

#[test]
fn btf_file_missing_or_not_btf() {
    require_root!();
    assert_clear_failure(
        &ksight(&["serve", "--check", "--btf", "/nonexistent/vmlinux"]),
        "--btf /nonexistent/vmlinux",
    );
    let not_btf = std::env::temp_dir().join(format!("ksight-not-btf-{}", std::process::id()));
    std::fs::write(&not_btf, b"this is not BTF at all, just text").expect("write file");
    let out = ksight(&[
        "serve",
        "--check",
        "--btf",
        not_btf.to_str().expect("utf-8 path"),
    ]);
    assert_clear_failure(&out, "not a BTF file");
    // The kernel's own BTF passed as a file works.
    let out = ksight(&["serve", "--check", "--btf", "/sys/kernel/btf/vmlinux"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn port_in_use() {
    require_root!();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    assert_clear_failure(
        &ksight(&["serve", "--web.listen-address", &addr]),
        "cannot listen on",
    );
}

#[test]
fn not_root() {
    require_root!();
    // A copy nobody can execute (the build tree may not be readable by nobody).
    let binary = copy_named(KSIGHT, "ksight-nobody");
    let dir = binary.parent().expect("dir");
    for p in [dir, binary.as_path()] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&binary)
        .args(["serve", "--web.listen-address", "127.0.0.1:0"])
        .output()
        .expect("setpriv (util-linux)");
    assert_clear_failure(&out, "needs root");
}

#[test]
fn doctor_reports_hooks_as_json() {
    require_root!();
    let out = ksight(&["doctor", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("doctor --json is JSON");
    let hooks = report["hooks"].as_array().expect("hooks");
    let names: Vec<&str> = hooks.iter().filter_map(|h| h["name"].as_str()).collect();
    for name in [
        "tracepoint",
        "raw_tp",
        "tp_btf",
        "fentry",
        "kprobe",
        "uprobe",
        "perf_event",
        "ring_buffer",
        "task_storage",
    ] {
        assert!(names.contains(&name), "{name} missing from doctor");
    }
    let hook_ok = |n: &str| {
        hooks
            .iter()
            .find(|h| h["name"] == n)
            .and_then(|h| h["ok"].as_bool())
            .expect("ok flag")
    };
    assert!(
        hook_ok("raw_tp") && (hook_ok("tp_btf") || refused("tp_btf")),
        "{report}"
    );
    for c in report["collectors"].as_array().expect("collectors") {
        assert_ne!(c["hook"], "none", "collector without a hook: {c}");
        // tp_btf is the cheapest hook for these collectors wherever the kernel offers it;
        // page_faults has no tracepoint on arm64 (x86's exceptions:page_fault_user).
        let arm64_page_faults = cfg!(target_arch = "aarch64") && c["name"] == "page_faults";
        if arm64_page_faults {
            assert_eq!(c["hook"], "perf_event", "{c}");
        } else if hook_ok("tp_btf") && c["name"] != "files" {
            assert_eq!(c["hook"], "tp_btf", "{c}");
        }
    }
    // every feature probed on its own, hooks included, and each job against them
    let features = report["features"].as_array().expect("features");
    let feature_names: Vec<&str> = features.iter().filter_map(|f| f["name"].as_str()).collect();
    for name in [
        "tp_btf",
        "stack_map",
        "sk_storage",
        "cgroup_sock_hooks",
        "task_file_iter",
        "pidfd_getfd",
        "tcx",
        "clsact",
        "bpffs",
        "tracefs",
    ] {
        assert!(
            feature_names.contains(&name),
            "{name} missing from features"
        );
    }
    assert!(
        features
            .iter()
            .all(|f| f["ok"].is_boolean() && f["detail"].is_string()),
        "{report}"
    );
    let jobs: Vec<&str> = report["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(
        jobs,
        ["serve", "trace", "profile", "capture", "serve --pin"]
    );
    let capture = &report["jobs"][3];
    let uses: Vec<&str> = capture["uses"]
        .as_array()
        .expect("uses")
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    // the TC hook capture uses is the one the tcx probe allows, clsact otherwise
    let tc = if feature_works("tcx") {
        "tcx"
    } else {
        "clsact"
    };
    assert!(capture["ok"] == true && uses.contains(&tc), "{capture}");
    let text = String::from_utf8_lossy(&ksight(&["doctor"]).stdout).to_string();
    assert!(
        text.contains("COLLECTOR") && text.contains("syscalls"),
        "{text}"
    );
    assert!(
        text.contains("\nJOB ") && text.lines().any(|l| l.starts_with("capture ")),
        "{text}"
    );
}

/// The uprobe row fires a uprobe and a uretprobe for real; where the kernel refuses them
/// (without CAP_SYS_ADMIN, 6.18 refuses the uprobe perf event) it says why.
#[test]
fn doctor_fires_uprobes_or_says_why() {
    require_root!();
    let uprobe_row = |out: &Output| {
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("doctor --json is JSON");
        let row = report["hooks"]
            .as_array()
            .and_then(|h| h.iter().find(|h| h["name"] == "uprobe").cloned())
            .expect("an uprobe row");
        assert!(report["bpffs"]["ok"].is_boolean(), "{report}");
        (
            row["ok"] == true,
            row["detail"].as_str().unwrap_or("").to_string(),
        )
    };
    let (ok, detail) = uprobe_row(&ksight(&["doctor", "--json"]));
    assert!(ok, "uprobes do not work as root: {detail}");
    assert!(detail.contains("fired for 3 of 3 calls"), "{detail}");
    let out = Command::new("capsh")
        .args(["--drop=cap_sys_admin", "--", "-c"])
        .arg(format!("{KSIGHT} doctor --json"))
        .output()
        .expect("capsh runs (Debian package libcap2-bin)");
    let (ok, detail) = uprobe_row(&out);
    assert!(
        (ok && detail.contains("fired for 3 of 3 calls"))
            || (!ok && detail.contains("CAP_SYS_ADMIN")),
        "{detail}"
    );
}

#[test]
fn check_prints_the_hook_table() {
    require_root!();
    let out = ksight(&["serve", "--check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("syscalls") && l.contains("tp_btf")),
        "{stdout}"
    );
}

/// BPF object ids a process holds, from its fdinfo.
fn bpf_ids(pid: i32) -> Vec<(String, u32)> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            for kind in ["prog_id:", "map_id:", "link_id:"] {
                if let Some(id) = line.strip_prefix(kind).and_then(|v| v.trim().parse().ok()) {
                    ids.push((kind.trim_end_matches(':').to_string(), id));
                }
            }
        }
    }
    ids
}

fn still_loaded(kind: &str, id: u32) -> bool {
    // SAFETY: bpf id-to-fd lookups; a returned fd is closed right away.
    let fd = unsafe {
        match kind {
            "prog_id" => libbpf_sys::bpf_prog_get_fd_by_id(id),
            "map_id" => libbpf_sys::bpf_map_get_fd_by_id(id),
            _ => libbpf_sys::bpf_link_get_fd_by_id(id),
        }
    };
    if fd >= 0 {
        // SAFETY: closing the fd we were just given.
        unsafe { libc::close(fd) };
    }
    fd >= 0
}

#[test]
fn sigkill_leaves_nothing_loaded() {
    require_root!();
    let mut server = Server::start(&[]);
    let ids = bpf_ids(server.pid());
    assert!(
        ids.iter().any(|(k, _)| k == "prog_id"),
        "no programs found in fdinfo"
    );
    assert!(ids.iter().any(|(k, _)| k == "map_id"));
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = ids.iter().filter(|(k, id)| still_loaded(k, *id)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still loaded 10 s after SIGKILL: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_detaches_cleanly() {
    require_root!();
    let server = Server::start(&[]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.pid(), libc::SIGTERM) };
    let mut server = server;
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "ksight exited with {status} on SIGTERM");
}
