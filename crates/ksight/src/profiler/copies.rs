//! The user side of stack copies: the records of prof_copies unwound (unwind.rs) and
//! counted here, each new process judged from its first copies (they also carry its
//! frame-pointer stack), and the processes of prof_execs remembered as soon as they exec.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use ksight_bpf::abi::{ks_prof_copy, ks_prof_exec, ks_prof_exec_kind, ks_prof_key, ks_prof_unwind};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::collect::{StackMaps, UNWOUND};
use super::symbols::Symbols;
use super::unwind::Unwinding;
use crate::bpf::LoadedObject;

/// Copies a process is judged on: its frame pointers are used when all but one of these
/// frame-pointer stacks are what the CFI gives.
const JUDGED_ON: u32 = 8;
/// How long after its exec a process's mappings are read again: the dynamic loader maps
/// its libraries within milliseconds.
const EXEC_SETTLE: Duration = Duration::from_millis(20);

/// Stacks by id: return addresses, innermost first.
pub type Stacks = HashMap<i32, Vec<u64>>;

/// An exec or mmap of code not settled yet.
struct Pending {
    at: Instant,
    /// Whether a copy came since and the mappings were read for it.
    read_for_a_copy: bool,
}

#[derive(Default)]
struct Verdict {
    checked: u32,
    broken: u32,
    /// The samples checked so far, with their unwound stacks: counted once the verdict is
    /// in, with the stacks it chooses, so that a process's samples all have stacks of one
    /// kind (a frame-pointer walk and a CFI walk may end differently at the bottom, in the C
    /// library's start code, and would show as two towers in a flame graph).
    held: Vec<(ks_prof_key, Vec<u64>)>,
}

/// How the processes were judged, for the summary.
#[derive(Default)]
pub struct Judged {
    pub frame_pointers: u64,
    pub stack_copies: u64,
    /// Judged to use frame pointers, then mapped more code: judged again.
    pub again: u64,
}

pub struct Copies {
    pub unwinding: Unwinding,
    /// Samples by (key whose user_stack is an unwound stack's id).
    counts: HashMap<Vec<u8>, (ks_prof_key, u64)>,
    stack_ids: HashMap<Vec<u64>, i32>,
    verdicts: HashMap<u32, Verdict>,
    pub judged: Judged,
    pub received: u64,
    stack_maps: StackMaps,
    unwind_map: MapHandle,
    /// --unwind auto: judge the processes.
    judge: bool,
    /// Processes that exec'd or mapped code: their mappings are read at once when a copy of
    /// theirs comes first, and again once settled (settle_execs).
    exec_pending: HashMap<u32, Pending>,
}

impl Copies {
    pub fn new(obj: &LoadedObject, judge: bool) -> Result<Copies> {
        Ok(Copies {
            unwinding: Unwinding::new(),
            counts: HashMap::new(),
            stack_ids: HashMap::new(),
            verdicts: HashMap::new(),
            judged: Judged::default(),
            received: 0,
            stack_maps: StackMaps::open(obj)?,
            unwind_map: obj.map("prof_unwind")?,
            judge,
            exec_pending: HashMap::new(),
        })
    }

    /// One record of prof_copies.
    pub fn record(&mut self, symbols: &mut Symbols, data: &[u8]) {
        let mut rec = ks_prof_copy::default();
        // A shorter record would be a bug of the BPF side: skipped, and visible as
        // received < copied in the summary.
        if plain::copy_from_bytes(&mut rec, data).is_err() {
            return;
        }
        self.received += 1;
        let pid = rec.key.pid;
        // A copy taken after an exec or an mmap of code: read now what is mapped by now. The
        // mmap was seen at its entry, and may not be done yet (an emulated or loaded
        // machine): settle_execs reads again.
        let pending = self.exec_pending.get_mut(&pid);
        let first_since = pending.is_some_and(|p| !std::mem::replace(&mut p.read_for_a_copy, true));
        if !symbols.knows(pid) || first_since {
            symbols.remember(pid);
            self.unwinding.forget(pid);
        }
        let (ips, complete) = self.unwinding.unwind(symbols, &rec);
        let key = rec.key;
        if complete {
            if self.judge && key.user_stack >= 0 {
                self.check_frame_pointers(key, ips);
                return;
            }
        } else if self.frame_pointers_went_further(key.user_stack, ips.len()) {
            // The CFI walk stopped early (say the process exited and its binary was deleted
            // before the copy was read): the frame-pointer stack of the same sample says
            // more, and is what this sample is counted with.
            self.count(key);
            return;
        }
        self.count_unwound(key, ips);
    }

    /// Counts a sample with the stack unwound here.
    fn count_unwound(&mut self, mut key: ks_prof_key, ips: Vec<u64>) {
        let next = UNWOUND + self.stack_ids.len() as i32;
        key.user_stack = *self.stack_ids.entry(ips).or_insert(next);
        self.count(key);
    }

    fn count(&mut self, key: ks_prof_key) {
        // SAFETY: ks_prof_key is Plain (a padding-free C struct); the slice borrows key.
        let bytes = unsafe { plain::as_bytes(&key) }.to_vec();
        self.counts.entry(bytes).or_insert((key, 0)).1 += 1;
    }

    /// Whether the kernel's frame-pointer stack `fp_stack` has more than `unwound` frames.
    fn frame_pointers_went_further(&self, fp_stack: i32, unwound: usize) -> bool {
        fp_stack >= 0
            && matches!(self.stack_maps.read(fp_stack), Ok(Some(fp)) if fp.len() > unwound)
    }

