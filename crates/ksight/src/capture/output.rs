//! The pcapng output: a section, an interface description per interface (nanosecond
//! timestamps), a block per packet with its direction and process, interface statistics;
//! rotation by size (-C) or time (-G) as tcpdump does.
//!
//! Blocks gather in memory (the spool) and go to the file at each flush. A flush that fails
//! (a full disk, a closed pipe) is undone: the file is cut back to its last whole block, so it
//! stays readable, the packets of the failed flush are counted as lost, and the capture goes
//! on. A packet is "delivered" only once its flush succeeded.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

use super::iface::{Framing, Interface};

/// Blocks not yet flushed.
#[derive(Default)]
pub struct Spool(Vec<u8>);

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type Sink = Spool;

/// The spool is flushed once it holds this much, whatever the loop's timer says: also the
/// most a failed write can take with it beyond what did not fit.
const SPOOL_BYTES: usize = 1 << 16;

/// Where flushed bytes go.
struct Dest {
    out: Box<dyn Write + Send>,
    /// The file again, to cut it back after a failed write (None for stdout).
    file: Option<File>,
    /// Bytes of whole blocks in it.
    good: u64,
}

/// Where packets go and when a new file starts.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `-` for stdout, else the file name (with strftime conversions for -G).
    pub name: String,
    /// -C, in bytes.
    pub max_bytes: Option<u64>,
    /// -G.
    pub every: Option<Duration>,
    pub snaplen: u32,
}

/// One interface's figures for a statistics block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfCounts {
    /// Packets the kernel programs saw on it.
    pub received: u64,
    /// Matching packets that found the ring buffer full.
    pub dropped: u64,
    /// Copied packets that passed every filter (process and expression).
    pub accepted: u64,
    /// Packets written.
    pub delivered: u64,
}

/// A packet to write.
pub struct Packet<'a> {
    pub ifindex: u32,
    pub wall_ns: u64,
    pub original_len: u32,
    pub data: &'a [u8],
    /// pcapng EPB flags direction bits: 1 inbound, 2 outbound.
    pub direction: u32,
    pub comment: &'a str,
}

pub struct Output {
    plan: Plan,
    writer: Option<PcapNgWriter<Sink>>,
    dest: Option<Dest>,
    /// The interfaces of the packets in the spool, in runs: (ifindex, packets).
    pending: Vec<(u32, u64)>,
    /// Interfaces whose description block is in the file (the rest are in the spool).
    described: usize,
    /// Packets in files (or the pipe), by interface.
    pub delivered: HashMap<u32, u64>,
    pub written: u64,
    /// Interfaces in the order of their description blocks (the pcapng interface id).
    interfaces: Vec<Interface>,
    file_bytes: u64,
    /// Packets in the current file: a file is never left without one by -C.
    file_packets: u64,
    file_started: Instant,
    /// Files written, in order (empty for stdout).
    pub files: Vec<PathBuf>,
    /// Packets that could not be written (a full disk, a closed pipe).
    pub lost: u64,
    /// Files begun plus flushes that failed: what a packet before a change of it wrote is
    /// not in the file any more (packet comments say more on an owner's first packet).
    pub generation: u64,
    /// The last write error, for the report.
    pub last_error: Option<String>,
}

impl Output {
    /// Opens the first file (or stdout): an error here is bad input (exit 2).
    pub fn open(plan: Plan) -> Result<Output> {
        let mut out = Output {
            plan,
            writer: None,
            dest: None,
            pending: Vec::new(),
            described: 0,
            delivered: HashMap::new(),
            written: 0,
            interfaces: Vec::new(),
            file_bytes: 0,
            file_packets: 0,
            file_started: Instant::now(),
            files: Vec::new(),
            lost: 0,
            generation: 0,
            last_error: None,
        };
        out.start_file()?;
        Ok(out)
    }

    pub fn is_stdout(&self) -> bool {
        self.plan.name == "-"
    }

    fn next_path(&self) -> PathBuf {
        let n = self.files.len();
        let base = if self.plan.every.is_some() && self.plan.name.contains('%') {
            strftime_now(&self.plan.name)
        } else {
            self.plan.name.clone()
        };
        if n == 0 || base.contains('%') || base != self.plan.name {
            // the first file, or a -G name that changes with time
            return PathBuf::from(base);
        }
        PathBuf::from(format!("{base}{n}"))
    }

