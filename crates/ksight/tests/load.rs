//! `serve` under load and faults, as a hostile or broken client would try it: a scrape flood,
//! idle connections and clients that never read, and failures injected into every upkeep
//! step and into collection. Host only (nothing here depends on the kernel): scripts/vmtest
//! leaves this binary out of the kernel matrix.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::prometheus::*;
use common::*;

/// The tests of this file load the machine: one at a time, so none times another.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The status of one GET /metrics on a new connection, or why there was none in 10 s.
fn status_of_scrape(port: u16) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head = String::from_utf8_lossy(&response[..response.len().min(12)]).into_owned();
    head.get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {head:?}")))
}

#[test]
fn a_flood_gets_200_or_503_and_upkeep_still_folds_on_time() {
    require_root!();
    let _serial = one_at_a_time();
    let (ttl, interval) = (Duration::from_secs(2), Duration::from_millis(500));
    let server = Server::start(&[
        "--collectors",
        "process",
        "--series-ttl",
        "2s",
        "--fold-interval",
        "500ms",
    ]);
    let port = server.port;
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (stop, statuses) = (stop.clone(), statuses.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = match status_of_scrape(port) {
                        Ok(code) => code.to_string(),
                        Err(err) => format!("error: {err}"),
                    };
                    *statuses
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(outcome)
                        .or_insert(0) += 1;
                }
            })
        })
        .collect();
    let flood_start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let comm = unique_comm("flood");
    assert_eq!(in_child(&comm, || {}), 0);
    let exited = Instant::now();
    let exits = [("comm", comm.as_str())];
    // A Prometheus-style scraper: one scrape a second, each must succeed.
    let (mut seen, mut gone) = (false, None);
    while flood_start.elapsed() < Duration::from_secs(60) {
        let samples = server.scrape();
        let present = samples.count("ksight_process_exits_total", &exits) > 0;
        seen |= present;
        if seen && !present && gone.is_none() {
            gone = Some(exited.elapsed());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a flood client panicked");
    }
    let statuses = statuses.lock().unwrap_or_else(|p| p.into_inner()).clone();
    eprintln!("flood outcomes over 60 s: {statuses:?}");
    assert!(
        statuses.keys().all(|k| k == "200" || k == "503"),
        "a flood request got neither 200 nor 503: {statuses:?}"
    );
    assert!(statuses.get("200").copied().unwrap_or(0) > 0);
    assert!(seen, "the exit's series never showed");
    let gone = gone.expect("the idle series was never folded during the flood");
    // Drained within one interval of the exit, folded at the first round past the TTL; the
    // scraper looks once a second.
    let bound = ttl + 2 * interval + Duration::from_millis(1500);
    eprintln!("series folded {gone:?} after the exit (bound {bound:?})");
    assert!(
        gone <= bound,
        "folded {gone:?} after the exit, bound {bound:?}"
    );
}

/// Raises this process's open-file limit (inherited by the ksight it starts).
fn raise_open_files(n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads the struct we pass.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit NOFILE {n}");
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A client that asks for a scrape and never reads the answer.
fn never_reads(port: u16) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_recv_buffer_size(4096)?;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect(&addr.into())?;
    (&socket).write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    Ok(socket)
}

#[test]
fn idle_connections_and_clients_that_never_read_leave_room_for_a_scrape() {
    require_root!();
    let _serial = one_at_a_time();
    raise_open_files(8192);
    let server = Server::start(&["--collectors", "syscalls,process"]);
    let port = server.port;
    let idle: Vec<TcpStream> = (0..1500)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("an idle connection"))
        .collect();
    let stuck: Vec<socket2::Socket> = (0..100)
        .map(|_| never_reads(port).expect("a client that never reads"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let answer = http_get(port, "/metrics", None);
    let took = start.elapsed();
    let rss = rss_kib(server.pid());
    eprintln!("scrape beside 1,500 idle and 100 stuck connections: {took:?}; RSS {rss} KiB");
    assert!(answer.is_ok(), "the scrape failed: {:?}", answer.err());
    assert!(took < Duration::from_secs(1), "the scrape took {took:?}");
    assert!(rss < 64 * 1024, "RSS {rss} KiB");
    drop((idle, stuck));
}

/// Exact counts for the test's own workload, from a scrape where every collector succeeded.
fn complete_scrape(server: &Server) -> Samples {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let samples = server.scrape();
        let failed = samples.count("ksight_collector_scrape_success", &[])
            - samples
                .0
                .iter()
                .filter(|(n, _, v)| n == "ksight_collector_scrape_success" && *v == 1.0)
                .count();
        if failed == 0 {
            return samples;
        }
        assert!(Instant::now() < deadline, "no complete scrape in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "injects faults: needs --features fault-injection (scripts/test)"
)]
fn faults_in_every_upkeep_step_and_in_collection_lose_nothing() {
    require_root!();
    let _serial = one_at_a_time();
    let server = Server::start_with(
        KSIGHT,
        &[
            "--collectors",
            "syscalls,process,files",
            "--fold-interval",
            "300ms",
        ],
        &[("KSIGHT_BREAK_STEPS", "flip,barrier,drain,collect")],
    );
    let prometheus = Prometheus::start(server.port, &[]);
    let comm = unique_comm("fault");
    let (rounds, calls) = (10, 100);
    let before = complete_scrape(&server);
    for _ in 0..rounds {
        in_child(&comm, || {
            for _ in 0..calls {
                // SAFETY: getppid cannot fail.
                unsafe { libc::getppid() };
            }
        });
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = complete_scrape(&server);
    let skipped = after.skipped_runs("process") - before.skipped_runs("process");
    let ours = [("comm", comm.as_str())];
    let exits = after.sum("ksight_process_exits_total", &ours);
    assert_counted(exits, rounds as f64, skipped, "exits under injected faults");
    let getppid = [("comm", comm.as_str()), ("syscall", "getppid")];
    assert_eq!(
        after.sum("ksight_syscalls_total", &getppid),
        (rounds * calls) as f64
    );
    for step in ["flip", "barrier", "drain"] {
        let failures = after.sum("ksight_upkeep_failures_total", &[("step", step)]);
        assert!(failures > 0.0, "no {step} failure counted");
    }
    // Prometheus saw failed collections and never a counter going backwards.
    prometheus.query_until("count_over_time(ksight_build_info[10m])", |n| n >= 6.0);
    let failed = prometheus.query_until(
        "min(min_over_time(ksight_collector_scrape_success[10m]))",
        |_| true,
    );
    assert_eq!(
        value(&failed),
        Some(0.0),
        "no failed collection seen: {failed}"
    );
    for counter in [
        "ksight_syscalls_total",
        "ksight_process_exits_total",
        "ksight_file_opens_total",
    ] {
        let resets = prometheus.query_until(&format!("sum(resets({counter}[10m]))"), |_| true);
        assert_eq!(
            value(&resets),
            Some(0.0),
            "{counter} went backwards: {resets}"
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "injects a panic: needs --features fault-injection (scripts/test)"
)]
fn a_dead_collector_thread_ends_ksight_with_a_clear_line_and_status_1() {
    require_root!();
    let _serial = one_at_a_time();
    let port = free_port();
    let mut child = process_only_serve(KSIGHT, port)
        .env("KSIGHT_BREAK_STEPS", "panic")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ksight");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "ksight never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = http_get(port, "/metrics", None); // the scrape the collector thread dies on
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ksight kept running without its collector thread"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ksight: error: the collector thread stopped: injected panic"),
        "last line: {last:?}; stderr: {stderr}"
    );
}
