//! `ksight profile` on every kernel of the matrix: the program loads and attaches to the
//! cpu-clock events, kernel stacks are symbolized from kallsyms, and every run of the program
//! is accounted for against the kernel's own run count. The workload is this test binary in
//! a forked child (no compiler needed, so it runs in the guests too).

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::profile::profile;
use common::*;

/// Every run ends stored, sent as a stack copy (all received), lost, idle or filtered;
/// the samples written are those stored and copied.
fn assert_accounted(run: &common::profile::Run) {
    let delivered: u64 = run.folded().iter().map(|(_, c)| c).sum();
    assert_eq!(
        delivered,
        run.get("stored") + run.get("copied"),
        "{:?}",
        run.summary
    );
    assert_eq!(
        run.get("copies_received"),
        run.get("copied"),
        "{:?}",
        run.summary
    );
    assert_eq!(run.get("lost"), 0, "{:?}", run.summary);
    assert_eq!(
        run.get("stored")
            + run.get("copied")
            + run.get("lost")
            + run.get("idle")
            + run.get("filtered"),
        run.get("runs"),
        "{:?}",
        run.summary
    );
}

/// Arithmetic in a loop for `secs`: its time is in user space.
#[inline(never)]
fn spin_user(secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut x = 0u64;
    while Instant::now() < end {
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
}

/// getppid in a loop for `secs`: most of its time is in the kernel.
fn spin_syscalls(secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        for _ in 0..1000 {
            // SAFETY: a raw syscall without arguments.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
    }
}

#[test]
fn kernel_stacks_are_symbolized_and_every_run_is_accounted_for() {
    require_root!();
    let name = unique_comm("kstk");
    let worker = {
        let name = name.clone();
        std::thread::spawn(move || in_child(&name, || spin_syscalls(8)))
    };
    let run = profile(&["--comm", &name, "-F", "99"]);
    let _ = worker.join();
    let folded = run.folded();
    let delivered: u64 = folded.iter().map(|(_, c)| c).sum();
    assert_eq!(delivered, run.get("samples"));
    assert_accounted(&run);
    assert!(
        delivered >= 10,
        "only {delivered} samples: {:?}",
        run.summary
    );
    let in_syscall: u64 = folded
        .iter()
        .filter(|(frames, _)| frames[0] == name && frames.iter().any(|f| f == "do_syscall_64_[k]"))
        .map(|(_, c)| c)
        .sum();
    assert!(
        in_syscall > 0,
        "no sample in do_syscall_64 of {delivered}:\n{}",
        String::from_utf8_lossy(&run.stdout)
    );
}

/// --unwind dwarf: every sample with user registers goes to user space as a copy of the
/// stack's top (BPF ring buffer, bpf_probe_read_user), unwound there from .eh_frame down to
/// the thread's start, and named.
#[test]
fn stack_copies_are_unwound_and_every_run_is_accounted_for() {
    require_root!();
    let name = unique_comm("copy");
    let worker = {
        let name = name.clone();
        std::thread::spawn(move || in_child(&name, || spin_user(8)))
    };
    let run = profile(&["--comm", &name, "-F", "99", "--unwind", "dwarf"]);
    let _ = worker.join();
    assert_accounted(&run);
    let copied = run.get("copied");
    assert!(copied >= 10, "only {copied} copies: {:?}", run.summary);
    // Sampled in user mode, every sample has its user registers on every kernel.
    assert!(
        run.get("unwind_complete") * 100 >= copied * 95,
        "{:?}",
        run.summary
    );
    let named: u64 = run
        .folded()
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| f.ends_with("spin_user")))
        .map(|(_, c)| c)
        .sum();
    assert!(
        named * 100 >= copied * 90,
        "{named} of {copied} samples in spin_user:\n{}",
        String::from_utf8_lossy(&run.stdout)
    );
}
