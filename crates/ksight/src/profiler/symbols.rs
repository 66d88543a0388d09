//! Symbols on the host: user frames from the ELF files a process maps (ELF symbols, DWARF
//! with inlined functions), JIT frames from its `/tmp/perf-PID.map`, kernel frames from
//! kallsyms (blazesym does the reading).
//!
//! A process is remembered the first time it is seen (`remember`, called while sampling):
//! its executable mappings, each file opened through `/proc/PID/map_files` (so a binary that
//! lives only in another mount namespace, or was deleted, stays readable), and its perf map.
//! The open files keep everything resolvable after the process has exited.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::MaybeDefault;

use super::isolated;
use crate::common::files;

/// A file by device and inode: one open file per binary, however many processes map it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    dev: u64,
    inode: u64,
}

struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    file: FileId,
    /// The file's name, for frames it has no symbol for: `[libfoo.so]`.
    module: String,
}

struct JitSymbol {
    start: u64,
    end: u64,
    name: String,
}

/// A file-backed executable mapping of a process, with its open file (unwind.rs).
pub struct MappedFile<'a> {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub id: FileId,
    pub file: &'a File,
    pub name: &'a str,
}

#[derive(Default)]
struct Process {
    mappings: Vec<Mapping>,
    /// Read at exec, before the dynamic loader mapped the libraries: read again when seen.
    at_exec: bool,
    jit: Vec<JitSymbol>,
    /// Size of the perf map when read: it is read again when it grew.
    perf_map_len: u64,
}

/// Where a user address points.
enum Location {
    File { file: FileId, offset: u64 },
    Jit(String),
    Unknown(Option<String>),
}

pub struct Symbols {
    symbolizer: Symbolizer,
    files: HashMap<FileId, File>,
    processes: HashMap<u32, Process>,
    /// (file, offset) → frames, outermost first (a function, then what is inlined into it).
    user: HashMap<(FileId, u64), Vec<String>>,
    kernel: HashMap<u64, String>,
    /// The name of each open file (its last path component), for `failed`.
    names: HashMap<FileId, String>,
    /// Files that gave no symbols because their symbolizer failed: (name, why).
    failed: Vec<(String, String)>,
}

impl Symbols {
    pub fn new() -> Self {
        let symbolizer = Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Symbols {
            symbolizer,
            files: HashMap::new(),
            processes: HashMap::new(),
            user: HashMap::new(),
            kernel: HashMap::new(),
            names: HashMap::new(),
            failed: Vec::new(),
        }
    }

    /// Whether `pid`'s mappings were read since it started running its program.
    pub fn knows(&self, pid: u32) -> bool {
        self.processes.get(&pid).is_some_and(|p| !p.at_exec)
    }

    /// Reads the mappings of a process that just exec'd (before it may exit); they are read
    /// again when it is seen in a sample (the libraries are mapped after exec).
    pub fn remember_at_exec(&mut self, pid: u32) {
        if self.remember(pid) {
            if let Some(p) = self.processes.get_mut(&pid) {
                p.at_exec = true;
            }
        }
    }

