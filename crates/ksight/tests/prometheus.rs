//! A real Prometheus server on loopback scrapes ksight and finds its data through the query
//! API: a counter over the default negotiation, and a native histogram over the protobuf
//! exposition (`--enable-feature=native-histograms`).

#[macro_use]
mod common;

use std::time::Duration;

use common::prometheus::*;
use common::*;

#[test]
fn prometheus_scrapes_and_queries_ksight() {
    require_root!();
    let server = Server::start(&[]);
    let comm = unique_comm("prom");
    in_child(&comm, || {
        for _ in 0..777 {
            // SAFETY: getppid cannot fail.
            unsafe { libc::getppid() };
        }
    });
    let prometheus = Prometheus::start(server.port, &[]);
    let query = format!("ksight_syscalls_total{{syscall=\"getppid\",comm=\"{comm}\"}}");
    let sample = prometheus.query_until(&query, |_| true);
    assert_eq!(sample["value"][1], "777", "{sample}");
    assert_eq!(sample["metric"]["job"], "ksight");
}

const SLEEPERS: usize = 50;
/// Each sleeper lives a little over this (nanosleep never returns early): inside
/// (2^-1, 2^0] s = (500, 1000] ms, with 440 ms of room for fork, wake-up and exit. Less room
/// failed: 40 ms on a loaded host, and 110 ms in (125, 250] ms in an emulated 6.1 guest
/// running beside another guest (one sleeper took more than 250 ms).
const SLEEP: Duration = Duration::from_millis(560);
/// The sleepers' bucket, (LOW, HIGH] seconds.
const LOW: f64 = 0.5;
const HIGH: f64 = 1.0;

/// Forks a child named `comm` that sleeps `SLEEP` and exits; returns its pid.
fn spawn_sleeper(comm: &str) -> i32 {
    let name = std::ffi::CString::new(comm).expect("comm without NUL");
    let nap = libc::timespec {
        tv_sec: 0,
        tv_nsec: SLEEP.as_nanos() as libc::c_long,
    };
    // SAFETY: fork; the child only makes raw syscalls (async-signal-safe) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: PR_SET_NAME with a NUL-terminated string of <= 16 bytes; nanosleep with a
        // valid timespec; _exit leaves without the parent's atexit handlers.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
            libc::nanosleep(&nap, std::ptr::null_mut());
            libc::_exit(0);
        }
    }
    pid
}

/// The lifetime histogram of a text scrape: (le, cumulative) by le, and `_count`.
fn classic_lifetime(samples: &Samples) -> (Vec<(f64, f64)>, f64) {
    let mut buckets: Vec<(f64, f64)> = samples
        .0
        .iter()
        .filter(|(name, _, _)| name == "ksight_process_lifetime_seconds_bucket")
        .map(|(_, labels, v)| {
            let le = match labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                le => le.parse().expect("numeric le"),
            };
            (le, *v)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    (
        buckets,
        samples.sum("ksight_process_lifetime_seconds_count", &[]),
    )
}

fn cumulative_at(buckets: &[(f64, f64)], le: f64) -> f64 {
    buckets
        .iter()
        .find(|(b, _)| *b == le)
        .map(|(_, n)| *n)
        .expect("a bucket at this bound")
}

/// The text exposition's classic buckets: every 2^k s for k in [-20, 15] then +Inf, each
/// cumulative, +Inf equal to `_count`, and the sleepers in (LOW, HIGH].
fn check_classic(before: &Samples, after: &Samples, skipped: f64) {
    let (buckets, count) = classic_lifetime(after);
    let bounds: Vec<f64> = buckets.iter().map(|(le, _)| *le).collect();
    let mut want: Vec<f64> = (-20..=15).map(|k| 2f64.powi(k)).collect();
    want.push(f64::INFINITY);
    assert_eq!(bounds, want, "le labels are exactly the powers of two");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {buckets:?}"
    );
    assert_eq!(cumulative_at(&buckets, f64::INFINITY), count);
    let (old, _) = classic_lifetime(before);
    let gained = |le: f64| cumulative_at(&buckets, le) - cumulative_at(&old, le);
    let n = SLEEPERS as f64;
    let gains: Vec<(f64, f64)> = buckets
        .iter()
        .zip(&old)
        .map(|((le, now), (_, then))| (*le, now - then))
        .collect();
    assert!(gained(LOW) < n, "sleepers at or below {LOW} s: {gains:?}");
    assert!(
        gained(HIGH) - gained(LOW) >= n - skipped,
        "not all {n} sleepers in ({LOW}, {HIGH}] (skipped runs {skipped}): {gains:?}"
    );
}

#[test]
fn prometheus_reads_the_native_lifetime_histogram() {
    require_root!();
    let server = Server::start(&["--collectors", "process"]);
    let comm = unique_comm("nap");
    let before = server.scrape();
    let pids: Vec<i32> = (0..SLEEPERS).map(|_| spawn_sleeper(&comm)).collect();
    for pid in pids {
        wait(pid);
    }
    let after = server.scrape();
    // Runs of the exit program the kernel skipped may each have taken one sleeper away.
    let skipped = after.skipped_runs("process") - before.skipped_runs("process");
    check_classic(&before, &after, skipped);

    let prometheus = Prometheus::start(server.port, &["--enable-feature=native-histograms"]);
    let n = SLEEPERS as f64;
    let least = n - skipped;
    let count = prometheus.query_until("histogram_count(ksight_process_lifetime_seconds)", |c| {
        c >= least
    });
    assert!(value(&count).is_some_and(|c| c >= least), "{count}");
    // The sleepers' schema-0 bucket (LOW, HIGH] holds at least all of them. The histogram is
    // the whole node's, so the check is on a bucket count, which other processes can only
    // raise, not on a quantile they can move (a busy machine's short-lived processes did).
    // Both bounds are bucket boundaries, so histogram_fraction is exact here.
    let in_bucket = format!(
        "round(histogram_fraction({LOW}, {HIGH}, ksight_process_lifetime_seconds) \
         * histogram_count(ksight_process_lifetime_seconds))"
    );
    let sleepers = prometheus.query_until(&in_bucket, |c| c >= least);
    assert!(value(&sleepers).is_some_and(|c| c >= least), "{sleepers}");
    // Counters with labels come through the protobuf exposition too, exactly (but for runs
    // the kernel skipped, each counted).
    let exits = prometheus.query_until(
        &format!("ksight_process_exits_total{{comm=\"{comm}\"}}"),
        |c| c >= least,
    );
    let got = value(&exits).expect("a numeric count");
    assert_counted(got, n, skipped, "exits of the sleepers in Prometheus");
}
