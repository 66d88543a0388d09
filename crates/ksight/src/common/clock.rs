//! Clocks: the kernel's monotonic stamps (bpf_ktime_get_ns) and their wall-clock time.

/// A clock in ns.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns().
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Maps the kernel's CLOCK_MONOTONIC stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Clock {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let mono = monotonic_ns();
        Clock {
            offset_ns: real as i128 - mono as i128,
        }
    }

    /// A clock whose monotonic stamps are already wall-clock time: tests' fixed outputs.
    #[cfg(test)]
    pub fn identity() -> Clock {
        Clock { offset_ns: 0 }
    }

    pub fn wall(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }
}
