//! Shared helpers of the privileged end-to-end tests: a `ksight serve` per test on a free
//! port, scrapes parsed into samples, and workloads run in forked children with unique comms.
#![allow(dead_code)]

pub mod chroot;
pub mod profile;
pub mod prometheus;
pub mod tracer;
pub mod workloads;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const KSIGHT: &str = env!("CARGO_BIN_EXE_ksight");

/// The first line of every privileged test: returns from it (skipping loudly) when it may
/// not load BPF, which fails in CI instead (see `privileged`).
macro_rules! require_root {
    () => {
        if !common::privileged() {
            return;
        }
    };
}

/// True when the test may load BPF. Outside CI a non-root run skips loudly; in CI it fails.
pub fn privileged() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("privileged test run without root in CI: run the suite as root");
    }
    eprintln!("\n*** SKIPPED: this test loads BPF programs and needs root (sudo) ***\n");
    false
}

/// A unique process name (<= 15 bytes) for this test run.
pub fn unique_comm(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let name = format!(
        "k{}{}{:x}",
        &tag[..tag.len().min(4)],
        n,
        std::process::id() & 0xffff
    );
    name[..name.len().min(15)].to_string()
}

/// A port free now and never handed out before in this test process: the kernel may give
/// the same ephemeral port to two tests running side by side once the first released it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    /// The telemetry path (`--web.telemetry-path` when the test gives one).
    pub path: String,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Server::start_binary(KSIGHT, extra)
    }

    /// Starts a server whose candidates in `broken` ("collector:hook,…") cannot attach.
    pub fn start_broken(broken: &str, extra: &[&str]) -> Server {
        Server::start_with(KSIGHT, extra, &[("KSIGHT_BREAK_HOOK", broken)])
    }

    /// Starts `binary` (a copy of ksight under another name, say) as the server.
    pub fn start_binary(binary: impl AsRef<std::ffi::OsStr>, extra: &[&str]) -> Server {
        Server::start_with(binary, extra, &[])
    }

    /// Starts `binary` with `extra` arguments and `env` added to its environment. It listens
    /// on a port the kernel picks (`127.0.0.1:0`), read from its "serving" log line: a port
    /// chosen beforehand could be taken by any other socket in between.
    pub fn start_with(
        binary: impl AsRef<std::ffi::OsStr>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut server = Server::spawn(binary, extra, env);
        server.wait_ready();
        server
    }

    /// Starts it and returns once it listens (its port known), without a plain-HTTP check:
    /// for servers that speak TLS.
    pub fn spawn(
        binary: impl AsRef<std::ffi::OsStr>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut args = vec!["serve", "--web.listen-address", "127.0.0.1:0"];
        args.extend_from_slice(&["--log", "warn,ksight::serve::http=info"]);
        args.extend_from_slice(extra);
        let mut child = Command::new(binary)
            .args(&args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ksight");
        let port = serving_port(&mut child);
        let path = extra
            .iter()
            .position(|a| *a == "--web.telemetry-path")
            .and_then(|i| extra.get(i + 1))
            .map_or("/metrics".to_string(), |p| p.to_string());
        Server { child, port, path }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http_get(self.port, &self.path, None).is_ok() {
                return;
            }
            // A server that already exited will never answer: say so now (its stderr,
            // inherited, is just above), not after the deadline.
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ksight exited ({status}) before serving /metrics; its stderr is above");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "ksight did not serve /metrics on port {} within 30 s",
            self.port
        );
    }

    pub fn scrape(&self) -> Samples {
        let body = http_get(self.port, &self.path, None).expect("scrape /metrics");
        Samples::parse(&body.1)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The static release binary scripts/test builds (scripts/release) and names in
/// KSIGHT_STATIC_BINARY; None, said loudly, outside CI when unset (a failure in CI).
pub fn static_binary() -> Option<String> {
    let binary = std::env::var("KSIGHT_STATIC_BINARY").ok();
    if binary.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "KSIGHT_STATIC_BINARY unset in CI: scripts/test builds it with scripts/release"
        );
        eprintln!("SKIPPED: KSIGHT_STATIC_BINARY unset (scripts/release builds the binary)");
    }
    binary
}