    fn start_file(&mut self) -> Result<()> {
        let (out, file): (Box<dyn Write + Send>, _) = if self.is_stdout() {
            (Box::new(std::io::stdout()), None)
        } else {
            let path = self.next_path();
            // Never through a user's symlink or hard link (common/files.rs); mode 0600.
            let file = crate::common::files::create_output(&path).map_err(|e| {
                anyhow!(
                    "-w {}: {e}",
                    crate::decode::printable(path.as_os_str().as_bytes())
                )
            })?;
            let again = file.try_clone()?;
            self.files.push(path);
            (Box::new(file), Some(again))
        };
        self.dest = Some(Dest { out, file, good: 0 });
        self.generation += 1;
        self.file_packets = 0;
        self.file_started = Instant::now();
        self.new_section()
    }

    /// A section header and every interface's description, into the spool.
    fn new_section(&mut self) -> Result<()> {
        let mut writer = PcapNgWriter::new(Spool::default())
            .map_err(|e| anyhow!("writing the pcapng header: {e}"))?;
        self.file_bytes = 28; // the section header block
        for iface in &self.interfaces {
            self.file_bytes += describe(&mut writer, iface, self.plan.snaplen)?;
        }
        self.writer = Some(writer);
        Ok(())
    }

    /// The interface's pcapng id, adding its description block the first time.
    fn interface_id(&mut self, ifindex: u32, known: &dyn Fn(u32) -> Option<Interface>) -> u32 {
        if let Some(id) = self.interfaces.iter().position(|i| i.index == ifindex) {
            return id as u32;
        }
        self.describe_new(ifindex, known)
    }

    /// The description block of an interface not seen before; returns its pcapng id. Out of
    /// line: it runs once per interface, its caller once per packet.
    #[inline(never)]
    fn describe_new(&mut self, ifindex: u32, known: &dyn Fn(u32) -> Option<Interface>) -> u32 {
        let iface = known(ifindex).unwrap_or(Interface {
            index: ifindex,
            name: format!("if{ifindex}"),
            framing: Framing::Ethernet,
        });
        if let Some(w) = &mut self.writer {
            match describe(w, &iface, self.plan.snaplen) {
                Ok(n) => self.file_bytes += n,
                Err(err) => self.failed(err),
            }
        }
        self.interfaces.push(iface);
        (self.interfaces.len() - 1) as u32
    }

    /// Adds an interface's description now (it is being captured), before any packet.
    pub fn add_interface(&mut self, iface: &Interface) {
        let copy = iface.clone();
        self.interface_id(iface.index, &move |_| Some(copy.clone()));
    }

    /// Starts a new file when -C or -G says so (before a packet's comment is chosen, since
    /// a new file changes `generation`).
    pub fn maybe_rotate(&mut self) {
        let by_size = self
            .plan
            .max_bytes
            .is_some_and(|max| self.file_bytes > max && self.file_packets > 0);
        let by_time = self
            .plan
            .every
            .is_some_and(|every| self.file_started.elapsed() >= every);
        if !(by_size || by_time) || self.is_stdout() {
            return;
        }
        self.close_file();
        if let Err(err) = self.start_file() {
            self.failed(err);
        }
    }

    pub fn write(&mut self, p: &Packet<'_>, known: &dyn Fn(u32) -> Option<Interface>) -> bool {
        self.maybe_rotate();
        let id = self.interface_id(p.ifindex, known);
        let Some(w) = &mut self.writer else {
            self.lost += 1;
            return false;
        };
        let spool = &mut w.get_mut().0;
        let n = encode_packet(spool, id, p);
        let full = spool.len() >= SPOOL_BYTES;
        self.file_bytes += n as u64;
        self.file_packets += 1;
        match self.pending.last_mut() {
            Some((index, count)) if *index == p.ifindex => *count += 1,
            _ => self.pending.push((p.ifindex, 1)),
        }
        if full {
            self.flush();
        }
        true
    }