    /// The executable file mappings of `pid` as last read.
    pub fn mappings(&self, pid: u32) -> Vec<MappedFile<'_>> {
        let Some(p) = self.processes.get(&pid) else {
            return Vec::new();
        };
        p.mappings
            .iter()
            .filter_map(|m| {
                Some(MappedFile {
                    start: m.start,
                    end: m.end,
                    offset: m.offset,
                    id: m.file,
                    file: self.files.get(&m.file)?,
                    name: &m.module,
                })
            })
            .collect()
    }

    /// Reads (again) the mappings and perf map of `pid`; false (and nothing changed) if it
    /// is gone.
    pub fn remember(&mut self, pid: u32) -> bool {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return false;
        };
        let mut mappings = Vec::new();
        for line in maps.lines() {
            let Some(m) = parse_maps_line(line) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = self.files.entry(m.file) {
                let path = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
                match File::open(&path) {
                    Ok(f) => {
                        slot.insert(f);
                        self.names.insert(m.file, m.module.clone());
                    }
                    Err(_) => continue,
                }
            }
            mappings.push(m);
        }
        let process = self.processes.entry(pid).or_default();
        process.mappings = mappings;
        process.at_exec = false;
        read_perf_map(pid, process);
        true
    }

    /// Reads the perf maps of known live processes again when they grew (a JIT adds lines).
    pub fn refresh_perf_maps(&mut self) {
        for (pid, process) in &mut self.processes {
            read_perf_map(*pid, process);
        }
    }

    fn locate(&self, pid: u32, addr: u64) -> Location {
        let Some(p) = self.processes.get(&pid) else {
            return Location::Unknown(None);
        };
        if let Some(m) = p.mappings.iter().find(|m| (m.start..m.end).contains(&addr)) {
            return Location::File {
                file: m.file,
                offset: addr - m.start + m.offset,
            };
        }
        match p.jit.iter().find(|j| (j.start..j.end).contains(&addr)) {
            Some(j) => Location::Jit(j.name.clone()),
            None => Location::Unknown(None),
        }
    }

    fn module_of(&self, pid: u32, file: FileId) -> Option<String> {
        let p = self.processes.get(&pid)?;
        p.mappings
            .iter()
            .find(|m| m.file == file)
            .map(|m| m.module.clone())
    }

    /// Symbolizes every address of these stacks in batches (one call per file), so that
    /// `user_frames` and `kernel_frame` only look up.
    pub fn prepare<'a>(
        &mut self,
        user: impl Iterator<Item = (u32, &'a [u64])>,
        kernel: impl Iterator<Item = &'a [u64]>,
    ) {
        let mut wanted: HashMap<FileId, BTreeSet<u64>> = HashMap::new();
        for (pid, ips) in user {
            for addr in call_sites(ips) {
                if let Location::File { file, offset } = self.locate(pid, addr) {
                    if !self.user.contains_key(&(file, offset)) {
                        wanted.entry(file).or_default().insert(offset);
                    }
                }
            }
        }
        for (file, offsets) in wanted {
            self.symbolize_file(file, offsets.into_iter().collect());
        }
        let addrs: BTreeSet<u64> = kernel
            .flat_map(call_sites)
            .filter(|a| !self.kernel.contains_key(a))
            .collect();
        self.symbolize_kernel(addrs.into_iter().collect());
    }

    /// Symbolizes `offsets` of one file in a child process (isolated.rs): a file that
    /// crashes or exhausts the symbolizer loses its own symbols and is named in `failed`.
    fn symbolize_file(&mut self, file: FileId, offsets: Vec<u64>) {
        let Some(f) = self.files.get(&file) else {
            return;
        };
        // The open file through /proc/self/fd: the same inode whatever namespace it is in.
        let path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        let symbolizer = &self.symbolizer;
        let answer = isolated::run(|| {
            let source = Source::Elf(Elf::new(path));
            let Ok(syms) = symbolizer.symbolize(&source, Input::FileOffset(&offsets)) else {
                return Vec::new();
            };
            syms.into_iter().map(frames_of).collect()
        });
        match answer {
            Ok(frames) => {
                for (offset, names) in offsets.iter().zip(frames) {
                    if !names.is_empty() {
                        self.user.insert((file, *offset), names);
                    }
                }
            }
            Err(why) => {
                let name = self.names.get(&file).cloned().unwrap_or_default();
                self.failed.push((name, why));
            }
        }
    }

    /// The files whose symbolization failed, by name, with the reason.
    pub fn failed(&self) -> &[(String, String)] {
        &self.failed
    }

    fn symbolize_kernel(&mut self, addrs: Vec<u64>) {
        if addrs.is_empty() {
            return;
        }
        // kallsyms: the running kernel's own symbols, no search for a vmlinux.
        let source = Source::Kernel(Kernel {
            vmlinux: MaybeDefault::None,
            debug_syms: false,
            ..Default::default()
        });
        let Ok(syms) = self.symbolizer.symbolize(&source, Input::AbsAddr(&addrs)) else {
            return;
        };
        for (addr, sym) in addrs.iter().zip(syms) {
            if let Symbolized::Sym(s) = sym {
                self.kernel.insert(*addr, s.name.into_owned());
            }
        }
    }

    /// The frames of a user stack (innermost first, as the kernel gives it), outermost first.
    pub fn user_frames(&self, pid: u32, ips: &[u64]) -> Vec<String> {
        let mut frames = Vec::new();
        for addr in call_sites(ips).collect::<Vec<_>>().into_iter().rev() {
            match self.locate(pid, addr) {
                Location::File { file, offset } => match self.user.get(&(file, offset)) {
                    Some(names) => frames.extend(names.iter().cloned()),
                    None => frames.push(unknown(self.module_of(pid, file))),
                },
                Location::Jit(name) => frames.push(name),
                Location::Unknown(module) => frames.push(unknown(module)),
            }
        }
        frames
    }

    /// The frames of a kernel stack, outermost first.
    pub fn kernel_frames(&self, ips: &[u64]) -> Vec<String> {
        let sites: Vec<u64> = call_sites(ips).collect();
        sites
            .into_iter()
            .rev()
            .map(|a| {
                self.kernel
                    .get(&a)
                    .cloned()
                    .unwrap_or_else(|| "[unknown]".to_string())
            })
            .collect()
    }
}

/// A symbol's frames, outermost first (a function, then what is inlined into it); a name is
/// the binary owner's text, cut to a bounded length.
fn frames_of(sym: Symbolized<'_>) -> Vec<String> {
    match sym {
        Symbolized::Sym(s) => std::iter::once(files::cut_name(&s.name))
            .chain(s.inlined.iter().map(|i| files::cut_name(&i.name)))
            .collect(),
        _ => Vec::new(),
    }
}