/// `binary serve` with only the process collector on `127.0.0.1:port`, for tests that need
/// their own `Command` (another user, a fault to inject, stderr kept for themselves).
pub fn process_only_serve(binary: impl AsRef<std::ffi::OsStr>, port: u16) -> Command {
    let mut command = Command::new(binary);
    command.args(["serve", "--collectors", "process"]);
    command.args(["--web.listen-address", &format!("127.0.0.1:{port}")]);
    command
}

/// The port of the first "serving" line ksight logs; its stderr is passed on to ours
/// meanwhile and afterwards (0 if it exits first: wait_ready then says so).
fn serving_port(child: &mut Child) -> u16 {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("message=serving") {
                let port = line
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("address="))
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse::<u16>().ok());
                if let Some(port) = port {
                    let _ = tx.send(port);
                }
            } else {
                eprintln!("{line}");
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or(0)
}

/// Whether `effective` is what ksight should keep after attach besides `kept`: nothing more,
/// except CAP_BPF on kernels that check capabilities on every bpf() call (5.10 with
/// unprivileged BPF disabled; from 6.1 map reads through an fd need none).
pub fn kept_after_attach(effective: u64, kept: u64) -> bool {
    const CAP_BPF: u64 = 1 << 39;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    effective == kept || (version < (6, 1) && effective == kept | CAP_BPF)
}

/// Fails the test unless `promtool check metrics` finds `body` clean.
pub fn assert_promtool_clean(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus)");
    // Written from another thread: a child that answers before reading all its input must
    // not fill its output pipes while we block on its stdin.
    let mut stdin = child.stdin.take().expect("stdin");
    let input = body.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("promtool's output");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GET over HTTP/1.0; returns (headers, body).
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\n{accept}\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("bad response: {head}")));
    }
    Ok((head.to_string(), body.to_string()))
}

/// Samples of one scrape: (name, labels) -> value.
pub struct Samples(pub Vec<(String, HashMap<String, String>, f64)>);

impl Samples {
    pub fn parse(text: &str) -> Samples {
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().expect("numeric value"),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
                None => (series.to_string(), HashMap::new()),
            };
            out.push((name, labels, value));
        }
        Samples(out)
    }

    /// Values of the samples of `name` whose labels include all of `want`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&str, &str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.0
            .iter()
            .filter(move |(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.matching(name, want).sum()
    }

    pub fn count(&self, name: &str, want: &[(&str, &str)]) -> usize {
        self.matching(name, want).count()
    }

    /// Runs of `collector`'s programs the kernel skipped (already running on that CPU:
    /// kernels that preempt tracepoint programs, such as Debian 7.3 with lazy preemption).
    pub fn skipped_runs(&self, collector: &str) -> f64 {
        self.sum(
            "ksight_bpf_program_misses_total",
            &[("collector", collector)],
        )
    }
}

/// An exact count, except that runs the kernel skipped (and counted) may each have taken
/// one event away: `expected - skipped <= actual <= expected`, exact when none was skipped.
pub fn assert_counted(actual: f64, expected: f64, skipped: f64, what: &str) {
    assert!(
        actual <= expected && actual >= expected - skipped,
        "{what}: {actual}, expected {expected} (the kernel skipped {skipped} runs)"
    );
}

fn parse_labels(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    out
}

/// Runs `work` in a forked child named `comm` and waits for it; returns the exit status.
/// The child uses only raw syscalls and leaves with _exit, so forking a threaded test is safe.
pub fn in_child(comm: &str, work: impl FnOnce()) -> i32 {
    wait(fork_named(comm, work))
}