    /// One record of prof_execs: the process's mappings read now (after an exec, before it
    /// may exit) and again in a moment (settle_execs); its verdict forgotten after an exec (a
    /// new program) or a dlopen that took its frame-pointer verdict away (the kernel
    /// deleted it).
    pub fn exec(&mut self, symbols: &mut Symbols, data: &[u8]) {
        let mut rec = ks_prof_exec::default();
        if plain::copy_from_bytes(&mut rec, data).is_err() {
            return;
        }
        let kind = ks_prof_exec_kind(rec.kind);
        self.release_held(rec.pid);
        if kind == ks_prof_exec_kind::KS_PROF_EXECD {
            symbols.remember_at_exec(rec.pid);
            if self.verdicts.remove(&rec.pid).is_some() {
                let _ = self.unwind_map.delete(&rec.pid.to_ne_bytes());
            }
        } else if kind == ks_prof_exec_kind::KS_PROF_REJUDGE
            && self.verdicts.remove(&rec.pid).is_some()
        {
            self.judged.again += 1;
        }
        // A later event restarts the wait: the last mapping must be done before it settles.
        self.exec_pending.insert(
            rec.pid,
            Pending {
                at: Instant::now(),
                read_for_a_copy: false,
            },
        );
        self.unwinding.forget(rec.pid);
    }

    /// Reads again the mappings of processes that exec'd or mapped code at least
    /// EXEC_SETTLE ago, once the dynamic loader has mapped the libraries (if they still live).
    pub fn settle_execs(&mut self, symbols: &mut Symbols) {
        let now = Instant::now();
        self.exec_pending.retain(|&pid, pending| {
            if now.duration_since(pending.at) < EXEC_SETTLE {
                return true;
            }
            if symbols.remember(pid) {
                self.unwinding.forget(pid);
            }
            false
        });
    }

    /// Compares the frame-pointer stack of a sample (key.user_stack) with its CFI
    /// unwinding; after JUDGED_ON samples, tells the BPF program which way this process goes
    /// and counts the samples held until then with the stacks of that way.
    fn check_frame_pointers(&mut self, key: ks_prof_key, unwound: Vec<u64>) {
        let pid = key.pid;
        let fp = match self.stack_maps.read(key.user_stack) {
            Ok(Some(fp)) => fp,
            _ => return self.count_unwound(key, unwound),
        };
        let verdict = self.verdicts.entry(pid).or_default();
        if verdict.checked >= JUDGED_ON {
            // Judged meanwhile (copies already in the ring buffer): the verdict's stacks.
            let frame_pointers = verdict.broken <= 1;
            return match frame_pointers {
                true => self.count(key),
                false => self.count_unwound(key, unwound),
            };
        }
        verdict.checked += 1;
        if !chains_agree(&fp, &unwound) {
            verdict.broken += 1;
        }
        verdict.held.push((key, unwound));
        if verdict.checked < JUDGED_ON {
            return;
        }
        let frame_pointers = verdict.broken <= 1;
        let held = std::mem::take(&mut verdict.held);
        let mode = if frame_pointers {
            self.judged.frame_pointers += 1;
            ks_prof_unwind::KS_PROF_UNWIND_FP
        } else {
            self.judged.stack_copies += 1;
            ks_prof_unwind::KS_PROF_UNWIND_COPY
        };
        let broken = verdict.broken;
        let _ = self
            .unwind_map
            .update(&pid.to_ne_bytes(), &[mode.0 as u8], MapFlags::ANY);
        // Once the BPF program has it: what follows this line is under the verdict.
        let unwind = if frame_pointers {
            "frame_pointers"
        } else {
            "stack_copies"
        };
        tracing::debug!(pid, unwind, broken, "judged");
        for (key, unwound) in held {
            match frame_pointers {
                true => self.count(key),
                false => self.count_unwound(key, unwound),
            }
        }
    }

    /// Counts the samples of a process not judged (yet) with their unwound stacks: copies
    /// are what the stack held.
    fn release_held(&mut self, pid: u32) {
        let held = self
            .verdicts
            .get_mut(&pid)
            .map(|v| std::mem::take(&mut v.held))
            .unwrap_or_default();
        for (key, unwound) in held {
            self.count_unwound(key, unwound);
        }
    }

    /// The samples unwound here, as the kernel's counts are, and their stacks by id.
    pub fn into_counts(mut self) -> (Vec<(ks_prof_key, u64)>, Stacks) {
        let pids: Vec<u32> = self.verdicts.keys().copied().collect();
        for pid in pids {
            self.release_held(pid);
        }
        let stacks = self.stack_ids.into_iter().map(|(s, id)| (id, s)).collect();
        (self.counts.into_values().collect(), stacks)
    }
}

/// Whether a frame-pointer stack is what the CFI unwinding of the same sample gives. Both
/// start at the sampled ip; the frame-pointer walk goes on as long as it finds frame
/// records, so it may end earlier or later than the CFI walk at the bottom of the stack
/// (in the C library's start code, which keeps no frame pointer): only the frames both
/// have are compared, and the frame-pointer stack must have all but the CFI's last two.
fn chains_agree(fp: &[u64], cfi: &[u64]) -> bool {
    let both = fp.len().min(cfi.len());
    fp[..both] == cfi[..both] && fp.len() + 2 >= cfi.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_agree_when_the_frame_pointer_walk_has_the_cfis_frames() {
        assert!(chains_agree(&[1, 2, 3, 4], &[1, 2, 3, 4]));
        // the start code's last frames: missing or followed by garbage
        assert!(chains_agree(&[1, 2, 3], &[1, 2, 3, 4, 5]));
        assert!(chains_agree(&[1, 2, 3, 4, 99], &[1, 2, 3, 4]));
        // the caller of a function without a frame skipped
        assert!(!chains_agree(&[1, 3, 4, 5], &[1, 2, 3, 4, 5]));
        // a chain cut short
        assert!(!chains_agree(&[1], &[1, 2, 3, 4, 5]));
    }
}
