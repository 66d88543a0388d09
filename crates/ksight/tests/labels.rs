//! `--labels`: a workload moved into a cgroup the test creates (the v1 memory hierarchy on a
//! hybrid host, cgroup v2 elsewhere) has its per-process series labelled with that cgroup's
//! path and the container id the path names.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_workload_in_a_container_cgroup_carries_its_labels() {
    require_root!();
    let server = Server::start(&[
        "--collectors",
        "syscalls,process,files,signals",
        "--labels",
        "cgroup,container",
    ]);
    let container = format!("{:064x}", 0xc0ffee_u64 + std::process::id() as u64);
    // Where docker's cgroupfs driver puts a container: only such places name one.
    let cgroup = TestCgroup::new(&format!("docker/{container}"));
    let procs = cgroup.procs_path();
    let comm = unique_comm("lbl");
    let missing = std::ffi::CString::new(format!("/nonexistent/ksight-{comm}")).expect("path");
    let n = 250;
    let before = server.scrape();
    let status = in_child(&comm, || {
        join_cgroup(&procs);
        for _ in 0..n {
            // SAFETY: getppid cannot fail; open of a missing path fails with ENOENT.
            unsafe {
                libc::getppid();
                libc::open(missing.as_ptr(), libc::O_RDONLY);
            }
        }
    });
    assert_eq!(status, 0, "the child could not join {}", cgroup.path);
    let after = server.scrape();
    let ours = [
        ("comm", comm.as_str()),
        ("cgroup", cgroup.path.as_str()),
        ("container", container.as_str()),
    ];
    let mine: Vec<_> = after
        .0
        .iter()
        .filter(|(_, labels, _)| labels.get("comm") == Some(&comm))
        .collect();
    let delta = |name: &str, extra: &[(&str, &str)]| {
        let labels: Vec<(&str, &str)> = ours.iter().chain(extra).copied().collect();
        after.sum(name, &labels) - before.sum(name, &labels)
    };
    assert_eq!(
        delta("ksight_syscalls_total", &[("syscall", "getppid")]),
        n as f64,
        "{mine:?}"
    );
    assert_eq!(
        delta("ksight_file_opens_total", &[("result", "ENOENT")]),
        n as f64
    );
    assert_eq!(delta("ksight_process_exits_total", &[]), 1.0);
    // the same process's counts outside the cgroup would carry other labels: none here
    let anywhere = [("comm", comm.as_str()), ("syscall", "getppid")];
    assert_eq!(
        after.sum("ksight_syscalls_total", &anywhere)
            - before.sum("ksight_syscalls_total", &anywhere),
        n as f64
    );
}

#[test]
fn a_forged_container_scope_inside_a_container_keeps_the_outer_id() {
    require_root!();
    let server = Server::start(&["--collectors", "process", "--labels", "container"]);
    let outer = format!("{:064x}", 0xdecaf_u64 + std::process::id() as u64);
    let forged = format!("{:064x}", 0xbad_u64 + std::process::id() as u64);
    // What a tenant with the container's (delegated) cgroup can make inside it.
    let cgroup = TestCgroup::new(&format!("docker/{outer}/tenant/docker-{forged}.scope"));
    let procs = cgroup.procs_path();
    let comm = unique_comm("forge");
    assert_eq!(in_child(&comm, || join_cgroup(&procs)), 0);
    let after = server.scrape();
    let ours = |container: &str| {
        let labels = [("comm", comm.as_str()), ("container", container)];
        after.sum("ksight_process_exits_total", &labels)
    };
    assert_eq!(ours(&outer), 1.0, "not labelled with the outer container");
    assert_eq!(ours(&forged), 0.0, "labelled with the forged container id");
}

#[test]
fn without_labels_series_have_no_cgroup_label() {
    require_root!();
    let server = Server::start(&["--collectors", "process"]);
    let comm = unique_comm("nolbl");
    in_child(&comm, || {});
    let samples = server.scrape();
    let exits: Vec<_> = samples
        .0
        .iter()
        .filter(|(name, labels, _)| {
            name == "ksight_process_exits_total" && labels.get("comm") == Some(&comm)
        })
        .collect();
    assert_eq!(exits.len(), 1);
    assert!(!exits[0].1.contains_key("cgroup"));
}

#[test]
fn series_stay_within_the_table_budget_while_cgroups_churn() {
    require_root!();
    let capacity = 16;
    let server = Server::start(&[
        "--collectors",
        "process",
        "--labels",
        "cgroup",
        "--table.capacity",
        &capacity.to_string(),
        "--fold-interval",
        "200ms",
    ]);
    let comm = unique_comm("churn");
    let overflow = [("comm", "(other processes)")];
    let name = "ksight_process_exits_total";
    let before = server.scrape();
    let n = 40;
    for i in 0..n {
        let cgroup = TestCgroup::new(&format!("ksight-churn-{}-{i}", std::process::id()));
        let procs = cgroup.procs_path();
        assert_eq!(in_child(&comm, || join_cgroup(&procs)), 0);
        if i % 8 == 7 {
            // let an upkeep round drain and fold
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = server.scrape();
    // Each exit is its own series (its own cgroup): one that is not exported any more was
    // either folded over budget (its series ended, counted) or did not fit the kernel's map
    // (counted in the overflow series).
    let ours = after.sum(name, &[("comm", comm.as_str())]);
    let into_overflow = after.sum(name, &overflow) - before.sum(name, &overflow);
    let folded_series = after.sum("ksight_series_folded_total", &[("collector", "process")])
        - before.sum("ksight_series_folded_total", &[("collector", "process")]);
    assert!(
        ours + into_overflow + folded_series >= n as f64,
        "exits unaccounted for: {ours} exported + {into_overflow} overflow + {folded_series} folded"
    );
    assert!(ours <= n as f64);
    // Our exits are all drained by now (two upkeep rounds since the last one), so the table
    // budget bounds their series. Other processes on the machine may have exited since the
    // last drain: the live map holds those, up to another `capacity` keys.
    let ours_series = after.count(name, &[("comm", comm.as_str())]);
    assert!(
        ours_series <= capacity,
        "{ours_series} exit series of the test's process for a budget of {capacity}"
    );
    let series = after.count(name, &[]);
    assert!(
        series <= 2 * capacity + 1,
        "{series} exit series for a budget of {capacity} (drained) + {capacity} (live map)"
    );
}
