//! Benchmark floor: loads empty programs of the probe object (e.g. probe_raw_tp_exit, or
//! several: the hooks of one collector), attaches them, prints "attached", and holds them
//! until killed.

use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let programs: Vec<String> = std::env::args().skip(1).collect();
    if programs.is_empty() {
        return Err("usage: floor PROGRAM...".into());
    }
    let mut open = libbpf_rs::ObjectBuilder::default().open_memory(ksight_bpf::objects::PROBE)?;
    for mut prog in open.progs_mut() {
        let keep = programs.iter().any(|p| prog.name() == p.as_str());
        prog.set_autoload(keep);
    }
    let obj = open.load()?;
    let mut links = Vec::new();
    for name in &programs {
        let prog = obj
            .progs_mut()
            .find(|p| p.name() == name.as_str())
            .ok_or_else(|| format!("no such program: {name}"))?;
        links.push(prog.attach()?);
    }
    println!("attached");
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