fn unknown(module: Option<String>) -> String {
    match module {
        Some(m) => format!("[{m}]"),
        None => "[unknown]".to_string(),
    }
}

/// The addresses to symbolize: the sampled instruction, then each return address minus one
/// (the call instruction itself: a return address may already be the next function's).
fn call_sites(ips: &[u64]) -> impl Iterator<Item = u64> + '_ {
    ips.iter()
        .enumerate()
        .map(|(i, &ip)| if i == 0 { ip } else { ip.saturating_sub(1) })
}

/// An executable, file-backed line of /proc/PID/maps.
fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut fields = line.split_whitespace();
    let (range, perms, offset, dev, inode) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let path = fields.collect::<Vec<_>>().join(" ");
    if !perms.contains('x') || !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let dev = (u64::from_str_radix(major, 16).ok()? << 20) | u64::from_str_radix(minor, 16).ok()?;
    let module = path.trim_end_matches(" (deleted)");
    let module = module.rsplit('/').next().unwrap_or(module).to_string();
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        file: FileId {
            dev,
            inode: inode.parse().ok()?,
        },
        module,
    })
}

/// The most JIT symbols kept per process: about 100 MB at worst with the line bound.
const MAX_JIT_SYMBOLS: usize = 1 << 20;

/// The process's perf map, in its own /tmp (its mount namespace, its own pid number there).
/// The file is the process owner's: opened as perf does (no symlink, a regular file owned by
/// the process's user or root) and read within the bounds of `files::bounded_lines`, so a
/// sparse 3 GB file, a link to a root-only file or a 20 MB name cost a bounded read.
fn read_perf_map(pid: u32, process: &mut Process) {
    let Some(status) = read_status(pid) else {
        return;
    };
    let ns_pid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last().map(str::to_string))
        .unwrap_or_else(|| pid.to_string());
    let Some(owners) = process_owners(&status) else {
        return;
    };
    let path = format!("/proc/{pid}/root/tmp/perf-{ns_pid}.map");
    let Ok(file) = files::open_user_file(Path::new(&path), owners) else {
        return;
    };
    let Ok(meta) = file.metadata() else {
        return;
    };
    if meta.len() == process.perf_map_len {
        return;
    }
    let mut jit = Vec::new();
    let read = files::bounded_lines(file, |line| {
        if jit.len() < MAX_JIT_SYMBOLS {
            jit.extend(parse_perf_map_line(line));
        }
    });
    if read.is_ok() {
        process.perf_map_len = meta.len();
        process.jit = jit;
    }
}

/// /proc/PID/status: a few hundred bytes the kernel writes.
fn read_status(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// The real and effective user ids of a process (its `Uid:` line).
fn process_owners(status: &str) -> Option<files::Owners> {
    let mut ids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .map(|id| id.parse::<u32>().ok());
    Some(files::Owners {
        uids: [ids.next()??, ids.next()??],
    })
}

/// `START SIZE name` (hex numbers, with or without 0x).
fn parse_perf_map_line(line: &str) -> Option<JitSymbol> {
    let mut parts = line.splitn(3, ' ');
    let hex = |t: &str| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok();
    let start = hex(parts.next()?)?;
    let size = hex(parts.next()?)?;
    let name = files::cut_name(parts.next()?.trim());
    Some(JitSymbol {
        start,
        end: start.checked_add(size)?,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let m = parse_maps_line(
            "7f1c2a000000-7f1c2a1a0000 r-xp 00028000 fd:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .expect("an executable mapping");
        assert_eq!(
            (m.start, m.end, m.offset),
            (0x7f1c2a000000, 0x7f1c2a1a0000, 0x28000)
        );
        assert_eq!(
            m.file,
            FileId {
                dev: (0xfd << 20) | 1,
                inode: 1234
            }
        );
        assert_eq!(m.module, "libc.so.6");
        let deleted = parse_maps_line("1000-2000 r-xp 0 08:02 77 /tmp/a b (deleted)").expect("x");
        assert_eq!(deleted.module, "a b");
        assert!(parse_maps_line("1000-2000 rw-p 0 08:02 77 /tmp/a").is_none());
        assert!(parse_maps_line("1000-2000 r-xp 0 00:00 0 [vdso]").is_none());
    }

    #[test]
    fn perf_map_lines() {
        let j = parse_perf_map_line("7f00001000 40 jitted::hot loop").expect("a line");
        assert_eq!(
            (j.start, j.end, j.name.as_str()),
            (0x7f00001000, 0x7f00001040, "jitted::hot loop")
        );
        assert!(parse_perf_map_line("0x10 0x8 f").is_some());
        assert!(parse_perf_map_line("zz 8 f").is_none());
        assert!(parse_perf_map_line("10 8").is_none());
    }

    #[test]
    fn call_sites_step_back_into_the_call() {
        assert_eq!(
            call_sites(&[100, 200, 300]).collect::<Vec<_>>(),
            vec![100, 199, 299]
        );
    }
}