/// As `in_child`, without waiting: returns the child's pid (for `wait`).
pub fn fork_named(comm: &str, work: impl FnOnce()) -> i32 {
    let name = std::ffi::CString::new(comm).expect("comm without NUL");
    // SAFETY: fork; the child only makes raw syscalls (async-signal-safe) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: PR_SET_NAME with a NUL-terminated string of <= 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
        work();
        // SAFETY: ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    pid
}

pub fn wait(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(ret, pid, "waitpid");
    status
}

/// Whether `ksight doctor` finds this hook kind working on this kernel.
pub fn hook_works(hook: &str) -> bool {
    feature_works(hook)
}

/// `ksight doctor --json`, run once per test binary (doctor loads a few dozen programs); the
/// test's environment (KSIGHT_REFUSE) applies.
fn doctor_report() -> &'static serde_json::Value {
    static REPORT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    REPORT.get_or_init(|| {
        let out = Command::new(KSIGHT)
            .args(["doctor", "--json"])
            .output()
            .expect("run doctor");
        serde_json::from_slice(&out.stdout).expect("doctor JSON")
    })
}

/// `--collector.NAME` for every collector of the registry (as doctor lists them): opt-in
/// ones too, so a test of everything needs no edit when a collector is added.
pub fn every_collector() -> Vec<String> {
    doctor_report()["collectors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .map(|name| format!("--collector.{name}"))
        .collect()
}

/// Whether `ksight doctor`'s probe of this feature (a hook kind, `tcx`, `task_file_iter`…)
/// says yes here: what the jobs themselves follow.
pub fn feature_works(name: &str) -> bool {
    doctor_report()["features"]
        .as_array()
        .and_then(|features| features.iter().find(|f| f["name"] == name))
        .and_then(|f| f["ok"].as_bool())
        .unwrap_or(false)
}

/// Whether the test runs with `feature` refused on purpose (KSIGHT_REFUSE in its
/// environment: scripts/test's run with optional features refused).
pub fn refused(feature: &str) -> bool {
    fault_injection()
        && std::env::var("KSIGHT_REFUSE")
            .is_ok_and(|list| list.split(',').any(|f| f.trim() == feature))
}

/// Whether this is a build with fault injection (KSIGHT_REFUSE, KSIGHT_BREAK_*).
pub fn fault_injection() -> bool {
    cfg!(feature = "fault-injection")
}

/// A copy of `src` under a unique name in a fresh temp dir; its comm is the file name.
pub fn copy_named(src: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ksight-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::copy(src, &path).expect("copy binary");
    path
}

/// A cgroup the test creates in the hierarchy ksight labels by: the v1 memory controller on
/// hybrid hosts, cgroup v2 elsewhere. Removed (innermost first) on drop.
pub struct TestCgroup {
    pub root: PathBuf,
    /// Path relative to the hierarchy's root, with a leading '/'.
    pub path: String,
}

impl TestCgroup {
    pub fn new(relative: &str) -> TestCgroup {
        let v1 = std::path::Path::new("/sys/fs/cgroup/memory");
        let root = if v1.join("memory.limit_in_bytes").exists() {
            v1.to_path_buf()
        } else {
            let root = PathBuf::from("/sys/fs/cgroup");
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
            root
        };
        let relative = relative.trim_start_matches('/');
        std::fs::create_dir_all(root.join(relative)).expect("create the test cgroup");
        // nested v2 cgroups need the controller enabled at every level above the leaf
        let mut dir = root.clone();
        for part in relative.split('/') {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+memory");
            dir = dir.join(part);
        }
        TestCgroup {
            root,
            path: format!("/{relative}"),
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.root.join(self.path.trim_start_matches('/'))
    }

    pub fn is_v1(&self) -> bool {
        self.root.ends_with("memory")
    }

    pub fn limit_memory(&self, bytes: u64) {
        let dir = self.dir();
        if self.is_v1() {
            std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string()).expect("limit");
        } else {
            std::fs::write(dir.join("memory.max"), bytes.to_string()).expect("memory.max");
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        }
    }

    /// `cgroup.procs` as a C string, for a forked child to write "0" (itself) into.
    pub fn procs_path(&self) -> std::ffi::CString {
        let path = self.dir().join("cgroup.procs");
        std::ffi::CString::new(path.to_string_lossy().as_bytes()).expect("path without NUL")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let mut dir = self.dir();
        while dir != self.root {
            let _ = std::fs::remove_dir(&dir);
            if !dir.pop() {
                break;
            }
        }
    }
}

/// In a forked child: moves the calling process into the cgroup whose `cgroup.procs` is given.
pub fn join_cgroup(procs: &std::ffi::CStr) {
    // SAFETY: raw syscalls only (safe after fork); writing "0" moves the writer itself.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            libc::_exit(99);
        }
        libc::close(fd);
    }
}

