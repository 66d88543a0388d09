//! Privileged end-to-end tests of the tcp, sched, block, memory, signals and page_faults
//! collectors: each generates its own workload and asserts the change of its series.
//! TCP series have no process label: the TCP tests make their connections in a network
//! namespace of their own and count only it (`--collector.tcp.netns`), so the machine's other
//! connections (and the test's own scrapes) cannot change the exact counts.

#[macro_use]
mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::workloads::*;
use common::*;

const ACTIVE: &str = "ksight_tcp_connections_total";
const CONNECT_COUNT: &str = "ksight_tcp_connect_latency_seconds_count";
const LIFETIME_COUNT: &str = "ksight_tcp_connection_lifetime_seconds_count";

/// Scrapes until `done` holds for the delta from `before` (closes finish asynchronously).
fn settle(server: &Server, done: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = server.scrape();
        if done(&now) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn d(after: &Samples, before: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.sum(name, labels) - before.sum(name, labels)
}

#[test]
fn tcp_connections_latency_lifetime_and_bytes() {
    require_root!();
    let net = PrivateNet::new();
    let server = tcp_server(&net);
    let (n4, n6, payload, reply) = (40usize, 10usize, 100_000usize, 5_000usize);
    let before = server.scrape();
    net.run(|| {
        connect_loop(Ipv4Addr::LOCALHOST.into(), n4, payload, reply);
        connect_loop(Ipv6Addr::LOCALHOST.into(), n6, payload, reply);
    });
    let total = (n4 + n6) as f64;
    // every workload socket (2 per connection) has closed
    let after = settle(&server, |s| {
        d(s, &before, LIFETIME_COUNT, &[]) >= 2.0 * total
    });

    let v4 = [("family", "ipv4")];
    for direction in ["active", "passive"] {
        let labels = [("direction", direction), v4[0]];
        assert_eq!(
            d(&after, &before, ACTIVE, &labels),
            n4 as f64,
            "{direction} ipv4"
        );
        let labels6 = [("direction", direction), ("family", "ipv6")];
        assert_eq!(
            d(&after, &before, ACTIVE, &labels6),
            n6 as f64,
            "{direction} ipv6"
        );
    }
    let connects = d(&after, &before, CONNECT_COUNT, &[]);
    assert_eq!(connects, total, "connect samples");
    let syn_to_est = d(
        &after,
        &before,
        "ksight_tcp_state_transitions_total",
        &[("from", "SYN_SENT"), ("to", "ESTABLISHED")],
    );
    assert_eq!(
        syn_to_est, connects,
        "one SYN_SENT->ESTABLISHED per connect sample"
    );
    let lifetimes = d(&after, &before, LIFETIME_COUNT, &[]);
    assert_eq!(lifetimes, 2.0 * total, "lifetime samples");

    // bytes: the workload's, counted on both ends of each connection (the client sends the
    // payload and receives the reply, the server the other way round)
    let moved = total * (payload + reply) as f64;
    for direction in ["sent", "received"] {
        let got = d(
            &after,
            &before,
            "ksight_tcp_bytes_total",
            &[("direction", direction)],
        );
        // the kernel's bytes_acked and bytes_received also count the sequence numbers of
        // control flags (measured on lo: 3 sent and 2 received a connection, from the
        // passive side's SYN and each side's FIN), never more than 3 a connection
        let control = 3.0 * total;
        assert!(
            (moved..=moved + control).contains(&got),
            "bytes {direction}: {got}, want {moved} (+ up to {control})"
        );
    }
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `serve --collectors tcp` counting only `net`.
fn tcp_server(net: &PrivateNet) -> Server {
    Server::start(&[
        "--collectors",
        "tcp",
        "--collector.tcp.netns",
        &net.inode_arg(),
    ])
}

#[test]
fn tcp_resets_sent_and_received() {
    require_root!();
    let net = PrivateNet::new();
    let server = tcp_server(&net);
    let n = 25;
    let resets = "ksight_tcp_resets_total";
    let before = server.scrape();
    net.run(|| {
        let port = closed_port();
        for _ in 0..n {
            let err = TcpStream::connect(("127.0.0.1", port)).expect_err("nothing listens");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        }
    });
    let after = server.scrape();
    // each refused SYN is answered with a reset, which the connecting socket receives; the
    // tracepoint fires for resets sent on behalf of no socket only on newer kernels (not
    // 6.1, yes 6.12: the matrix pins which); the filter then takes the packet's namespace
    let sent = d(&after, &before, resets, &[("direction", "sent")]);
    match kernel_release() {
        r if r >= (6, 12) => assert_eq!(sent, n as f64, "resets sent"),
        r if r < (6, 2) => assert_eq!(sent, 0.0, "resets sent for no socket"),
        _ => assert!(sent == 0.0 || sent == n as f64, "resets sent: {sent}"),
    }
    assert_eq!(
        d(&after, &before, resets, &[("direction", "received")]),
        n as f64
    );

    // connections aborted with SO_LINGER 0: the peer receives a reset each
    let before = server.scrape();
    let accepted = net.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut accepted = Vec::new();
        for _ in 0..n {
            let client = TcpStream::connect(addr).expect("connect");
            accepted.push(listener.accept().expect("accept").0);
            abort(client);
        }
        accepted
    });
    let after = settle(&server, |s| {
        d(s, &before, resets, &[("direction", "received")]) >= n as f64
    });
    drop(accepted);
    assert_eq!(
        d(&after, &before, resets, &[("direction", "received")]),
        n as f64
    );
    // an abort's reset is sent on behalf of a socket: traced on every kernel
    assert_eq!(
        d(&after, &before, resets, &[("direction", "sent")]),
        n as f64
    );
}