    /// A statistics block per interface, with the counts since the start.
    pub fn statistics(&mut self, wall_ns: u64, counts: &dyn Fn(u32) -> IfCounts) {
        let Some(w) = &mut self.writer else {
            return;
        };
        let mut error = None;
        for (id, iface) in self.interfaces.iter().enumerate() {
            let c = counts(iface.index);
            let block = InterfaceStatisticsBlock {
                interface_id: id as u32,
                // pcap-file 2.0 writes this u64 whole, low word first: pcapng wants the high
                // word first, as in a packet block. Swapping the halves writes it that way.
                timestamp: isb_timestamp(wall_ns),
                options: vec![
                    InterfaceStatisticsOption::IsbIfRecv(c.received),
                    InterfaceStatisticsOption::IsbIfDrop(c.dropped),
                    InterfaceStatisticsOption::IsbFilterAccept(c.accepted),
                    InterfaceStatisticsOption::IsbUsrDeliv(c.delivered),
                ],
            };
            match w.write_pcapng_block(block) {
                Ok(n) => self.file_bytes += n as u64,
                Err(err) => error = Some(anyhow!("{err}")),
            }
        }
        if let Some(err) = error {
            self.failed(err);
        }
    }

    /// Writes the spool to the file or pipe; on failure cuts the file back to its last whole
    /// block and counts the spool's packets as lost.
    pub fn flush(&mut self) {
        let (Some(w), Some(dest)) = (&mut self.writer, &mut self.dest) else {
            return;
        };
        // The spool is emptied, not replaced: a new vector would grow again by doubling
        // for every flush, allocating a dozen times and copying its blocks once more.
        let data = &mut w.get_mut().0;
        if data.is_empty() {
            return;
        }
        let result = dest.out.write_all(data).and_then(|()| dest.out.flush());
        let bytes = data.len() as u64;
        data.clear();
        let pending = std::mem::take(&mut self.pending);
        let packets: u64 = pending.iter().map(|(_, n)| n).sum();
        match result {
            Ok(()) => {
                dest.good += bytes;
                self.described = self.interfaces.len();
                self.written += packets;
                for (index, n) in pending {
                    *self.delivered.entry(index).or_default() += n;
                }
            }
            Err(err) => {
                if let Some(file) = &mut dest.file {
                    let _ = file.set_len(dest.good);
                    let _ = file.seek(SeekFrom::Start(dest.good));
                }
                self.lost += packets;
                self.generation += 1;
                self.failed(anyhow!("{err}"));
                self.redescribe();
            }
        }
    }

    /// After a failed flush: what the lost bytes held that later blocks rely on (the section
    /// header, interface descriptions) goes into the spool again.
    fn redescribe(&mut self) {
        let restart = self.dest.as_ref().is_some_and(|d| d.good == 0);
        if restart {
            if let Err(err) = self.new_section() {
                self.failed(err);
            }
            return;
        }
        let Some(w) = &mut self.writer else {
            return;
        };
        for iface in &self.interfaces[self.described.min(self.interfaces.len())..] {
            if let Err(err) = describe(w, iface, self.plan.snaplen) {
                self.last_error = Some(format!("{err:#}"));
            }
        }
    }

    pub fn close_file(&mut self) {
        self.flush();
        self.writer = None;
        self.dest = None;
    }

    fn failed(&mut self, err: anyhow::Error) {
        self.last_error = Some(format!("{err:#}"));
    }
}

/// The interface description block; returns its size.
fn describe(w: &mut PcapNgWriter<Sink>, iface: &Interface, snaplen: u32) -> Result<u64> {
    let linktype = match iface.framing {
        Framing::Ethernet => DataLink::ETHERNET,
        Framing::RawIp => DataLink::RAW,
    };
    let block = InterfaceDescriptionBlock {
        linktype,
        snaplen,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Owned(iface.name.clone())),
            InterfaceDescriptionOption::IfTsResol(9),
        ],
    };
    w.write_pcapng_block(block)
        .map(|n| n as u64)
        .map_err(|e| anyhow!("writing an interface description: {e}"))
}

