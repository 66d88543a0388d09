//! Files other users may control, on both sides: the output files ksight creates (`profile
//! -o`, `capture -w` and its rotations) and the text files it reads from users (perf maps).
//!
//! ksight runs as root and often writes under /tmp, where any user may have put a symlink,
//! a hard link or a FIFO at the name first. An output file is therefore never opened through
//! what is at its name unless that entry is ours:
//! - nothing there: created with O_CREAT|O_EXCL (which follows no symlink), mode 0600;
//! - a regular file, or anything owned by another user (a symlink, a FIFO, a hard link to a
//!   root file): a new file (mode 0600) is created under a random name in the same directory
//!   and renamed over the name, so the entry is replaced and what it pointed to is untouched;
//! - a device, FIFO or symlink owned by ksight's own user (`/dev/null`, `/dev/stdout`, a FIFO
//!   root made for Wireshark): opened for writing, as asked. A user cannot create an entry
//!   owned by root, and in a sticky directory (/tmp) cannot remove one.
//!
//! The mode is 0600 whatever the umask allows: profiles name every process's functions and
//! captures hold other users' packets.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The mode of every output file ksight creates.
pub const OUTPUT_MODE: u32 = 0o600;

/// Opens `path` for writing as described in the module comment.
pub fn create_output(path: &Path) -> io::Result<File> {
    // SAFETY: geteuid cannot fail and takes no argument.
    let euid = unsafe { libc::geteuid() };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => match create_new(path) {
            // Something appeared at the name since: replace it as below.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => replace(path),
            other => other,
        },
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => Err(io::Error::new(ErrorKind::IsADirectory, "is a directory")),
        Ok(m) if m.uid() == euid && !m.is_file() => OpenOptions::new().write(true).open(path),
        Ok(_) => replace(path),
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(OUTPUT_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A new file under a name no one can have guessed, renamed over `path`.
fn replace(path: &Path) -> io::Result<File> {
    for attempt in 0..16 {
        let temp = temp_name(path, attempt)?;
        match create_new(&temp) {
            Ok(file) => {
                return match std::fs::rename(&temp, path) {
                    Ok(()) => Ok(file),
                    Err(e) => {
                        let _ = std::fs::remove_file(&temp);
                        Err(e)
                    }
                };
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        ErrorKind::AlreadyExists,
        "no free temporary name in its directory",
    ))
}

/// `DIR/.NAME.ksight-PID-NANOS-ATTEMPT`: hidden, in the same directory (a rename does not
/// cross file systems), different at every attempt.
fn temp_name(path: &Path, attempt: u32) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "not a file name"))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(
        ".ksight-{}-{nanos:x}-{attempt}",
        std::process::id()
    ));
    Ok(path.with_file_name(temp))
}

/// How much of a user's text file is read at most (a perf map): the rest is ignored.
pub const MAX_USER_TEXT: u64 = 64 << 20;
/// The longest name kept from a user's file (a perf map's or a binary's symbol): longer
/// ones are cut to this many bytes and end with `CUT_MARKER`.
pub const MAX_NAME: usize = 4096;
/// The longest line kept from a user's text file: a name and room for what precedes it.
pub const MAX_LINE: usize = MAX_NAME + 64;
/// What ends a name or line that was cut.
pub const CUT_MARKER: &str = "…[cut]";

/// Who may own a file ksight reads on a process's behalf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owners {
    pub uids: [u32; 2],
}

/// Opens a file a user controls for reading, as perf opens a perf map: without following a
/// symlink at its name, without blocking on a FIFO, and only if it is a regular file owned
/// by root or one of `owners`.
pub fn open_user_file(path: &Path, owners: Owners) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(ErrorKind::InvalidData, "not a regular file"));
    }
    if meta.uid() != 0 && !owners.uids.contains(&meta.uid()) {
        return Err(io::Error::new(
            ErrorKind::PermissionDenied,
            "owned by neither the process's user nor root",
        ));
    }
    Ok(file)
}

