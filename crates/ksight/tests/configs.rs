//! `serve --config.dir D --config.names N`: ebpf_exporter v2 configs run unchanged beside the
//! collectors. The programs are ksight's own examples (`crates/bpf/bpf/examples/`), written
//! out beside their YAML (`tests/configs/`) as a user's folder would hold them; the workloads
//! run under unique names the assertions filter on.

#[macro_use]
mod common;

use std::process::Command;

use common::*;

/// `n` write(2) calls of `size` bytes to /dev/null.
fn writes(n: usize, size: usize) {
    let buf = vec![0u8; size];
    // SAFETY: open, write and close on a buffer this function owns (in a forked child).
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        for _ in 0..n {
            libc::write(fd, buf.as_ptr().cast(), size);
        }
        libc::close(fd);
    }
}

#[test]
fn counters_and_histograms_of_a_config_count_exactly() {
    require_root!();
    let dir = example_config_dir("exact");
    let server = Server::start(&[
        "--collector.disable-defaults",
        "--config.dir",
        dir.to_str().expect("utf-8"),
        "--config.names",
        "example_writes",
    ]);
    let comm = unique_comm("cfg");
    in_child(&comm, || {
        writes(10, 100);
        writes(5, 1000);
    });
    let m = server.scrape();
    let calls = [("comm", comm.as_str()), ("syscall", "write")];
    assert_eq!(m.sum("ebpf_exporter_example_syscalls_total", &calls), 15.0);
    // kaddrs: the program got ksys_write's address, which the ksym decoder names back
    let function = [("comm", comm.as_str()), ("function", "ksys_write")];
    assert_eq!(
        m.sum("ebpf_exporter_example_kaddr_writes_total", &function),
        15.0,
        "{:?}",
        m.0.iter()
            .filter(|s| s.0.contains("kaddr"))
            .collect::<Vec<_>>()
    );
    let hist = "ebpf_exporter_example_write_bytes";
    let le = |bound: &str| {
        m.sum(
            &format!("{hist}_bucket"),
            &[("comm", comm.as_str()), ("le", bound)],
        )
    };
    // 100 bytes: (64, 128]; 1000 bytes: (512, 1024]
    let bounds = (
        le("64.0"),
        le("128.0"),
        le("512.0"),
        le("1024.0"),
        le("+Inf"),
    );
    assert_eq!(bounds, (0.0, 10.0, 10.0, 15.0, 15.0));
    let comm_only = [("comm", comm.as_str())];
    assert_eq!(m.sum(&format!("{hist}_count"), &comm_only), 15.0);
    assert_eq!(
        m.sum(&format!("{hist}_sum"), &comm_only),
        10.0 * 100.0 + 5.0 * 1000.0
    );
    let attached = [
        ("config", "example_writes"),
        ("program", "example_sys_enter"),
    ];
    assert_eq!(m.sum("ksight_config_program_attached", &attached), 1.0);
    assert_eq!(
        m.sum(
            "ksight_config_decoder_errors_total",
            &[("config", "example_writes")]
        ),
        0.0
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Bad input: one line naming the file and what is wrong, exit 2, nothing loaded.
#[test]
fn a_bad_config_is_one_line_and_exit_2() {
    require_root!();
    let dir = example_config_dir("bad");
    let run = |names: &str| {
        let out = Command::new(KSIGHT)
            .args([
                "serve",
                "--check",
                "--config.dir",
                dir.to_str().expect("utf-8"),
            ])
            .args(["--config.names", names])
            .output()
            .expect("ksight runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("tcp");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("a collector has that name"), "{err}");
    let (code, err) = run("nothing_here");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nothing_here.yaml"), "{err}");
    std::fs::write(
        dir.join("unknown_key.yaml"),
        "metrics: {counters: [{name: x, help: y}]}\nextra: 1\n",
    )
    .expect("yaml");
    let (code, err) = run("unknown_key");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unknown_key.yaml") && err.contains("extra"),
        "{err}"
    );
    let wrong_size = std::fs::read_to_string(dir.join("example_writes.yaml"))
        .expect("yaml")
        .replace("padding: 4", "padding: 0");
    std::fs::write(dir.join("wrong_size.yaml"), wrong_size).expect("yaml");
    std::fs::copy(
        dir.join("example_writes.bpf.o"),
        dir.join("wrong_size.bpf.o"),
    )
    .expect("object");
    let (code, err) = run("wrong_size");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("20 key bytes, the map's key is 24"), "{err}");
    let lines = err.lines().filter(|l| l.contains("error")).count();
    assert_eq!(lines, 1, "one line: {err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// --config.check (ebpf_exporter's spelling of --check): 0 when every program attached.
#[test]
fn config_check_attaches_and_exits_0() {
    require_root!();
    let dir = example_config_dir("check");
    let out = Command::new(KSIGHT)
        .args(["serve", "--config.check", "--collector.disable-defaults"])
        .args([
            "--config.dir",
            dir.to_str().expect("utf-8"),
            "--config.names",
            "example_writes",
        ])
        .output()
        .expect("ksight runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("example_sys_enter") && stdout.contains("attached"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A `perf_event/type=…,config=…,frequency=…` section (ebpf_exporter attaches those itself):
/// a cpu-clock event at 99 Hz on every CPU counts a child that spins for one second of CPU
/// time about 99 times (sampling: not exact; the bounds allow a third either way).
#[test]
fn a_perf_event_section_samples_on_every_cpu() {
    require_root!();
    let dir = example_config_dir("sampled");
    let server = Server::start(&[
        "--collector.disable-defaults",
        "--config.dir",
        dir.to_str().expect("utf-8"),
        "--config.names",
        "example_sampled",
    ]);
    let comm = unique_comm("spin");
    in_child(&comm, || {
        let cpu_time = || {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime fills the timespec it is given.
            unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
            t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
        };
        while cpu_time() < 1.0 {
            std::hint::black_box(0u64);
        }
    });
    let m = server.scrape();
    let samples = m.sum(
        "ebpf_exporter_example_cpu_samples_total",
        &[("comm", comm.as_str())],
    );
    assert!(
        (66.0..=132.0).contains(&samples),
        "{samples} samples of 1 s at 99 Hz"
    );
    let attached = [
        ("config", "example_sampled"),
        ("program", "example_cpu_clock"),
    ];
    assert_eq!(m.sum("ksight_config_program_attached", &attached), 1.0);
    let _ = std::fs::remove_dir_all(dir);
}
