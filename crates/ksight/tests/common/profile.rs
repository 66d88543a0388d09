//! Running `ksight profile` in tests: its output and its summary line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use super::KSIGHT;

/// How long each profile samples; workloads run longer.
pub const PROFILE_S: &str = "3";
/// The sampling frequency unless a test gives one: the tests run side by side on a shared
/// machine, and at 49 Hz a workload that gets a tenth of a CPU has 15 samples in 3 s.
pub const FREQUENCY: &str = "499";
/// The architecture's system call dispatcher as a kernel frame, below its entry code.
pub const SYSCALL_DISPATCHER: &str = if cfg!(target_arch = "aarch64") {
    "invoke_syscall_[k]"
} else {
    "do_syscall_64_[k]"
};

/// What `ksight profile` wrote and the key=value pairs of its summary line.
pub struct Run {
    pub stdout: Vec<u8>,
    pub summary: HashMap<String, u64>,
    pub stderr: String,
    /// ksight's peak resident memory (VmHWM, KiB), as last read before it exited.
    pub peak_rss_kib: u64,
}

impl Run {
    pub fn get(&self, key: &str) -> u64 {
        *self
            .summary
            .get(key)
            .unwrap_or_else(|| panic!("summary has {key}"))
    }

    pub fn folded(&self) -> Vec<(Vec<String>, u64)> {
        folded_lines(&String::from_utf8_lossy(&self.stdout))
    }

    /// The samples written are those stored and copied; every copy was received; every run
    /// of the program ends stored, copied, lost, idle or filtered (the kernel's run count).
    pub fn assert_accounted(&self) {
        let delivered: u64 = self.folded().iter().map(|(_, c)| c).sum();
        let summary = &self.summary;
        let stored_or_copied = self.get("stored") + self.get("copied");
        assert_eq!(delivered, stored_or_copied, "{summary:?}");
        assert_eq!(
            self.get("copies_received"),
            self.get("copied"),
            "{summary:?}"
        );
        let ended = ["stored", "copied", "lost", "idle", "filtered"].map(|k| self.get(k));
        assert_eq!(ended.iter().sum::<u64>(), self.get("runs"), "{summary:?}");
    }
}

pub fn profile(args: &[&str]) -> Run {
    profile_with(args, || {})
}

/// `profile`, calling `sampling` once ksight says it samples (its "sampling" log line).
pub fn profile_with(args: &[&str], sampling: impl FnOnce()) -> Run {
    profile_watched(args, |_| sampling())
}

/// As `profile_with`, giving `sampling` ksight's pid.
pub fn profile_watched(args: &[&str], sampling: impl FnOnce(u32)) -> Run {
    profile_on(args, "sampling", sampling)
}

/// `profile`, calling `then` with ksight's pid at its first log line of `message`.
pub fn profile_on(args: &[&str], message: &str, then: impl FnOnce(u32)) -> Run {
    let mut child = Command::new(KSIGHT)
        .args(["profile", "-d", PROFILE_S])
        .args(args)
        .args(match args.contains(&"-F") {
            true => &[][..],
            false => &["-F", FREQUENCY][..],
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ksight profile");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).expect("read stdout");
        out
    });
    let peak = watch_peak_rss(child.id());
    let mut stderr = String::new();
    let mut then = Some(then);
    let wanted = format!("message={message} ");
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let line = line.expect("utf-8 stderr");
        if line.contains(&wanted) {
            if let Some(f) = then.take() {
                f(child.id());
            }
        }
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let status = child.wait().expect("wait for ksight profile");
    let stdout = reader.join().expect("stdout reader");
    assert!(status.success(), "ksight profile {args:?}: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("ksight profile: samples="))
        .unwrap_or_else(|| panic!("no summary line in {stderr}"));
    let summary = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse::<u64>().ok()?)))
        .collect();
    let peak_rss_kib = peak.join().expect("rss watcher");
    Run {
        stdout,
        summary,
        stderr,
        peak_rss_kib,
    }
}

/// Reads VmHWM of `pid` every 20 ms until it is gone; returns the last value read.
fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        loop {
            let hwm = super::status_field(pid, "VmHWM");
            let Some(kib) = hwm.trim_end_matches("kB").trim().parse::<u64>().ok() else {
                return peak;
            };
            peak = kib;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    })
}

/// Folded lines as (frames, count); every line must parse.
pub fn folded_lines(text: &str) -> Vec<(Vec<String>, u64)> {
    text.lines()
        .map(|line| {
            let (stack, count) = line
                .rsplit_once(' ')
                .expect("a folded line ends with a count");
            let count = count.parse().expect("the count is a number");
            (stack.split(';').map(str::to_string).collect(), count)
        })
        .collect()
}
