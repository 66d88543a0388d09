//! The pcapng output: a section, an interface description per interface (nanosecond
//! timestamps), a block per packet with its direction and process, interface statistics;
//! rotation by size (-C) or time (-G) as tcpdump does. A write that fails (a full disk) is
//! counted as loss and the capture goes on.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

use super::iface::{Framing, Interface};

type Sink = BufWriter<Box<dyn Write + Send>>;

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
    /// The last write error, for the report.
    pub last_error: Option<String>,
}

impl Output {
    /// Opens the first file (or stdout): an error here is bad input (exit 2).
    pub fn open(plan: Plan) -> Result<Output> {
        let mut out = Output {
            plan,
            writer: None,
            interfaces: Vec::new(),
            file_bytes: 0,
            file_packets: 0,
            file_started: Instant::now(),
            files: Vec::new(),
            lost: 0,
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
        let sink: Box<dyn Write + Send> = if self.is_stdout() {
            Box::new(std::io::stdout())
        } else {
            let path = self.next_path();
            let file = File::create(&path).map_err(|e| anyhow!("-w {}: {e}", path.display()))?;
            self.files.push(path);
            Box::new(file)
        };
        let mut writer = PcapNgWriter::new(BufWriter::with_capacity(1 << 16, sink))
            .map_err(|e| anyhow!("writing the pcapng header: {e}"))?;
        self.file_bytes = 28; // the section header block
        self.file_packets = 0;
        for iface in self.interfaces.clone() {
            self.file_bytes += describe(&mut writer, &iface, self.plan.snaplen)?;
        }
        self.writer = Some(writer);
        self.file_started = Instant::now();
        Ok(())
    }

    /// The interface's pcapng id, adding its description block the first time.
    fn interface_id(&mut self, ifindex: u32, known: &dyn Fn(u32) -> Option<Interface>) -> u32 {
        if let Some(id) = self.interfaces.iter().position(|i| i.index == ifindex) {
            return id as u32;
        }
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

    /// Starts a new file when -C or -G says so.
    fn maybe_rotate(&mut self) {
        let by_size = self
            .plan
            .max_bytes
            .is_some_and(|max| self.file_bytes > max && self.file_packets > 0);
        let by_time = self
            .plan
            .every
            .is_some_and(|every| self.file_started.elapsed() >= every);
        if self.is_stdout() || !(by_size || by_time) {
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
        let block = EnhancedPacketBlock {
            interface_id: id,
            timestamp: Duration::from_nanos(p.wall_ns),
            original_len: p.original_len,
            data: Cow::Borrowed(p.data),
            options: vec![
                EnhancedPacketOption::Flags(p.direction & 3),
                EnhancedPacketOption::Comment(Cow::Borrowed(p.comment)),
            ],
        };
        match w.write_pcapng_block(block) {
            Ok(n) => {
                self.file_bytes += n as u64;
                self.file_packets += 1;
                true
            }
            Err(err) => {
                self.lost += 1;
                self.failed(anyhow!("{err}"));
                false
            }
        }
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

    /// Pushes what is buffered to the file or pipe.
    pub fn flush(&mut self) {
        if let Some(w) = &mut self.writer {
            if let Err(err) = w.get_mut().flush() {
                self.failed(anyhow!("{err}"));
            }
        }
    }

    pub fn close_file(&mut self) {
        self.flush();
        self.writer = None;
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
