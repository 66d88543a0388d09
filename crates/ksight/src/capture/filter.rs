//! tcpdump's filter language: compiled by libpcap (so the verdicts are tcpdump's), run on
//! each copied packet in user space.
//!
//! libpcap is built from source into the binary (crates/libpcap): nothing to install, and the
//! static release compiles expressions in an empty root.

use std::ffi::{c_int, CStr, CString};

use anyhow::{anyhow, Result};
use ksight_libpcap::{self as pcap, BpfProgram, PktHdr, DLT_EN10MB, DLT_RAW, NETMASK_UNKNOWN};

use super::iface::Framing;

/// One compiled program per framing (an Ethernet header first, or the IP header first).
pub struct Filter {
    programs: Vec<(Framing, BpfProgram)>,
}

impl Filter {
    /// Compiles `expression` for both framings, first in a child under a time and memory
    /// limit (bounded.rs); a syntax error or a limit passed is the caller's bad input.
    pub fn compile(expression: &str, snaplen: u32) -> Result<Filter> {
        let text = CString::new(expression)
            .map_err(|_| anyhow!("the filter expression holds a NUL byte"))?;
        super::bounded::check(&text, || {
            Filter::compile_unbounded(&text, snaplen).map(drop)
        })?;
        Filter::compile_unbounded(&text, snaplen).map_err(|msg| {
            anyhow!(
                "filter expression {:?}: {msg}",
                crate::decode::printable(text.to_bytes())
            )
        })
    }

    /// Err: libpcap's message, escaped.
    fn compile_unbounded(text: &CStr, snaplen: u32) -> Result<Filter, String> {
        let mut filter = Filter {
            programs: Vec::new(),
        };
        let ethernet = compile_one(text, DLT_EN10MB, snaplen)?;
        filter.programs.push((Framing::Ethernet, ethernet));
        // An expression about Ethernet headers has no meaning where packets start with the IP
        // header (tcpdump refuses it on such an interface): nothing there matches it.
        match compile_one(text, DLT_RAW, snaplen) {
            Ok(raw) => filter.programs.push((Framing::RawIp, raw)),
            Err(err) => tracing::debug!("no packet of an IP-only interface matches: {err}"),
        }
        Ok(filter)
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
        unsafe { pcap::pcap_offline_filter(program, &hdr, data.as_ptr()) != 0 }
    }
}

fn compile_one(text: &CStr, dlt: c_int, snaplen: u32) -> Result<BpfProgram, String> {
    // SAFETY: pcap_open_dead returns a handle we close below, or NULL.
    let handle = unsafe { pcap::pcap_open_dead(dlt, snaplen as c_int) };
    if handle.is_null() {
        return Err("libpcap could not make a handle to compile the filter with".into());
    }
    let mut program = BpfProgram {
        bf_len: 0,
        bf_insns: std::ptr::null_mut(),
    };
    // SAFETY: a live handle, a NUL-terminated expression, and a program struct libpcap
    // fills (freed with pcap_freecode in Drop).
    let rc = unsafe { pcap::pcap_compile(handle, &mut program, text.as_ptr(), 1, NETMASK_UNKNOWN) };
    let result = if rc != 0 {
        // SAFETY: pcap_geterr returns the handle's NUL-terminated message buffer.
        let msg = unsafe { CStr::from_ptr(pcap::pcap_geterr(handle)) };
        Err(crate::decode::printable(msg.to_bytes()))
    } else {
        Ok(program)
    };
    // SAFETY: the handle is ours and not used after this.
    unsafe { pcap::pcap_close(handle) };
    result
}

impl Drop for Filter {
    fn drop(&mut self) {
        for (_, program) in &mut self.programs {
            // SAFETY: a program pcap_compile filled, freed once.
            unsafe { pcap::pcap_freecode(program) };
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
        let filter = Filter::compile("udp dst port 53", 65535).expect("compiles");
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
