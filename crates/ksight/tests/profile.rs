//! `ksight profile`, end to end: workloads the test builds with gcc (functions `noinline`,
//! run for longer than the profile), each under a unique name the profile is filtered on, so
//! other activity on the machine cannot make a test pass or fail. Host only (scripts/vmtest):
//! the kernel-matrix guests have no compiler.

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::profile::{folded_lines, profile, profile_with, Run, SYSCALL_DISPATCHER};
use common::*;

/// How long the workloads run at most: they are stopped when their profile ends (or the
/// test fails), so a start of ksight slowed by emulation (the arm64 guests) cannot outlast
/// them.
const WORKLOAD_S: &str = "60";

/// Builds tests/workloads/`source` with gcc into a fresh directory as `name` (its comm).
fn build(source: &str, name: &str, flags: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ksight-profile-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(source);
    let status = Command::new("gcc")
        .args(["-O2", "-g"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc runs (scripts/deps installs it)");
    assert!(status.success(), "gcc {source}");
    out
}

/// tests/workloads/chain.rs built by tests/workloads/build-rust as `name`: here, or where a
/// guest has no rustc, copied from the one scripts/vmtest cross-built beside the test binaries
/// (`workloads/chain-rs`).
fn build_rust(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ksight-profile-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join(name);
    let exe = std::env::current_exe().expect("the test binary's path");
    let prebuilt = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile_dir| profile_dir.join("workloads/chain-rs"));
    if let Some(prebuilt) = prebuilt.filter(|p| p.exists()) {
        std::fs::copy(&prebuilt, &out).expect("copy the prebuilt Rust workload");
        return out;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/build-rust");
    let status = Command::new(script)
        .arg(&out)
        .status()
        .expect("tests/workloads/build-rust runs (rustc)");
    assert!(status.success(), "build-rust {}", out.display());
    out
}

/// A workload process, killed when dropped (a failed test leaves none running).
struct Workload(Child);

impl Workload {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` and waits for its "ready" line: the dynamic loader is done and main
/// runs, so what is profiled (and judged) is the program's own code however slow the
/// machine (emulated arm64 takes seconds to load a program).
fn spawn(program: &Path, args: &[&str]) -> Workload {
    let mut command = Command::new(program);
    command.args(args);
    ready(command)
}

/// Runs `command` (a workload, or a shell that execs one) and waits for its "ready" line.
fn ready(mut command: Command) -> Workload {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the workload");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the workload's output");
    let workload = Workload(child);
    assert_eq!(line, "ready\n", "the workload started");
    // Kept open: the workload may write again (a dlopen'd chain_main says ready too).
    std::mem::forget(stdout);
    workload
}

/// Profiles the program `start` runs (ready before the profile starts), filtered on its
/// comm; stops it at the end.
fn profile_workload(name: &str, start: impl FnOnce() -> Workload, extra: &[&str]) -> Run {
    let workload = start();
    let run = profile(&[&["--comm", name], extra].concat());
    drop(workload);
    run
}

/// Of the samples whose innermost user frame is `leaf`, the share that carries the whole
/// chain main → outer → middle → leaf.
fn whole_chain_share(run: &Run) -> (u64, u64) {
    whole_chain_share_in(run, "")
}

/// The same for functions named `PREFIXleaf` and so on (`chain::leaf` in Rust), the
/// innermost frame being the program's own innermost: in Rust, the standard library's
/// functions inlined into leaf come after it.
fn whole_chain_share_in(run: &Run, prefix: &str) -> (u64, u64) {
    let chain: Vec<String> = ["main", "outer", "middle", "leaf"]
        .iter()
        .map(|f| format!("{prefix}{f}"))
        .collect();
    chain_share(run, &chain, prefix)
}

/// Of the samples whose innermost user frame (of those starting with `prefix`) is the last
/// of `chain`, how many end with the whole chain, and how many there are.
fn chain_share(run: &Run, chain: &[String], prefix: &str) -> (u64, u64) {
    let (mut whole, mut in_leaf) = (0, 0);
    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
    for (frames, count) in run.folded() {
        let mut user: Vec<&str> = frames
            .iter()
            .skip(1)
            .filter(|f| !f.ends_with("_[k]"))
            .map(String::as_str)
            .collect();
        if !prefix.is_empty() {
            while user.last().is_some_and(|f| !f.starts_with(prefix)) {
                user.pop();
            }
        }
        if user.last() != chain.last() {
            continue;
        }
        in_leaf += count;
        if user.ends_with(&chain) {
            whole += count;
        }
    }
    (whole, in_leaf)
}

fn assert_whole_chains(run: &Run, what: &str) {
    assert_whole_chains_in(run, what, "");
}

fn assert_whole_chains_in(run: &Run, what: &str, prefix: &str) {
    let (whole, in_leaf) = whole_chain_share_in(run, prefix);
    // 3 s at 49 Hz is 147 samples on a CPU of its own; the machine is shared.
    assert!(in_leaf >= 30, "{what}: only {in_leaf} samples in leaf");
    assert!(
        whole * 100 >= in_leaf * 95,
        "{what}: {whole} of {in_leaf} samples in leaf carry main;outer;middle;leaf\n{}",
        String::from_utf8_lossy(&run.stdout)
    );
}

#[test]
fn frame_pointer_chains_are_whole_and_symbolized() {
    require_root!();
    let name = unique_comm("chain");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer"]);
    let run = profile_workload(&name, || spawn(&bin, &[WORKLOAD_S]), &[]);
    assert_whole_chains(&run, "frame pointers");
    for (frames, _) in run.folded() {
        assert_eq!(frames[0], name, "every line starts with the filtered comm");
    }
    // One tower: the copies it was judged on are counted with frame-pointer stacks too (a
    // CFI walk goes on below main, into _start, where the frame-pointer walk stops). Of the
    // samples in the program's code: one taken while the process exits, after its memory is
    // gone, has no user stack at all.
    let bottoms: std::collections::BTreeSet<String> = run
        .folded()
        .into_iter()
        .filter(|(f, _)| f.iter().any(|frame| frame == "main"))
        .map(|(f, _)| f[1].clone())
        .collect();
    assert_eq!(bottoms.len(), 1, "outermost frames: {bottoms:?}");
    // Its frame-pointer stacks are what its CFI gives: judged to use them.
    assert_eq!(run.get("judged_frame_pointers"), 1, "{:?}", run.summary);
    assert_eq!(run.get("judged_stack_copies"), 0, "{:?}", run.summary);
    assert!(run.get("stored") > run.get("copied"), "{:?}", run.summary);
    run.assert_accounted();
}

/// Built -O2 -fomit-frame-pointer: its frame-pointer stacks are cut, so it is switched to
/// stack copies, unwound from .eh_frame in user space.
#[test]
fn chains_without_frame_pointers_are_whole_and_symbolized() {
    require_root!();
    let name = unique_comm("nofp");
    let bin = build("chain.c", &name, &["-fomit-frame-pointer"]);
    let run = profile_workload(&name, || spawn(&bin, &[WORKLOAD_S]), &[]);
    assert_whole_chains(&run, "no frame pointers");
    assert_eq!(run.get("judged_stack_copies"), 1, "{:?}", run.summary);
    assert_eq!(run.get("judged_frame_pointers"), 0, "{:?}", run.summary);
    // Stored (with the frame-pointer stack) only where no copy could be made: a sample taken
    // while the process exits, its stack unmapped.
    let no_copy = ["copy_unreadable", "copy_no_user_regs", "copy_ringbuf_full"].map(|k| run.get(k));
    assert_eq!(
        run.get("stored"),
        no_copy.iter().sum::<u64>(),
        "{:?}",
        run.summary
    );
    run.assert_accounted();
}

/// A Rust release binary: no frame pointers (rustc's default; its standard library is
/// built without them either).
#[test]
fn a_rust_release_binary_is_unwound_whole_and_symbolized() {
    require_root!();
    let name = unique_comm("rust");
    let bin = build_rust(&name);
    let run = profile_workload(&name, || spawn(&bin, &[WORKLOAD_S]), &[]);
    assert_whole_chains_in(&run, "Rust release", "chain::");
    assert_eq!(run.get("judged_stack_copies"), 1, "{:?}", run.summary);
    run.assert_accounted();
}

/// Processes that live a tenth of a second, one after the other, profiled by frame
/// pointers alone: each is remembered at its exec (not only at the next poll of new
/// processes, 200 ms), so its frames are named though it is gone at the end. Linked
/// statically: the dynamic loader's share of a tenth of a second is not what is measured
/// (under emulation it was half of it).
#[test]
fn short_lived_processes_are_named_from_their_exec() {
    require_root!();
    let name = unique_comm("brief");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer", "-static"]);
    let script = format!(
        "sleep 0.5; for i in 1 2 3 4 5 6 7 8 9 10; do {} 0.1; done",
        bin.display()
    );
    // Started once ksight samples: every one of them execs during the profile.
    let mut shell = None;
    let run = profile_with(&["--comm", &name, "--unwind", "fp"], || {
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .expect("sh");
        shell = Some(Workload(child));
    });
    drop(shell);
    let (whole, in_leaf) = whole_chain_share(&run);
    let total: u64 = run.folded().iter().map(|(_, c)| c).sum();
    assert!(total >= 30, "only {total} samples");
    // The rest is the start of each (exec). Remembered only at the next poll, half of them
    // would be gone by then, their frames [unknown].
    assert!(
        whole * 100 >= total * 75,
        "{whole} of {total} samples ({in_leaf} in leaf) carry main;outer;middle;leaf\n{}",
        String::from_utf8_lossy(&run.stdout)
    );
}

#[test]
fn kernel_frames_are_symbolized_under_the_programs_frames() {
    require_root!();
    let name = unique_comm("sysc");
    let bin = build("syscalls.c", &name, &["-fno-omit-frame-pointer"]);
    let run = profile_workload(&name, || spawn(&bin, &[WORKLOAD_S]), &[]);
    let mut under = 0;
    let mut total = 0;
    for (frames, count) in run.folded() {
        total += count;
        let user = frames.iter().position(|f| f == "spin_syscalls");
        let kernel = frames.iter().position(|f| f == SYSCALL_DISPATCHER);
        if matches!((user, kernel), (Some(u), Some(k)) if u < k) {
            under += count;
        }
    }
    assert!(total >= 30, "only {total} samples");
    // A loop of 64 KiB reads from /dev/zero spends most of its time in the kernel, with
    // interrupts on (the sampling timer's), clearing the buffer.
    assert!(
        under * 2 >= total,
        "{under} of {total} samples have {SYSCALL_DISPATCHER} under spin_syscalls\n{}",
        String::from_utf8_lossy(&run.stdout)
    );
}

#[test]
fn a_process_that_exited_and_whose_binary_was_deleted_is_symbolized() {
    require_root!();
    let name = unique_comm("gone");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer"]);
    // Started once ksight samples, so that it exits during the profile.
    let mut started = None;
    let run = profile_with(&["--comm", &name], || {
        let child = spawn(&bin, &["1.5"]);
        let bin = bin.clone();
        let remover = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            std::fs::remove_file(&bin).expect("delete the running binary");
        });
        started = Some((child, remover));
    });
    let (child, remover) = started.expect("ksight said it samples");
    drop(child);
    remover.join().expect("remover");
    assert!(
        !bin.exists(),
        "the binary is gone by the end of the profile"
    );
    let (whole, in_leaf) = whole_chain_share(&run);
    assert!(
        in_leaf >= 15,
        "only {in_leaf} samples in leaf: {}\n{}",
        run.stderr,
        String::from_utf8_lossy(&run.stdout)
    );
    assert!(
        whole * 100 >= in_leaf * 95,
        "{whole} of {in_leaf} whole: {:?}\n{}",
        run.summary,
        String::from_utf8_lossy(&run.stdout)
    );
}

#[test]
fn a_binary_only_in_another_mount_namespace_is_symbolized() {
    require_root!();
    let name = unique_comm("mntns");
    let bin = build(
        "chain.c",
        &format!("{name}-src"),
        &["-fno-omit-frame-pointer"],
    );
    let hidden = std::env::temp_dir().join(format!("ksight-profile-hidden-{name}"));
    std::fs::create_dir_all(&hidden).expect("mount point");
    // A tmpfs mounted in a private mount namespace: the binary's path in /proc/PID/maps
    // does not exist in ksight's namespace.
    let script = format!(
        "mount -t tmpfs none {dir} && cp {bin} {dir}/{name} && exec {dir}/{name} {secs}",
        dir = hidden.display(),
        bin = bin.display(),
        secs = WORKLOAD_S
    );
    let run = profile_workload(
        &name,
        || {
            let mut unshare = Command::new("unshare");
            unshare.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
            ready(unshare)
        },
        &[],
    );
    assert!(
        !hidden.join(&name).exists(),
        "the binary is not visible from the test's namespace"
    );
    let _ = std::fs::remove_dir(&hidden);
    assert_whole_chains(&run, "other mount namespace");
}

#[test]
fn jit_frames_are_named_from_the_perf_map() {
    require_root!();
    let name = unique_comm("jit");
    let bin = build("jit.c", &name, &["-fno-omit-frame-pointer"]);
    let child = spawn(&bin, &[WORKLOAD_S]);
    let perf_map = format!("/tmp/perf-{}.map", child.id());
    let run = profile(&["--comm", &name]);
    drop(child);
    let _ = std::fs::remove_file(&perf_map);
    let mut named = 0;
    let mut total = 0;
    for (frames, count) in run.folded() {
        total += count;
        if frames.last().map(String::as_str) == Some("jit_hot_loop") {
            named += count;
        }
    }
    assert!(total >= 30, "only {total} samples");
    assert!(
        named * 100 >= total * 90,
        "{named} of {total} samples end in jit_hot_loop\n{}",
        String::from_utf8_lossy(&run.stdout)
    );
}

/// Every run of the program is accounted for against the kernel's own run count, with
/// losses forced by a counts map of 1 entry and a stack map of 2.
#[test]
fn every_run_is_accounted_for_when_maps_are_too_small() {
    require_root!();
    let name = unique_comm("loss");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer"]);
    let run = profile_workload(
        &name,
        || spawn(&bin, &[WORKLOAD_S]),
        &[
            "--counts-map-entries",
            "1",
            "--stack-map-entries",
            "2",
            "--unwind",
            "fp",
        ],
    );
    let delivered: u64 = run.folded().iter().map(|(_, c)| c).sum();
    assert_eq!(delivered, run.get("samples"));
    assert_eq!(delivered, run.get("stored"));
    assert!(run.get("lost") > 0, "{:?}", run.summary);
    assert_eq!(
        run.get("lost"),
        run.get("lost_map_full") + run.get("lost_update_failed")
    );
    let stack_errors = run.get("user_stack_collision")
        + run.get("user_stack_map_full")
        + run.get("kernel_stack_collision")
        + run.get("kernel_stack_map_full");
    assert!(stack_errors > 0, "{:?}", run.summary);
    assert_eq!(
        run.get("stored") + run.get("lost") + run.get("idle") + run.get("filtered"),
        run.get("runs"),
        "{:?}",
        run.summary
    );
}

/// A process judged to use its frame pointers that then dlopen's a library built without
/// them: the mmap of the library's code takes the verdict away in the kernel, the process is
/// judged again from copies (and switched to them), and the library's frames are symbolized
/// from its mappings read again.
#[test]
fn a_library_without_frame_pointers_dlopened_later_is_unwound_whole() {
    require_root!();
    let name = unique_comm("dlopen");
    let bin = build("dlopen.c", &name, &["-fno-omit-frame-pointer"]);
    let lib = build(
        "chain.c",
        &format!("{name}.so"),
        &[
            "-shared",
            "-fPIC",
            "-fomit-frame-pointer",
            "-Dmain=chain_main",
        ],
    );
    // It dlopen's the library once the trigger file exists: made when ksight has judged it
    // (its debug line), from its own code.
    let trigger = bin.with_extension("go");
    let child = spawn(
        &bin,
        &[
            trigger.to_str().expect("utf-8 path"),
            lib.to_str().expect("utf-8 path"),
            WORKLOAD_S,
        ],
    );
    let run =
        common::profile::profile_on(&["--comm", &name, "--log.level", "debug"], "judged", |_| {
            std::fs::write(&trigger, b"").expect("create the trigger file");
        });
    drop(child);
    let summary = &run.summary;
    assert_eq!(run.get("judged_again"), 1, "{summary:?}");
    assert_eq!(run.get("judged_frame_pointers"), 1, "{summary:?}");
    assert_eq!(run.get("judged_stack_copies"), 1, "{summary:?}");
    let chain = ["main", "chain_main", "outer", "middle", "leaf"].map(String::from);
    let (whole, in_leaf) = chain_share(&run, &chain, "");
    assert!(in_leaf >= 30, "only {in_leaf} samples in leaf");
    assert!(
        whole * 100 >= in_leaf * 95,
        "{whole} of {in_leaf} samples in leaf carry main;chain_main;outer;middle;leaf\n{}",
        String::from_utf8_lossy(&run.stdout)
    );
    run.assert_accounted();
}

/// A copy that finds the ring buffer full is counted, and its sample kept with its
/// frame-pointer stack: a ring buffer smaller than one copy (16.5 KiB) refuses every copy.
#[test]
fn copies_that_find_the_ring_buffer_full_are_counted_and_kept() {
    require_root!();
    let name = unique_comm("ringfull");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer"]);
    let run = profile_workload(
        &name,
        || spawn(&bin, &[WORKLOAD_S]),
        &["--unwind", "dwarf", "--ring-buffer-size", "4K"],
    );
    run.assert_accounted();
    assert_eq!(run.get("copied"), 0, "{:?}", run.summary);
    assert!(run.get("copy_ringbuf_full") > 0, "{:?}", run.summary);
    // --unwind dwarf: every sample the filter kept tried a copy, and each found it full.
    assert_eq!(
        run.get("copy_ringbuf_full"),
        run.get("stored") + run.get("lost"),
        "{:?}",
        run.summary
    );
    assert_whole_chains(&run, "frame pointers after a full ring buffer");
}

/// A stack whose slot in the stack map is taken goes to the second map: with one slot in
/// each, two stacks are kept, one in each, and the rest are counted as collisions.
#[test]
fn a_stack_whose_slot_is_taken_goes_to_the_second_map() {
    require_root!();
    let name = unique_comm("coll");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer"]);
    let run = profile_workload(
        &name,
        || spawn(&bin, &[WORKLOAD_S]),
        &["--stack-map-entries", "1", "--unwind", "fp"],
    );
    assert_eq!(run.get("stacks"), 1, "{:?}", run.summary);
    assert_eq!(run.get("stacks_second_map"), 1, "{:?}", run.summary);
    assert!(run.get("user_stack_collision") > 0, "{:?}", run.summary);
    let lost_stacks: u64 = run
        .folded()
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| f == "[user stack lost]"))
        .map(|(_, c)| c)
        .sum();
    assert_eq!(
        lost_stacks,
        run.get("user_stack_collision"),
        "{:?}",
        run.summary
    );
}

#[test]
fn pprof_svg_and_folded_agree() {
    require_root!();
    let name = unique_comm("fmt");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer"]);
    let dir = bin.parent().expect("dir").to_path_buf();
    let (pb, svg) = (dir.join("p.pb.gz"), dir.join("p.svg"));
    let pprof_run = profile_workload(
        &name,
        || spawn(&bin, &[WORKLOAD_S]),
        &["--format", "pprof", "-o", pb.to_str().expect("utf-8")],
    );
    let svg_run = profile_workload(
        &name,
        || spawn(&bin, &[WORKLOAD_S]),
        &["--format", "svg", "--output", svg.to_str().expect("utf-8")],
    );
    let expect = pprof::Expect {
        samples: pprof_run.get("samples"),
        comm: &name,
        pid: None,
        container: None,
    };
    pprof::check(&std::fs::read(&pb).expect("pprof file"), &expect);
    let text = std::fs::read_to_string(&svg).expect("svg file");
    assert_valid_xml(&text);
    assert!(text.contains(">leaf ("), "the flame graph names leaf");
    assert!(svg_run.get("samples") > 0);
}

/// --cgroup and --container keep only the process in that cgroup, in the kernel: a twin of
/// the same name outside it runs meanwhile. The pprof labels say whose samples they are.
#[test]
fn cgroup_and_container_filters_keep_only_that_cgroup() {
    require_root!();
    let name = unique_comm("cgrp");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer"]);
    // Its first 12 digits (the --container prefix) are this test process's own: other tests'
    // containers (labels.rs, other runs side by side) start with zeros.
    let container = format!("{:08x}badc{:052x}", std::process::id(), 0xcafe);
    // Where docker's cgroupfs driver puts a container: only such places name one.
    let cgroup = TestCgroup::new(&format!("docker/{container}"));
    let procs = cgroup.dir().join("cgroup.procs");
    let start_inside = || {
        let script = format!(
            "echo $$ > {} && exec {} {WORKLOAD_S}",
            procs.display(),
            bin.display()
        );
        let mut sh = Command::new("sh");
        sh.args(["-c", &script]);
        ready(sh)
    };
    let pb = bin.with_extension("pb.gz");
    let pb_arg = pb.to_str().expect("utf-8");
    for filter in [
        ["--cgroup", cgroup.path.as_str()],
        ["--container", &container[..12]],
    ] {
        let twin = spawn(&bin, &[WORKLOAD_S]);
        let inside = start_inside();
        let run = profile(&[&filter[..], &["--format", "pprof", "-o", pb_arg]].concat());
        let pid = i64::from(inside.id());
        drop((inside, twin));
        assert!(run.get("samples") >= 30, "{filter:?}: {:?}", run.summary);
        let expect = pprof::Expect {
            samples: run.get("samples"),
            comm: &name,
            pid: Some(pid),
            container: Some(&container),
        };
        pprof::check(&std::fs::read(&pb).expect("pprof file"), &expect);
    }
}

fn assert_valid_xml(text: &str) {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0i64;
    loop {
        match reader.read_event().expect("well-formed XML") {
            quick_xml::events::Event::Start(_) => depth += 1,
            quick_xml::events::Event::End(_) => depth -= 1,
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "every element is closed");
}

/// profile.proto read back with messages of its own (field numbers from the .proto).
mod pprof {
    use prost::Message;
    use std::io::Read;

    #[derive(Clone, PartialEq, Message)]
    struct Profile {
        #[prost(message, repeated, tag = "1")]
        sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        string_table: Vec<String>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct ValueType {
        #[prost(int64, tag = "1")]
        r#type: i64,
        #[prost(int64, tag = "2")]
        unit: i64,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        label: Vec<Label>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Label {
        #[prost(int64, tag = "1")]
        key: i64,
        #[prost(int64, tag = "2")]
        str: i64,
        #[prost(int64, tag = "3")]
        num: i64,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Location {
        #[prost(uint64, tag = "1")]
        id: u64,
        #[prost(message, repeated, tag = "4")]
        line: Vec<Line>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Line {
        #[prost(uint64, tag = "1")]
        function_id: u64,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Function {
        #[prost(uint64, tag = "1")]
        id: u64,
        #[prost(int64, tag = "2")]
        name: i64,
    }

    /// What every sample must say.
    pub struct Expect<'a> {
        pub samples: u64,
        pub comm: &'a str,
        pub pid: Option<i64>,
        pub container: Option<&'a str>,
    }

    pub fn check(gz: &[u8], expect: &Expect<'_>) {
        let (samples, comm) = (expect.samples, expect.comm);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut raw)
            .expect("gzip");
        let p = Profile::decode(&raw[..]).expect("profile.proto");
        let s = |i: i64| p.string_table[i as usize].as_str();
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (s(t.r#type), s(t.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        let total: i64 = p.sample.iter().map(|x| x.value[0]).sum();
        assert_eq!(total as u64, samples, "pprof total = the summary's samples");
        let function_name = |location: u64| {
            let loc = p
                .location
                .iter()
                .find(|l| l.id == location)
                .expect("location");
            let f = p
                .function
                .iter()
                .find(|f| f.id == loc.line[0].function_id)
                .expect("function");
            s(f.name)
        };
        let mut with_leaf = 0;
        for sample in &p.sample {
            let labels: Vec<(&str, &str, i64)> = sample
                .label
                .iter()
                .map(|l| (s(l.key), s(l.str), l.num))
                .collect();
            assert!(labels.iter().any(|l| l.0 == "pid" && l.2 > 0), "{labels:?}");
            assert!(
                labels.iter().any(|l| l.0 == "thread" && l.2 > 0),
                "{labels:?}"
            );
            assert!(labels.contains(&("comm", comm, 0)), "{labels:?}");
            if let Some(pid) = expect.pid {
                assert!(labels.contains(&("pid", "", pid)), "{labels:?}");
            }
            if let Some(container) = expect.container {
                assert!(labels.contains(&("container", container, 0)), "{labels:?}");
            }
            if sample
                .location_id
                .iter()
                .any(|l| function_name(*l) == "leaf")
            {
                with_leaf += 1;
            }
        }
        assert!(with_leaf > 0, "some samples are in leaf");
    }
}

/// Ctrl-C (SIGINT) stops sampling, and the profile is still written, with its summary.
#[test]
fn an_interrupted_profile_is_still_written() {
    require_root!();
    let name = unique_comm("intr");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer"]);
    let mut ksight = Command::new(KSIGHT)
        .args(["profile", "-F", common::profile::FREQUENCY, "--comm", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ksight profile");
    let mut stdout = ksight.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).expect("read stdout");
        out
    });
    let mut stderr = String::new();
    let mut lines = BufReader::new(ksight.stderr.take().expect("piped")).lines();
    for line in lines.by_ref() {
        let line = line.expect("utf-8 stderr");
        stderr.push_str(&line);
        stderr.push('\n');
        if line.contains("message=sampling") {
            break;
        }
    }
    let workload = spawn(&bin, &[WORKLOAD_S]);
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(ksight.id() as i32, libc::SIGINT) };
    for line in lines {
        stderr.push_str(&line.expect("utf-8 stderr"));
        stderr.push('\n');
    }
    let status = ksight.wait().expect("ksight's exit");
    let stdout = reader.join().expect("stdout reader");
    drop(workload);
    assert!(status.success(), "{stderr}");
    let samples: u64 = folded_lines(&String::from_utf8_lossy(&stdout))
        .iter()
        .map(|(_, c)| c)
        .sum();
    assert!(samples > 0, "no samples written: {stderr}");
    assert!(
        stderr.contains(&format!("ksight profile: samples={samples} ")),
        "{stderr}"
    );
}

fn ksight_profile(args: &[&str]) -> Output {
    Command::new(KSIGHT)
        .arg("profile")
        .args(args)
        .output()
        .expect("run ksight profile")
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    // No root needed: every one is refused before anything is loaded.
    let cases: [&[&str]; 9] = [
        &["--format", "flame"],
        &["-F", "0"],
        &["-F", "1000"],
        &["--pid", "4000000"],
        &["-d", "0"],
        &["-o", "/nonexistent/dir/profile.folded", "-d", "1"],
        &["--stack-map-entries", "0"],
        &["--counts-map-entries", "-1"],
        &["--ring-buffer-size", "5000"],
    ];
    for args in cases {
        let out = ksight_profile(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("ksight: "), "{args:?}: {stderr}");
        assert!(
            stderr.lines().count() <= 2,
            "{args:?}: one line (and clap's hint): {stderr}"
        );
    }
}

/// A kernel that refuses what the profiler needs (its probe answers no: forced with
/// KSIGHT_REFUSE in fault-injection builds): one line that names the feature, before
/// anything is loaded, and exit 1.
#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "refuses perf_event on purpose: needs --features fault-injection (scripts/test)"
)]
fn a_kernel_without_perf_events_is_one_clear_line() {
    require_root!();
    for feature in ["perf_event", "stack_map"] {
        let out = Command::new(KSIGHT)
            .args(["profile", "-d", "1", "-o", "/dev/null"])
            .env("KSIGHT_REFUSE", feature)
            .output()
            .expect("run ksight profile");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("ksight: "))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains(&format!("profile needs {feature}")),
            "{stderr}"
        );
    }
}

/// Runs the JIT workload as nobody (uid 65534) for `seconds`; returns it and the perf map
/// it wrote (nobody's), with the map's one line.
fn jit_as_nobody(name: &str, seconds: &str) -> (Child, PathBuf, String) {
    use std::os::unix::process::CommandExt;
    let bin = build("jit.c", name, &["-fno-omit-frame-pointer"]);
    let mut cmd = Command::new(&bin);
    cmd.arg(seconds).stdout(Stdio::null());
    // SAFETY: setgid and setuid between fork and exec: async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start the workload as nobody");
    let map = PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
    for _ in 0..250 {
        if let Ok(line) = std::fs::read_to_string(&map) {
            if line.ends_with('\n') {
                return (child, map, line);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no perf map from the workload at {}", map.display());
}

/// Profiles `child` by pid, then stops it and removes `map`.
fn profile_jit(mut child: Child, map: &Path) -> Run {
    let run = profile(&["--pid", &child.id().to_string()]);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(map);
    run
}

/// The samples whose innermost frame is `name`, and all samples.
fn ending_in(run: &Run, name: &str) -> (u64, u64) {
    let folded = run.folded();
    let total = folded.iter().map(|(_, c)| c).sum();
    let named = folded
        .iter()
        .filter(|(f, _)| f.last().map(String::as_str) == Some(name))
        .map(|(_, c)| c)
        .sum();
    (named, total)
}

/// A user's perf map made a sparse 3 GB file: ksight reads a bounded part of it (64 MiB, a
/// line at a time), its peak memory stays small, and the profile is written.
#[test]
fn a_3_gb_perf_map_costs_a_bounded_read() {
    require_root!();
    let name = unique_comm("pmbig");
    let (child, map, _) = jit_as_nobody(&name, WORKLOAD_S);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&map)
        .expect("the map");
    file.set_len(3 << 30).expect("a sparse 3 GB map");
    drop(file);
    let run = profile_jit(child, &map);
    let (_, total) = ending_in(&run, "jit_hot_loop");
    assert!(total >= 30, "only {total} samples: the profile is written");
    assert!(
        run.peak_rss_kib < 120 << 10,
        "ksight's peak RSS {} KiB with a 3 GB perf map",
        run.peak_rss_kib
    );
    eprintln!("peak RSS with a 3 GB perf map: {} KiB", run.peak_rss_kib);
}

/// nobody replaces its perf map by a symlink to a root-only file written as a perf map:
/// the link is not followed, so no name from that file appears in the profile.
#[test]
fn a_perf_map_symlink_to_a_root_file_is_not_followed() {
    require_root!();
    use std::os::unix::fs::PermissionsExt;
    let name = unique_comm("pmlink");
    let (child, map, line) = jit_as_nobody(&name, WORKLOAD_S);
    let secret = std::env::temp_dir().join(format!("{name}-root-secret"));
    std::fs::write(&secret, line.replace("jit_hot_loop", "root_only_secret")).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("0600");
    std::fs::remove_file(&map).expect("remove the map");
    std::os::unix::fs::symlink(&secret, &map).expect("symlink");
    std::os::unix::fs::lchown(&map, Some(65534), Some(65534)).expect("nobody's link");
    let run = profile_jit(child, &map);
    let _ = std::fs::remove_file(&secret);
    let (_, total) = ending_in(&run, "jit_hot_loop");
    assert!(total >= 30, "only {total} samples");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(!text.contains("root_only_secret"), "{text}");
}

/// A 20 MB symbol name in a perf map comes out cut to 4096 bytes and marked.
#[test]
fn a_20_mb_jit_name_is_cut_with_the_marker() {
    require_root!();
    let name = unique_comm("pmname");
    let (child, map, line) = jit_as_nobody(&name, WORKLOAD_S);
    let long = "n".repeat(20 << 20);
    let huge = line.replace("jit_hot_loop", &long);
    // Written in place: the file stays nobody's.
    std::fs::write(&map, huge).expect("a 20 MB name");
    let run = profile_jit(child, &map);
    let cut = format!("{}…[cut]", "n".repeat(4096));
    let (named, total) = ending_in(&run, &cut);
    assert!(total >= 30, "only {total} samples");
    assert!(
        named * 100 >= total * 90,
        "{named} of {total} samples end in the cut name"
    );
    assert!(
        run.stdout.len() < 1 << 20,
        "{} bytes of profile",
        run.stdout.len()
    );
}

/// Sets ch_size of every compressed section of the ELF file at `path` to 1 TiB; returns how
/// many there were.
fn lie_about_compressed_sizes(path: &Path) -> usize {
    const SHF_COMPRESSED: u64 = 0x800;
    let mut elf = std::fs::read(path).expect("the binary");
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes(b[at..at + 2].try_into().expect("2"));
    let shoff = u64_at(&elf, 0x28) as usize;
    let (shentsize, shnum) = (u16_at(&elf, 0x3a) as usize, u16_at(&elf, 0x3c) as usize);
    let mut patched = 0;
    for i in 0..shnum {
        let shdr = shoff + i * shentsize;
        if u64_at(&elf, shdr + 8) & SHF_COMPRESSED == 0 {
            continue;
        }
        // Elf64_Chdr: ch_type, ch_reserved (u32 each), then ch_size.
        let chdr = u64_at(&elf, shdr + 0x18) as usize;
        elf[chdr + 8..chdr + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        patched += 1;
    }
    std::fs::write(path, elf).expect("write the binary");
    patched
}

/// A binary whose compressed debug sections claim 1 TiB each: its symbolizer aborts on the
/// allocation, the profile is still written, and the file is counted and named.
#[test]
fn a_debug_section_that_lies_about_its_size_costs_only_its_file() {
    require_root!();
    let name = unique_comm("chdr");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer", "-gz=zlib"]);
    assert!(
        lie_about_compressed_sizes(&bin) > 0,
        "compressed debug sections"
    );
    let run = profile_workload(&name, || spawn(&bin, &[WORKLOAD_S]), &[]);
    let total: u64 = run.folded().iter().map(|(_, c)| c).sum();
    assert!(total >= 30, "only {total} samples: the profile is written");
    assert_eq!(run.get("symbol_files_failed"), 1, "{}", run.stderr);
    let named = format!("no symbols from {name}: the symbolizer aborted (SIGABRT)");
    assert!(run.stderr.contains(&named), "{}", run.stderr);
    // Its frames are named by the file; libc's are still symbolized.
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains(&format!("[{name}]")), "{text}");
    // (__libc_start_call_main where libc's symbol table is there, __libc_start_main from
    // its dynamic symbols alone.)
    assert!(text.contains("__libc_start_"), "{text}");
}

/// After attaching, profile keeps only CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYSLOG and
/// CAP_CHECKPOINT_RESTORE (CAP_SYS_ADMIN on kernels without it) and sets no-new-privileges,
/// and still symbolizes.
#[test]
fn profile_drops_capabilities_after_attaching() {
    require_root!();
    let name = unique_comm("pcaps");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer"]);
    let child = spawn(&bin, &[WORKLOAD_S]);
    let seen = std::sync::Mutex::new(None);
    let run = common::profile::profile_watched(&["--comm", &name], |pid| {
        std::thread::sleep(Duration::from_millis(300));
        *seen.lock().expect("lock") = Some(effective_caps_and_nnp(pid));
    });
    drop(child);
    let (eff, nnp) = seen.lock().expect("lock").expect("read while sampling");
    let restore = match std::fs::read_to_string("/proc/sys/kernel/cap_last_cap") {
        Ok(last) if last.trim().parse::<u32>().unwrap_or(0) >= 40 => 1u64 << 40,
        _ => 1 << 21,
    };
    let kept = (1 << 2) | (1 << 19) | (1 << 34) | restore;
    assert!(kept_after_attach(eff, kept), "CapEff {eff:x}");
    assert_eq!(nnp, 1);
    assert_whole_chains(&run, "after the drop");
}

/// `-o` at a name where nobody put a symlink to a root-owned file: the symlink is replaced
/// by ksight's own file (mode 0600) and the root file is unchanged.
#[test]
fn a_symlink_at_the_profile_output_is_replaced_not_followed() {
    require_root!();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let name = unique_comm("olink");
    let bin = build("chain.c", &name, &["-fno-omit-frame-pointer"]);
    let dir = bin.parent().expect("its directory");
    let secret = dir.join("root-file");
    std::fs::write(&secret, "root's file\n").expect("root file");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("0600");
    let out = dir.join("out.folded");
    std::os::unix::fs::symlink(&secret, &out).expect("symlink");
    std::os::unix::fs::lchown(&out, Some(65534), Some(65534)).expect("nobody's link");
    let child = spawn(&bin, &[WORKLOAD_S]);
    let out_arg = out.to_str().expect("a UTF-8 path");
    let run = profile(&["--comm", &name, "-o", out_arg]);
    drop(child);
    assert_eq!(
        std::fs::read_to_string(&secret).expect("read"),
        "root's file\n"
    );
    let meta = std::fs::symlink_metadata(&out).expect("the output");
    assert!(meta.is_file());
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    let written = std::fs::read_to_string(&out).expect("the profile");
    assert_eq!(
        folded_lines(&written).iter().map(|(_, c)| c).sum::<u64>(),
        run.get("samples")
    );
}
