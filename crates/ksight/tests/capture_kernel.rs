//! `ksight capture` on every kernel of the matrix (scripts/vmtest): the TC hook each kernel
//! offers (tcx from 6.6, a clsact filter before), the process named from the cgroup socket
//! hooks, a socket opened before start named by the task_file iterator and from user space
//! (pidfd_getfd) alike, and nothing left on the interface after exit. On `lo`, with no network namespace,
//! veth or tshark (the guests have none of them): the file is read back with pcap-file.
//! tests/capture.rs has the rest, on the host.

#[macro_use]
mod common;

use std::borrow::Cow;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::{Block, PcapNgReader};

/// Datagrams the test sends.
const SENT: usize = 25;

/// pcapng EPB flags: the direction bits.
const INBOUND: u32 = 1;
const OUTBOUND: u32 = 2;

/// `ksight capture` with its stderr in a file, once it says it captures.
fn start_capture(file: &Path, err: &Path, expression: &str) -> Child {
    start_capture_with(file, err, expression, "")
}

/// As `start_capture`, with KSIGHT_REFUSE=`refuse` added to the test's own (fault
/// injection: those features' probes answer no).
fn start_capture_with(file: &Path, err: &Path, expression: &str, refuse: &str) -> Child {
    let mut refused = std::env::var("KSIGHT_REFUSE").unwrap_or_default();
    if !refuse.is_empty() {
        refused = format!("{refused},{refuse}");
    }
    let child = Command::new(KSIGHT)
        .env("KSIGHT_REFUSE", refused)
        .args(["capture", "-i", "lo", "-w"])
        .arg(file)
        .arg(expression)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err).expect("stderr file"))
        .spawn()
        .expect("spawn ksight capture");
    // Emulated guests are slow: loading and attaching can take tens of seconds there.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stderr_of(err).contains("message=capturing") {
        assert!(
            Instant::now() < deadline,
            "not capturing: {}",
            stderr_of(err)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

fn stderr_of(err: &Path) -> String {
    std::fs::read_to_string(err).unwrap_or_default()
}

/// (direction, comment) of each packet of a pcapng file.
fn packets(file: &Path) -> Vec<(u32, String)> {
    let bytes = std::fs::read(file).expect("the capture file");
    let mut reader = PcapNgReader::new(bytes.as_slice()).expect("a pcapng section header");
    let mut out = Vec::new();
    while let Some(block) = reader.next_block() {
        let Block::EnhancedPacket(p) = block.expect("a well-formed block") else {
            continue;
        };
        let mut direction = 0;
        let mut comment = String::new();
        for option in &p.options {
            match option {
                EnhancedPacketOption::Flags(f) => direction = f & 3,
                EnhancedPacketOption::Comment(Cow::Borrowed(c)) => comment = c.to_string(),
                EnhancedPacketOption::Comment(Cow::Owned(c)) => comment = c.clone(),
                _ => {}
            }
        }
        out.push((direction, comment));
    }
    out
}

/// What `tc` lists on lo's clsact hooks.
fn tc_filters() -> String {
    ["ingress", "egress"]
        .iter()
        .map(|hook| {
            let out = Command::new("tc")
                .args(["filter", "show", "dev", "lo", hook])
                .output()
                .expect("tc (iproute2)");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect()
}

#[test]
fn udp_on_lo_is_captured_attributed_and_the_hook_removed() {
    require_root!();
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP sink");
    let port = sink.local_addr().expect("its address").port();
    let dir = std::env::temp_dir().join(format!("ksight-capk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (file, err): (PathBuf, PathBuf) = (dir.join("lo.pcapng"), dir.join("stderr"));
    let filters_before = tc_filters();
    let mut capture = start_capture(&file, &err, &format!("udp port {port}"));
    let comm = unique_comm("capk");
    let sender = fork_named(&comm, || {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind the sender");
        for _ in 0..SENT {
            s.send_to(&[7u8; 40], ("127.0.0.1", port)).expect("send");
        }
    });
    assert_eq!(wait(sender), 0, "the sender");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(capture.id() as i32, libc::SIGTERM) };
    let status = capture.wait().expect("wait for ksight capture");
    let stderr = stderr_of(&err);
    assert!(status.success(), "ksight capture: {status}: {stderr}");

    // The hook the probe finds (scripts/vmtest checks the probe against each kernel: tcx
    // from 6.6, clsact before).
    let attach = if feature_works("tcx") {
        "attach=tcx"
    } else {
        "attach=\"tc clsact\""
    };
    assert!(stderr.contains(attach), "{attach} expected: {stderr}");
    let packets = packets(&file);
    let out: Vec<&String> = packets
        .iter()
        .filter(|(d, _)| *d == OUTBOUND)
        .map(|(_, c)| c)
        .collect();
    let inbound = packets.iter().filter(|(d, _)| *d == INBOUND).count();
    // lo: each datagram leaves (egress) and arrives (ingress) on the same interface.
    assert_eq!((out.len(), inbound), (SENT, SENT), "{packets:?}\n{stderr}");
    let named = format!("PID: {sender}\nComm: {comm}\n");
    let full = |c: &str| c.contains("\nCmd: ");
    for (i, c) in out.iter().enumerate() {
        assert!(
            c.starts_with(&format!("PID: {sender}\n")) && c.contains(&format!("\nComm: {comm}\n")),
            "packet {i} not the sender's: {c:?}"
        );
        // --comment short: the first packet says everything, the others who it is.
        assert_eq!(full(c), i == 0, "packet {i}: {c:?}");
        if i > 0 {
            assert!(c.starts_with(&named), "packet {i}: {c:?}");
        }
    }
    assert!(
        stderr.contains(&format!("{} written", 2 * SENT)) && stderr.contains(" 0 lost"),
        "{stderr}"
    );
    // What ksight added is gone: no TC program of its own is left on lo.
    assert_eq!(tc_filters(), filters_before, "TC filters on lo after exit");
    drop(sink);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connected UDP socket opened before the capture starts: no cgroup hook runs for its
/// sends (sendmsg hooks run only for unconnected sends), so only the walk over the sockets
/// open at start can name it. Captured three times from the same process: as the kernel
/// allows (the iterator where the probe says so), with the iterator refused (pidfd_getfd
/// from user space), and with both refused (unnamed, and said so). The first two must give
/// the same comment.
#[test]
fn a_socket_opened_before_start_is_named_by_either_walk() {
    require_root!();
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP sink");
    let port = sink.local_addr().expect("its address").port();
    let dir = std::env::temp_dir().join(format!("ksight-capb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let comm = unique_comm("capb");
    let (go_r, go_w) = pipe();
    let (ready_r, ready_w) = pipe();
    let sender = fork_named(&comm, move || {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind the sender");
        s.connect(("127.0.0.1", port)).expect("connect");
        // SAFETY: raw reads and writes on the child's own pipe ends and buffers.
        unsafe {
            libc::write(ready_w, b"r".as_ptr().cast(), 1);
            let mut go = [0u8; 1];
            while libc::read(go_r, go.as_mut_ptr().cast(), 1) == 1 && go[0] == b'g' {
                for _ in 0..SENT {
                    s.send(&[7u8; 40]).expect("send");
                }
                libc::write(ready_w, b"r".as_ptr().cast(), 1);
            }
        }
    });
    // SAFETY: closing the child's ends here so a dead child reads as end of file.
    unsafe {
        libc::close(ready_w);
        libc::close(go_r);
    }
    let wait_ready = || {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a 1-byte buffer.
        assert_eq!(
            unsafe { libc::read(ready_r, b.as_mut_ptr().cast(), 1) },
            1,
            "the sender"
        );
    };
    wait_ready();
    let round = |name: &str, refuse: &str| -> (Vec<String>, String) {
        let (file, err) = (
            dir.join(format!("{name}.pcapng")),
            dir.join(format!("{name}.err")),
        );
        let mut capture = start_capture_with(&file, &err, &format!("udp dst port {port}"), refuse);
        // SAFETY: one byte to our end of the pipe.
        unsafe { libc::write(go_w, b"g".as_ptr().cast(), 1) };
        wait_ready();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(capture.id() as i32, libc::SIGTERM) };
        let status = capture.wait().expect("wait for ksight capture");
        let stderr = stderr_of(&err);
        assert!(status.success(), "{name}: {status}: {stderr}");
        let comments: Vec<String> = packets(&file)
            .into_iter()
            .filter(|(d, _)| *d == OUTBOUND)
            .map(|(_, c)| c)
            .collect();
        assert_eq!(comments.len(), SENT, "{name}: {comments:?}\n{stderr}");
        (comments, stderr)
    };
    let expected_walk = if feature_works("task_file_iter") {
        "\"task_file iterator\""
    } else if feature_works("pidfd_getfd") {
        "pidfd_getfd"
    } else {
        "none"
    };
    let (native, stderr) = round("native", "");
    assert!(
        stderr.contains(&format!("sockets_before_start={expected_walk}")),
        "{expected_walk}: {stderr}"
    );
    let named = format!("PID: {sender}\n");
    if expected_walk != "none" {
        assert!(
            native[0].starts_with(&named) && native[0].contains(&format!("\nComm: {comm}\n")),
            "{native:?}"
        );
        assert!(
            native[0].contains("\nCmd: "),
            "the first packet says everything: {native:?}"
        );
    }
    if fault_injection() {
        let (user_space, stderr) = round("pidfd", "task_file_iter");
        assert!(
            stderr.contains("sockets_before_start=pidfd_getfd"),
            "{stderr}"
        );
        assert_eq!(user_space, native, "the same comments from either walk");
        let (unnamed, stderr) = round("none", "task_file_iter,pidfd_getfd");
        assert!(
            stderr.contains("sockets_before_start=none")
                && stderr.contains("sockets open before the capture stay unattributed"),
            "{stderr}"
        );
        assert!(
            unnamed.iter().all(|c| c.starts_with("PID: unknown")),
            "{unnamed:?}"
        );
    }
    // SAFETY: one byte to our end of the pipe: any byte but 'g' ends the sender's loop.
    unsafe { libc::write(go_w, b"q".as_ptr().cast(), 1) };
    assert_eq!(wait(sender), 0, "the sender");
    drop(sink);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pipe whose ends the ksight processes the test starts do not inherit.
fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 into a 2-int array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}
