//! The packet comment that names the process, in ptcpdump's `Key: value` lines (PID, Cmd,
//! Args, ThreadId, UserId, ContainerId) plus ksight's Comm and Cgroup; a packet with no known
//! process says `PID: unknown`. Outside text (names, arguments, paths) is escaped.
//!
//! The comment is most of the bytes written for a small packet, and writing bytes is most of
//! a capture's CPU time, so by default (`--comment short`) the keys that do not change
//! within a process and are long (Cmd, Args, Cgroup) go only into the first packet of each
//! thread in each file; the others name the process on every packet.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::rc::Rc;

use ksight_bpf::abi::ks_cap_owner;

use crate::decode;
use crate::enrich::Enricher;

/// What /proc says about a process, read once per (pid, comm).
struct Proc {
    cmd: String,
    args: String,
}

/// An owner's comments: all its keys, and those every packet carries.
struct Comment {
    full: Rc<str>,
    short: Rc<str>,
}

pub struct Namer {
    /// The comments of each owner seen (its bytes as the kernel wrote them).
    comments: HashMap<Owner, Rc<Comment>>,
    /// The last owner asked about and its comments (its full comment is in the current
    /// file by then): packets come in runs of one socket's, and a compare is cheaper than
    /// hashing the owner for every packet.
    last: Option<(ks_cap_owner, Rc<Comment>)>,
    /// --comment full: every packet carries every key.
    always_full: bool,
    /// Owners whose full comment is in the current file, and that file (Output's count).
    described: HashSet<Owner>,
    file: u64,
    procs: HashMap<(u32, [u8; 16]), Proc>,
    enricher: Enricher,
    containers: HashMap<u64, (Option<String>, String)>,
}

/// Entries kept before the cache starts over (pids come and go).
const MAX_PROCS: usize = 8192;

const OWNER_BYTES: usize = std::mem::size_of::<ks_cap_owner>();
type Owner = [u8; OWNER_BYTES];

impl Namer {
    pub fn new(enricher: Enricher, always_full: bool) -> Namer {
        Namer {
            comments: HashMap::new(),
            last: None,
            always_full,
            described: HashSet::new(),
            file: 0,
            procs: HashMap::new(),
            enricher,
            containers: HashMap::new(),
        }
    }

    /// The comment for a packet of this owner going into file number `file` (Output's
    /// count of files begun, which also counts writes that failed): the full one if it is
    /// the owner's first packet there (or --comment full), else the short one.
    pub fn comment(&mut self, o: &ks_cap_owner, file: u64) -> Rc<str> {
        if file != self.file {
            self.file = file;
            self.described.clear();
            self.last = None;
        }
        if let Some((last, c)) = &self.last {
            if same_owner(last, o) {
                return self.later(c);
            }
        }
        let mut key: Owner = [0u8; OWNER_BYTES];
        // SAFETY: ks_cap_owner is Plain (a padding-free C struct): its bytes are all defined.
        key.copy_from_slice(unsafe { plain::as_bytes(o) });
        let c = self.comments_of(&key, o);
        self.last = Some((*o, c.clone()));
        match self.described.insert(key) {
            true => c.full.clone(),
            false => self.later(&c),
        }
    }

    /// The comment of an owner's packets after its first in the file.
    fn later(&self, c: &Comment) -> Rc<str> {
        match self.always_full {
            true => c.full.clone(),
            false => c.short.clone(),
        }
    }

    /// The owner's comments, made once per owner.
    fn comments_of(&mut self, key: &Owner, o: &ks_cap_owner) -> Rc<Comment> {
        if let Some(c) = self.comments.get(key) {
            return c.clone();
        }
        if self.comments.len() >= MAX_PROCS {
            self.comments.clear();
        }
        let c = Rc::new(self.make_comments(o));
        self.comments.insert(*key, c.clone());
        c
    }