fn kernel_release() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn abort(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized linger struct.
    let ret = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "SO_LINGER");
}

/// A non-blocking connect that stays in SYN_SENT.
fn syn_only(addr: SocketAddr) -> socket2::Socket {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_nonblocking(true).expect("nonblocking");
    let _ = socket.connect(&addr.into());
    socket
}

#[test]
fn syn_retransmits_to_a_full_backlog() {
    require_root!();
    let net = PrivateNet::new();
    let server = tcp_server(&net);
    // backlog 0 holds one connection; later SYNs are dropped and retransmitted after 1 s
    let (listener, first, addr) = net.run(|| {
        let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        listener
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind");
        listener.listen(0).expect("listen");
        let addr = listener
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        let first = TcpStream::connect(addr).expect("the one the backlog holds");
        (listener, first, addr)
    });
    std::thread::sleep(Duration::from_millis(200));
    let k = 5;
    let retransmits = "ksight_tcp_retransmits_total";
    let before = server.scrape();
    let pending: Vec<_> = net.run(|| (0..k).map(|_| syn_only(addr)).collect());
    // the first retransmission is due 1 s after each SYN, the second 2 s later
    let after = settle(&server, |s| d(s, &before, retransmits, &[]) >= k as f64);
    drop(pending);
    drop(first);
    drop(listener);
    assert_eq!(d(&after, &before, retransmits, &[]), k as f64);
}

#[test]
fn signals_are_counted_by_target_comm() {
    require_root!();
    let server = Server::start(&["--collectors", "signals"]);
    let comm = unique_comm("sig");
    let n = 300;
    let child = spawn_named(&comm, || {
        // SAFETY: ignoring SIGUSR1 in this child; a generated signal is still traced.
        unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
    });
    let before = server.scrape();
    for _ in 0..n {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(child, libc::SIGUSR1) }, 0);
    }
    // SAFETY: as above.
    unsafe { libc::kill(child, libc::SIGKILL) };
    wait(child);
    let after = server.scrape();
    let name = "ksight_signals_total";
    let usr1 = [("signal", "SIGUSR1"), ("comm", comm.as_str())];
    let kill = [("signal", "SIGKILL"), ("comm", comm.as_str())];
    assert_eq!(d(&after, &before, name, &usr1), n as f64);
    assert_eq!(d(&after, &before, name, &kill), 1.0);
}

