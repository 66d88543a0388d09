//! Compiles every `*.bpf.c` under `bpf/` (`collectors/`, `jobs/`, the feature probes) into an
//! object embedded in the crate, and makes the Rust side of `bpf/include/abi.h`: an anchor
//! object holding every ABI struct and enum in its BTF, whose skeleton's `types` are the Rust
//! types. Nothing here lists a collector or a type: a new `*.bpf.c` gets its `objects::NAME`
//! constant, and a new `struct ks_*`/`enum ks_*` in abi.h its Rust type, without an edit here.
//! `KSIGHT_CLANG` names the clang to use (e.g. clang-19); the default is `clang`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let clang = env::var("KSIGHT_CLANG").unwrap_or_else(|_| "clang".to_string());
    println!("cargo:rerun-if-env-changed=KSIGHT_CLANG");
    println!("cargo:rerun-if-changed=bpf");
    let include = format!("-Ibpf/include/{}", vmlinux_arch());

    let abi = fs::read_to_string("bpf/include/abi.h").expect("bpf/include/abi.h is readable");
    let (structs, enums) = abi_types(&abi);
    let anchor = out.join("abi.bpf.c");
    fs::write(&anchor, anchor_source(&structs, &enums)).expect("OUT_DIR is writable");
    compile(
        &clang,
        &include,
        &anchor,
        &out,
        Some(out.join("abi.skel.rs")),
    );
    fs::write(out.join("abi_plain.rs"), plain_impls(&structs)).expect("OUT_DIR is writable");

    // bpf/examples/: programs written as users write theirs (the config tests load them
    // from files): constants of their own module, which only the tests use.
    let (mut objects, mut examples) = (String::new(), String::new());
    for source in object_sources(Path::new("bpf")) {
        compile(&clang, &include, &source, &out, None);
        let name = stem(&source);
        let list = if source.starts_with("bpf/examples") {
            &mut examples
        } else {
            &mut objects
        };
        let _ = writeln!(
            list,
            "pub const {}: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.bpf.o\"));",
            name.to_uppercase()
        );
    }
    fs::write(out.join("objects.rs"), objects).expect("OUT_DIR is writable");
    fs::write(out.join("examples.rs"), examples).expect("OUT_DIR is writable");

    cc::Build::new()
        .file("bpf/hist_host.c")
        .include("bpf/include")
        .warnings(true)
        .compile("ksight_hist_host");
}

/// Every `*.bpf.c` below `dir`, sorted by name so the build is reproducible (names are unique
/// across folders: each is an `objects::` constant).
fn object_sources(dir: &Path) -> Vec<PathBuf> {
    let mut sources = Vec::new();
    for entry in fs::read_dir(dir).expect("bpf/ is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources.extend(object_sources(&path));
        } else if path.to_string_lossy().ends_with(".bpf.c") {
            sources.push(path);
        }
    }
    sources.sort_by_key(|p| stem(p).to_string());
    sources
}

/// `NAME` of `…/NAME.bpf.c`.
fn stem(source: &Path) -> &str {
    source
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| f.strip_suffix(".bpf.c"))
        .expect("a .bpf.c source")
}

/// The folder of bpf/include holding the target's vmlinux.h, in the kernel's (and libbpf's
/// `__TARGET_ARCH_*`) words: cargo's target, not the host, so a cross build gets its own.
fn vmlinux_arch() -> &'static str {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH is set by cargo");
    match arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => panic!("ksight's kernel side has no vmlinux.h for {other} (bpf/include/ARCH)"),
    }
}

fn compile(clang: &str, include: &str, source: &Path, out: &Path, skeleton: Option<PathBuf>) {
    let stem = stem(source);
    let mut builder = SkeletonBuilder::new();
    builder
        .source(source)
        .obj(out.join(format!("{stem}.bpf.o")))
        .clang(clang)
        .clang_args([
            include,
            "-Ibpf/include",
            "-mcpu=v3",
            "-Wall",
            "-Wno-unused-function",
        ]);
    let result = match skeleton {
        Some(path) => builder.build_and_generate(path),
        None => builder.build(),
    };
    if let Err(err) = result {
        panic!("building {} with {clang} failed: {err:#}", source.display());
    }
}

/// The `struct ks_*` and `enum ks_*` that abi.h defines (a definition starts a line).
fn abi_types(header: &str) -> (Vec<String>, Vec<String>) {
    let defined = |kind: &str| -> Vec<String> {
        header
            .lines()
            .filter_map(|line| line.strip_prefix(kind))
            .filter_map(|rest| rest.strip_suffix(" {"))
            .filter(|name| name.starts_with("ks_") && !name.contains(' '))
            .map(str::to_string)
            .collect()
    };
    (defined("struct "), defined("enum "))
}

/// A never-loaded object with one global of every ABI type, so its BTF (and the skeleton's
/// `types`) has them all.
fn anchor_source(structs: &[String], enums: &[String]) -> String {
    let mut c = String::from(
        "// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause\n\
         /* Generated by build.rs from abi.h: never loaded, it anchors every ABI type in BTF. */\n\
         #include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n#include \"abi.h\"\n",
    );
    for s in structs {
        let _ = writeln!(c, "struct {s} ks_abi_{s};");
    }
    for e in enums {
        let _ = writeln!(c, "enum {e} ks_abi_{e};");
    }
    c.push_str("char LICENSE[] SEC(\"license\") = \"Dual BSD/GPL\";\n");
    c
}

fn plain_impls(structs: &[String]) -> String {
    let mut rs = String::new();
    for s in structs {
        let _ = writeln!(
            rs,
            "// SAFETY: a plain-old-data struct generated from C: every bit pattern is valid.\n\
             unsafe impl plain::Plain for {s} {{}}"
        );
    }
    rs
}
