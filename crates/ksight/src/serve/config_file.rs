//! Reading the web config and the files it names (certificates, keys, CAs): whoever can
//! write there may put a FIFO, a device or a huge file in their place, and a reload must
//! neither block serve nor grow it.
//!
//! - Opened with O_NONBLOCK: opening a FIFO does not wait for a writer (the descriptor is
//!   then refused as not a regular file). Symlinks are followed on purpose: Kubernetes
//!   mounts a ConfigMap or Secret through `..data` symlinks, and the check is on the file
//!   they reach, so a link to /dev/zero is refused as a device.
//! - Only a regular file, of at most [`MAX_BYTES`], read with a cap one byte past it (a file
//!   that grows while read is refused, not followed).
//! - The whole reading runs on a thread of its own, waited for at most [`READ_TIMEOUT`]: a
//!   file on a hung network filesystem costs one stuck thread, never a worker or a lock.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The largest web config, certificate chain or key read (real ones are a few KiB).
pub const MAX_BYTES: u64 = 1 << 20;

/// How long a reading (the config and every file it names) may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The bytes of the regular file at `path`, at most [`MAX_BYTES`] of them.
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let shown = || crate::decode::printable(path.as_os_str().as_encoded_bytes());
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .with_context(shown)?;
    let meta = file.metadata().with_context(shown)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        bail!("{}: {what}, not a regular file", shown());
    }
    if meta.len() > MAX_BYTES {
        bail!("{}: larger than {MAX_BYTES} bytes", shown());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(shown)?;
    if bytes.len() as u64 > MAX_BYTES {
        bail!("{}: larger than {MAX_BYTES} bytes", shown());
    }
    Ok(bytes)
}

/// Readings run on threads of their own, each given at most a timeout.
#[derive(Default)]
pub struct TimedReader {
    /// Set while a reading that outlived its timeout is still stuck: no second one starts
    /// behind it, so a hung filesystem costs one thread, not one per change.
    stuck: Arc<AtomicBool>,
}

impl TimedReader {
    /// `read` on a thread of its own, given at most [`READ_TIMEOUT`].
    pub fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run_within(READ_TIMEOUT, read)
    }

    fn run_within<T: Send + 'static>(
        &self,
        timeout: Duration,
        read: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.stuck.load(Ordering::SeqCst) {
            bail!("an earlier reading of the web config still hangs");
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let stuck = self.stuck.clone();
        std::thread::Builder::new()
            .name("ksight-webread".into())
            .spawn(move || {
                let result = read();
                stuck.store(false, Ordering::SeqCst);
                let _ = tx.send(result);
            })
            .context("starting a thread to read the web config")?;
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(_) => {
                self.stuck.store(true, Ordering::SeqCst);
                bail!("reading the web config took longer than {timeout:?}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_regular_files() {
        let dir = std::env::temp_dir().join(format!("ksight-cfgfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = |p: &Path| format!("{:#}", read_regular(p).expect_err("refused"));
        assert!(err(&fifo).contains("a FIFO"), "{}", err(&fifo));
        let zero = dir.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        assert!(err(&zero).contains("a device"), "{}", err(&zero));
        let big = dir.join("big");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(MAX_BYTES + 1))
            .expect("sparse");
        assert!(err(&big).contains("larger than"), "{}", err(&big));
        let fine = dir.join("fine");
        std::fs::write(&fine, "a: 1\n").expect("write");
        assert_eq!(read_regular(&fine).expect("read"), b"a: 1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reading_that_hangs_times_out() {
        let reader = TimedReader::default();
        let slow = reader.run_within(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_millis(400));
            Ok(())
        });
        assert!(slow.is_err());
        let again = reader.run_within(Duration::from_secs(1), || Ok(()));
        assert!(again.is_err(), "started behind a stuck one");
        std::thread::sleep(Duration::from_millis(500));
        assert!(reader.run_within(Duration::from_secs(1), || Ok(())).is_ok());
    }
}