/// The lines of the first `MAX_USER_TEXT` bytes of `file`, each cut to `MAX_LINE` bytes
/// (`CUT_MARKER` then ends it); memory stays within one line whatever the file holds.
pub fn bounded_lines(file: File, mut each: impl FnMut(&str)) -> io::Result<()> {
    let mut reader = io::BufReader::new(file.take(MAX_USER_TEXT));
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let (read, whole) = read_line_capped(&mut reader, &mut line)?;
        if read == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        if whole {
            each(&text);
        } else {
            let end = floor_char_boundary(&text, MAX_LINE);
            each(&format!("{}{CUT_MARKER}", &text[..end]));
        }
    }
}

/// Reads one line into `line`, keeping at most `MAX_LINE` bytes of it and skipping the rest;
/// returns the bytes consumed and whether the line was kept whole.
fn read_line_capped(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<(usize, bool)> {
    let mut consumed = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((consumed, line.len() <= MAX_LINE));
        }
        let (chunk, ends) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let room = (MAX_LINE + 1).saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let newline = ends > chunk.len();
        reader.consume(ends);
        consumed += ends;
        if newline {
            return Ok((consumed, line.len() <= MAX_LINE));
        }
    }
}

/// `name` cut to `MAX_NAME` bytes (on a character boundary) with `CUT_MARKER` after it.
pub fn cut_name(name: &str) -> String {
    if name.len() <= MAX_NAME {
        return name.to_string();
    }
    let end = floor_char_boundary(name, MAX_NAME);
    format!("{}{CUT_MARKER}", &name[..end])
}

/// The largest character boundary of `text` at or before `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut end = at.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ksight-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn an_output_replaces_a_symlink_and_leaves_its_target_alone() {
        let dir = scratch("symlink");
        let target = dir.join("target");
        std::fs::write(&target, "precious").expect("target");
        let link = dir.join("out");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        // Owned by another user, as a user's symlink in /tmp would be.
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).expect("lchown");
        let mut out = create_output(&link).expect("created");
        out.write_all(b"profile").expect("write");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "precious");
        assert_eq!(std::fs::read_to_string(&link).expect("read"), "profile");
        let meta = std::fs::symlink_metadata(&link).expect("stat");
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, OUTPUT_MODE);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_output_replaces_a_hard_link_and_a_new_one_is_0600() {
        let dir = scratch("hardlink");
        let target = dir.join("target");
        std::fs::write(&target, "precious").expect("target");
        let link = dir.join("out");
        std::fs::hard_link(&target, &link).expect("hard link");
        create_output(&link)
            .expect("created")
            .write_all(b"x")
            .expect("write");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "precious");
        let fresh = dir.join("fresh");
        create_output(&fresh).expect("created");
        let mode = std::fs::metadata(&fresh)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, OUTPUT_MODE);
        assert!(create_output(&dir).is_err(), "a directory is refused");
        assert!(
            create_output(Path::new("/dev/null")).is_ok(),
            "root's device"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_lines_are_cut_with_the_marker() {
        let dir = scratch("lines");
        let path = dir.join("map");
        let long = "x".repeat(3 * MAX_LINE);
        std::fs::write(&path, format!("1 2 a\n{long}\n3 4 b")).expect("write");
        let mut lines = Vec::new();
        let file = File::open(&path).expect("open");
        bounded_lines(file, |l| lines.push(l.to_string())).expect("read");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "1 2 a");
        assert_eq!(lines[1], format!("{}{CUT_MARKER}", "x".repeat(MAX_LINE)));
        assert_eq!(lines[2], "3 4 b");
        assert_eq!(
            cut_name("é".repeat(MAX_NAME).as_str()).len(),
            MAX_NAME + CUT_MARKER.len()
        );
        let cut = cut_name(&lines[1]);
        assert_eq!(cut, format!("{}{CUT_MARKER}", "x".repeat(MAX_NAME)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
