//! What ships beside the binary (deploy/): the alert rules pass promtool's checks and unit
//! tests, the Grafana dashboard is the one scripts/gen-dashboard.py makes from docs/metrics.md's
//! metric table, and every query of every panel returns data from a real Prometheus that
//! scraped ksight during a workload this test makes. Host only: Prometheus, promtool and
//! python3 are not in the kernel matrix's guests.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::prometheus::*;
use common::workloads::*;
use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed: {text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let rules = repo().join("deploy/prometheus");
    let checked = run_ok(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(rules.join("alerts.yml")),
    );
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    run_ok(
        Command::new("promtool")
            .args(["test", "rules"])
            .arg(rules.join("alerts_test.yml")),
    );
}

fn dashboard() -> serde_json::Value {
    let text =
        std::fs::read_to_string(repo().join("deploy/grafana/ksight.json")).expect("dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every expression of every panel, with Grafana's variables given values Prometheus takes.
fn panel_queries() -> Vec<(String, String)> {
    let board = dashboard();
    let panels = board["panels"].as_array().expect("panels");
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("title").to_string();
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*");
            queries.push((title.clone(), expr));
        }
    }
    queries
}

#[test]
fn the_dashboard_is_generated_from_the_readme_metric_table() {
    let generated = run_ok(Command::new("python3").arg(repo().join("scripts/gen-dashboard.py")));
    let committed =
        std::fs::read_to_string(repo().join("deploy/grafana/ksight.json")).expect("dashboard");
    assert!(
        generated == committed,
        "deploy/grafana/ksight.json is stale: python3 scripts/gen-dashboard.py > deploy/grafana/ksight.json"
    );
    // The generator's reading of the table: a row naming several families (`a` / `_b`)
    // gives a panel each.
    let titles: Vec<String> = panel_queries().into_iter().map(|(t, _)| t).collect();
    for family in [
        "ksight_syscalls_total",
        "ksight_map_capacity",
        "ksight_oom_kills_total",
    ] {
        assert!(titles.iter().any(|t| t == family), "no panel for {family}");
    }
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    require_root!();
    let mut flags = every_collector();
    flags.push("--bpf-stats".into());
    // a config too: its own families (ksight_config_*) are documented like the others
    let configs = example_config_dir("deploy");
    flags.extend(["--config.dir".into(), configs.display().to_string()]);
    flags.extend(["--config.names".into(), "example_writes".into()]);
    let server = Server::start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let prometheus = Prometheus::start(server.port, &[]);
    generate_every_family();
    // Two scrapes after the workload, so every rate has two samples in its minute.
    prometheus.query_until("count_over_time(ksight_oom_kills_total[1m])", |n| n >= 2.0);
    let mut empty = Vec::new();
    for (title, expr) in panel_queries() {
        match prometheus.query(&expr) {
            Ok(samples) if !samples.is_empty() => {}
            answer => empty.push(format!("{title}: {expr}: {answer:?}")),
        }
    }
    assert!(
        empty.is_empty(),
        "queries with no data:\n{}",
        empty.join("\n")
    );
    // docs/metrics.md's table (generated from the registry) is what /metrics holds: every
    // family with its type, and no other.
    let (_, body) = http_get(server.port, "/metrics", None).expect("scrape /metrics");
    let scraped: std::collections::BTreeSet<(String, String)> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter(|l| !l.starts_with("ebpf_exporter_")) // the config's own metrics
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect();
    assert_eq!(
        scraped,
        documented_families(),
        "/metrics against docs/metrics.md"
    );
}

/// (name, type) of every row of docs/metrics.md's generated table.
fn documented_families() -> std::collections::BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(repo().join("docs/metrics.md")).expect("docs/metrics.md");
    let block = text
        .split_once("<!-- metrics:begin -->")
        .and_then(|(_, rest)| rest.split_once("<!-- metrics:end -->"))
        .map(|(block, _)| block)
        .expect("docs/metrics.md has the metrics block");
    block
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| {
            let (name, rest) = l.split_once("` | ")?;
            let kind = rest.split(" | ").next()?;
            Some((name.to_string(), kind.to_string()))
        })
        .collect()
}

/// One of everything ksight counts: processes that start, exit and are killed, a failed open,
/// TCP connections, a ping-pong, direct reads from a loop device, an OOM kill.
fn generate_every_family() {
    for _ in 0..3 {
        run_ok(&mut Command::new("true"));
    }
    let victim = spawn_named(&unique_comm("dash"), || {});
    // SAFETY: killing our own child.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    wait(victim);
    let _ = std::fs::File::open("/nonexistent-ksight/dashboard");
    connect_loop(std::net::Ipv4Addr::LOCALHOST.into(), 5, 100, 100);
    ping_pong(200);
    let dev = LoopDevice::new(16 * 4096);
    std::thread::sleep(std::time::Duration::from_millis(300));
    direct_reads(Path::new(&dev.device), 16);
    oom_killed_in_a_cgroup(&unique_comm("dashoom"));
}

