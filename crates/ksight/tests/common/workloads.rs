//! Workloads the end-to-end tests generate: TCP connections, named sleepers, O_DIRECT reads
//! from a loop device, pipe ping-pong, an OOM kill in a cgroup.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{in_child, join_cgroup, wait, TestCgroup};

/// Connects `n` times to a listener on `ip`; each client sends `payload` bytes, the server
/// answers with `reply` bytes, both close.
pub fn connect_loop(ip: std::net::IpAddr, n: usize, payload: usize, reply: usize) {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    for _ in 0..n {
        let mut client = TcpStream::connect(addr).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(&vec![7u8; payload]).expect("send");
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let mut got = Vec::new();
        server.read_to_end(&mut got).expect("server reads");
        assert_eq!(got.len(), payload);
        server.write_all(&vec![9u8; reply]).expect("reply");
        drop(server);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).expect("client reads");
        assert_eq!(answer.len(), reply);
    }
}

/// Forks a child named `comm` that runs `setup` and then sleeps until killed; returns once
/// the child is named and set up.
pub fn spawn_named(comm: &str, setup: impl FnOnce()) -> i32 {
    let name = std::ffi::CString::new(comm).expect("comm");
    let mut fds = [0i32; 2];
    // SAFETY: pipe with a two-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child makes only raw syscalls and never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: raw syscalls in the forked child.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
            setup();
            libc::write(fds[1], b"x".as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    let mut byte = 0u8;
    // SAFETY: reading one byte into a local from our pipe.
    unsafe {
        libc::close(fds[1]);
        assert_eq!(libc::read(fds[0], (&raw mut byte).cast(), 1), 1);
        libc::close(fds[0]);
    }
    pid
}

/// A loop device over a file of its own, detached on drop.
pub struct LoopDevice {
    pub device: String,
    backing: PathBuf,
}

impl LoopDevice {
    pub fn new(size: usize) -> LoopDevice {
        let _ = Command::new("modprobe")
            .arg("loop")
            .stderr(std::process::Stdio::null())
            .status();
        let backing = std::env::temp_dir().join(format!("ksight-loop-{}", std::process::id()));
        std::fs::write(&backing, vec![1u8; size]).expect("backing file");
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing)
            .output()
            .expect("losetup (util-linux)");
        assert!(out.status.success(), "losetup: {out:?}");
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        LoopDevice { device, backing }
    }

    pub fn name(&self) -> &str {
        self.device.trim_start_matches("/dev/")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_file(&self.backing);
    }
}

/// `n` 4 KiB reads with O_DIRECT, so each is one request to the device.
pub fn direct_reads(device: &Path, n: usize) {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(device)
        .expect("open the loop device with O_DIRECT");
    let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("layout");
    // SAFETY: a non-zero-sized layout; freed below with the same layout.
    let buf = unsafe { std::alloc::alloc(layout) };
    assert!(!buf.is_null());
    // SAFETY: buf holds 4096 bytes, aligned as O_DIRECT requires.
    let slice = unsafe { std::slice::from_raw_parts_mut(buf, 4096) };
    for i in 0..n {
        file.read_exact_at(slice, (i * 4096) as u64)
            .expect("direct read");
    }
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf, layout) };
}

/// Two processes passing a byte back and forth `rounds` times over pipes.
pub fn ping_pong(rounds: usize) {
    let (mut a, mut b) = ([0i32; 2], [0i32; 2]);
    // SAFETY: pipe with two-int arrays.
    unsafe {
        assert_eq!(libc::pipe(a.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(b.as_mut_ptr()), 0);
    }
    // SAFETY: fork; the child makes only raw syscalls and _exits.
    let pong = unsafe { libc::fork() };
    assert!(pong >= 0, "fork");
    if pong == 0 {
        let mut byte = 0u8;
        for _ in 0..rounds {
            // SAFETY: raw syscalls on the pipes in the forked child.
            unsafe {
                libc::read(a[0], (&raw mut byte).cast(), 1);
                libc::write(b[1], (&raw const byte).cast(), 1);
            }
        }
        // SAFETY: ends the child without the parent's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    let mut byte = 1u8;
    for _ in 0..rounds {
        // SAFETY: raw syscalls on our pipes.
        unsafe {
            libc::write(a[1], (&raw const byte).cast(), 1);
            libc::read(b[0], (&raw mut byte).cast(), 1);
        }
    }
    wait(pong);
    // SAFETY: closing the pipes we opened.
    unsafe {
        for fd in [a[0], a[1], b[0], b[1]] {
            libc::close(fd);
        }
    }
}

/// A child named `comm` that touches 256 MiB in a cgroup limited to 16 MiB, and is OOM-killed.
pub fn oom_killed_in_a_cgroup(comm: &str) {
    let cgroup = TestCgroup::new(&format!("ksight-oom-{}", std::process::id()));
    cgroup.limit_memory(16 << 20);
    let procs = cgroup.procs_path();
    let status = in_child(comm, || {
        join_cgroup(&procs);
        // SAFETY: raw syscalls in the forked child: touch 256 MiB, over the limit.
        unsafe {
            let size = 256 << 20;
            let p = libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            for i in (0..size).step_by(4096) {
                p.add(i).write_volatile(1);
            }
        }
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the child was not OOM-killed (status {status:#x})"
    );
}
