//! Perf events on each online CPU: the profiler's sampling clock, the user-mode page faults
//! the `page_faults` collector counts where no tracepoint gives them, and the events a
//! config's `perf_event/type=…,config=…` section names.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{anyhow, Context, Result};

/// One cpu-clock event per online CPU, sampling at `hz` (the kernel adjusts the period to
/// keep the frequency), enabled at once.
pub fn open_cpu_clocks(hz: u64) -> Result<Vec<OwnedFd>> {
    on_every_cpu("cpu-clock", |cpu| open_cpu_clock(cpu, hz))
}

/// One user-mode page-fault event per online CPU, each fault an overflow (period 1), enabled
/// at once: the page_faults collector's perf_event hook.
pub fn open_user_page_faults() -> Result<Vec<OwnedFd>> {
    on_every_cpu("page-faults:u", |cpu| {
        let mut attr = software_event(libbpf_sys::PERF_COUNT_SW_PAGE_FAULTS);
        attr.__bindgen_anon_1.sample_period = 1;
        attr.set_exclude_kernel(1);
        attr.set_exclude_hv(1);
        open_on_cpu(&attr, cpu)
    })
}

/// How often an event runs its program: at a frequency, or every `n`th occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    Frequency(u64),
    Period(u64),
}

/// The event `type_`/`config` (perf_event_open's numbers) on every online CPU, enabled.
pub fn open_events(type_: u32, config: u64, sampling: Sampling) -> Result<Vec<OwnedFd>> {
    on_every_cpu(&format!("type {type_} config {config}"), |cpu| {
        let mut attr = libbpf_sys::perf_event_attr {
            type_,
            size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
            config,
            ..Default::default()
        };
        match sampling {
            Sampling::Frequency(hz) => {
                attr.__bindgen_anon_1.sample_freq = hz;
                attr.set_freq(1);
            }
            Sampling::Period(n) => attr.__bindgen_anon_1.sample_period = n,
        }
        open_on_cpu(&attr, cpu)
    })
}

fn on_every_cpu(what: &str, open: impl Fn(u32) -> io::Result<OwnedFd>) -> Result<Vec<OwnedFd>> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .context("reading /sys/devices/system/cpu/online")?;
    let cpus = parse_cpu_list(&online).ok_or_else(|| anyhow!("bad CPU list {online:?}"))?;
    cpus.into_iter()
        .map(|cpu| open(cpu).map_err(|e| anyhow!("perf_event_open ({what}) on CPU {cpu}: {e}")))
        .collect()
}

/// A cpu-clock event on `cpu` sampling at `hz`, enabled (also the feature probe's).
pub fn open_cpu_clock(cpu: u32, hz: u64) -> io::Result<OwnedFd> {
    let mut attr = software_event(libbpf_sys::PERF_COUNT_SW_CPU_CLOCK);
    attr.__bindgen_anon_1.sample_freq = hz;
    attr.set_freq(1);
    open_on_cpu(&attr, cpu)
}

fn software_event(config: u32) -> libbpf_sys::perf_event_attr {
    libbpf_sys::perf_event_attr {
        type_: libbpf_sys::PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        config: u64::from(config),
        ..Default::default()
    }
}

/// `attr` opened for every task on `cpu`.
fn open_on_cpu(attr: &libbpf_sys::perf_event_attr, cpu: u32) -> io::Result<OwnedFd> {
    // SAFETY: attr is a zero-initialised perf_event_attr of the size it states; pid -1 with a
    // CPU counts every task on that CPU; the returned fd is ours alone.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            std::ptr::from_ref(attr),
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            libc::c_ulong::from(libbpf_sys::PERF_FLAG_FD_CLOEXEC),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor no one else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `0-3,5,7-8` (the kernel's CPU list format) as CPU numbers.
fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<u32>().ok()?..=b.parse::<u32>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-3,7"), Some(vec![0, 2, 3, 7]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
