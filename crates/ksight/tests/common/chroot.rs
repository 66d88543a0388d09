//! Running ksight chrooted into a directory the test made: a private mount namespace (no
//! mount reaches the host), the chosen host directories bound in, the binary's own directory
//! bound at the same path, and a fresh sysfs (with no tracefs on it), /proc and /dev.

use std::ffi::{CStr, CString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What a dynamically linked ksight needs from the host: /usr with its /lib and /bin links.
pub const HOST_LIBRARIES: &[&str] = &["usr", "lib", "lib64", "lib32", "bin", "sbin", "etc"];

/// Runs `binary args` chrooted into `root` (a plain directory: not a mount point), with the
/// host's top-level directories `host_dirs` (links copied as links) bound in.
pub fn run(root: &Path, binary: &str, host_dirs: &[&str], args: &[&str]) -> Output {
    let binary = std::fs::canonicalize(binary).expect("binary path");
    let mut binds = vec![
        binary.parent().expect("binary dir").to_path_buf(),
        "/dev".into(),
    ];
    for top in host_dirs {
        let host = Path::new("/").join(top);
        match std::fs::read_link(&host) {
            Ok(target) => std::os::unix::fs::symlink(target, root.join(top)).expect("link"),
            Err(_) if host.is_dir() => binds.push(host),
            Err(_) => {}
        }
    }
    spawn(root, &binds, &binary, args, None)
}

/// Runs `program` (a path inside `root`, e.g. an image's entrypoint) chrooted into `root`
/// with /dev bound in, fresh sysfs and /proc, and only the capabilities `keep` in its
/// bounding set (root's exec then gets only those, as under `--cap-drop=ALL --cap-add=…`).
pub fn run_inside(root: &Path, program: &str, args: &[&str], keep: &[u32]) -> Output {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .expect("cap_last_cap")
        .trim()
        .parse()
        .expect("a number");
    let drop: Vec<u32> = (0..=last).filter(|cap| !keep.contains(cap)).collect();
    spawn(root, &["/dev".into()], Path::new(program), args, Some(drop))
}

fn spawn(
    root: &Path,
    binds: &[PathBuf],
    program: &Path,
    args: &[&str],
    drop_caps: Option<Vec<u32>>,
) -> Output {
    let mounts = mounts(root, binds);
    let root_c = c(root);
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: between fork and exec the child only makes syscalls on memory prepared before
    // the fork (no allocation, no locks).
    unsafe {
        command.pre_exec(move || {
            enter(&mounts, &root_c)?;
            drop_capabilities(drop_caps.as_deref().unwrap_or_default())
        });
    }
    command.output().expect("run in a chroot")
}

/// In the forked child, after chroot: removes `caps` from the bounding set.
fn drop_capabilities(caps: &[u32]) -> std::io::Result<()> {
    for &cap in caps {
        // SAFETY: a plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

type Mount = (CString, CString, Option<&'static CStr>);

/// Bind mounts of `binds` at the same paths under `root`, then sysfs and proc.
fn mounts(root: &Path, binds: &[PathBuf]) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for host in binds {
        let inside = root.join(host.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(&inside).expect("mount point");
        mounts.push((c(host), c(&inside), None));
    }
    for (fs, dir) in [(c"sysfs", "sys"), (c"proc", "proc")] {
        std::fs::create_dir_all(root.join(dir)).expect("mount point");
        mounts.push((c(Path::new(dir)), c(&root.join(dir)), Some(fs)));
    }
    mounts
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("path")
}

/// In the forked child: a private mount namespace, the mounts, chroot.
fn enter(mounts: &[Mount], root: &CStr) -> std::io::Result<()> {
    let fail = || Err(std::io::Error::last_os_error());
    let none = std::ptr::null();
    // SAFETY: plain syscalls with valid NUL-terminated strings made before the fork.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return fail();
        }
        let private = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(none, c"/".as_ptr(), none, private, none.cast()) != 0 {
            return fail();
        }
        for (source, target, fs) in mounts {
            let (kind, flags) = match fs {
                Some(fs) => (fs.as_ptr(), 0),
                None => (none, libc::MS_BIND | libc::MS_REC),
            };
            if libc::mount(source.as_ptr(), target.as_ptr(), kind, flags, none.cast()) != 0 {
                return fail();
            }
        }
        if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
            return fail();
        }
    }
    Ok(())
}
