//! Where `serve` listens: `--web.listen-address` (repeatable) or sockets systemd passed
//! (`--web.systemd-socket`, socket activation).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

use anyhow::{anyhow, bail, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

/// One `--web.listen-address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Address {
    /// `:PORT`: every interface, IPv6 and IPv4.
    AnyHost(u16),
    /// `HOST:PORT` or `[V6]:PORT`.
    Exact(SocketAddr),
}

impl Address {
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = || anyhow!("invalid --web.listen-address {text:?} (use :PORT or HOST:PORT)");
        match text.strip_prefix(':') {
            Some(port) => port.parse().map(Address::AnyHost).map_err(|_| invalid()),
            None => text.parse().map(Address::Exact).map_err(|_| invalid()),
        }
    }

    /// Binds it: `:PORT` as one IPv6 socket that takes IPv4 too, or IPv4 alone where the
    /// host has no IPv6.
    pub fn bind(self) -> Result<TcpListener> {
        let bound = match self {
            Address::AnyHost(port) => dual_stack(port).or_else(|err| {
                let no_ipv6 = matches!(
                    err.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                );
                if no_ipv6 {
                    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
                } else {
                    Err(err)
                }
            }),
            Address::Exact(addr) => TcpListener::bind(addr),
        };
        bound.with_context(|| format!("cannot listen on {self}"))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::AnyHost(port) => write!(f, ":{port}"),
            Address::Exact(addr) => write!(f, "{addr}"),
        }
    }
}

fn dual_stack(port: u16) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The listening sockets systemd passed (sd_listen_fds: fds 3.. as LISTEN_FDS counts, for
/// the process LISTEN_PID names). The variables are removed so no child inherits them.
pub fn systemd_sockets() -> Result<Vec<TcpListener>> {
    let pid = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok());
    // SAFETY: removing variables before any thread exists (serve starts none before this).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        bail!("--web.systemd-socket: no socket passed (LISTEN_PID and LISTEN_FDS are not set)");
    };
    if pid != std::process::id() || count < 1 {
        bail!("--web.systemd-socket: the sockets passed are not for this process");
    }
    (3..3 + count).map(passed_listener).collect()
}

fn passed_listener(fd: RawFd) -> Result<TcpListener> {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes an int into `kind`; fcntl on an fd number we were given.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut kind).cast(),
            &mut len,
        ) == 0
            && libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == 0
    };
    if !ok || kind != libc::SOCK_STREAM {
        bail!("--web.systemd-socket: fd {fd} is not a stream socket");
    }
    // SAFETY: systemd passed fd to this process to own; it is a stream socket.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(Address::parse(":9712").ok(), Some(Address::AnyHost(9712)));
        let exact = |s: &str| s.parse().ok().map(Address::Exact);
        assert_eq!(Address::parse("127.0.0.1:1").ok(), exact("127.0.0.1:1"));
        assert_eq!(Address::parse("[::1]:9712").ok(), exact("[::1]:9712"));
        for bad in ["nope", ":", ":99999", "localhost", "1.2.3.4"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_listen_address_text(text in ".{0,60}") {
            let _ = Address::parse(&text);
        }
    }
}