#[test]
fn block_reads_are_counted_by_device_and_op() {
    require_root!();
    let server = Server::start(&["--collectors", "block"]);
    let n = 64;
    let dev = LoopDevice::new(n * 4096);
    std::thread::sleep(Duration::from_millis(300));
    let labels = [("device", dev.name()), ("op", "read")];
    let before = server.scrape();
    direct_reads(Path::new(&dev.device), n);
    let after = server.scrape();
    let count = d(
        &after,
        &before,
        "ksight_block_io_latency_seconds_count",
        &labels,
    );
    assert_eq!(count, n as f64, "{}", dev.name());
    let bytes = d(&after, &before, "ksight_block_io_bytes_total", &labels);
    assert_eq!(bytes, (n * 4096) as f64);
    let inf = [("device", dev.name()), ("op", "read"), ("le", "+Inf")];
    assert_eq!(
        d(
            &after,
            &before,
            "ksight_block_io_latency_seconds_bucket",
            &inf
        ),
        n as f64
    );
    let major_minor = after
        .0
        .iter()
        .find(|(name, l, _)| name == "ksight_block_io_bytes_total" && l["device"] == dev.name())
        .map(|(_, l, _)| l["major_minor"].clone());
    assert!(
        major_minor.is_some_and(|m| m.starts_with("7:")),
        "loop devices have major 7"
    );
}

#[test]
fn a_cgroup_oom_kill_is_counted_once() {
    require_root!();
    let server = Server::start(&["--collectors", "memory"]);
    let comm = unique_comm("oom");
    let labels = [("comm", comm.as_str())];
    let before = server.scrape();
    oom_killed_in_a_cgroup(&comm);
    let after = server.scrape();
    assert_eq!(d(&after, &before, "ksight_oom_kills_total", &labels), 1.0);
}

#[test]
fn page_faults_are_counted_by_comm() {
    require_root!();
    let server = Server::start(&["--collectors", "page_faults"]);
    // x86 kernels have the page_fault_user tracepoint (tp_btf where the probe finds it, else
    // raw_tp); arm64's have not
    let hook = match (cfg!(target_arch = "x86_64"), hook_works("tp_btf")) {
        (true, true) => "tp_btf",
        (true, false) => "raw_tp",
        (false, _) => "perf_event",
    };
    assert_page_faults_counted(&server, hook);
}

/// The perf_event hook, arm64's only one, on every kernel: the same count as the tracepoint.
#[test]
fn page_faults_are_counted_on_the_perf_event_hook() {
    require_root!();
    let server = Server::start_broken(
        "page_faults:tp_btf,page_faults:raw_tp",
        &["--collectors", "page_faults"],
    );
    assert_page_faults_counted(&server, "perf_event");
}

/// `server` counts page faults on `hook`: one per fresh page a child touches.
fn assert_page_faults_counted(server: &Server, hook: &str) {
    let info = [("collector", "page_faults"), ("hook", hook)];
    assert_eq!(
        server.scrape().sum("ksight_collector_info", &info),
        1.0,
        "on {hook}"
    );
    let comm = unique_comm("pf");
    let pages = 3000;
    let page = page_size();
    let labels = [("comm", comm.as_str())];
    let before = server.scrape();
    in_child(&comm, || {
        // SAFETY: raw syscalls in the forked child: touch `pages` fresh anonymous pages.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                pages * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            // one fault per page: no transparent huge pages (5.10's default is always)
            libc::madvise(p.cast(), pages * page, libc::MADV_NOHUGEPAGE);
            for i in 0..pages {
                p.add(i * page).write_volatile(1);
            }
        }
    });
    let after = server.scrape();
    let faults = d(&after, &before, "ksight_page_faults_total", &labels);
    // one fault per fresh page, plus the child's copy-on-write faults after fork
    assert!(
        (pages as f64..pages as f64 + 300.0).contains(&faults),
        "faults {faults} for {pages} pages on {hook}"
    );
}

