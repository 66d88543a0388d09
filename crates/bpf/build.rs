//! Compiles every `bpf/*.bpf.c` into an object embedded in the crate, and generates the
//! skeleton of `abi.bpf.c`, whose `types` are the Rust side of `bpf/abi.h`.
//! `KSIGHT_CLANG` names the clang to use (e.g. clang-19); the default is `clang`.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const OBJECTS: &[&str] = &[
    "abi", "probe", "syscalls", "process", "files", "tcp", "sched", "block", "memory", "signals",
    "trace",
];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let clang = env::var("KSIGHT_CLANG").unwrap_or_else(|_| "clang".to_string());
    println!("cargo:rerun-if-env-changed=KSIGHT_CLANG");
    println!("cargo:rerun-if-changed=bpf");

    for name in OBJECTS {
        let source = format!("bpf/{name}.bpf.c");
        let mut builder = SkeletonBuilder::new();
        builder
            .source(&source)
            .obj(out.join(format!("{name}.bpf.o")))
            .clang(&clang)
            .clang_args(["-Ibpf", "-mcpu=v3", "-Wall", "-Wno-unused-function"]);
        let result = if *name == "abi" {
            builder.build_and_generate(out.join("abi.skel.rs"))
        } else {
            builder.build()
        };
        if let Err(err) = result {
            panic!("building {source} with {clang} failed: {err:#}");
        }
    }

    cc::Build::new()
        .file("bpf/hist_host.c")
        .include("bpf")
        .warnings(true)
        .compile("ksight_hist_host");
}
