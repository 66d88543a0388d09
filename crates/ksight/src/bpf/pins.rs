//! `serve --pin NAME` and `ksight unpin NAME`: ksight's maps pinned under
//! /sys/fs/bpf/ksight/NAME/COLLECTOR/MAP, so `bpftool map dump pinned …` reads them.
//!
//! A running ksight holds an exclusive flock on its NAME directory: a second one with the same
//! NAME is refused, and a directory nobody holds is stale (an earlier ksight killed with
//! SIGKILL) and is emptied. A lock, unlike a pid file, cannot be fooled by a reused pid: the
//! kernel drops it when its holder dies. bpffs takes no regular files, so the lock is on the
//! directory itself.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use tracing::{info, warn};

use crate::bpf::LoadedObject;

/// Where bpffs is mounted by systemd and where bpftool looks.
pub const BPFFS: &str = "/sys/fs/bpf";
/// statfs's f_type of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Long enough for any sensible instance name, short enough for every path limit.
const MAX_NAME: usize = 64;

/// `ksight unpin NAME`.
#[derive(Args, Debug)]
pub struct UnpinArgs {
    /// The NAME given to `serve --pin`.
    #[arg(value_parser = parse_name, value_name = "NAME")]
    pub name: String,
}

/// A pin NAME: letters, digits, '.', '_' and '-', not starting with '.', at most 64 bytes.
pub fn parse_name(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("a pin NAME must not be empty".into());
    }
    if text.len() > MAX_NAME {
        return Err(format!("a pin NAME has at most {MAX_NAME} bytes"));
    }
    if text.contains('/') || text.starts_with('.') {
        return Err(format!(
            "invalid pin NAME {:?}: no '/', no leading '.' (it names one directory)",
            crate::decode::printable(text.as_bytes())
        ));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "invalid pin NAME: {:?} is not allowed (letters, digits, '.', '_', '-')",
            crate::decode::printable(bad.to_string().as_bytes())
        ));
    }
    Ok(text.to_string())
}

/// The directory of instance `name`.
pub fn dir_of(name: &str) -> PathBuf {
    Path::new(BPFFS).join("ksight").join(name)
}

/// A pin directory this process holds; emptied and removed on drop (a clean exit).
pub struct PinDir {
    path: PathBuf,
    /// Holds the flock for as long as ksight runs.
    _lock: File,
}

impl PinDir {
    /// Takes instance `name`: refuses if a running ksight holds it, removes stale pins.
    pub fn acquire(name: &str) -> Result<PinDir> {
        ensure_bpffs()?;
        let path = dir_of(name);
        let lock = lock_dir(&path, name)?;
        remove_contents(&path)
            .with_context(|| format!("--pin {name}: removing stale pins in {}", path.display()))?;
        Ok(PinDir { path, _lock: lock })
    }

    /// Pins every map of each object under COLLECTOR/MAP. Internal maps (`.rodata.cfg`,
    /// `process.rodata`, `OBJ.bss`: the only names with a '.', which no C identifier has) are
    /// left out: they hold settings, not data. An object shared by several collectors is
    /// pinned once, under the collector that loaded it.
    pub fn pin_all(&self, objects: &[(&str, &Arc<LoadedObject>)]) -> Result<usize> {
        let mut done: Vec<&Arc<LoadedObject>> = Vec::new();
        let mut count = 0;
        for (collector, obj) in objects {
            if done.iter().any(|o| Arc::ptr_eq(o, obj)) {
                continue;
            }
            done.push(obj);
            let dir = self.path.join(collector);
            make_dir(&dir)?;
            for (map, handle) in obj.maps() {
                if map.contains('.') {
                    continue;
                }
                pin_fd(handle.as_fd().as_raw_fd(), &dir.join(&map))?;
                count += 1;
            }
        }
        info!(dir = %self.path.display(), maps = count, "pinned");
        Ok(count)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let removed = remove_contents(&self.path).and_then(|()| std::fs::remove_dir(&self.path));
        if let Err(err) = removed {
            warn!(dir = %self.path.display(), "could not remove the pins: {err}");
        }
    }
}