/// `systemd-analyze verify` passes on both units and `security --offline=true` rates the
/// service at most 4.0 ("OK"). (Socket activation with the unit's own command line:
/// endpoint.rs.)
#[test]
fn systemd_units_verify_and_are_rated_ok() {
    let dir = std::env::temp_dir().join(format!("ksight-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for unit in ["ksight.service", "ksight.socket"] {
        let text = std::fs::read_to_string(repo().join("deploy/systemd").join(unit)).expect("unit");
        // verify checks that the binary exists: the one this test was built with.
        let text = text.replace("/usr/local/bin/ksight", KSIGHT);
        std::fs::write(dir.join(unit), text).expect("write unit");
    }
    let verified = run_ok(
        // --man=no: verify otherwise runs man(1) for each Documentation= page, and fails on
        // a machine without man pages installed (a fresh minimal Debian).
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.join("ksight.socket"))
            .arg(dir.join("ksight.service")),
    );
    assert!(
        verified.trim().is_empty(),
        "systemd-analyze verify: {verified}"
    );
    let rated = run_ok(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.join("ksight.service")),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let level: f64 = rated
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for ksight.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {rated}"));
    assert!(level <= 4.0, "exposure {level}: {rated}");
}

/// The release binary (scripts/release; scripts/test passes its path) runs `doctor`,
/// `serve --check` and `capture` with a filter expression in an empty root: only the binary,
/// with /proc, /sys and /dev mounted.
#[test]
fn the_static_binary_runs_in_an_empty_root() {
    require_root!();
    let Some(binary) = static_binary() else {
        return;
    };
    let root = std::env::temp_dir().join(format!("ksight-empty-root-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("empty root");
    let doctor = chroot::run(&root, &binary, &[], &["doctor", "--json"]);
    let check = chroot::run(&root, &binary, &[], &["serve", "--check"]);
    // libpcap is linked in: an expression compiles (and a wrong one is libpcap's error).
    let capture = |expression: &str| {
        let args = ["capture", "-i", "lo", "-d", "1", "-w", "-", expression];
        chroot::run(&root, &binary, &[], &args)
    };
    let filtered = capture("udp and dst port 53 and host 127.0.0.1");
    let broken = capture("udp and and");
    let _ = std::fs::remove_dir_all(&root);
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(doctor.status.success(), "doctor: {}", text(&doctor));
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).expect("doctor JSON");
    assert_eq!(report["btf"]["ok"], true, "{}", text(&doctor));
    assert!(check.status.success(), "serve --check: {}", text(&check));
    assert!(text(&check).contains("syscalls"), "{}", text(&check));
    assert!(filtered.status.success(), "capture: {}", text(&filtered));
    // pcapng's section header block type, first in the stream.
    assert!(
        filtered.stdout.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]),
        "capture: {}",
        text(&filtered)
    );
    assert_eq!(broken.status.code(), Some(2), "{}", text(&broken));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("syntax error"),
        "{}",
        text(&broken)
    );
}

/// The DaemonSet, Service and Namespace against the Kubernetes API schemas (strict), the
/// ServiceMonitor and PodMonitor against the Prometheus Operator's CRD schemas.
#[test]
fn kubernetes_manifests_pass_the_api_and_operator_schemas() {
    let out = run_ok(&mut Command::new(repo().join("scripts/validate-manifests")));
    for valid in [
        "passed for resource daemonset/ksight",
        "passed for resource service/ksight",
        "ServiceMonitor ksight: valid",
        "PodMonitor ksight: valid",
    ] {
        assert!(out.contains(valid), "{valid}: {out}");
    }
}

/// The licence notices shipped with the binary name every crate it links, and the
/// C libraries linked in (the generator fails on a crate that declares no licence).
#[test]
fn licence_notices_cover_every_linked_crate_and_library() {
    let notices = run_ok(Command::new("python3").arg(repo().join("scripts/gen-licenses.py")));
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).expect("Cargo.lock");
    for name in ["tokio", "libbpf-rs", "libbpf-sys", "rustls", "axum", "clap"] {
        let version = lock
            .split("[[package]]")
            .find(|p| p.contains(&format!("name = \"{name}\"\n")))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{name} in Cargo.lock"));
        assert!(
            notices.contains(&format!("## {name} {version}\n")),
            "{name} {version}"
        );
    }
    for library in [
        "## libbpf (vendored",
        "## libpcap (libpcap-1.10.3",
        "## libelf",
        "## zlib",
        "## glibc",
    ] {
        assert!(notices.contains(library), "{library}");
    }
    assert!(
        !notices.contains("## libbpf-cargo"),
        "a build dependency is not shipped"
    );
}
