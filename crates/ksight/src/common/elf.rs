//! Where a function starts in an ELF file, as uprobes want it: the file offset of a symbol
//! the file defines. libbpf's own lookup also takes a symbol the file only imports (an
//! undefined `readline` in a program linked to libreadline), and would probe offset 0.
//!
//! Why not blazesym's inspector (here for `profile`), which also skips imported symbols: its
//! lookup sorts every symbol of a file into a name index first, and readline discovery looks
//! at every executable file mapped on the host; tried, tests/readline.rs went from 23 s to
//! 69 s. This reads one table linearly and stops at the name; a test checks that the two
//! give the same offsets.
//!
//! 64-bit little-endian ELF only (the machines ksight builds for); only the headers, the
//! symbol tables and their string tables are read.

use std::fs::File;
use std::os::unix::fs::FileExt;

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const STT_FUNC: u8 = 2;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
/// A symbol table larger than this is not read (no real one comes near).
const MAX_TABLE: u64 = 256 << 20;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn read_at(file: &File, offset: u64, len: u64) -> Option<Vec<u8>> {
    if len > MAX_TABLE {
        return None;
    }
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

struct Section {
    name: u32,
    kind: u32,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
    entsize: u64,
}

/// The file offset of function `name` defined in the ELF file, or None (not ELF64 LE, not
/// defined there, or unreadable).
pub fn function_offset(file: &File, name: &str) -> Option<u64> {
    let header = read_at(file, 0, 64)?;
    if header.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let sections = sections(file, &header)?;
    let address = [SHT_SYMTAB, SHT_DYNSYM].iter().find_map(|&kind| {
        sections
            .iter()
            .filter(|s| s.kind == kind)
            .find_map(|table| defined_function(file, table, &sections, name))
    })?;
    address_to_offset(file, &header, address)
}

fn sections(file: &File, header: &[u8]) -> Option<Vec<Section>> {
    let (table, size) = header_table(file, header, [0x28, 0x3a, 0x3c], 64)?;
    table
        .chunks_exact(size)
        .map(|s| {
            Some(Section {
                name: u32_at(s, 0)?,
                kind: u32_at(s, 4)?,
                addr: u64_at(s, 0x10)?,
                offset: u64_at(s, 0x18)?,
                size: u64_at(s, 0x20)?,
                link: u32_at(s, 0x28)?,
                entsize: u64_at(s, 0x38)?,
            })
        })
        .collect()
}

/// A section of an ELF file: its address as the file states it, and its bytes.
pub struct NamedSection {
    pub addr: u64,
    pub data: Vec<u8>,
}

/// The sections of an ELF file named in `names` (e.g. `.eh_frame`), those it has; None when
/// it is not ELF64 LE or unreadable.
pub fn named_sections(file: &File, names: &[&str]) -> Option<Vec<(String, NamedSection)>> {
    let header = read_at(file, 0, 64)?;
    if header.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let sections = sections(file, &header)?;
    let strings = sections.get(u16_at(&header, 0x3e)? as usize)?;
    let strings = read_at(file, strings.offset, strings.size)?;
    const SHT_NOBITS: u32 = 8;
    let found = sections
        .iter()
        .filter(|s| s.kind != SHT_NOBITS)
        .filter_map(|s| {
            let name = strings.get(s.name as usize..)?.split(|&b| b == 0).next()?;
            let name = std::str::from_utf8(name).ok()?;
            names.contains(&name).then(|| {
                let data = read_at(file, s.offset, s.size)?;
                Some((name.to_string(), NamedSection { addr: s.addr, data }))
            })?
        })
        .collect();
    Some(found)
}

/// The address an ELF file states for the start of an executable mapping of it at file
/// offset `offset` (page-aligned): through the executable PT_LOAD segment the mapping holds,
/// whose own offset may be further into the page (lld lays segments out so).
pub fn executable_mapping_address(file: &File, offset: u64) -> Option<u64> {
    let page = super::kernel::page_size();
    let header = read_at(file, 0, 64)?;
    if header.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (table, size) = header_table(file, &header, [0x20, 0x36, 0x38], 56)?;
    table.chunks_exact(size).find_map(|ph| {
        let (kind, flags) = (u32_at(ph, 0)?, u32_at(ph, 4)?);
        let (file_offset, vaddr, filesz) = (u64_at(ph, 8)?, u64_at(ph, 0x10)?, u64_at(ph, 0x20)?);
        let pages = file_offset & !(page - 1)..file_offset.saturating_add(filesz);
        let holds = kind == PT_LOAD && flags & PF_X != 0 && pages.contains(&offset);
        holds.then(|| vaddr.wrapping_add(offset).wrapping_sub(file_offset))
    })
}

/// One of the ELF header's tables (section headers, program headers): its bytes and entry
/// size, from the header fields at `[offset, entry size, count]`; None when its entries are
/// shorter than `min_entry` bytes (not the 64-bit layout read here).
fn header_table(
    file: &File,
    header: &[u8],
    [offset_at, size_at, count_at]: [usize; 3],
    min_entry: u64,
) -> Option<(Vec<u8>, usize)> {
    let offset = u64_at(header, offset_at)?;
    let size = u16_at(header, size_at)? as u64;
    let count = u16_at(header, count_at)? as u64;
    if size < min_entry {
        return None;
    }
    Some((read_at(file, offset, size * count)?, size as usize))
}

/// The address of `name` in symbol table `table` if it is a function defined in this file.
fn defined_function(file: &File, table: &Section, all: &[Section], name: &str) -> Option<u64> {
    if table.entsize < 24 {
        return None;
    }
    let strings = all.get(table.link as usize)?;
    let symbols = read_at(file, table.offset, table.size)?;
    let names = read_at(file, strings.offset, strings.size)?;
    symbols
        .chunks_exact(table.entsize as usize)
        .find_map(|sym| {
            let name_at = u32_at(sym, 0)? as usize;
            let info = *sym.get(4)?;
            let section = u16_at(sym, 6)?;
            let value = u64_at(sym, 8)?;
            let defined = section != 0 && value != 0 && info & 0xf == STT_FUNC;
            let sym_name = names.get(name_at..)?.split(|&b| b == 0).next()?;
            (defined && sym_name == name.as_bytes()).then_some(value)
        })
}

/// The file offset of a virtual address, through the executable PT_LOAD segment holding it.
fn address_to_offset(file: &File, header: &[u8], address: u64) -> Option<u64> {
    let (table, size) = header_table(file, header, [0x20, 0x36, 0x38], 56)?;
    table.chunks_exact(size).find_map(|ph| {
        let (kind, flags) = (u32_at(ph, 0)?, u32_at(ph, 4)?);
        let (file_offset, vaddr, filesz) = (u64_at(ph, 8)?, u64_at(ph, 0x10)?, u64_at(ph, 0x20)?);
        let inside = (vaddr..vaddr.saturating_add(filesz)).contains(&address);
        (kind == PT_LOAD && flags & PF_X != 0 && inside).then(|| address - vaddr + file_offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_defined_function_and_not_an_imported_one() {
        let exe = File::open("/proc/self/exe").expect("own binary");
        // the test binary defines main, and only imports malloc from libc
        let main = function_offset(&exe, "main").expect("main is defined");
        assert!(main > 0);
        assert_eq!(function_offset(&exe, "malloc"), None);
        assert_eq!(function_offset(&exe, "ksight_no_such_function"), None);
    }

    /// The test binary's own executable mapping, found through /proc/self/maps, is where the
    /// ELF file says its text is: `main`'s address through the mapping is main's own.
    #[test]
    fn executable_mappings_are_placed_as_the_file_states() {
        let exe = File::open("/proc/self/exe").expect("own binary");
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let exe_path = std::fs::read_link("/proc/self/exe").expect("exe link");
        let line = maps
            .lines()
            .find(|l| l.contains(" r-xp ") && l.ends_with(exe_path.to_str().expect("utf-8")))
            .expect("an executable mapping of the test binary");
        let mut fields = line.split_whitespace();
        let start = fields
            .next()
            .and_then(|r| r.split_once('-'))
            .expect("range")
            .0;
        let start = u64::from_str_radix(start, 16).expect("hex");
        let offset = u64::from_str_radix(fields.nth(1).expect("offset"), 16).expect("hex");
        let svma = executable_mapping_address(&exe, offset).expect("a PF_X segment holds it");
        let bias = start.wrapping_sub(svma);
        let main_offset = function_offset(&exe, "main").expect("main");
        let main_svma = executable_mapping_address(&exe, main_offset & !4095).expect("main's page")
            + (main_offset & 4095);
        assert_eq!(main_svma.wrapping_add(bias), main as *const () as u64);
        let sections = named_sections(&exe, &[".eh_frame", ".text"]).expect("sections");
        assert_eq!(sections.len(), 2);
    }

    extern "C" {
        fn main(argc: i32, argv: *const *const u8) -> i32;
    }

    #[test]
    fn not_elf() {
        let file = File::open("/proc/self/status").expect("a text file");
        assert_eq!(function_offset(&file, "main"), None);
        let file = File::open("Cargo.toml").expect("a text file");
        assert_eq!(function_offset(&file, "main"), None);
    }

    /// blazesym's inspector, the library `profile` symbolizes with, gives the same offsets
    /// for the same names (defined ones; both skip imports): this reader stays only for its
    /// speed (see the module's comment), not for different answers.
    #[test]
    fn offsets_agree_with_blazesyms_inspector() {
        use blazesym::inspect::source::{Elf, Source};
        use blazesym::inspect::Inspector;
        let maps = std::fs::read_to_string("/proc/self/maps").expect("own maps");
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libc.so"))
            .expect("the test binary maps libc");
        let exe = std::fs::read_link("/proc/self/exe").expect("own binary");
        let exe = exe.to_str().expect("utf-8");
        let inspector = Inspector::new();
        let cases: [(&str, &[&str]); 2] = [
            (libc, &["malloc", "free", "getppid", "fork", "execve"]),
            (exe, &["main", "malloc"]),
        ];
        for (path, names) in cases {
            let file = File::open(path).expect("readable");
            let mut src = Elf::new(path);
            src.debug_syms = false;
            let src = Source::Elf(src);
            for &name in names {
                let theirs = inspector
                    .lookup(&src, &[name])
                    .expect("blazesym reads the file")
                    .into_iter()
                    .flatten()
                    .find_map(|s| s.file_offset);
                assert_eq!(function_offset(&file, name), theirs, "{name} in {path}");
            }
        }
    }
}
