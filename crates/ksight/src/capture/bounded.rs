//! A first compilation of the filter expression in a forked child under a memory limit and
//! a timeout, so no expression can take capture's time or memory (libpcap's optimizer is
//! worse than linear: 600 `or`ed terms ran over 60 s, 2,000 took more than 1.5 GB).
//!
//! Why a child and not a pre-check of the text: the cost depends on the expression's shape
//! (terms, protocols, negations), not only its length, so any count of terms either refuses
//! expressions that compile in a millisecond or lets a costly shape through. Running the
//! compiler itself under limits measures the real cost. The child compiles for both
//! framings exactly as [`super::filter::Filter::compile`] will; only when it finished within
//! the limits does ksight compile in its own process. The compiler is deterministic, so
//! that second run costs what the first did; passing the child's instructions back instead
//! would leave ksight freeing with pcap_freecode what libpcap did not allocate.
//!
//! fork() in a process with threads copies only the calling one; glibc's fork takes and
//! resets malloc's locks, so the child may allocate, and it calls nothing but libpcap,
//! write(2) and _exit(2).

use std::ffi::{c_int, CStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

/// The longest a compilation may take (a real expression takes milliseconds).
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(5);
/// Address space the child may add to what it inherits.
pub const COMPILE_MEMORY: u64 = 512 << 20;

/// Whether `text` compiles within the limits; Err: one line naming the limit passed or the
/// compiler's own error. `compile` is run in the child: Err(message) or Ok.
pub fn check(text: &CStr, compile: impl FnOnce() -> Result<(), String>) -> Result<()> {
    let (read_end, write_end) = pipe()?;
    let address_space = inherited_address_space().saturating_add(COMPILE_MEMORY);
    // SAFETY: the child runs only `child_main` (libpcap, write, _exit); see the module's
    // comment for why allocating there is sound.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!(
            "fork to compile the filter: {}",
            std::io::Error::last_os_error()
        );
    }
    if pid == 0 {
        drop(read_end);
        child_main(&write_end, address_space, compile);
    }
    drop(write_end);
    let status = wait_within(pid, COMPILE_TIMEOUT);
    let message = read_message(&read_end);
    let shown = shortened(text);
    match status {
        None => bail!(
            "filter expression {shown}: too complex (compiling took longer than {} s)",
            COMPILE_TIMEOUT.as_secs()
        ),
        Some(0) => Ok(()),
        Some(1) if !message.is_empty() => Err(anyhow!(
            "filter expression {shown}: {}",
            crate::decode::printable(message.as_bytes())
        )),
        Some(_) => bail!(
            "filter expression {shown}: too complex (compiling needed more than {} MiB)",
            COMPILE_MEMORY >> 20
        ),
    }
}

/// In the child: limit, compile, report, exit; never returns.
fn child_main(
    report: &OwnedFd,
    address_space: u64,
    compile: impl FnOnce() -> Result<(), String>,
) -> ! {
    let limit = libc::rlimit {
        rlim_cur: address_space,
        rlim_max: address_space,
    };
    // SAFETY: setrlimit reads a valid rlimit; it only lowers this child's limit.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    let code = match compile() {
        Ok(()) => 0,
        Err(message) => {
            let bytes = message.as_bytes();
            // SAFETY: writing our own buffer to our own pipe; a short message (< PIPE_BUF).
            unsafe { libc::write(report.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
            1
        }
    };
    // SAFETY: ends the child without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(code) }
}

/// The child's exit code (128 + signal when killed), or None when it ran out of time (it
/// is then killed and reaped).
fn wait_within(pid: libc::pid_t, timeout: Duration) -> Option<c_int> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status: c_int = 0;
        // SAFETY: reaping our own child; status is a valid int to fill.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
        if done < 0 || Instant::now() >= deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds is a valid array of two ints to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just returned by the kernel and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// What the child wrote (its end is closed: it has exited or was killed).
fn read_message(fd: &OwnedFd) -> String {
    let mut buf = [0u8; 1024];
    // SAFETY: reading into our own buffer from our own pipe, whose writers are all closed.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// ksight's address space now (what the child starts with), from /proc/self/statm; without
/// /proc, a generous guess.
fn inherited_address_space() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
    match pages {
        Some(pages) => pages * crate::common::kernel::page_size(),
        None => 4 << 30,
    }
}

/// The expression for a message: its first 60 characters, escaped, marked when cut.
fn shortened(text: &CStr) -> String {
    let bytes = text.to_bytes();
    let cut = bytes.len().min(60);
    let mut shown = crate::decode::printable(&bytes[..cut]);
    if cut < bytes.len() {
        shown.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    format!("{shown:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compiler_error_a_memory_hog_and_success() {
        let text = c"udp";
        assert!(check(text, || Ok(())).is_ok());
        let err = check(text, || Err("syntax error".into())).expect_err("refused");
        assert!(
            format!("{err:#}").ends_with("\"udp\": syntax error"),
            "{err:#}"
        );
        let hog = check(text, || {
            let big = vec![1u8; (COMPILE_MEMORY as usize) * 2];
            Err(format!("allocated {}", big.len()))
        });
        let err = format!("{:#}", hog.expect_err("refused"));
        assert!(err.contains("needed more than 512 MiB"), "{err}");
    }
}
