//! Benchmark floor: loads one empty program of the probe object (e.g. probe_raw_tp_exit),
//! attaches it, prints "attached", and holds it until killed.

use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let program = std::env::args().nth(1).ok_or("usage: floor PROGRAM")?;
    let mut open = libbpf_rs::ObjectBuilder::default().open_memory(ksight_bpf::objects::PROBE)?;
    for mut prog in open.progs_mut() {
        let keep = prog.name() == program.as_str();
        prog.set_autoload(keep);
    }
    let obj = open.load()?;
    let prog = obj
        .progs_mut()
        .find(|p| p.name() == program.as_str())
        .ok_or("no such program")?;
    let _link = prog.attach()?;
    println!("attached");
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
