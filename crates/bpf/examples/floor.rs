//! Benchmark floor: loads empty programs of the feature-probe object (feature_probes.bpf.c) (e.g. probe_raw_tp_exit, or
//! several: the hooks of one collector), attaches them, prints "attached", and holds them
//! until killed. A perf_event program (probe_perf_event) is attached to a cpu-clock event on
//! every online CPU at FLOOR_HZ samples per second (default 99), as `ksight profile` opens
//! them.

use std::io::Write;

// The very events `ksight profile` samples on, so the floor differs from it only in the
// program's body.
#[path = "../../ksight/src/bpf/perf_event.rs"]
#[allow(dead_code)]
mod perf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let programs: Vec<String> = std::env::args().skip(1).collect();
    if programs.is_empty() {
        return Err("usage: floor PROGRAM...".into());
    }
    let mut open =
        libbpf_rs::ObjectBuilder::default().open_memory(ksight_bpf::objects::FEATURE_PROBES)?;
    for mut prog in open.progs_mut() {
        let keep = programs.iter().any(|p| prog.name() == p.as_str());
        prog.set_autoload(keep);
    }
    let obj = open.load()?;
    let hz: u64 = std::env::var("FLOOR_HZ").map_or(Ok(99), |v| v.parse())?;
    let mut links = Vec::new();
    let mut events = Vec::new();
    for name in &programs {
        let prog = obj
            .progs_mut()
            .find(|p| p.name() == name.as_str())
            .ok_or_else(|| format!("no such program: {name}"))?;
        if prog.prog_type() == libbpf_rs::ProgramType::PerfEvent {
            for fd in perf::open_cpu_clocks(hz)? {
                links.push(prog.attach_perf_event(std::os::fd::AsRawFd::as_raw_fd(&fd))?);
                events.push(fd);
            }
        } else {
            links.push(prog.attach()?);
        }
    }
    println!("attached");
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
