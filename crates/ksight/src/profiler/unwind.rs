//! User stacks of processes without usable frame pointers: the copies of the top of their
//! stack (with ip, sp, the frame pointer; lr on arm64) that profile.bpf.c sends, unwound here from the `.eh_frame` /
//! `.debug_frame` CFI of the files they map, with framehop. Also the judge of frame
//! pointers: a frame-pointer stack is good when it is what the CFI unwinding of the same
//! sample gives.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use framehop::{Error, ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};
use ksight_bpf::abi::{ks_prof_copy, ks_prof_sizes};

use super::symbols::{FileId, Symbols};
use crate::common::elf;

use arch::{registers, Cache, NativeUnwinder};

type Data = Arc<[u8]>;

/// framehop's unwinder for the architecture ksight is built for, and the registers a copy
/// starts from.
#[cfg(target_arch = "x86_64")]
mod arch {
    use framehop::x86_64::UnwindRegsX86_64;
    pub use framehop::x86_64::{CacheX86_64 as Cache, UnwinderX86_64 as NativeUnwinder};
    use ksight_bpf::abi::ks_prof_copy;

    pub fn registers(rec: &ks_prof_copy) -> UnwindRegsX86_64 {
        UnwindRegsX86_64::new(rec.ip, rec.sp, rec.bp)
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    pub use framehop::aarch64::{CacheAarch64 as Cache, UnwinderAarch64 as NativeUnwinder};
    use framehop::aarch64::{PtrAuthMask, UnwindRegsAarch64};
    use ksight_bpf::abi::ks_prof_copy;

    /// Linux gives user space 48 bits of address (52 only to an mmap that asks above them);
    /// with pointer authentication, a signed return address carries its code above them.
    const USER_ADDRESS_MASK: u64 = (1 << 48) - 1;

    /// x30 (lr) starts the walk: in a leaf function that has not saved it, it is the only
    /// record of the caller.
    pub fn registers(rec: &ks_prof_copy) -> UnwindRegsAarch64 {
        UnwindRegsAarch64::new_with_ptr_auth_mask(
            PtrAuthMask(USER_ADDRESS_MASK),
            rec.lr,
            rec.sp,
            rec.bp,
        )
    }
}
/// How a stack unwound to its end ends (the other ends say why it stopped early).
pub const COMPLETE: &str = "complete";

/// What a file contributes to unwinding, read once per file.
#[derive(Clone)]
struct FileUnwindInfo {
    sections: ExplicitModuleSectionInfo<Data>,
}

pub struct Unwinding {
    files: HashMap<FileId, Option<FileUnwindInfo>>,
    processes: HashMap<u32, NativeUnwinder<Data>>,
    cache: Cache,
    /// Unwound stacks by how they ended: `complete` or why they stopped early.
    pub ends: BTreeMap<&'static str, u64>,
}

impl Unwinding {
    pub fn new() -> Self {
        Unwinding {
            files: HashMap::new(),
            processes: HashMap::new(),
            cache: Cache::new(),
            ends: BTreeMap::new(),
        }
    }

    /// Forgets what was built from a process's mappings (they were read again).
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// The user stack of a copy: the sampled ip, then return addresses (as the kernel's
    /// frame-pointer stacks), and whether the unwinding reached the stack's end (how it
    /// ended is counted in `ends`).
    pub fn unwind(&mut self, symbols: &Symbols, rec: &ks_prof_copy) -> (Vec<u64>, bool) {
        let pid = rec.key.pid;
        if !self.processes.contains_key(&pid) {
            let unwinder = self.build(symbols, pid);
            self.processes.insert(pid, unwinder);
        }
        let (ips, end) = match self.processes.get(&pid) {
            Some(u) if u.max_known_code_address() > 0 => walk(u, &mut self.cache, rec),
            _ => (vec![rec.ip], "no_mappings"),
        };
        *self.ends.entry(end).or_default() += 1;
        (ips, end == COMPLETE)
    }

