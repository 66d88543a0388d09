//! The HTTP endpoint as an operator deploys it: IPv6 and IPv4 on `:PORT`, several addresses,
//! gzip, another telemetry path, systemd socket activation, no exporter metrics. Host only:
//! nothing here depends on the kernel (scripts/vmtest leaves this binary out).

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::prometheus::*;
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
    // The process counters get their first series with the first fork, exec and exit seen:
    // one is made here and waited for, so that no family appears between the two scrapes.
    let _ = Command::new("true").status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (plain_head, plain) = loop {
        let (head, body) = get(&addr, "/metrics", "").expect("plain scrape");
        let text = String::from_utf8_lossy(&body);
        let families = ["execs", "exits", "forks"];
        if families
            .iter()
            .all(|f| text.contains(&format!("ksight_process_{f}_total{{")))
        {
            break (head, body);
        }
        assert!(
            Instant::now() < deadline,
            "no process events counted: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
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

/// The arguments deploy/systemd/ksight.service starts ksight with (its ExecStart line).
fn unit_arguments() -> Vec<String> {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/systemd/ksight.service");
    let text = std::fs::read_to_string(unit).expect("the systemd unit");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    line.split_whitespace().skip(1).map(String::from).collect()
}

/// The shipped unit's command line, on a socket passed as systemd passes it.
#[test]
fn a_socket_from_systemd_socket_activate_is_served() {
    require_root!();
    let port = free_port();
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}"), KSIGHT])
        .args(unit_arguments())
        .args(["--collectors", "process", "--log", "warn"])
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

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, made
/// with openssl in a directory of their own (removed on drop).
struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir =
            std::env::temp_dir().join(format!("ksight-pki-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=ksight test CA",
            ],
        ]
        .concat());
        for (name, usage, san) in [
            (
                "server",
                "serverAuth",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
            ),
            ("client", "clientAuth", ""),
        ] {
            let ext = format!("{name}.ext");
            std::fs::write(dir.join(&ext), format!("{san}extendedKeyUsage={usage}\n"))
                .expect("ext");
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            run(&[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// Writes web.yml: TLS with this server certificate, `client_auth`, and alice's password.
    fn web_config(&self, client_auth: &str, password: &str) -> String {
        let hash = bcrypt::hash(password, 4).expect("bcrypt");
        let path = self.path("web.yml");
        let client = match client_auth {
            "NoClientCert" => String::new(),
            other => format!(
                "  client_auth_type: {other}\n  client_ca_file: {}\n",
                self.path("ca.pem")
            ),
        };
        let text = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n{client}\
             basic_auth_users:\n  alice: {hash}\n\
             http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            self.path("server.pem"),
            self.path("server.key"),
        );
        std::fs::write(&path, text).expect("web.yml");
        path
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// curl's HTTP status for `url` with `args` (000 when there was no HTTP answer).
fn curl(url: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %header{x-frame-options}",
            "--max-time",
            "10",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn tls_and_basic_auth_for_curl_and_prometheus_and_edits_take_effect() {
    require_root!();
    let pki = Pki::new();
    let web = pki.web_config("NoClientCert", "secret");
    let server = Server::spawn(
        KSIGHT,
        &["--collectors", "process", "--web.config.file", &web],
        &[],
    );
    let url = format!("https://127.0.0.1:{}/metrics", server.port);
    let ca = pki.path("ca.pem");
    assert_eq!(
        curl(&url, &["--cacert", &ca, "-u", "alice:secret"]),
        "200 deny"
    );
    assert_eq!(
        curl(&url, &["--cacert", &ca, "-u", "alice:wrong"]),
        "401 deny"
    );
    assert_eq!(curl(&url, &["--cacert", &ca]), "401 deny", "no credentials");
    let plain = format!("http://127.0.0.1:{}/metrics", server.port);
    assert!(
        curl(&plain, &["-u", "alice:secret"]).starts_with("000"),
        "plain HTTP answered"
    );
    // Prometheus' own TLS and basic auth.
    let job = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {ca}\n    basic_auth:\n      username: alice\n      password: secret\n"
    );
    let prometheus = Prometheus::start_scraping(server.port, &job, &[]);
    prometheus.query_until("ksight_collector_up{collector=\"process\"}", |v| v == 1.0);
    // A new password takes effect within a moment (the file is read off the request path),
    // without a restart.
    pki.web_config("NoClientCert", "rotated");
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl(&url, &["--cacert", &ca, "-u", "alice:rotated"]) != "200 deny" {
        assert!(
            Instant::now() < deadline,
            "the new password never took effect"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        curl(&url, &["--cacert", &ca, "-u", "alice:secret"]),
        "401 deny"
    );
}

#[test]
fn a_required_client_certificate_is_required() {
    require_root!();
    let pki = Pki::new();
    let web = pki.web_config("RequireAndVerifyClientCert", "secret");
    let server = Server::spawn(
        KSIGHT,
        &["--collectors", "process", "--web.config.file", &web],
        &[],
    );
    let url = format!("https://127.0.0.1:{}/metrics", server.port);
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let with_cert = [
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "-u",
        "alice:secret",
    ];
    assert_eq!(curl(&url, &with_cert), "200 deny");
    assert!(
        curl(&url, &["--cacert", &ca, "-u", "alice:secret"]).starts_with("000"),
        "served without a client certificate"
    );
}

/// `serve --web.config.file PATH` exits 2 with one line that says `expect`.
fn assert_refused(path: &std::path::Path, expect: &str) {
    let out = Command::new(KSIGHT)
        .args(["serve", "--web.config.file"])
        .arg(path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("ksight")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(expect), "{}: {stderr}", path.display());
}

#[test]
fn a_bad_web_config_is_one_line_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("ksight-badweb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (text, expect) in [
        (
            "tls_server_config:\n  cert_file: /nonexistent/c.pem\n  key_file: k\n",
            "cert_file",
        ),
        (
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS10\n",
            "TLS10",
        ),
        (
            "basic_auth_users:\n  alice: plaintext\n",
            "not a bcrypt hash",
        ),
        ("colour: blue\n", "unknown field"),
    ] {
        let path = dir.join("web.yml");
        std::fs::write(&path, text).expect("write");
        assert_refused(&path, expect);
    }
    let missing = Command::new(KSIGHT)
        .args(["serve", "--web.config.file", "/nonexistent/web.yml"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
    // The server certificate with the client's key.
    let pki = Pki::new();
    let path = dir.join("wrong-key.yml");
    let text = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
        pki.path("server.pem"),
        pki.path("client.key")
    );
    std::fs::write(&path, text).expect("write");
    assert_refused(&path, "do not go together");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Authorization: Basic …` for `user:password`, as a header line.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {token}\r\n")
}

/// The status code of a response head.
fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The value of `ksight_web_config_reload_failures_total` seen with alice's password over TLS.
fn reload_failures(url: &str, ca: &str) -> f64 {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca,
            "-u",
            "alice:secret",
            url,
        ])
        .output()
        .expect("curl runs");
    let body = String::from_utf8_lossy(&out.stdout);
    Samples::parse(&body).sum("ksight_web_config_reload_failures_total", &[])
}

/// Issue 30, item 4: edits that would take TLS or the password away (an editor's truncate,
/// a comment-only file, no users, TLS only) are refused and counted; /metrics keeps asking
/// for the password over TLS.
#[test]
fn edits_that_remove_tls_or_authentication_are_refused_and_counted() {
    require_root!();
    let pki = Pki::new();
    let web = pki.web_config("NoClientCert", "secret");
    let server = Server::spawn(
        KSIGHT,
        &["--collectors", "process", "--web.config.file", &web],
        &[],
    );
    let url = format!("https://127.0.0.1:{}/metrics", server.port);
    let ca = pki.path("ca.pem");
    let tls_only = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let mut failures = reload_failures(&url, &ca);
    assert_eq!(failures, 0.0);
    for text in [
        "",
        "# all commented out\n",
        "basic_auth_users: {}\n",
        &tls_only,
    ] {
        std::fs::write(&web, text).expect("edit");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Every answer meanwhile still asks for the password, over TLS.
            assert_eq!(curl(&url, &["--cacert", &ca]), "401 deny", "{text:?}");
            let now = reload_failures(&url, &ca);
            if now > failures {
                failures = now;
                break;
            }
            assert!(Instant::now() < deadline, "{text:?} was not counted");
            std::thread::sleep(Duration::from_millis(100));
        }
        let plain = format!("http://127.0.0.1:{}/metrics", server.port);
        assert!(curl(&plain, &[]).starts_with("000"), "{text:?}: plain HTTP");
    }
}

/// A child SIGKILLed when the test ends, even by a failed assertion (which may be about its
/// ignoring SIGTERM).
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Issue 30, item 5: the web config path becomes a link to /dev/zero, then a FIFO. serve
/// neither grows nor hangs: every connection is answered (401 without the password, 200
/// with it), the refusals are counted, and SIGTERM ends it at once. The server runs under a
/// 4 GiB address-space limit so that a regression fails the test instead of the host.
#[test]
fn a_web_config_turned_into_dev_zero_or_a_fifo_neither_grows_nor_hangs_serve() {
    require_root!();
    let dir = std::env::temp_dir().join(format!("ksight-webfifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let web = dir.join("web.yml");
    let hash = bcrypt::hash("secret", 4).expect("bcrypt");
    std::fs::write(&web, format!("basic_auth_users:\n  alice: {hash}\n")).expect("web.yml");
    let port = free_port();
    let mut command = process_only_serve(KSIGHT, port);
    command.arg("--web.config.file").arg(&web);
    // SAFETY: setrlimit is async-signal-safe; it only limits the child about to exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            let limit = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    let mut server = KilledOnDrop(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let child = &mut server.0;
    let addr = format!("127.0.0.1:{port}");
    let answered = |auth: &str| get(&addr, "/metrics", auth).map(|(head, _)| status(&head));
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered("").ok() != Some(401) {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let failures = || {
        let (_, body) = get(&addr, "/metrics", &basic("alice", "secret")).expect("scrape");
        Samples::parse(&String::from_utf8_lossy(&body))
            .sum("ksight_web_config_reload_failures_total", &[])
    };
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    let zero = dir.join("zero");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    std::fs::rename(&zero, &web).expect("link in place");
    for (n, what) in [(1.0, "/dev/zero"), (2.0, "a FIFO")] {
        if n == 2.0 {
            // SAFETY: a NUL-terminated path; mkfifo only creates the node.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            std::fs::rename(&fifo, &web).expect("fifo in place");
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while failures() < n {
            assert!(Instant::now() < deadline, "{what}: not counted");
            std::thread::sleep(Duration::from_millis(100));
        }
        for _ in 0..20 {
            let t0 = Instant::now();
            assert_eq!(answered("").ok(), Some(401), "{what}");
            assert_eq!(
                answered(&basic("alice", "secret")).ok(),
                Some(200),
                "{what}"
            );
            assert!(t0.elapsed() < Duration::from_secs(5), "{what}: slow answer");
        }
        let rss = rss_kib(child.id() as i32);
        assert!(rss < 200 * 1024, "{what}: serve grew to {rss} KiB");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(t0.elapsed() < Duration::from_secs(15), "SIGTERM ignored");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One GET of /metrics from `source` (a loopback address of the test's choosing) to
/// 127.0.0.1:`port` with `auth` headers: its status and how long the answer took.
fn timed_get(source: [u8; 4], port: u16, auth: &str) -> (u16, Duration) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from = std::net::SocketAddr::from((source, 0));
    socket.bind(&from.into()).expect("bind the source address");
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let t0 = Instant::now();
    socket.connect(&to.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let request = format!("GET /metrics HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n");
    let mut head = [0u8; 16];
    let answered = stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.read(&mut head));
    let code = match answered {
        Ok(n) => status(&String::from_utf8_lossy(&head[..n])),
        Err(_) => 0,
    };
    (code, t0.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Issue 30, item 6: with 150 connections sending wrong passwords as fast as they are
/// answered, a valid first login from another address is answered within a bounded number
/// of bcrypt checks (it waited behind all 150 before); and an unknown user costs a check
/// as a known one does, so timing does not tell which users exist.
#[test]
fn a_valid_login_is_answered_quickly_under_a_flood_of_wrong_passwords() {
    require_root!();
    let dir = std::env::temp_dir().join(format!("ksight-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let web = dir.join("web.yml");
    // Cost 10, as Prometheus' documentation suggests: tens of ms a check.
    let users = ["alice", "bob", "carol", "dave"];
    let mut text = "basic_auth_users:\n".to_string();
    for user in users {
        let hash = bcrypt::hash(format!("{user}-secret"), 10).expect("bcrypt");
        text.push_str(&format!("  {user}: {hash}\n"));
    }
    std::fs::write(&web, text).expect("web.yml");
    let web = web.to_string_lossy().into_owned();
    let server = Server::spawn(
        KSIGHT,
        &["--collectors", "process", "--web.config.file", &web],
        &[],
    );
    let port = server.port;
    let source = [127, 0, 0, 2];
    let wrong = basic("alice", "wrong");
    let nobody = basic("mallory", "wrong");
    // One check alone, and known against unknown users (interleaved, medians).
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let (code, t) = timed_get(source, port, &wrong);
        assert_eq!(code, 401);
        known.push(t);
        let (code, t) = timed_get(source, port, &nobody);
        assert_eq!(code, 401);
        unknown.push(t);
    }
    let (known, unknown) = (median(known), median(unknown));
    eprintln!("wrong password: known user {known:?}, unknown user {unknown:?}");
    assert!(
        unknown * 2 > known && known * 2 > unknown,
        "known {known:?} against unknown {unknown:?}: timing tells users apart"
    );
    let check = known;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..150)
        .map(|_| {
            let (stop, wrong) = (stop.clone(), wrong.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (code, _) = timed_get([127, 0, 0, 1], port, &wrong);
                    if code != 401 {
                        // 429: told to come back later; an attacker may not, but the test
                        // measures the queue, not the CPU of refusing connections.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let mut logins = Vec::new();
    for user in &users[1..] {
        let (code, t) = timed_get(source, port, &basic(user, &format!("{user}-secret")));
        assert_eq!(code, 200, "{user}");
        logins.push(t);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        let _ = a.join();
    }
    let slowest = logins.iter().max().copied().unwrap_or_default();
    eprintln!("valid first logins under the flood: {logins:?} (one check alone: {check:?})");
    // Behind at most 7 checks two at a time, plus its own: about 5 checks. Behind the
    // flood's 150 it was about 75. 25 checks and a second leave room for a busy host.
    let bound = check * 25 + Duration::from_secs(1);
    assert!(
        slowest < bound,
        "a valid login took {slowest:?} (bound {bound:?})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
