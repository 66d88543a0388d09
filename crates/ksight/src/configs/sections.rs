//! The sections ebpf_exporter attaches itself, because libbpf cannot from the name alone:
//! `perf_event/type=N,config=N,frequency=N` (or `sample_period=N`) on every CPU, and
//! `xdp/IFNAME`.

use anyhow::{anyhow, bail, Result};

use crate::bpf::perf_event::{open_events, Sampling};
use crate::bpf::LoadedObject;

/// Whether ksight attaches `section` here rather than libbpf.
pub fn ours(section: &str) -> bool {
    section.starts_with("perf_event") || section.starts_with("xdp")
}

/// The program type of the sections attached here (libbpf knows neither name).
pub fn program_type(section: &str) -> Option<libbpf_rs::ProgramType> {
    if section.starts_with("perf_event") {
        Some(libbpf_rs::ProgramType::PerfEvent)
    } else if section.starts_with("xdp/") {
        Some(libbpf_rs::ProgramType::Xdp)
    } else {
        None
    }
}

/// Attaches `program` as its section says.
pub fn attach(obj: &mut LoadedObject, program: &str, section: &str) -> Result<()> {
    if let Some(spec) = section.strip_prefix("perf_event/") {
        let (type_, config, sampling) = perf_event_spec(spec)?;
        for fd in open_events(type_, config, sampling)? {
            obj.attach_perf_event(program, fd)?;
        }
        return Ok(());
    }
    if let Some(ifname) = section.strip_prefix("xdp/") {
        return obj.attach_xdp(program, interface_index(ifname)?);
    }
    bail!("{section}: name the event (perf_event/type=N,config=N,frequency=N) or the interface (xdp/IFNAME)")
}

/// `type=1,config=0,frequency=99` (or `sample_period=N` instead of the frequency).
fn perf_event_spec(spec: &str) -> Result<(u32, u64, Sampling)> {
    let (mut type_, mut config, mut sampling) = (None, None, None);
    for part in spec.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("perf_event/{spec}: {part:?} is not key=value"))?;
        let number = || -> Result<u64> {
            let parsed = match value.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => value.parse(),
            };
            parsed.map_err(|_| anyhow!("perf_event/{spec}: {key}={value} is not a number"))
        };
        match key {
            "type" => type_ = Some(u32::try_from(number()?)?),
            "config" => config = Some(number()?),
            "frequency" => sampling = Some(Sampling::Frequency(number()?)),
            "sample_period" => sampling = Some(Sampling::Period(number()?)),
            other => bail!(
                "perf_event/{spec}: unknown key {other:?} (type, config, frequency, sample_period)"
            ),
        }
    }
    match (type_, config, sampling) {
        (Some(t), Some(c), Some(s)) if s != Sampling::Frequency(0) && s != Sampling::Period(0) => {
            Ok((t, c, s))
        }
        _ => {
            bail!("perf_event/{spec}: needs type, config and a non-zero frequency or sample_period")
        }
    }
}

fn interface_index(ifname: &str) -> Result<i32> {
    let name =
        std::ffi::CString::new(ifname).map_err(|_| anyhow!("xdp/{ifname}: a NUL in the name"))?;
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!(
            "xdp/{}: no such interface",
            crate::decode::printable(ifname.as_bytes())
        );
    }
    i32::try_from(index).map_err(|_| anyhow!("xdp/{ifname}: index {index} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_event_specs() {
        assert_eq!(
            perf_event_spec("type=1,config=0,frequency=99").ok(),
            Some((1, 0, Sampling::Frequency(99)))
        );
        assert_eq!(
            perf_event_spec("type=0,config=0x1,sample_period=1000").ok(),
            Some((0, 1, Sampling::Period(1000)))
        );
        assert!(perf_event_spec("type=1,config=0").is_err(), "no sampling");
        assert!(perf_event_spec("type=1,config=0,frequency=0").is_err());
        assert!(perf_event_spec("type=1,config=0,frequency=99,bogus=1").is_err());
        assert!(perf_event_spec("type=x,config=0,frequency=1").is_err());
    }

    #[test]
    fn interfaces_by_name() {
        assert_eq!(interface_index("lo").ok(), Some(1));
        assert!(interface_index("no-such-if0").is_err());
    }
}
