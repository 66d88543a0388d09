//! `ksight capture` on every kernel of the matrix (scripts/vmtest): the TC hook each kernel
//! offers (tcx from 6.6, a clsact filter before), the process named from the cgroup socket
//! hooks, and nothing left on the interface after exit. On `lo`, with no network namespace,
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
    let child = Command::new(KSIGHT)
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

/// The kernel offers tcx from 6.6.
fn kernel_has_tcx() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 6)
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

    let attach = if kernel_has_tcx() {
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
