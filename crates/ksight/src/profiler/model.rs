//! A profile once symbolized: what every output format is written from.

use std::time::{Duration, SystemTime};

/// One frame of a stack; kernel frames come after (above) the user frames.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub name: String,
    pub kernel: bool,
}

/// The samples of one thread on one stack.
#[derive(Clone, Debug)]
pub struct Stack {
    pub pid: u32,
    pub tid: u32,
    /// The process's name, in the printable form (decode::printable).
    pub comm: String,
    pub thread: String,
    pub container: Option<String>,
    /// Outermost first.
    pub frames: Vec<Frame>,
    pub count: u64,
}

pub struct Profile {
    pub stacks: Vec<Stack>,
    pub frequency: u64,
    pub started: SystemTime,
    pub duration: Duration,
}

impl Profile {
    /// The sampling period: what one sample stands for in CPU time.
    pub fn period_ns(&self) -> u64 {
        1_000_000_000 / self.frequency.max(1)
    }

    pub fn samples(&self) -> u64 {
        self.stacks.iter().map(|s| s.count).sum()
    }
}
