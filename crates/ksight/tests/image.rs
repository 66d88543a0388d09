//! The container image (deploy/container/Dockerfile), built as its header says from the
//! binary scripts/release made, with buildah: no daemon, chroot isolation, vfs storage in a
//! directory of the test's own, nothing pulled. Its configuration says how it runs, its root
//! holds the binary and the licence notices and nothing else, and that root runs `doctor` and
//! `serve --check` chrooted, with only the capabilities docs/deploy.md's run flags give. Host
//! only: buildah is not in the kernel matrix's guests, and nothing here depends on the kernel.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const TAG: &str = "localhost/ksight:test";
const ENTRYPOINT: &str = "/usr/local/bin/ksight";
const LICENCES: &str = "usr/share/doc/ksight/THIRD-PARTY-LICENSES";
// docs/deploy.md's `--cap-add` list for serve: CAP_SYS_ADMIN (21), CAP_SYS_RESOURCE (24),
// CAP_PERFMON (38), CAP_BPF (39).
const RUN_CAPABILITIES: &[u32] = &[21, 24, 38, 39];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// buildah with its storage under `store` (removed with it), vfs: no overlay mounts.
struct Buildah {
    store: PathBuf,
}

impl Buildah {
    /// A store of its own per test: the tests of this file run side by side, and each one's
    /// cleanup removes everything in its store.
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("ksight-buildah-{}-{n}", std::process::id());
        Buildah {
            store: std::env::temp_dir().join(name),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("buildah")
            .arg("--root")
            .arg(self.store.join("root"))
            .arg("--runroot")
            .arg(self.store.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("buildah runs (scripts/deps installs it)");
        assert!(out.status.success(), "buildah {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        let _ = Command::new("buildah")
            .arg("--root")
            .arg(self.store.join("root"))
            .arg("--runroot")
            .arg(self.store.join("run"))
            .args(["--storage-driver", "vfs", "rm", "--all"])
            .output();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file (not directory) under `root`, relative to it.
fn files_under(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("under root");
                files.push(relative.display().to_string());
            }
        }
    }
    files.sort();
    files
}

fn cargo_version() -> String {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("workspace version")
        .to_string()
}

#[test]
fn the_image_holds_the_binary_and_notices_and_runs_with_the_documented_capabilities() {
    require_root!();
    let Some(binary) = static_binary() else {
        return;
    };
    // The context is the directory scripts/release wrote, as the Dockerfile's header says.
    let context = Path::new(&binary).parent().expect("release directory");
    let dockerfile = repo().join("deploy/container/Dockerfile");
    let buildah = Buildah::new();
    buildah.run(&[
        "bud",
        "--isolation",
        "chroot",
        "--pull=never",
        "--quiet",
        "--build-arg",
        "BINARY_FROM=prebuilt",
        "-f",
        dockerfile.to_str().expect("path"),
        "-t",
        TAG,
        context.to_str().expect("path"),
    ]);

    let inspected = buildah.run(&["inspect", "--type", "image", TAG]);
    let inspected: serde_json::Value = serde_json::from_str(&inspected).expect("inspect JSON");
    let config = &inspected["OCIv1"]["config"];
    assert_eq!(config["Entrypoint"], serde_json::json!([ENTRYPOINT]));
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]));
    assert!(config["ExposedPorts"].get("9712/tcp").is_some(), "{config}");
    let labels = &config["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        "MIT OR Apache-2.0"
    );
    assert_eq!(labels["org.opencontainers.image.version"], cargo_version());

    let container = buildah.run(&["from", "--pull=never", TAG]);
    let root = PathBuf::from(buildah.run(&["mount", &container]));
    assert_eq!(
        files_under(&root),
        ["usr/local/bin/ksight", LICENCES],
        "the image holds the binary and its notices, nothing else"
    );
    let same = |inside: &str, outside: &Path| {
        std::fs::read(root.join(inside)).expect("in the image")
            == std::fs::read(outside).expect("beside the binary")
    };
    assert!(same("usr/local/bin/ksight", Path::new(&binary)));
    assert!(same(LICENCES, &context.join("THIRD-PARTY-LICENSES")));

    let doctor = chroot::run_inside(&root, ENTRYPOINT, &["doctor", "--json"], RUN_CAPABILITIES);
    let check = chroot::run_inside(&root, ENTRYPOINT, &["serve", "--check"], RUN_CAPABILITIES);
    assert!(doctor.status.success(), "doctor: {}", text(&doctor));
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).expect("doctor JSON");
    assert_eq!(report["btf"]["ok"], true, "{}", text(&doctor));
    assert!(check.status.success(), "serve --check: {}", text(&check));
    assert!(text(&check).contains("syscalls"), "{}", text(&check));
    // The bounding set is what limits it: without BPF, PERFMON and SYS_ADMIN it cannot load.
    let without = chroot::run_inside(&root, ENTRYPOINT, &["serve", "--check"], &[24]);
    assert_eq!(without.status.code(), Some(1), "{}", text(&without));
    assert!(
        text(&without).contains("needs root (or CAP_BPF and CAP_PERFMON)"),
        "{}",
        text(&without)
    );
}

