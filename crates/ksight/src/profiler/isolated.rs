//! Symbolizing one file in a child process, so that no file can take the profile down.
//!
//! The files symbolized are other users' binaries and debug info, parsed by blazesym. One
//! whose compressed debug section lies about its size (Elf64_Chdr.ch_size of 1 TiB) makes
//! blazesym ask for that much memory up front, and Rust aborts the process on the failed
//! allocation; a real zlib bomb costs its decompressed size. Checking compressed section
//! headers before blazesym sees the file would cover only the lies we thought of (a bomb
//! whose ch_size is small still decompresses in full before the length check, and the next
//! parser bug is elsewhere), so each file is symbolized in a forked child instead:
//! - its data size is limited (RLIMIT_DATA: the heap and anonymous mappings, not the file
//!   blazesym maps read-only), so a huge allocation fails in the child, which then aborts;
//! - it is given `TIMEOUT`, then killed;
//! - it keeps no capability but CAP_DAC_READ_SEARCH (reopening the file through
//!   /proc/self/fd needs read permission on it);
//! - it writes its answer to a pipe, read within a bound.
//!
//! A child that aborts, is killed, exceeds a bound or answers garbage costs only that file's
//! symbols: the caller names the file and the reason, and the profile is written.
//!
//! fork() is safe here: the profiler is single-threaded when it symbolizes (the sampling is
//! over), and glibc's malloc is reinitialized in the child.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The memory a child may allocate beyond what it inherits.
pub const MEMORY: u64 = 1 << 30;
/// How long one file may take.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// The most a child's answer may hold.
const MAX_ANSWER: usize = 256 << 20;

/// The frames of each address (outermost first); an empty list: no symbol.
pub type Answer = Vec<Vec<String>>;

/// Runs `work` in a child process within the bounds above; Err says why it gave no answer.
pub fn run(work: impl FnOnce() -> Answer) -> Result<Answer, String> {
    let (read_end, write_end) = pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: fork in a single-threaded process (module comment); the child only runs
    // `work`, writes to the pipe and leaves with _exit, never returning into the caller.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(read_end);
        child(work, write_end);
    }
    drop(write_end);
    let answer = read_answer(File::from(read_end), pid);
    let status = wait(pid);
    match (answer, status) {
        (_, Err(why)) => Err(why),
        (Err(why), Ok(())) => Err(why),
        (Ok(bytes), Ok(())) => decode(&bytes).ok_or_else(|| "a garbled answer".to_string()),
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are new and owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The child: bounds itself, works, answers, exits (0 only if the whole answer was written).
fn child(work: impl FnOnce() -> Answer, out: OwnedFd) -> ! {
    limit_data(MEMORY);
    keep_only_read_search();
    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    let code = match answer {
        Ok(answer) => {
            let mut file = File::from(out);
            match std::io::Write::write_all(&mut file, &encode(&answer)) {
                Ok(()) => 0,
                Err(_) => 3,
            }
        }
        Err(_) => 2,
    };
    // SAFETY: _exit ends the child at once, without running the parent's exit handlers or
    // flushing buffers it shares with the parent.
    unsafe { libc::_exit(code) }
}

/// RLIMIT_DATA at what the child has now plus `extra`.
fn limit_data(extra: u64) {
    let now = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmData:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let limit = libc::rlimit {
        rlim_cur: now.saturating_add(extra),
        rlim_max: now.saturating_add(extra),
    };
    // SAFETY: setrlimit reads the struct we own.
    unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) };
}

fn keep_only_read_search() {
    use caps::{CapSet, Capability};
    let keep: caps::CapsHashSet = caps::read(None, CapSet::Permitted)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| *c == Capability::CAP_DAC_READ_SEARCH)
        .collect();
    let _ = caps::set(None, CapSet::Effective, &keep);
    let _ = caps::set(None, CapSet::Permitted, &keep);
}

/// Reads the child's answer until it closes the pipe, the deadline passes or the answer
/// exceeds its bound (the child is then killed).
fn read_answer(pipe: File, pid: libc::pid_t) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + TIMEOUT;
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut pipe = pipe;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !readable(&pipe, left) {
            kill(pid);
            return Err(format!("took longer than {} s", TIMEOUT.as_secs()));
        }
        match pipe.read(&mut buf) {
            Ok(0) => return Ok(answer),
            Ok(n) if answer.len() + n > MAX_ANSWER => {
                kill(pid);
                return Err(format!("answered more than {} MiB", MAX_ANSWER >> 20));
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading its answer: {e}")),
        }
    }
}

/// Whether `pipe` has data (or was closed) within `wait`.
fn readable(pipe: &File, wait: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one pollfd we own.
    let n = unsafe { libc::poll(&mut fd, 1, ms) };
    n > 0 || (n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted)
}

fn kill(pid: libc::pid_t) {
    // SAFETY: a signal to our own child, not yet reaped (its pid cannot be reused).
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Reaps the child: Ok if it exited with 0.
fn wait(pid: libc::pid_t) -> Result<(), String> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, writing into an int we own.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
    }
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        return Err(match signal {
            libc::SIGABRT => format!(
                "the symbolizer aborted (SIGABRT): most likely an allocation over its {} MiB",
                MEMORY >> 20
            ),
            libc::SIGKILL => "the symbolizer was killed (SIGKILL)".to_string(),
            _ => format!("the symbolizer died of signal {signal}"),
        });
    }
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        2 => Err("the symbolizer panicked".to_string()),
        code => Err(format!("the symbolizer exited with {code}")),
    }
}

/// Per address: u32 frame count, then per frame u32 length and the bytes.
fn encode(answer: &Answer) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(answer.len() as u32).to_le_bytes());
    for frames in answer {
        out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        for name in frames {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
    }
    out
}

fn decode(mut bytes: &[u8]) -> Option<Answer> {
    let number = |bytes: &mut &[u8]| -> Option<usize> {
        let (head, rest) = bytes.split_first_chunk::<4>()?;
        *bytes = rest;
        Some(u32::from_le_bytes(*head) as usize)
    };
    let addresses = number(&mut bytes)?;
    let mut answer = Vec::with_capacity(addresses.min(bytes.len() / 4));
    for _ in 0..addresses {
        let count = number(&mut bytes)?;
        let mut frames = Vec::with_capacity(count.min(bytes.len() / 4));
        for _ in 0..count {
            let len = number(&mut bytes)?;
            let (name, rest) = (bytes.get(..len)?, bytes.get(len..)?);
            frames.push(String::from_utf8_lossy(name).into_owned());
            bytes = rest;
        }
        answer.push(frames);
    }
    bytes.is_empty().then_some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    // fork() is not tried here: the test harness runs other tests on other threads, and a
    // child forked while one of them holds the stderr lock hangs. tests/profile.rs
    // (a_debug_section_that_lies_about_its_size_costs_only_its_file) runs the real thing.
    #[test]
    fn an_answer_survives_the_pipe_encoding() {
        let answer = vec![vec!["main".to_string(), "inlined".to_string()], vec![]];
        assert_eq!(decode(&encode(&answer)), Some(answer));
        assert_eq!(decode(&[1, 0, 0, 0, 9]), None);
        assert_eq!(decode(&[]), None);
    }
}