    fn make_comments(&mut self, o: &ks_cap_owner) -> Comment {
        if o.pid == 0 {
            let text: Rc<str> = "PID: unknown".into();
            return Comment {
                full: text.clone(),
                short: text,
            };
        }
        let raw = decode::c_bytes(&o.comm);
        let mut key = [0u8; 16];
        key.copy_from_slice(&raw[..16]);
        let comm = decode::comm(raw);
        if self.procs.len() >= MAX_PROCS {
            self.procs.clear();
        }
        let p = self
            .procs
            .entry((o.pid, key))
            .or_insert_with(|| read_proc(o.pid, &comm));
        let (cmd, args) = (p.cmd.clone(), p.args.clone());
        let (pid, tid, uid) = (o.pid, o.tid, o.uid);
        let (container, cgroup) = match o.cgroup {
            0 => (None, None),
            id => {
                let (container, path) = self.cgroup(id);
                (container, Some(path))
            }
        };
        let mut full = format!(
            "PID: {pid}\nCmd: {cmd}\nArgs: {args}\nComm: {comm}\nThreadId: {tid}\nUserId: {uid}"
        );
        let mut short = format!("PID: {pid}\nComm: {comm}\nThreadId: {tid}\nUserId: {uid}");
        if let Some(id) = container {
            let _ = write!(full, "\nContainerId: {id}");
            let _ = write!(short, "\nContainerId: {id}");
        }
        if let Some(path) = cgroup {
            let _ = write!(full, "\nCgroup: {path}");
        }
        Comment {
            full: full.into(),
            short: short.into(),
        }
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
                .map(|(_, v)| decode::escape_controls(v).into_owned())
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

/// Field by field: this runs for every packet, and the compiler turns a compare of the
/// owner's 40 bytes into a call to bcmp.
fn same_owner(a: &ks_cap_owner, b: &ks_cap_owner) -> bool {
    a.pid == b.pid
        && a.tid == b.tid
        && a.uid == b.uid
        && a.cgroup == b.cgroup
        && a.pad == b.pad
        && a.comm == b.comm
}

fn read_proc(pid: u32, comm: &str) -> Proc {
    let cmd = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| decode::printable(p.as_os_str().as_encoded_bytes()))
        .unwrap_or_else(|_| comm.to_string());
    let args = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(decode::printable)
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
        let mut namer = Namer::new(Enricher::off(), true);
        assert_eq!(&*namer.comment(&ks_cap_owner::default(), 0), "PID: unknown");
        let mut o = ks_cap_owner {
            pid: u32::MAX, // no such process: Cmd falls back to the comm
            tid: 7,
            uid: 1000,
            ..Default::default()
        };
        for (dst, src) in o.comm.iter_mut().zip(b"a\nPID: 1".iter()) {
            *dst = *src as ksight_bpf::abi::AbiChar;
        }
        let text = namer.comment(&o, 0);
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

    #[test]
    fn short_comments_after_the_first_packet_of_an_owner_in_each_file() {
        let mut namer = Namer::new(Enricher::off(), false);
        let owner = |tid| ks_cap_owner {
            pid: u32::MAX,
            tid,
            uid: 1000,
            ..Default::default()
        };
        let (a, b) = (owner(1), owner(2));
        let first = namer.comment(&a, 0);
        assert!(
            first.contains("\nCmd: ") && first.contains("\nArgs: "),
            "{first}"
        );
        let short = namer.comment(&a, 0);
        assert_eq!(
            &*short,
            "PID: 4294967295\nComm: \nThreadId: 1\nUserId: 1000"
        );
        // another thread: its first packet is full too; then each is short
        assert!(namer.comment(&b, 0).contains("\nCmd: "));
        assert_eq!(namer.comment(&a, 0), short);
        assert!(!namer.comment(&b, 0).contains("\nCmd: "));
        // a new file (or a failed write): full again
        assert!(namer.comment(&a, 1).contains("\nCmd: "));
        assert_eq!(namer.comment(&a, 1), short);
    }
}
