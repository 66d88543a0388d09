//! tcpdump's filter language: compiled by libpcap (so the verdicts are tcpdump's), run on
//! each copied packet in user space.
//!
//! libpcap is opened with dlopen when an expression is given, never at start: the binary
//! runs without it, and only a capture with an expression needs it (Debian: libpcap0.8).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

use anyhow::{anyhow, bail, Result};

use super::iface::Framing;

/// libpcap's `struct bpf_program`.
#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut c_void,
}

/// libpcap's `struct pcap_pkthdr`.
#[repr(C)]
struct PktHdr {
    ts: libc::timeval,
    caplen: u32,
    len: u32,
}

type OpenDead = unsafe extern "C" fn(c_int, c_int) -> *mut c_void;
type Compile =
    unsafe extern "C" fn(*mut c_void, *mut BpfProgram, *const c_char, c_int, u32) -> c_int;
type GetErr = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type OfflineFilter = unsafe extern "C" fn(*const BpfProgram, *const PktHdr, *const u8) -> c_int;
type FreeCode = unsafe extern "C" fn(*mut BpfProgram);
type Close = unsafe extern "C" fn(*mut c_void);

/// The libpcap functions used, from the library opened at run time.
struct Lib {
    open_dead: OpenDead,
    compile: Compile,
    geterr: GetErr,
    offline_filter: OfflineFilter,
    freecode: FreeCode,
    close: Close,
}

const LIBRARIES: [&str; 3] = ["libpcap.so.1", "libpcap.so.0.8", "libpcap.so"];

/// DLT_EN10MB and DLT_RAW (Linux's value).
const DLT_EN10MB: c_int = 1;
const DLT_RAW: c_int = 12;
/// PCAP_NETMASK_UNKNOWN: broadcast tests need a netmask; libpcap rejects them without one.
const NETMASK_UNKNOWN: u32 = 0xffff_ffff;

impl Lib {
    fn open() -> Result<Lib> {
        for name in LIBRARIES {
            let cname = CString::new(name)?;
            // SAFETY: dlopen with a NUL-terminated name; the handle is never closed, so the
            // function pointers taken from it stay valid for the process's life.
            let handle = unsafe { libc::dlopen(cname.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if handle.is_null() {
                continue;
            }
            let sym = |s: &str| -> Result<*mut c_void> {
                let cs = CString::new(s)?;
                // SAFETY: dlsym on a live handle with a NUL-terminated name.
                let p = unsafe { libc::dlsym(handle, cs.as_ptr()) };
                if p.is_null() {
                    bail!("{name} has no {s}");
                }
                Ok(p)
            };
            // SAFETY: each symbol is libpcap's function of that name, whose C signature the
            // type it is cast to spells (pcap/pcap.h).
            return Ok(unsafe {
                Lib {
                    open_dead: std::mem::transmute::<*mut c_void, OpenDead>(sym("pcap_open_dead")?),
                    compile: std::mem::transmute::<*mut c_void, Compile>(sym("pcap_compile")?),
                    geterr: std::mem::transmute::<*mut c_void, GetErr>(sym("pcap_geterr")?),
                    offline_filter: std::mem::transmute::<*mut c_void, OfflineFilter>(sym(
                        "pcap_offline_filter",
                    )?),
                    freecode: std::mem::transmute::<*mut c_void, FreeCode>(sym("pcap_freecode")?),
                    close: std::mem::transmute::<*mut c_void, Close>(sym("pcap_close")?),
                }
            });
        }
        bail!("filter expressions need libpcap (Debian: apt install libpcap0.8), which is not installed")
    }
}

/// One compiled program per framing (an Ethernet header first, or the IP header first).
pub struct Filter {
    lib: Lib,
    programs: Vec<(Framing, BpfProgram)>,
}

impl Filter {
    /// Compiles `expression` for both framings; a syntax error is the caller's bad input.
    pub fn compile(expression: &str, snaplen: u32) -> Result<Filter> {
        let lib = Lib::open()?;
        let text = CString::new(expression)
            .map_err(|_| anyhow!("the filter expression holds a NUL byte"))?;
        let mut filter = Filter {
            lib,
            programs: Vec::new(),
        };
        let ethernet = filter.compile_one(&text, DLT_EN10MB, snaplen)?;
        filter.programs.push((Framing::Ethernet, ethernet));
        // An expression about Ethernet headers has no meaning where packets start with the IP
        // header (tcpdump refuses it on such an interface): nothing there matches it.
        match filter.compile_one(&text, DLT_RAW, snaplen) {
            Ok(raw) => filter.programs.push((Framing::RawIp, raw)),
            Err(err) => tracing::debug!("no packet of an IP-only interface matches: {err:#}"),
        }
        Ok(filter)
    }

    fn compile_one(&self, text: &CStr, dlt: c_int, snaplen: u32) -> Result<BpfProgram> {
        // SAFETY: pcap_open_dead returns a handle we close below, or NULL.
        let pcap = unsafe { (self.lib.open_dead)(dlt, snaplen as c_int) };
        if pcap.is_null() {
            bail!("libpcap could not make a handle to compile the filter with");
        }
        let mut program = BpfProgram {
            bf_len: 0,
            bf_insns: std::ptr::null_mut(),
        };
        // SAFETY: a live handle, a NUL-terminated expression, and a program struct libpcap
        // fills (freed with pcap_freecode in Drop).
        let rc =
            unsafe { (self.lib.compile)(pcap, &mut program, text.as_ptr(), 1, NETMASK_UNKNOWN) };
        let result = if rc != 0 {
            // SAFETY: pcap_geterr returns the handle's NUL-terminated message buffer.
            let msg = unsafe { CStr::from_ptr((self.lib.geterr)(pcap)) };
            Err(anyhow!(
                "filter expression {:?}: {}",
                crate::names::printable(text.to_bytes()),
                crate::names::printable(msg.to_bytes())
            ))
        } else {
            Ok(program)
        };
        // SAFETY: the handle is ours and not used after this.
        unsafe { (self.lib.close)(pcap) };
        result
    }

    /// tcpdump's verdict on a packet (its copied bytes and length on the wire).
    pub fn matches(&self, framing: Framing, data: &[u8], len: u32) -> bool {
        let Some((_, program)) = self.programs.iter().find(|(f, _)| *f == framing) else {
            return false;
        };
        let hdr = PktHdr {
            ts: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            caplen: data.len() as u32,
            len,
        };
        // SAFETY: a compiled program, a header whose caplen is the buffer's length, and the
        // buffer: pcap_offline_filter reads at most caplen bytes.
        unsafe { (self.lib.offline_filter)(program, &hdr, data.as_ptr()) != 0 }
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        for (_, program) in &mut self.programs {
            // SAFETY: a program pcap_compile filled, freed once.
            unsafe { (self.lib.freecode)(program) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + UDP frame to port `dport`.
    fn udp_frame(dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&4000u16.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn verdicts_and_errors() {
        let Ok(filter) = Filter::compile("udp dst port 53", 65535) else {
            eprintln!("libpcap missing: skipped");
            return;
        };
        let hit = udp_frame(53);
        let miss = udp_frame(54);
        assert!(filter.matches(Framing::Ethernet, &hit, hit.len() as u32));
        assert!(!filter.matches(Framing::Ethernet, &miss, miss.len() as u32));
        assert!(filter.matches(Framing::RawIp, &hit[14..], 28));
        let err = Filter::compile("udp and and", 65535)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("syntax error")));
    }
}