/// A network namespace of the test's own, loopback up: what happens in it is the test's
/// alone, so a collector told its inode (`--collector.tcp.netns`) counts nothing else the
/// machine does. Made with unshare in a thread (no iproute2: the kernel matrix's guests have
/// none); it lives while this value does.
pub struct PrivateNet {
    fd: std::os::fd::OwnedFd,
    pub inode: u64,
}

impl PrivateNet {
    pub fn new() -> PrivateNet {
        std::thread::spawn(|| {
            // SAFETY: a plain syscall that moves only this thread to a new namespace.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "unshare(CLONE_NEWNET)"
            );
            loopback_up();
            let file = std::fs::File::open("/proc/thread-self/ns/net").expect("the namespace");
            let inode = std::os::unix::fs::MetadataExt::ino(&file.metadata().expect("stat"));
            PrivateNet {
                fd: file.into(),
                inode,
            }
        })
        .join()
        .expect("making a network namespace")
    }

    /// The inode as `--collector.tcp.netns` takes it.
    pub fn inode_arg(&self) -> String {
        self.inode.to_string()
    }

    /// Runs `work` on a thread inside the namespace.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on an open namespace fd; it moves only this thread.
                assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0, "setns");
                work()
            })
            .join()
            .expect("work in the private network namespace")
        })
    }
}

/// Sets `lo` of the calling thread's network namespace up (SIOCSIFFLAGS).
fn loopback_up() {
    // SAFETY: a datagram socket for the ioctls, closed below; ifreq zeroed, its name "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        assert_eq!(
            libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req),
            0,
            "SIOCGIFFLAGS"
        );
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req), 0, "SIOCSIFFLAGS");
        libc::close(fd);
    }
}

/// A config folder as a user's would be: each example's `<name>.yaml` (tests/configs)
/// beside its program (crates/bpf/bpf/examples), for `serve --config.dir`.
pub fn example_config_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ksight-configs-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("config dir");
    let examples = [
        ("example_writes", ksight_bpf::examples::EXAMPLE_WRITES),
        ("example_sampled", ksight_bpf::examples::EXAMPLE_SAMPLED),
    ];
    let configs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/configs");
    for (name, object) in examples {
        let yaml = configs.join(format!("{name}.yaml"));
        std::fs::copy(&yaml, dir.join(format!("{name}.yaml"))).expect("copy yaml");
        std::fs::write(dir.join(format!("{name}.bpf.o")), object).expect("write object");
    }
    dir
}

/// A field of /proc/PID/status (`CapEff`, `NoNewPrivs`, `VmHWM`…), trimmed; empty if absent.
pub fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// `CapEff` (hex) and `NoNewPrivs` of a running process.
pub fn effective_caps_and_nnp(pid: u32) -> (u64, u32) {
    let eff = u64::from_str_radix(&status_field(pid, "CapEff"), 16).expect("CapEff in hex");
    let nnp = status_field(pid, "NoNewPrivs").parse().expect("NoNewPrivs");
    (eff, nnp)
}
