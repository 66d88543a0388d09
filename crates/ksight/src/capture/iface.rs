//! Interfaces: which exist (in ksight's network namespace), and attaching the capture
//! programs to one. tcx links where the kernel has them (6.6+): they stack with every other
//! tcx program and leave with ksight's fds, even if it is killed. Otherwise a filter on the
//! clsact qdisc (created only if missing), removed by its own handle and priority at exit.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::fd::AsFd;

use anyhow::{anyhow, bail, Result};
use libbpf_rs::{AsRawLibbpf, Link, TcHook, TcHookBuilder, TC_EGRESS, TC_INGRESS};

use crate::bpf::{kernel_reason, link_from_raw, LoadedObject};

/// How packets are framed on an interface (pcapng link types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// An Ethernet header first (Ethernet, veth, loopback, bridges).
    Ethernet,
    /// The IP header first (tun, WireGuard: ARPHRD_NONE).
    RawIp,
}

/// One interface of this network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub framing: Framing,
}

/// Every interface now, by index (if_nameindex: this namespace's, whatever /sys shows).
pub fn list() -> Result<BTreeMap<u32, Interface>> {
    // SAFETY: if_nameindex returns a list ended by a zero entry, freed below.
    let head = unsafe { libc::if_nameindex() };
    if head.is_null() {
        bail!("listing interfaces: {}", std::io::Error::last_os_error());
    }
    let mut out = BTreeMap::new();
    let mut cur = head;
    // SAFETY: entries up to the zero one are valid; names are NUL-terminated C strings.
    unsafe {
        while (*cur).if_index != 0 && !(*cur).if_name.is_null() {
            let name = CStr::from_ptr((*cur).if_name)
                .to_string_lossy()
                .into_owned();
            let index = (*cur).if_index;
            out.insert(
                index,
                Interface {
                    index,
                    framing: framing_of(&name),
                    name,
                },
            );
            cur = cur.add(1);
        }
        libc::if_freenameindex(head);
    }
    Ok(out)
}

/// The interface called `name`, or None.
pub fn by_name(name: &str) -> Result<Option<Interface>> {
    Ok(list()?.into_values().find(|i| i.name == name))
}

/// Ethernet unless the hardware type says the IP header comes first (SIOCGIFHWADDR).
fn framing_of(name: &str) -> Framing {
    const ARPHRD_NONE: u16 = 0xfffe;
    const ARPHRD_IPGRE: u16 = 778;
    const ARPHRD_TUNNEL: u16 = 768;
    const ARPHRD_SIT: u16 = 776;
    // SAFETY: a datagram socket for the ioctl, closed below; ifreq is zeroed and its name
    // copied with a terminating NUL (at most IFNAMSIZ - 1 bytes).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Framing::Ethernet;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req
            .ifr_name
            .iter_mut()
            .zip(name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *dst = src as libc::c_char;
        }
        let ok = libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) == 0;
        libc::close(fd);
        let family = req.ifr_ifru.ifru_hwaddr.sa_family;
        match family {
            ARPHRD_NONE | ARPHRD_IPGRE | ARPHRD_TUNNEL | ARPHRD_SIT if ok => Framing::RawIp,
            _ => Framing::Ethernet,
        }
    }
}

/// The programs on one interface; dropping it takes them off.
pub enum Attachment {
    Tcx(#[allow(dead_code)] Vec<Link>), // held for their lifetime: dropping detaches
    Clsact(Vec<TcHook>),
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Attachment::Clsact(hooks) = self {
            for hook in hooks.iter_mut() {
                // Our filter only, by its handle and priority: never the qdisc, which other
                // tools' filters may share (an empty clsact left behind is inert).
                if let Err(err) = hook.detach() {
                    tracing::debug!("detaching a capture filter: {err}");
                }
            }
        }
    }
}

impl Attachment {
    pub fn kind(&self) -> &'static str {
        match self {
            Attachment::Tcx(_) => "tcx",
            Attachment::Clsact(_) => "tc clsact",
        }
    }
}

/// Attaches ingress and egress capture to `ifindex`: tcx where its programs were loaded
/// (the tcx feature probe allowed them), else clsact.
pub fn attach(obj: &LoadedObject, ifindex: u32) -> Result<Attachment> {
    if obj.program("cap_tcx_ingress").is_err() {
        return attach_clsact(obj, ifindex).map(Attachment::Clsact);
    }
    match attach_tcx(obj, ifindex) {
        Ok(links) => Ok(Attachment::Tcx(links)),
        Err(tcx) => attach_clsact(obj, ifindex)
            .map(Attachment::Clsact)
            .map_err(|tc| anyhow!("tcx: {tcx:#}; tc: {tc:#}")),
    }
}

fn attach_tcx(obj: &LoadedObject, ifindex: u32) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    for name in ["cap_tcx_ingress", "cap_tcx_egress"] {
        let prog = obj.program(name)?;
        let opts = libbpf_sys::bpf_tcx_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_tcx_opts>() as _,
            ..Default::default()
        };
        // SAFETY: prog is a loaded program of a live object; opts is a sized, zeroed struct
        // (append after every existing program: no flags, no relative program).
        let ptr = unsafe {
            libbpf_sys::bpf_program__attach_tcx(
                prog.as_libbpf_object().as_ptr(),
                ifindex as i32,
                &opts,
            )
        };
        links.push(link_from_raw(ptr)?);
    }
    Ok(links)
}

fn attach_clsact(obj: &LoadedObject, ifindex: u32) -> Result<Vec<TcHook>> {
    let mut hooks = Vec::new();
    for (name, point) in [("cap_tc_ingress", TC_INGRESS), ("cap_tc_egress", TC_EGRESS)] {
        let prog = obj.program(name)?;
        let mut hook = TcHookBuilder::new(prog.as_fd())
            .ifindex(ifindex as i32)
            .replace(false)
            .hook(point);
        // An existing clsact qdisc is shared, not replaced (create accepts EEXIST).
        hook.create()
            .map_err(|e| anyhow!("clsact qdisc: {}", kernel_reason(&e)))?;
        // Handle and priority 0: the kernel picks free ones, never an existing filter's.
        let attached = hook
            .attach()
            .map_err(|e| anyhow!("tc filter: {}", kernel_reason(&e)))?;
        hooks.push(attached);
    }
    Ok(hooks)
}
