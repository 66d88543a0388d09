//! Build facts for `ksight --version` and `ksight_build_info`: the git revision (`unknown`
//! outside a git checkout, e.g. from a source tarball) and the rustc version.

use std::process::Command;

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let revision = output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or("unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or("unknown".into());
    println!("cargo:rustc-env=KSIGHT_GIT_REVISION={revision}");
    println!("cargo:rustc-env=KSIGHT_RUSTC_VERSION={rustc_version}");
    // A new commit changes HEAD (a branch) or the ref it names.
    for path in ["../../.git/HEAD", "../../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