/// The page size (4 KiB on x86_64; 4, 16 or 64 KiB on arm64).
fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

#[test]
fn context_switches_and_runqueue_latency() {
    require_root!();
    let server = Server::start(&["--collectors", "sched"]);
    let rounds = 2000;
    let before = server.scrape();
    ping_pong(rounds);
    let after = server.scrape();
    // each round blocks both sides: at least two switches; a wakeup of a task that has not
    // left its CPU yet gives no run-queue wait, so at least one sample per round
    let switches = d(&after, &before, "ksight_context_switches_total", &[]);
    assert!(switches >= 2.0 * rounds as f64, "switches {switches}");
    let waits = d(
        &after,
        &before,
        "ksight_runqueue_latency_seconds_count",
        &[],
    );
    assert!(waits >= rounds as f64, "runqueue samples {waits}");
    let inf = d(
        &after,
        &before,
        "ksight_runqueue_latency_seconds_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(inf, waits, "+Inf bucket equals the count");
}

#[test]
fn raw_tp_fallbacks_attach_and_count_the_same() {
    require_root!();
    let mut collectors = vec!["tcp", "sched", "block", "memory", "signals"];
    // page_faults has a raw_tp only where its tracepoint is (x86's exceptions:page_fault_user)
    if cfg!(target_arch = "x86_64") {
        collectors.push("page_faults");
    }
    let broken: Vec<String> = collectors.iter().map(|c| format!("{c}:tp_btf")).collect();
    // TCP counted in a namespace of the test's own only (as the TCP tests above)
    let net = PrivateNet::new();
    let inode = net.inode_arg();
    let server = Server::start_broken(
        &broken.join(","),
        &[
            "--collectors",
            &collectors.join(","),
            "--collector.tcp.netns",
            &inode,
        ],
    );
    let up = server.scrape();
    for &c in &collectors {
        let labels = [("collector", c), ("hook", "raw_tp")];
        assert_eq!(
            up.sum("ksight_collector_info", &labels),
            1.0,
            "{c} on raw_tp"
        );
        let up_labels = [("collector", c)];
        assert_eq!(up.sum("ksight_collector_up", &up_labels), 1.0, "{c} up");
    }
    let comm = unique_comm("raw");
    let dev = LoopDevice::new(16 * 4096);
    std::thread::sleep(Duration::from_millis(300));
    let before = server.scrape();
    net.run(|| connect_loop(Ipv6Addr::LOCALHOST.into(), 10, 1000, 10));
    direct_reads(Path::new(&dev.device), 16);
    let child = spawn_named(&comm, || {});
    for _ in 0..20 {
        // SAFETY: signalling our own child; SIGCONT to a running process does nothing.
        unsafe { libc::kill(child, libc::SIGCONT) };
    }
    // SAFETY: as above.
    unsafe { libc::kill(child, libc::SIGKILL) };
    wait(child);
    ping_pong(100);
    let after = settle(&server, |s| d(s, &before, LIFETIME_COUNT, &[]) >= 20.0);
    let labels6 = [("direction", "active"), ("family", "ipv6")];
    assert_eq!(d(&after, &before, ACTIVE, &labels6), 10.0);
    // both ends of the 10 connections
    assert_eq!(d(&after, &before, LIFETIME_COUNT, &[]), 20.0, "lifetimes");
    let block = [("device", dev.name()), ("op", "read")];
    let count = "ksight_block_io_latency_seconds_count";
    assert_eq!(d(&after, &before, count, &block), 16.0);
    let cont = [("signal", "SIGCONT"), ("comm", comm.as_str())];
    assert_eq!(d(&after, &before, "ksight_signals_total", &cont), 20.0);
    let switches = d(&after, &before, "ksight_context_switches_total", &[]);
    assert!(switches >= 200.0, "switches {switches}");
}