/// scripts/image: one manifest list with an x86_64 and an arm64 image, each holding the
/// binary scripts/release made for it (the arm64 one cross-built: CI names it in
/// KSIGHT_STATIC_BINARY_ARM64).
#[test]
fn the_manifest_list_holds_an_image_per_architecture() {
    require_root!();
    let Some(binary) = static_binary() else {
        return;
    };
    let arm64 = std::env::var("KSIGHT_STATIC_BINARY_ARM64").ok();
    let Some(arm64) = arm64 else {
        assert!(
            std::env::var_os("CI").is_none(),
            "KSIGHT_STATIC_BINARY_ARM64 unset in CI"
        );
        eprintln!("SKIPPED: KSIGHT_STATIC_BINARY_ARM64 unset (scripts/release --target aarch64-unknown-linux-gnu)");
        return;
    };
    let buildah = Buildah::new();
    let tag = "localhost/ksight-manifest-test:latest";
    let global = format!(
        "buildah --root {} --runroot {} --storage-driver vfs",
        buildah.store.join("root").display(),
        buildah.store.join("run").display()
    );
    // scripts/image reads target/dist and target/dist-arm64 of the checkout.
    for (wanted, made) in [
        ("target/dist/ksight", &binary),
        ("target/dist-arm64/ksight", &arm64),
    ] {
        assert_eq!(
            repo().join(wanted).canonicalize().ok(),
            Path::new(made).canonicalize().ok()
        );
    }
    let out = Command::new(repo().join("scripts/image"))
        .arg(tag)
        .env("BUILDAH", &global)
        .output()
        .expect("scripts/image runs");
    assert!(out.status.success(), "scripts/image: {}", text(&out));

    let list = buildah.run(&["manifest", "inspect", tag]);
    let list: serde_json::Value = serde_json::from_str(&list).expect("manifest JSON");
    let mut platforms: Vec<String> = list["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| format!("{}/{}", m["platform"]["os"], m["platform"]["architecture"]))
        .collect();
    platforms.sort();
    assert_eq!(platforms, [r#""linux"/"amd64""#, r#""linux"/"arm64""#]);
    for (arch, made) in [("amd64", &binary), ("arm64", &arm64)] {
        let image = format!("{tag}-{arch}");
        let container = buildah.run(&["from", "--pull=never", &image]);
        let root = PathBuf::from(buildah.run(&["mount", &container]));
        assert_eq!(
            std::fs::read(root.join("usr/local/bin/ksight")).ok(),
            std::fs::read(made).ok(),
            "{arch}: the image holds that architecture's binary"
        );
    }
}