/// `ksight unpin NAME`: removes the pins an earlier ksight left (killed with SIGKILL, say).
pub fn unpin(args: UnpinArgs) -> Result<ExitCode> {
    let path = dir_of(&args.name);
    if !is_bpffs(Path::new(BPFFS)) || !path.is_dir() {
        println!("nothing pinned under {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let lock = lock_dir(&path, &args.name)?;
    remove_contents(&path)?;
    std::fs::remove_dir(&path).with_context(|| format!("removing {}", path.display()))?;
    drop(lock);
    println!("removed {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` (and its parents, mode 0700: pins are root's) and takes an exclusive flock
/// on it; refused when another process holds it. Retried when the directory was removed
/// between open and lock (its holder exiting): the lock must be on the directory at `path`.
fn lock_dir(path: &Path, name: &str) -> Result<File> {
    for _ in 0..5 {
        if let Some(parent) = path.parent() {
            make_dir(parent)?;
        }
        make_dir(path)?;
        let dir = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                bail!(
                    "--pin {name}: {} is held by a running ksight (another NAME, or stop that one first)",
                    path.display()
                );
            }
            bail!("--pin {name}: locking {}: {err}", path.display());
        }
        let same = match (dir.metadata(), std::fs::metadata(path)) {
            (Ok(held), Ok(now)) => held.ino() == now.ino() && held.dev() == now.dev(),
            _ => false,
        };
        if same {
            return Ok(dir);
        }
    }
    bail!(
        "--pin {name}: {} keeps disappearing under us",
        path.display()
    )
}

fn make_dir(path: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow!("creating {}: {e}", path.display())),
    }
}

fn pin_fd(fd: i32, path: &Path) -> Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| anyhow!("pin path {} holds a NUL", path.display()))?;
    // SAFETY: fd is a live map fd and c_path a NUL-terminated path.
    let ret = unsafe { libbpf_sys::bpf_obj_pin(fd, c_path.as_ptr()) };
    if ret < 0 {
        bail!(
            "pinning {}: {}",
            path.display(),
            std::io::Error::from_raw_os_error(-ret)
        );
    }
    Ok(())
}

/// Removes everything below `dir` (pins and collector directories), keeping `dir`.
fn remove_contents(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct we own from a NUL-terminated path.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut fs) == 0 && fs.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Mounts a BPF filesystem at /sys/fs/bpf if none is there, as bpftool and systemd do. main
/// calls it for `serve --pin` before ksight may move to a mount namespace of its own (for
/// tracefs), so the mount is the host's and bpftool sees the pins. A failure is only logged
/// here: `PinDir::acquire` then says why pinning cannot work.
pub fn mount_bpffs_on_host() {
    if is_bpffs(Path::new(BPFFS)) {
        return;
    }
    // SAFETY: valid NUL-terminated strings and no data argument.
    let ret = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if ret == 0 {
        info!("mounted a BPF filesystem at {BPFFS} (as bpftool and systemd do)");
    } else {
        tracing::debug!(
            "mounting a BPF filesystem at {BPFFS}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// bpffs at /sys/fs/bpf: mounted by main before anything else (mount_bpffs_on_host).
fn ensure_bpffs() -> Result<()> {
    if is_bpffs(Path::new(BPFFS)) {
        return Ok(());
    }
    bail!(
        "--pin: {BPFFS} is not a BPF filesystem and mounting one there failed (it needs \
         CAP_SYS_ADMIN in the host's mount namespace); mount it first: mount -t bpf bpf {BPFFS}"
    )
}

/// Whether a BPF filesystem is mounted at /sys/fs/bpf (for doctor).
pub fn bpffs_mounted() -> bool {
    is_bpffs(Path::new(BPFFS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(parse_name("prod-1.a_b").is_ok());
        for bad in ["", "a/b", "..", ".", ".hidden", "a b", "a\nb", "é"] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
        assert!(parse_name(&"x".repeat(64)).is_ok());
        assert!(parse_name(&"x".repeat(65)).is_err());
    }
}
