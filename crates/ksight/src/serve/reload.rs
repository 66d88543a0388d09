//! The web config, read again when it changes, off the request path.
//!
//! A connection only takes the configuration in force (an `Arc` cloned under a lock held
//! for nothing else) and pokes the reloader thread, which looks at the file's stamp and, when
//! it changed, reads it (bounded in size and time: config_file.rs) and swaps it in. So a
//! FIFO, a device or a hung filesystem at that path can never hold up a connection or
//! SIGTERM. A reading that fails, or that would remove TLS or authentication or leave an
//! empty configuration where the running one is not, keeps the running configuration: one
//! warning, and `ksight_web_config_reload_failures_total` counts it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Result};
use tracing::{info, warn};

use super::config_file::TimedReader;
use super::web_config::WebConfig;

/// How often the file is looked at when no connection asks.
const POLL: Duration = Duration::from_secs(1);

/// When the file last changed, its length and identity: a changed stamp means read it again.
type Stamp = (SystemTime, u64, u64, u64);

/// The web config in force, and what the reloader shares with connections and scrapes.
pub struct Watched {
    shared: Arc<Shared>,
    poke: SyncSender<()>,
    /// Taken by [`Watched::start_reloader`].
    pokes: Mutex<Option<Receiver<()>>>,
}

struct Shared {
    path: PathBuf,
    config: Mutex<Arc<WebConfig>>,
    stamp: Mutex<Option<Stamp>>,
    failures: Arc<AtomicU64>,
    reader: TimedReader,
}

impl Watched {
    /// Reads it now: a bad file at start is an error (one line, exit 2).
    pub fn new(path: PathBuf) -> Result<Self> {
        let reader = TimedReader::default();
        let stamp = stamp(&path);
        let config = load(&reader, &path)?;
        let (poke, pokes) = mpsc::sync_channel(1);
        let shared = Shared {
            path,
            config: Mutex::new(Arc::new(config)),
            stamp: Mutex::new(stamp),
            failures: Arc::new(AtomicU64::new(0)),
            reader,
        };
        Ok(Watched {
            shared: Arc::new(shared),
            poke,
            pokes: Mutex::new(Some(pokes)),
        })
    }

    /// Starts the thread that reads the file again when it changes. Called once serve has
    /// dropped its capabilities, so the thread has none.
    pub fn start_reloader(&self) -> Result<()> {
        let pokes = self.pokes.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(pokes) = pokes else {
            return Ok(());
        };
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("ksight-webconf".into())
            .spawn(move || {
                // A poke or a second without one; ends when serve drops the Watched.
                while let Ok(()) | Err(RecvTimeoutError::Timeout) = pokes.recv_timeout(POLL) {
                    shared.reload_if_changed();
                }
            })?;
        Ok(())
    }

    /// The configuration for a new connection; never waits for the file.
    pub fn current(&self) -> Arc<WebConfig> {
        // Full: a look is already due, which will see this change too.
        let _ = self.poke.try_send(());
        self.shared.current()
    }

    /// Reloads refused since start (the self-metric).
    pub fn failures(&self) -> Arc<AtomicU64> {
        self.shared.failures.clone()
    }

    #[cfg(test)]
    pub fn reload_if_changed(&self) {
        self.shared.reload_if_changed();
    }
}

impl Shared {
    fn current(&self) -> Arc<WebConfig> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Only the reloader thread calls this: the stamp's lock is never contended.
    fn reload_if_changed(&self) {
        let now = stamp(&self.path);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if now == *last {
                return;
            }
            *last = now;
        }
        let running = self.current();
        let checked =
            load(&self.reader, &self.path).and_then(|new| match new.downgrade_from(&running) {
                Some(why) => Err(anyhow!(
                    "refused: {why}; restart ksight to make such a change"
                )),
                None => Ok(new),
            });
        match checked {
            Ok(new) => {
                *self.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
                info!("web config reloaded");
            }
            Err(err) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                warn!("keeping the running web config: {err:#}");
            }
        }
    }
}

fn load(reader: &TimedReader, path: &Path) -> Result<WebConfig> {
    let path = path.to_path_buf();
    reader.run(move || WebConfig::load(&path))
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::super::web_config::tests::write;
    use super::*;

    fn edit(path: &Path, text: &str) {
        // A new stamp even within the clock's granularity: the length or inode changes too.
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }

    #[test]
    fn an_edited_file_is_read_again_and_a_broken_edit_keeps_the_last_good_one() {
        let hash = bcrypt::hash("secret", 4).expect("hash");
        let (_dir, path) = write(&format!("basic_auth_users:\n  alice: {hash}\n"));
        let watched = Watched::new(path.clone()).expect("loads");
        assert!(watched.current().users.contains_key("alice"));
        edit(
            &path,
            &format!("basic_auth_users:\n  bob: {hash}\n  carol: {hash}\n"),
        );
        watched.reload_if_changed();
        assert!(watched.current().users.contains_key("bob"));
        edit(&path, "basic_auth_users: [");
        watched.reload_if_changed();
        assert!(watched.current().users.contains_key("bob"), "kept");
        assert_eq!(watched.failures().load(Ordering::Relaxed), 1);
    }

    #[test]
    fn edits_that_take_authentication_away_are_refused_and_counted() {
        let hash = bcrypt::hash("secret", 4).expect("hash");
        let start = format!("basic_auth_users:\n  alice: {hash}\n");
        let (_dir, path) = write(&start);
        let watched = Watched::new(path.clone()).expect("loads");
        let bad = ["", "# nothing here\n", "basic_auth_users: {}\n", "{}\n"];
        for (n, text) in bad.iter().enumerate() {
            edit(&path, text);
            watched.reload_if_changed();
            assert!(watched.current().users.contains_key("alice"), "{text:?}");
            assert_eq!(watched.failures().load(Ordering::Relaxed), n as u64 + 1);
        }
        // An unchanged bad file is not counted again.
        watched.reload_if_changed();
        assert_eq!(watched.failures().load(Ordering::Relaxed), bad.len() as u64);
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_without_blocking() {
        let hash = bcrypt::hash("secret", 4).expect("hash");
        let (dir, path) = write(&format!("basic_auth_users:\n  alice: {hash}\n"));
        let watched = Watched::new(path.clone()).expect("loads");
        let fifo = dir.0.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::fs::rename(&fifo, &path).expect("fifo in place");
        watched.reload_if_changed();
        std::fs::remove_file(&path).expect("remove");
        std::os::unix::fs::symlink("/dev/zero", &path).expect("symlink");
        watched.reload_if_changed();
        assert!(watched.current().users.contains_key("alice"));
        assert_eq!(watched.failures().load(Ordering::Relaxed), 2);
    }
}
