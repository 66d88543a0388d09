//! The packet comment that names the process, in ptcpdump's `Key: value` lines (PID, Cmd,
//! Args, ThreadId, UserId, ContainerId) plus ksight's Comm and Cgroup; a packet with no known
//! process says `PID: unknown`. Outside text (names, arguments, paths) is escaped.

use std::collections::HashMap;
use std::fmt::Write as _;

use ksight_bpf::abi::ks_cap_owner;

use crate::enrich::Enricher;
use crate::names;

/// What /proc says about a process, read once per (pid, comm).
struct Proc {
    cmd: String,
    args: String,
}

pub struct Namer {
    /// The comment of each owner seen (its bytes as the kernel wrote them).
    comments: HashMap<[u8; OWNER_BYTES], std::rc::Rc<str>>,
    /// The last owner asked about and its comment: packets come in runs of one socket's,
    /// and a compare is cheaper than hashing the owner for every packet.
    last: Option<([u8; OWNER_BYTES], std::rc::Rc<str>)>,
    procs: HashMap<(u32, [u8; 16]), Proc>,
    enricher: Enricher,
    containers: HashMap<u64, (Option<String>, String)>,
}

/// Entries kept before the cache starts over (pids come and go).
const MAX_PROCS: usize = 8192;

const OWNER_BYTES: usize = std::mem::size_of::<ks_cap_owner>();

impl Namer {
    pub fn new(enricher: Enricher) -> Namer {
        Namer {
            comments: HashMap::new(),
            last: None,
            procs: HashMap::new(),
            enricher,
            containers: HashMap::new(),
        }
    }

    /// The comment for a packet of this owner, made once per owner.
    pub fn comment(&mut self, o: &ks_cap_owner) -> std::rc::Rc<str> {
        let mut key = [0u8; OWNER_BYTES];
        // SAFETY: ks_cap_owner is Plain (a padding-free C struct): its bytes are all defined.
        key.copy_from_slice(unsafe { plain::as_bytes(o) });
        if let Some((last, text)) = &self.last {
            if *last == key {
                return text.clone();
            }
        }
        let text = match self.comments.get(&key) {
            Some(text) => text.clone(),
            None => {
                if self.comments.len() >= MAX_PROCS {
                    self.comments.clear();
                }
                let text: std::rc::Rc<str> = self.make_comment(o).into();
                self.comments.insert(key, text.clone());
                text
            }
        };
        self.last = Some((key, text.clone()));
        text
    }

    fn make_comment(&mut self, o: &ks_cap_owner) -> String {
        if o.pid == 0 {
            return "PID: unknown".to_string();
        }
        let raw = names::c_bytes(&o.comm);
        let mut key = [0u8; 16];
        key.copy_from_slice(&raw[..16]);
        let comm = names::comm(raw);
        if self.procs.len() >= MAX_PROCS {
            self.procs.clear();
        }
        let p = self
            .procs
            .entry((o.pid, key))
            .or_insert_with(|| read_proc(o.pid, &comm));
        let mut text = format!(
            "PID: {}\nCmd: {}\nArgs: {}\nComm: {comm}\nThreadId: {}\nUserId: {}",
            o.pid, p.cmd, p.args, o.tid, o.uid
        );
        if o.cgroup != 0 {
            let (container, path) = self.cgroup(o.cgroup);
            if let Some(id) = container {
                let _ = write!(text, "\nContainerId: {id}");
            }
            let _ = write!(text, "\nCgroup: {path}");
        }
        text
    }

    fn cgroup(&mut self, id: u64) -> (Option<String>, String) {
        if let Some(v) = self.containers.get(&id) {
            return v.clone();
        }
        let labels = self.enricher.labels(id);
        let get = |name: &str| {
            labels
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| names::escape_controls(v).into_owned())
                .filter(|v| !v.is_empty())
        };
        let value = (
            get("container"),
            get("cgroup").unwrap_or_else(|| id.to_string()),
        );
        if self.containers.len() >= MAX_PROCS {
            self.containers.clear();
        }
        self.containers.insert(id, value.clone());
        value
    }
}

fn read_proc(pid: u32, comm: &str) -> Proc {
    let cmd = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| names::printable(p.as_os_str().as_encoded_bytes()))
        .unwrap_or_else(|_| comm.to_string());
    let args = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(names::printable)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Proc { cmd, args }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_hostile_names() {
        let mut namer = Namer::new(Enricher::off());
        assert_eq!(&*namer.comment(&ks_cap_owner::default()), "PID: unknown");
        let mut o = ks_cap_owner {
            pid: u32::MAX, // no such process: Cmd falls back to the comm
            tid: 7,
            uid: 1000,
            ..Default::default()
        };
        for (dst, src) in o.comm.iter_mut().zip(b"a\nPID: 1".iter()) {
            *dst = *src as std::ffi::c_char;
        }
        let text = namer.comment(&o);
        assert!(
            text.starts_with("PID: 4294967295\nCmd: a\\x0aPID: 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\nComm: a\\x0aPID: 1\nThreadId: 7\nUserId: 1000"),
            "{text}"
        );
        assert_eq!(text.lines().filter(|l| l.starts_with("PID:")).count(), 1);
    }
}