    fn build(&mut self, symbols: &Symbols, pid: u32) -> NativeUnwinder<Data> {
        let mut unwinder = NativeUnwinder::new();
        for m in symbols.mappings(pid) {
            let info = self
                .files
                .entry(m.id)
                .or_insert_with(|| read_unwind_info(m.file));
            let Some(info) = info else { continue };
            // Where the file's stated address 0 is in the process.
            let Some(svma) = elf::executable_mapping_address(m.file, m.offset) else {
                continue;
            };
            let base_avma = m.start.wrapping_sub(svma);
            unwinder.add_module(Module::new(
                m.name.to_string(),
                m.start..m.end,
                base_avma,
                info.sections.clone(),
            ));
        }
        unwinder
    }
}

/// The frames of one copy, and how the walk ended.
fn walk(
    unwinder: &NativeUnwinder<Data>,
    cache: &mut Cache,
    rec: &ks_prof_copy,
) -> (Vec<u64>, &'static str) {
    let len = (rec.stack_len as usize).min(rec.stack.len());
    let stack = &rec.stack[..len];
    let mut beyond_copy = false;
    let mut read_stack = |addr: u64| {
        let word = addr
            .checked_sub(rec.sp)
            .and_then(|at| stack.get(at as usize..at as usize + 8))
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes);
        beyond_copy |= word.is_none();
        word.ok_or(())
    };
    let regs = registers(rec);
    let mut frames = unwinder.iter_frames(rec.ip, regs, cache, &mut read_stack);
    let mut ips = Vec::new();
    let end = loop {
        if ips.len() >= ks_prof_sizes::KS_PROF_MAX_DEPTH.0 as usize {
            break "max_depth";
        }
        match frames.next() {
            Ok(Some(frame)) => ips.push(address(frame)),
            Ok(None) => break COMPLETE,
            Err(Error::CouldNotReadStack(_)) => break "stack_copy_too_short",
            Err(Error::FramepointerUnwindingMovedBackwards) => break "moved_backwards",
            Err(Error::DidNotAdvance) => break "did_not_advance",
            Err(Error::IntegerOverflow) => break "bad_address",
            Err(Error::ReturnAddressIsNull) => break "null_return_address",
        }
    };
    (ips, end)
}

fn address(frame: FrameAddress) -> u64 {
    frame.address()
}

/// The unwind sections of a file, or None when it has none (or is not ELF64).
fn read_unwind_info(file: &std::fs::File) -> Option<FileUnwindInfo> {
    let names = [
        ".text",
        ".eh_frame",
        ".eh_frame_hdr",
        ".debug_frame",
        ".got",
    ];
    let mut found = elf::named_sections(file, &names)?;
    let mut take = |name: &str| {
        let at = found.iter().position(|(n, _)| n == name)?;
        let (_, s) = found.swap_remove(at);
        let range = s.addr..s.addr + s.data.len() as u64;
        Some((range, Data::from(s.data)))
    };
    let text = take(".text");
    let eh_frame = take(".eh_frame");
    let eh_frame_hdr = take(".eh_frame_hdr");
    let debug_frame = take(".debug_frame");
    let got = take(".got");
    if eh_frame.is_none() && debug_frame.is_none() {
        return None;
    }
    let sections = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: text.as_ref().map(|t| t.0.clone()),
        text: text.map(|t| t.1),
        got_svma: got.map(|g| g.0),
        eh_frame_svma: eh_frame.as_ref().map(|e| e.0.clone()),
        eh_frame: eh_frame.map(|e| e.1),
        eh_frame_hdr_svma: eh_frame_hdr.as_ref().map(|e| e.0.clone()),
        eh_frame_hdr: eh_frame_hdr.map(|e| e.1),
        debug_frame: debug_frame.map(|d| d.1),
        ..Default::default()
    };
    Some(FileUnwindInfo { sections })
}
