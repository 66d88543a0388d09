//! The HTTP endpoint as an operator deploys it: IPv6 and IPv4 on `:PORT`, several addresses,
//! gzip, another telemetry path, systemd socket activation, no exporter metrics. Host only:
//! nothing here depends on the kernel (scripts/vmtest leaves this binary out).

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// One GET over HTTP/1.0 to `addr`: (status line and headers, raw body).
fn get(addr: &str, path: &str, extra_headers: &str) -> std::io::Result<(String, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\n{extra_headers}\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    Ok((head, response[split + 4..].to_vec()))
}

/// The sample names of an exposition, sorted (values change between scrapes; names do not).
fn names(body: &str) -> Vec<String> {
    let mut names: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("ksight_") && !l.starts_with("ksight_scrape"))
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn any_host_port_answers_on_ipv6_and_ipv4_and_addresses_repeat() {
    require_root!();
    let (port, other) = (free_port(), free_port());
    let server = Server::start(&[
        "--collectors",
        "process",
        "--web.listen-address",
        &format!(":{port}"),
        "--web.listen-address",
        &format!("127.0.0.1:{other}"),
    ]);
    for addr in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("127.0.0.1:{other}"),
    ] {
        let (head, _) = get(&addr, "/metrics", "").unwrap_or_else(|e| panic!("{addr}: {e}"));
        assert!(head.starts_with("HTTP/1.0 200"), "{addr}: {head}");
    }
    drop(server);
}

#[test]
fn gzip_when_asked_with_the_same_samples() {
    require_root!();
    let server = Server::start(&["--collectors", "process,syscalls"]);
    let addr = format!("127.0.0.1:{}", server.port);
    let (plain_head, plain) = get(&addr, "/metrics", "").expect("plain scrape");
    assert!(
        !plain_head.to_lowercase().contains("content-encoding"),
        "{plain_head}"
    );
    let (head, body) = get(&addr, "/metrics", "Accept-Encoding: gzip\r\n").expect("gzip");
    assert!(
        head.to_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .expect("a gzip body");
    assert!(
        body.len() * 3 < text.len(),
        "{} bytes gzipped from {}",
        body.len(),
        text.len()
    );
    assert_eq!(names(&text), names(&String::from_utf8_lossy(&plain)));
}

#[test]
fn the_telemetry_path_moves_and_exporter_metrics_go() {
    require_root!();
    let server = Server::start(&[
        "--collectors",
        "process",
        "--web.telemetry-path",
        "/kernel/metrics",
        "--web.disable-exporter-metrics",
    ]);
    let addr = format!("127.0.0.1:{}", server.port);
    let (head, body) = get(&addr, "/kernel/metrics", "").expect("moved path");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("ksight_collector_up{collector=\"process\"} 1"));
    assert!(
        !body.contains("process_resident_memory_bytes"),
        "exporter metrics left in"
    );
    let (head, _) = get(&addr, "/metrics", "").expect("old path");
    assert!(head.starts_with("HTTP/1.0 404"), "{head}");
    let (_, landing) = get(&addr, "/", "").expect("landing page");
    assert!(String::from_utf8_lossy(&landing).contains("href=\"/kernel/metrics\""));
}

#[test]
fn a_socket_from_systemd_socket_activate_is_served() {
    require_root!();
    let port = free_port();
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}"), KSIGHT])
        .args([
            "serve",
            "--web.systemd-socket",
            "--collectors",
            "process",
            "--log",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("systemd-socket-activate runs (Debian package systemd)");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        // The first connection starts ksight, which then answers it.
        match get(&addr, "/metrics", "") {
            Ok(answer) if answer.0.starts_with("HTTP/1.0 200") => break answer,
            _ => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("exited ({status}) before serving; its stderr is above");
                }
                assert!(
                    Instant::now() < deadline,
                    "nothing served on the passed socket"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    // SAFETY: signalling our own child (ksight, exec'd in place by systemd-socket-activate).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(String::from_utf8_lossy(&answer.1).contains("ksight_build_info"));
    assert!(status.success(), "{status}");
}

#[test]
fn bad_endpoint_flags_exit_2() {
    for (args, expect) in [
        (
            vec!["serve", "--web.telemetry-path", "metrics"],
            "invalid telemetry path",
        ),
        (
            vec!["serve", "--web.telemetry-path", "/"],
            "invalid telemetry path",
        ),
        (
            vec!["serve", "--web.listen-address", ":99999"],
            "invalid --web.listen-address",
        ),
    ] {
        let out = Command::new(KSIGHT)
            .args(&args)
            .output()
            .expect("run ksight");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
