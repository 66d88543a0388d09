//! The five libpcap functions ksight uses to run tcpdump's filter language, from the libpcap
//! that build.rs compiles from source and links in statically.
//!
//! Why not the `pcap` crate: it links the system's libpcap through pkg-config (a shared
//! library at run time, the thing the static binary must not need), and it wraps live
//! capture, which ksight does not do (packets come from its TC programs). Compiling an
//! expression and running it on a buffer is pcap_open_dead + pcap_compile +
//! pcap_offline_filter: declared here, wrapped safely in ksight's capture/filter.rs.

#![no_std]

use core::ffi::{c_char, c_int, c_uint, c_void};

/// libpcap's `struct bpf_program` (pcap/bpf.h).
#[repr(C)]
pub struct BpfProgram {
    pub bf_len: c_uint,
    pub bf_insns: *mut c_void,
}

/// libpcap's `struct pcap_pkthdr` (pcap/pcap.h).
#[repr(C)]
pub struct PktHdr {
    pub ts: libc::timeval,
    pub caplen: u32,
    pub len: u32,
}

/// An opaque `pcap_t`.
#[repr(C)]
pub struct Pcap {
    _private: [u8; 0],
}

/// DLT_EN10MB: frames start with an Ethernet header.
pub const DLT_EN10MB: c_int = 1;
/// DLT_RAW (Linux's value): frames start with the IP header.
pub const DLT_RAW: c_int = 12;
/// PCAP_NETMASK_UNKNOWN: broadcast tests need a netmask; libpcap rejects them without one.
pub const NETMASK_UNKNOWN: u32 = 0xffff_ffff;

extern "C" {
    pub fn pcap_open_dead(linktype: c_int, snaplen: c_int) -> *mut Pcap;
    pub fn pcap_compile(
        p: *mut Pcap,
        program: *mut BpfProgram,
        expression: *const c_char,
        optimize: c_int,
        netmask: u32,
    ) -> c_int;
    pub fn pcap_geterr(p: *mut Pcap) -> *const c_char;
    pub fn pcap_offline_filter(
        program: *const BpfProgram,
        header: *const PktHdr,
        data: *const u8,
    ) -> c_int;
    pub fn pcap_freecode(program: *mut BpfProgram);
    pub fn pcap_close(p: *mut Pcap);
}
