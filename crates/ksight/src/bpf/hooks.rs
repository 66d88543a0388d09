//! Hook kinds, in the words `doctor`, logs and `ksight_collector_info{hook}` use.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    TpBtf,
    RawTp,
    Tracepoint,
    Fentry,
    Kprobe,
    Uprobe,
    PerfEvent,
}

impl Hook {
    pub const ALL: [Hook; 7] = [
        Hook::Tracepoint,
        Hook::RawTp,
        Hook::TpBtf,
        Hook::Fentry,
        Hook::Kprobe,
        Hook::Uprobe,
        Hook::PerfEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::TpBtf => "tp_btf",
            Hook::RawTp => "raw_tp",
            Hook::Tracepoint => "tracepoint",
            Hook::Fentry => "fentry",
            Hook::Kprobe => "kprobe",
            Hook::Uprobe => "uprobe",
            Hook::PerfEvent => "perf_event",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One way a collector can attach: a hook kind and the programs of its object that use it,
/// or another collector's object whose programs already do the work (`shared_with`).
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub hook: Hook,
    pub programs: &'static [&'static str],
    pub shared_with: Option<&'static str>,
    /// Maps only these programs use: created only when this candidate is the one loaded, so
    /// a map type an older kernel lacks (task storage on 5.10) does not fail the others.
    pub maps: &'static [&'static str],
    /// perf_event programs: opens the events each program attaches to (one per CPU).
    pub perf_events: Option<fn() -> anyhow::Result<Vec<std::os::fd::OwnedFd>>>,
}

impl Candidate {
    pub const fn own(hook: Hook, programs: &'static [&'static str]) -> Self {
        Self {
            hook,
            programs,
            shared_with: None,
            maps: &[],
            perf_events: None,
        }
    }

    /// perf_event `programs`, each attached to the events `open` opens.
    pub const fn perf_events(
        programs: &'static [&'static str],
        open: fn() -> anyhow::Result<Vec<std::os::fd::OwnedFd>>,
    ) -> Self {
        Self {
            perf_events: Some(open),
            ..Self::own(Hook::PerfEvent, programs)
        }
    }

    /// The same candidate, with maps of its own (see `maps`).
    pub const fn with_maps(self, maps: &'static [&'static str]) -> Self {
        Self { maps, ..self }
    }

    /// Counting in the programs of the running collector `host`, on whatever hook it uses.
    pub const fn shared(host: &'static str) -> Self {
        Self {
            hook: Hook::TpBtf,
            programs: &[],
            shared_with: Some(host),
            maps: &[],
            perf_events: None,
        }
    }
}
