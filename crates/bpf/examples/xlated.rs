//! Prints the kernel's translated instructions (`bpftool prog dump xlated`) of every program
//! in the given objects, each program loaded on its own, with map ids left out: two builds
//! whose outputs are equal load the same code. A program this kernel refuses is one line
//! saying so. Used to show that a restructure moved code without changing it.

use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        return Err("usage: xlated OBJECT.bpf.o...".into());
    }
    for path in &paths {
        let names: Vec<String> = libbpf_rs::ObjectBuilder::default()
            .open_file(path)?
            .progs()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        let stem = std::path::Path::new(path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned());
        for name in names {
            println!("== {} {name}", stem.as_deref().unwrap_or(path));
            print!("{}", dump(path, &name)?);
        }
    }
    Ok(())
}

fn dump(path: &str, name: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut open = libbpf_rs::ObjectBuilder::default().open_file(path)?;
    for mut prog in open.progs_mut() {
        let keep = prog.name() == name;
        prog.set_autoload(keep);
    }
    let obj = match open.load() {
        Ok(obj) => obj,
        Err(err) => return Ok(format!("refused: {}\n", err.kind() as i32)),
    };
    let prog = obj
        .progs()
        .find(|p| p.name() == name)
        .ok_or("program vanished")?;
    // The id of this very program (by name, another process's program could answer).
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&prog));
    // SAFETY: info is a zeroed bpf_prog_info of the size len states; fd is the program's.
    let rc = unsafe { libbpf_sys::bpf_obj_get_info_by_fd(fd, (&raw mut info).cast(), &mut len) };
    if rc != 0 {
        return Err(format!("bpf_obj_get_info_by_fd: {rc}").into());
    }
    let id = info.id;
    let out = Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &id.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut clean = String::new();
    for line in text.lines() {
        clean.push_str(&strip_map_ids(line));
        clean.push('\n');
    }
    Ok(clean)
}

/// `map[id:123]` → `map[]`: ids change from load to load.
fn strip_map_ids(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("map[id:") {
        out.push_str(&rest[..at + 4]);
        rest = &rest[at + 4..];
        if let Some(end) = rest.find(']') {
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}
