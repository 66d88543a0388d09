//! Builds libpcap from the source tarball committed beside this file (Debian's
//! libpcap_1.10.3.orig.tar.gz, the upstream release) into a static archive linked into
//! ksight: no network at build time, no libpcap shared library at run time.
//!
//! Only the filter compiler is used, so every optional capture backend and the libraries
//! they pull in are left out: no D-Bus, RDMA, libnl, Bluetooth, USB, netmap, DPDK or remote
//! capture. The archive then needs nothing but libc (and flex, bison, make and a C compiler
//! to build; scripts/deps installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

const TARBALL: &str = "libpcap_1.10.3.orig.tar.gz";
const SOURCE_DIR: &str = "libpcap-1.10.3";
/// From Debian's libpcap_1.10.3-1.dsc (Checksums-Sha256).
const SHA256: &str = "2a8885c403516cf7b0933ed4b14d6caa30e02052489ebd414dc75ac52e7559e6";

const CONFIGURE_FLAGS: &[&str] = &[
    "--disable-shared",
    "--with-pcap=linux",
    "--without-libnl",
    "--disable-dbus",
    "--disable-rdma",
    "--disable-bluetooth",
    "--disable-usb",
    "--disable-netmap",
    "--disable-remote",
    "--without-dpdk",
    "--without-dag",
    "--without-septel",
    "--without-snf",
    "--without-turbocap",
];

fn main() {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let tarball = manifest.join(TARBALL);
    println!("cargo:rerun-if-changed={}", tarball.display());
    println!("cargo:rerun-if-changed=build.rs");
    verify_checksum(&tarball);

    let out = PathBuf::from(env("OUT_DIR"));
    let source = out.join(SOURCE_DIR);
    let build = out.join("build");
    for dir in [&source, &build] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
    }
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&out));
    std::fs::create_dir_all(&build).unwrap_or_else(|e| panic!("{}: {e}", build.display()));
    let mut configure = Command::new(source.join("configure"));
    configure
        .args(CONFIGURE_FLAGS)
        // -fPIC: the static release binary is a static PIE.
        .env("CFLAGS", "-O2 -fPIC")
        .current_dir(&build);
    cross_compile(&mut configure);
    run(&mut configure);
    let jobs = std::env::var("NUM_JOBS").unwrap_or_else(|_| "1".into());
    run(Command::new("make")
        .arg(format!("-j{jobs}"))
        .arg("libpcap.a")
        .current_dir(&build));

    println!("cargo:rustc-link-search=native={}", build.display());
    println!("cargo:rustc-link-lib=static=pcap");
}

/// For another target than the host (e.g. aarch64 from x86_64): autoconf's `--host` and the
/// C compiler the `cc` crate picks for that target (`CC_<target>`, else `<triple>-gcc`).
fn cross_compile(configure: &mut Command) {
    let (target, host) = (env("TARGET"), env("HOST"));
    if target == host {
        return;
    }
    // aarch64-unknown-linux-gnu → aarch64-linux-gnu, the GNU triple the toolchains use.
    let triple = target.replacen("-unknown-", "-", 1);
    let compiler = cc::Build::new().get_compiler();
    configure
        .arg(format!("--host={triple}"))
        .env("CC", compiler.path());
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}

/// The committed tarball is the one Debian's source package names, byte for byte.
fn verify_checksum(tarball: &Path) {
    let out = Command::new("sha256sum")
        .arg(tarball)
        .output()
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let digest = text.split_whitespace().next().unwrap_or("");
    assert!(
        out.status.success() && digest == SHA256,
        "{}: SHA-256 {digest:?}, expected {SHA256}",
        tarball.display()
    );
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (scripts/deps installs the build tools)"));
    if !out.status.success() {
        let tail = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        panic!(
            "{command:?} failed ({}); flex, bison, make and gcc are needed (scripts/deps)\n{}\n{}",
            out.status,
            tail(&out.stdout),
            tail(&out.stderr)
        );
    }
}
