//! `serve --pin NAME` and `ksight unpin NAME`: bpftool reads the same counts as /metrics, a
//! clean exit leaves nothing pinned, stale pins are replaced, a held NAME is refused, and bad
//! NAMEs exit 2 with one line.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use common::*;

/// A pin NAME no other test (or run) uses.
fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("test-{tag}-{}-{n}", std::process::id())
}

fn pin_dir(name: &str) -> PathBuf {
    Path::new("/sys/fs/bpf/ksight").join(name)
}

/// Every default collector: each object's maps get pinned, internal ones left out.
fn serve_pinned(name: &str) -> Server {
    Server::start(&["--pin", name])
}

fn errors_pin(name: &str) -> PathBuf {
    pin_dir(name).join("syscalls/sys_errors")
}

fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .args(args)
        .arg("-j")
        .output()
        .expect("bpftool runs (Debian package bpftool)");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool's JSON")
}

/// The id of the map pinned at `path`.
fn pinned_map_id(path: &Path) -> u64 {
    let path = path.to_str().expect("UTF-8 path");
    bpftool(&["map", "show", "pinned", path])["id"]
        .as_u64()
        .expect("map id")
}

/// The count for (syscall nr, errno) in the pinned sys_errors map (0 when absent).
fn pinned_errors(name: &str, nr: i64, errno: i32) -> u64 {
    let path = errors_pin(name);
    let dump = bpftool(&["map", "dump", "pinned", path.to_str().expect("UTF-8 path")]);
    dump.as_array()
        .expect("an array of entries")
        .iter()
        .map(|entry| &entry["formatted"])
        .find(|f| f["key"]["nr"] == nr && f["key"]["err"] == errno)
        .map_or(0, |f| f["value"].as_u64().expect("a count"))
}

fn ksight(args: &[&str]) -> Output {
    Command::new(KSIGHT)
        .args(args)
        .output()
        .expect("run ksight")
}

/// One line on stderr, starting with "ksight", that says `expect`.
fn assert_one_line(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("ksight")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(expect),
        "stderr lacks {expect:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bpftool_reads_the_count_metrics_shows() {
    require_root!();
    let name = unique_name("count");
    let server = serve_pinned(&name);
    let comm = unique_comm("iopr");
    const N: u64 = 357;
    // ioprio_get with an unknown `which` fails with EINVAL; nothing else calls it that way.
    in_child(&comm, || {
        for _ in 0..N {
            // SAFETY: ioprio_get with invalid arguments only returns an error.
            unsafe { libc::syscall(libc::SYS_ioprio_get, 12345, 0) };
        }
    });
    let labels = [("syscall", "ioprio_get"), ("errno", "EINVAL")];
    let scraped = server.scrape().sum("ksight_syscall_errors_total", &labels);
    let pinned = pinned_errors(&name, libc::SYS_ioprio_get, libc::EINVAL);
    assert_eq!(scraped, N as f64);
    assert_eq!(pinned, N);
}

#[test]
fn a_clean_exit_leaves_nothing_pinned() {
    require_root!();
    let name = unique_name("clean");
    let mut server = serve_pinned(&name);
    assert!(errors_pin(&name).exists(), "sys_errors is not pinned");
    for collector in ["process", "tcp", "sched", "block", "memory", "signals"] {
        let dir = pin_dir(&name).join(collector);
        let maps: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!maps.is_empty(), "nothing pinned for {collector}");
        assert!(
            maps.iter().all(|m| !m.contains('.')),
            "internal maps pinned for {collector}: {maps:?}"
        );
    }
    assert!(pin_dir(&name).join("process/proc_a").exists());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.pid(), libc::SIGTERM) };
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "ksight exited with {status} on SIGTERM");
    assert!(!pin_dir(&name).exists(), "pins left after a clean exit");
}

