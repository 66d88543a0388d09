//! After everything is attached, `serve` and `trace` keep only what they still need: by
//! default no capability at all (the programs stay attached through the fds ksight holds,
//! and reading maps through an fd needs none), no way to regain any (no-new-privileges, an
//! emptied bounding set), and optionally another user.
//!
//! Capabilities belong to threads: this runs before `serve` or `trace` starts any thread, so
//! every thread started later inherits the reduced sets.

use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use clap::Args;

/// `--capabilities.keep` and `--user`.
#[derive(Args, Debug, Clone, Default)]
pub struct DropArgs {
    /// Capabilities to keep after attaching (comma list such as cap_sys_resource, or none).
    #[arg(
        long = "capabilities.keep",
        value_delimiter = ',',
        value_parser = parse_capability,
        value_name = "LIST",
        default_value = "none"
    )]
    pub keep: Vec<Option<Capability>>,

    /// Switch to this user after attaching: NAME, UID or UID:GID (numeric ids need no NSS;
    /// a bare UID also takes it as the GID).
    #[arg(long, value_parser = parse_user, value_name = "USER")]
    pub user: Option<User>,
}

/// A user and group to switch to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// A capability name (`cap_bpf`, `CAP_BPF` or `bpf`), or `none`.
pub fn parse_capability(text: &str) -> Result<Option<Capability>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") || text.is_empty() {
        return Ok(None);
    }
    Capability::from_str(&caps::to_canonical(text))
        .map(Some)
        .map_err(|_| format!("unknown capability {text:?} (e.g. cap_bpf, cap_perfmon, none)"))
}

/// `NAME`, `UID` or `UID:GID`.
pub fn parse_user(text: &str) -> Result<User, String> {
    let number = |s: &str| s.parse::<u32>().ok();
    match text.split_once(':') {
        Some((uid, gid)) => match (number(uid), number(gid)) {
            (Some(uid), Some(gid)) => Ok(User { uid, gid }),
            _ => Err(format!(
                "invalid --user {text:?} (use NAME, UID or UID:GID)"
            )),
        },
        None => match number(text) {
            Some(uid) => Ok(User { uid, gid: uid }),
            None => user_by_name(text),
        },
    }
}

fn user_by_name(name: &str) -> Result<User, String> {
    let c_name = std::ffi::CString::new(name).map_err(|_| format!("invalid user name {name:?}"))?;
    // SAFETY: getpwnam reads a NUL-terminated name and returns a pointer into static storage,
    // read at once, before any other call could reuse it (no thread exists yet).
    let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
    if entry.is_null() {
        return Err(format!(
            "no user {name:?} (a numeric UID[:GID] needs no user database)"
        ));
    }
    // SAFETY: non-null: a valid passwd entry.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(User { uid, gid })
}

/// `args` with those of `needed` this process has added to what it keeps, said once in the
/// log with `why`: what a subcommand still uses after attaching.
pub fn keeping(args: &DropArgs, needed: &[Capability], why: &str) -> DropArgs {
    let mut kept = args.clone();
    let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
    let added: Vec<Capability> = needed
        .iter()
        .copied()
        .filter(|c| permitted.contains(c) && !kept.keep.contains(&Some(*c)))
        .collect();
    if !added.is_empty() {
        let names: Vec<String> = added.iter().map(|c| c.to_string()).collect();
        tracing::info!(capabilities = names.join(","), "kept {why}");
    }
    kept.keep.extend(added.into_iter().map(Some));
    kept
}

/// Keeps `args.keep` only, switches user if asked, and sets no-new-privileges. `reads_maps`
/// checks that a map can still be read: kernels that check capabilities on every bpf() call
/// (5.10 with unprivileged BPF disabled) need CAP_BPF kept for that, which is then kept and
/// said once in the log.
pub fn drop_after_attach(args: &DropArgs, reads_maps: impl Fn() -> bool) -> Result<()> {
    let mut keep: CapsHashSet = args.keep.iter().flatten().copied().collect();
    let permitted = caps::read(None, CapSet::Permitted).context("reading capabilities")?;
    if let Some(missing) = keep.iter().find(|c| !permitted.contains(c)) {
        bail!("--capabilities.keep {missing}: ksight does not have it to keep");
    }
    if let Some(user) = args.user {
        switch_user(user)?;
        // setuid cleared the effective set; the permitted one survived (KEEPCAPS).
        caps::set(None, CapSet::Effective, &permitted).context("restoring capabilities")?;
    }
    caps::set(None, CapSet::Effective, &keep).context("setting effective capabilities")?;
    if !reads_maps() {
        let needed = [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN]
            .into_iter()
            .filter(|c| permitted.contains(c))
            .find(|c| {
                let mut with = keep.clone();
                with.insert(*c);
                caps::set(None, CapSet::Effective, &with).is_ok() && reads_maps()
            })
            .ok_or_else(|| anyhow!("after dropping capabilities this kernel refuses map reads"))?;
        tracing::info!(
            capability = %needed,
            "kept: this kernel checks capabilities on every bpf() call, map reads included"
        );
        keep.insert(needed);
    }
    // The bounding set caps what any exec could ever get back; emptying it needs SETPCAP,
    // which a non-root ksight with file capabilities lacks: no-new-privileges covers it then.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        let mut with_setpcap = keep.clone();
        with_setpcap.insert(Capability::CAP_SETPCAP);
        caps::set(None, CapSet::Effective, &with_setpcap).context("raising CAP_SETPCAP")?;
        for cap in caps::all().difference(&keep) {
            // A capability this kernel does not know is not in the set anyway.
            let _ = caps::drop(None, CapSet::Bounding, *cap);
        }
    }
    let _ = caps::clear(None, CapSet::Ambient); // kernels before 4.3 have no ambient set
    caps::clear(None, CapSet::Inheritable).context("clearing inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &keep).context("setting effective capabilities")?;
    caps::set(None, CapSet::Permitted, &keep).context("setting permitted capabilities")?;
    // SAFETY: a prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(anyhow!(
            "no-new-privileges: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// setgroups, setgid, setuid; the permitted capabilities survive (PR_SET_KEEPCAPS) so that
/// `--capabilities.keep` still applies.
fn switch_user(user: User) -> Result<()> {
    let io = std::io::Error::last_os_error;
    // SAFETY: plain syscalls with integer arguments and a one-element group list we own.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            bail!("keeping capabilities across setuid: {}", io());
        }
        if libc::setgroups(1, &user.gid) != 0 {
            bail!("--user: setgroups({}): {}", user.gid, io());
        }
        if libc::setgid(user.gid) != 0 {
            bail!("--user: setgid({}): {}", user.gid, io());
        }
        if libc::setuid(user.uid) != 0 {
            bail!("--user: setuid({}): {}", user.uid, io());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names() {
        assert_eq!(parse_capability("cap_bpf"), Ok(Some(Capability::CAP_BPF)));
        assert_eq!(
            parse_capability("PERFMON"),
            Ok(Some(Capability::CAP_PERFMON))
        );
        assert_eq!(parse_capability("none"), Ok(None));
        assert!(parse_capability("cap_fly").is_err());
    }

    #[test]
    fn users() {
        assert_eq!(
            parse_user("65534"),
            Ok(User {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(
            parse_user("1000:100"),
            Ok(User {
                uid: 1000,
                gid: 100
            })
        );
        assert_eq!(parse_user("root"), Ok(User { uid: 0, gid: 0 }));
        assert!(parse_user("1000:x").is_err());
        assert!(parse_user("no-such-user-ksight").is_err());
    }
}