/// Appends an enhanced packet block (pcapng, section 4.3) with the flags and comment options
/// to `out`, in the section's (native) byte order; returns its size.
///
/// Encoded here, not through pcap-file's writer, because that was most of ksight's CPU per
/// packet (bench/capture.sh): it builds a Vec of options per packet, encodes each block twice
/// (a dry run for the length) in some twenty small writes. The other blocks still go through
/// pcap-file, and a unit test reads these back with its reader.
fn encode_packet(out: &mut Vec<u8>, interface_id: u32, p: &Packet<'_>) -> usize {
    const EPB: u32 = 6;
    const OPT_COMMENT: u16 = 1;
    const OPT_FLAGS: u16 = 2;
    let pad = |n: usize| (4 - n % 4) % 4;
    let comment = bounded_comment(p.comment);
    let options = 8 + 4 + comment.len() + pad(comment.len()) + 4;
    let size = 12 + 20 + p.data.len() + pad(p.data.len()) + options;
    // The fixed fields are put together on the stack and appended in one go: this runs for
    // every packet, and each append checks the vector's capacity.
    let words = |values: &[u32], into: &mut [u8]| {
        for (chunk, v) in into.chunks_exact_mut(4).zip(values) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
    };
    let mut head = [0u8; 28];
    let ts = [(p.wall_ns >> 32) as u32, p.wall_ns as u32];
    words(
        &[
            EPB,
            size as u32,
            interface_id,
            ts[0],
            ts[1],
            p.data.len() as u32,
            p.original_len,
        ],
        &mut head,
    );
    // The flags option (code, length, value) and the comment option's code and length.
    let mut opts = [0u8; 12];
    opts[..2].copy_from_slice(&OPT_FLAGS.to_ne_bytes());
    opts[2..4].copy_from_slice(&4u16.to_ne_bytes());
    opts[4..8].copy_from_slice(&(p.direction & 3).to_ne_bytes());
    opts[8..10].copy_from_slice(&OPT_COMMENT.to_ne_bytes());
    opts[10..].copy_from_slice(&(comment.len() as u16).to_ne_bytes());
    out.reserve(size + 3);
    out.extend_from_slice(&head);
    append_padded(out, p.data);
    out.extend_from_slice(&opts);
    append_padded(out, comment.as_bytes());
    let mut tail = [0u8; 8];
    words(&[0, size as u32], &mut tail); // opt_endofopt, then the block's length again
    out.extend_from_slice(&tail);
    size
}

/// Appends `bytes` and zeros up to a multiple of 4 bytes. The zeros go in as one constant
/// 4-byte store and the excess is cut off: a copy of a variable 0 to 3 bytes would be a call
/// to memcpy, for every packet.
fn append_padded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    let end = out.len() + (4 - bytes.len() % 4) % 4;
    out.extend_from_slice(&[0u8; 4]);
    out.truncate(end);
}

/// An option holds at most 65,535 bytes: a longer comment (a huge command line) is cut at
/// a character boundary.
fn bounded_comment(comment: &str) -> &str {
    let mut end = comment.len().min(usize::from(u16::MAX));
    while !comment.is_char_boundary(end) {
        end -= 1;
    }
    &comment[..end]
}

/// The statistics block's timestamp in the interfaces' resolution (nanoseconds), with its
/// 32-bit halves swapped (see `statistics`).
fn isb_timestamp(wall_ns: u64) -> u64 {
    wall_ns.rotate_left(32)
}