#[test]
fn stale_pins_are_replaced_and_unpin_removes_them() {
    require_root!();
    let name = unique_name("stale");
    let mut killed = serve_pinned(&name);
    killed.child.kill().expect("SIGKILL");
    let _ = killed.child.wait();
    // Pins outlive SIGKILL by design; an extra directory stands for anything stale.
    let stale_id = pinned_map_id(&errors_pin(&name));
    std::fs::create_dir(pin_dir(&name).join("stale")).expect("mkdir in bpffs");

    let mut server = serve_pinned(&name);
    assert!(!pin_dir(&name).join("stale").exists(), "stale entry kept");
    let live_id = pinned_map_id(&errors_pin(&name));
    assert_ne!(live_id, stale_id, "the stale map is still pinned");
    let held = ksight(&["unpin", &name]);
    assert_one_line(&held, "held by a running ksight");
    assert!(errors_pin(&name).exists());

    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    let out = ksight(&["unpin", &name]);
    assert!(out.status.success(), "{out:?}");
    assert!(!pin_dir(&name).exists(), "unpin left {name}");
}

#[test]
fn a_name_held_by_a_running_ksight_is_refused() {
    require_root!();
    let name = unique_name("held");
    let _first = serve_pinned(&name);
    let out = ksight(&[
        "serve",
        "--web.listen-address",
        "127.0.0.1:0",
        "--pin",
        &name,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_one_line(&out, "held by a running ksight");
    assert!(
        errors_pin(&name).exists(),
        "the refused one removed the pins"
    );
}

#[test]
fn bad_names_and_pin_with_user_exit_2() {
    let long = "x".repeat(65);
    for bad in ["a/b", "..", ".", "", "../etc", &long, "a b"] {
        let out = ksight(&["serve", "--pin", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert_one_line(&out, "NAME");
        let out = ksight(&["unpin", bad]);
        assert_eq!(out.status.code(), Some(2), "unpin {bad:?}: {out:?}");
    }
    let out = ksight(&["serve", "--pin", "ok", "--user", "65534"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_one_line(&out, "--pin and --user cannot go together");
}

/// A host that boots with neither tracefs nor bpffs mounted (minimal hosts, containers; the
/// third review's machine), made in a mount namespace of the test's own: `--pin` mounts
/// bpffs there before ksight moves to a private namespace for tracefs, so bpftool, run in
/// that "host" namespace, reads the pins.
#[test]
fn pins_are_visible_on_a_host_with_neither_tracefs_nor_bpffs_mounted() {
    require_root!();
    let dir = std::env::temp_dir().join(format!("ksight-bare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let wrapper = dir.join("bare-host");
    // The shell stays in the bare namespace (bpftool is run there through it) and passes
    // SIGTERM on to ksight.
    let script = format!(
        "#!/bin/sh\nexec unshare --mount --propagation private sh -c '\
         for m in /sys/fs/bpf /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug; do \
         while umount -l \"$m\" 2>/dev/null; do :; done; done; \
         \"$0\" \"$@\" & pid=$!; trap \"kill -TERM $pid\" TERM; wait $pid; wait $pid' {KSIGHT} \"$@\"\n"
    );
    std::fs::write(&wrapper, script).expect("write the wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let name = unique_name("bare");
    let server = Server::start_binary(&wrapper, &["--pin", &name]);
    let host = server.pid().to_string();
    let in_host = |program: &str, args: &[&str]| {
        Command::new("nsenter")
            .args(["-t", &host, "-m", "--", program])
            .args(args)
            .output()
            .expect("nsenter (util-linux)")
    };
    let mounts =
        String::from_utf8_lossy(&in_host("cat", &["/proc/self/mountinfo"]).stdout).into_owned();
    assert!(
        !mounts.contains(" - tracefs "),
        "tracefs left in the bare host: {mounts}"
    );
    assert!(
        mounts.contains(" /sys/fs/bpf ") && mounts.contains(" - bpf "),
        "{mounts}"
    );
    let path = errors_pin(&name);
    let shown = in_host(
        "bpftool",
        &[
            "-j",
            "map",
            "show",
            "pinned",
            path.to_str().expect("UTF-8 path"),
        ],
    );
    assert!(
        shown.status.success(),
        "bpftool in the bare host: {}",
        String::from_utf8_lossy(&shown.stderr)
    );
    drop(server);
    let after = in_host("ls", &[pin_dir(&name).to_str().expect("UTF-8 path")]);
    assert!(!after.status.success(), "a clean exit unpins everything");
    let _ = std::fs::remove_dir_all(&dir);
}
