//! `ksight profile` on every kernel of the matrix: the program loads and attaches to the
//! cpu-clock events, kernel stacks are symbolized from kallsyms, and every run of the program
//! is accounted for against the kernel's own run count. The workload is this test binary in
//! a forked child (no compiler needed, so it runs in the guests too).

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::profile::{profile, Run, SYSCALL_DISPATCHER};
use common::*;

/// Accounted for (common::profile), and nothing lost: the guests' samples are few.
fn assert_accounted(run: &Run) {
    run.assert_accounted();
    assert_eq!(run.get("lost"), 0, "{:?}", run.summary);
}

/// Runs `work` over and over in a forked child named `name` until the profile of `profile`
/// is over (a stop file appears; at most a minute), so the child outlives the profile
/// however long the kernel takes to load the program (seconds under emulation).
/// One at a time: a child forked while another test's ksight runs would inherit the pipes
/// of its output, and that test would wait for their end as long as the child lives.
fn profile_child(name: &str, work: fn(), profile: impl FnOnce() -> Run) -> Run {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let stop = std::env::temp_dir().join(format!("ksight-profile-stop-{name}"));
    let _ = std::fs::remove_file(&stop);
    let stop_c = std::ffi::CString::new(stop.to_str().expect("utf-8")).expect("no NUL");
    let worker = {
        let name = name.to_string();
        std::thread::spawn(move || {
            in_child(&name, || {
                let end = Instant::now() + Duration::from_secs(60);
                // SAFETY: access() on a NUL-terminated path: a raw syscall after fork.
                while unsafe { libc::access(stop_c.as_ptr(), libc::F_OK) } != 0
                    && Instant::now() < end
                {
                    work();
                }
            })
        })
    };
    // ksight starts once the child is forked: forked later, the child would inherit the
    // pipes of ksight's output, and reading them would last as long as the child.
    wait_for_comm(name);
    let run = profile();
    std::fs::write(&stop, b"").expect("stop file");
    let _ = worker.join();
    let _ = std::fs::remove_file(&stop);
    run
}

/// Waits (at most 10 s) until a process named `name` runs.
fn wait_for_comm(name: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let found = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(Result::ok)
            .any(|e| {
                std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
            });
        if found {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no process {name} after 10 s");
}

/// Arithmetic for a few milliseconds: time in user space.
#[inline(never)]
fn spin_user() {
    let mut x = 0u64;
    for i in 0..1_000_000u64 {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
}

/// getppid a thousand times: most of its time is in the kernel.
fn spin_syscalls() {
    for _ in 0..1000 {
        // SAFETY: a raw syscall without arguments.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

#[test]
fn kernel_stacks_are_symbolized_and_every_run_is_accounted_for() {
    require_root!();
    let name = unique_comm("kstk");
    let run = profile_child(&name, spin_syscalls, || {
        profile(&["--comm", &name, "-F", "99"])
    });
    let folded = run.folded();
    let delivered: u64 = folded.iter().map(|(_, c)| c).sum();
    assert_eq!(delivered, run.get("samples"));
    assert_accounted(&run);
    assert!(
        delivered >= 10,
        "only {delivered} samples: {:?}",
        run.summary
    );
    let dispatcher = SYSCALL_DISPATCHER;
    let in_syscall: u64 = folded
        .iter()
        .filter(|(frames, _)| frames[0] == name && frames.iter().any(|f| f == dispatcher))
        .map(|(_, c)| c)
        .sum();
    assert!(
        in_syscall > 0,
        "no sample in {dispatcher} of {delivered}:\n{}",
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
    let run = profile_child(&name, spin_user, || {
        profile(&["--comm", &name, "-F", "99", "--unwind", "dwarf"])
    });
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