/// `pattern` through strftime(3) in local time (for -G file names).
fn strftime_now(pattern: &str) -> String {
    let Ok(format) = std::ffi::CString::new(pattern) else {
        return pattern.to_string();
    };
    let mut buf = vec![0u8; pattern.len() * 4 + 64];
    // SAFETY: time(NULL) and localtime_r into our zeroed tm; strftime writes at most
    // buf.len() bytes into buf and returns how many (0 on overflow).
    let n = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm)
    };
    if n == 0 {
        return pattern.to_string();
    }
    buf.truncate(n);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What encode_packet writes is what pcap-file's reader reads back.
    #[test]
    fn packet_blocks_read_back_with_pcap_file() {
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption as O;
        use pcap_file::pcapng::{Block, PcapNgReader};
        let mut spool = Spool::default();
        let writer = PcapNgWriter::new(&mut spool).unwrap();
        drop(writer);
        let long = "x".repeat(65_534) + "é"; // 65,535 falls inside the é
        for (i, (len, comment)) in [
            (60usize, "PID: 1\nComm: a"),
            (61, "é"),
            (0, ""),
            (3, &*long),
        ]
        .into_iter()
        .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|b| b as u8).collect();
            let p = Packet {
                ifindex: 3,
                wall_ns: 0x1_2345_6789 + i as u64,
                original_len: 1500,
                data: &data,
                direction: 2,
                comment,
            };
            let before = spool.0.len();
            let n = encode_packet(&mut spool.0, 0, &p);
            assert_eq!(spool.0.len() - before, n);
            assert_eq!(n % 4, 0);
        }
        let mut reader = PcapNgReader::new(std::io::Cursor::new(spool.0)).unwrap();
        let mut seen = 0;
        while let Some(block) = reader.next_block() {
            let Ok(Block::EnhancedPacket(b)) = block else {
                panic!("{block:?}");
            };
            let (len, comment) = [(60, "PID: 1\nComm: a"), (61, "é"), (0, ""), (3, "")][seen];
            assert_eq!(b.data.len(), len);
            assert_eq!(b.original_len, 1500);
            assert_eq!(b.timestamp.as_nanos(), 0x1_2345_6789 + seen as u128);
            assert_eq!(b.options[0], O::Flags(2));
            let O::Comment(text) = &b.options[1] else {
                panic!("{:?}", b.options);
            };
            if seen == 3 {
                assert_eq!(text.len(), 65_534);
            } else {
                assert_eq!(text, comment);
            }
            seen += 1;
        }
        assert_eq!(seen, 4);
    }

    #[test]
    fn statistics_timestamp_halves_are_swapped() {
        let ts = 0x0000_0001_2345_6789u64;
        let swapped = isb_timestamp(ts);
        // written little-endian as a u64: the first 4 bytes must be the high word
        let bytes = swapped.to_le_bytes();
        assert_eq!(u32::from_le_bytes(bytes[..4].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_le_bytes(bytes[4..].try_into().unwrap()),
            0x2345_6789
        );
    }

    #[test]
    fn time_rotation_names_files_by_strftime_or_number() {
        let dir = std::env::temp_dir().join(format!("ksight-out-g-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let numbered = dir.join("g.pcapng").to_string_lossy().into_owned();
        let mut out = Output::open(Plan {
            name: numbered.clone(),
            max_bytes: None,
            every: Some(Duration::ZERO), // every packet starts a new file
            snaplen: 100,
        })
        .unwrap();
        let none = |_| None;
        let p = Packet {
            ifindex: 7,
            wall_ns: 1,
            original_len: 60,
            data: &[0u8; 60],
            direction: 1,
            comment: "PID: unknown",
        };
        assert!(out.write(&p, &none));
        assert!(out.write(&p, &none));
        out.close_file();
        assert_eq!(out.files.len(), 3, "{:?}", out.files);
        assert_eq!(out.files[1], PathBuf::from(format!("{numbered}1")));
        assert_eq!(out.written, 2);
        let pattern = dir.join("t-%Y.pcapng").to_string_lossy().into_owned();
        let out = Output::open(Plan {
            name: pattern,
            max_bytes: None,
            every: Some(Duration::from_secs(60)),
            snaplen: 100,
        })
        .unwrap();
        let name = out.files[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("t-2") && !name.contains('%'), "{name}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn numbered_files_follow_tcpdump() {
        let dir = std::env::temp_dir().join(format!("ksight-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("cap.pcapng").to_string_lossy().into_owned();
        let mut out = Output::open(Plan {
            name: base.clone(),
            max_bytes: Some(1),
            every: None,
            snaplen: 100,
        })
        .unwrap();
        let iface = Interface {
            index: 7,
            name: "veth0".into(),
            framing: Framing::Ethernet,
        };
        out.add_interface(&iface);
        let none = |_| None;
        for _ in 0..3 {
            let p = Packet {
                ifindex: 7,
                wall_ns: 1,
                original_len: 60,
                data: &[0u8; 60],
                direction: 2,
                comment: "PID: 1",
            };
            assert!(out.write(&p, &none));
        }
        out.close_file();
        let names: Vec<String> = out.files.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            vec![base.clone(), format!("{base}1"), format!("{base}2")]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
