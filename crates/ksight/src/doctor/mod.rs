//! `ksight doctor`: what this kernel really supports, found by loading and attaching tiny
//! programs (not by reading version numbers; crate::bpf::features, which the jobs themselves ask),
//! what each job (serve, trace, profile, capture, `serve --pin`) can do with it, and the hook
//! each collector would use.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::bpf::features::{self, Answer, Feature};
use crate::bpf::hooks::Hook;
use crate::bpf::LoadConfig;
use crate::collector::{self, Limits, OptionValues};
use crate::collectors;
use crate::enrich::Enricher;
use crate::privileges;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    btf: Check,
    tracefs: String,
    /// A BPF filesystem at /sys/fs/bpf, for `serve --pin`.
    bpffs: Check,
    privileges: Privileges,
    /// The hook kinds, the ring buffer and task storage (the keys scripts/vmtest reads).
    hooks: Vec<Answer>,
    /// Every feature probed, hooks included.
    features: Vec<Answer>,
    jobs: Vec<JobReport>,
    collectors: Vec<CollectorReport>,
    ok: bool,
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct Privileges {
    euid: u32,
    capabilities: Vec<&'static str>,
    can_load: bool,
    /// What `setcap …+ep` must give a non-root ksight on this kernel.
    minimal: Vec<&'static str>,
}

#[derive(Serialize)]
struct CollectorReport {
    name: &'static str,
    default: bool,
    hook: String,
    detail: String,
    /// The metric families it exports (JSON only: docs/metrics.md describes them).
    families: Vec<FamilyReport>,
}

#[derive(Serialize)]
struct FamilyReport {
    name: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    labels: &'static [&'static str],
}

/// What a job does with one feature.
#[derive(Clone, Copy)]
enum Role {
    /// The job cannot run without it.
    Needed,
    /// One feature of the group (the first that works is used).
    OneOf(&'static str),
    /// Without it the job runs, without what the text says.
    Optional(&'static str),
}

struct Need {
    feature: Feature,
    role: Role,
}

const fn needed(feature: Feature) -> Need {
    Need {
        feature,
        role: Role::Needed,
    }
}

const fn one_of(group: &'static str, feature: Feature) -> Need {
    Need {
        feature,
        role: Role::OneOf(group),
    }
}

const fn optional(feature: Feature, gives: &'static str) -> Need {
    Need {
        feature,
        role: Role::Optional(gives),
    }
}

/// What each job uses, in the order its loader tries them.
const JOBS: [(&str, &[Need]); 5] = [
    (
        "serve",
        &[
            one_of("a tracing hook", Feature::TpBtf),
            one_of("a tracing hook", Feature::RawTp),
            one_of("a tracing hook", Feature::Tracepoint),
            optional(Feature::Fentry, "the files collector's cheapest hook"),
            optional(
                Feature::Kprobe,
                "the files collector's hook where fentry is refused",
            ),
            optional(Feature::TaskStorage, "the sched collector's per-task state"),
            optional(Feature::Tracefs, "classic tracepoints, the last fallback"),
        ],
    ),
    (
        "trace",
        &[
            needed(Feature::RingBuffer),
            one_of("a tracing hook", Feature::TpBtf),
            one_of("a tracing hook", Feature::RawTp),
            one_of("a tracing hook", Feature::Tracepoint),
            optional(Feature::Uprobe, "trace readline"),
        ],
    ),
    (
        "profile",
        &[
            needed(Feature::PerfEvent),
            needed(Feature::StackMap),
            needed(Feature::RingBuffer),
            needed(Feature::Tracepoint),
        ],
    ),
    (
        "capture",
        &[
            one_of("a TC hook", Feature::Tcx),
            one_of("a TC hook", Feature::Clsact),
            needed(Feature::RingBuffer),
            needed(Feature::SockStorage),
            optional(
                Feature::SockHooks,
                "packets named from sockets opened while it runs",
            ),
            optional(
                Feature::TaskFileIter,
                "sockets open before start named in the kernel",
            ),
            optional(
                Feature::PidfdGetfd,
                "sockets open before start named from user space",
            ),
        ],
    ),
    ("serve --pin", &[needed(Feature::Bpffs)]),
];

#[derive(Serialize)]
struct JobReport {
    name: &'static str,
    ok: bool,
    /// The features it would use here, in its loader's order.
    uses: Vec<&'static str>,
    /// What it does without (an optional feature refused), or why it cannot run.
    without: Vec<String>,
}

pub fn run(args: DoctorArgs, btf: Option<&'static Path>) -> Result<ExitCode> {
    let report = build_report(btf);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn build_report(btf: Option<&'static Path>) -> Report {
    let caps = privileges::effective_caps();
    let can_load = privileges::can_load_tracing(caps);
    let btf_check = match crate::bpf::btf::resolve_btf(btf) {
        Ok(Some(p)) => Check {
            ok: true,
            detail: format!("{} (--btf)", p.display()),
        },
        Ok(None) => Check {
            ok: true,
            detail: crate::bpf::btf::VMLINUX_BTF.into(),
        },
        Err(e) => Check {
            ok: false,
            detail: format!("{e:#}"),
        },
    };
    let config = LoadConfig {
        include_self: false,
        cgroup_mode: 0,
        btf: btf.filter(|_| btf_check.ok),
    };
    let probing = can_load && btf_check.ok;
    let all = if probing {
        features::check_all()
    } else {
        Vec::new()
    };
    let collectors_out = if probing {
        probe_collectors(config)
    } else {
        Vec::new()
    };
    let hook_like = |a: &&Answer| {
        Hook::ALL.iter().any(|h| h.as_str() == a.name)
            || [Feature::RingBuffer, Feature::TaskStorage]
                .iter()
                .any(|f| f.name() == a.name)
    };
    let defaults_ok = collectors_out
        .iter()
        .filter(|c| c.default)
        .all(|c| c.hook != "none");
    let bpffs = features::check(Feature::Bpffs);
    let tracefs = features::check(Feature::Tracefs);
    Report {
        kernel: crate::common::kernel::release(),
        ok: probing && defaults_ok && !collectors_out.is_empty(),
        btf: btf_check,
        tracefs: tracefs.detail.clone(),
        bpffs: Check {
            ok: bpffs.ok && crate::bpf::pins::bpffs_mounted(),
            detail: bpffs.detail,
        },
        privileges: Privileges {
            // SAFETY: geteuid cannot fail.
            euid: unsafe { libc::geteuid() },
            capabilities: privileges::relevant_caps(caps),
            can_load,
            minimal: privileges::minimal_caps(
                crate::common::kernel::version(),
                features::tracefs_at_start() == crate::bpf::tracefs::Tracefs::Host,
            ),
        },
        hooks: all.iter().filter(hook_like).cloned().collect(),
        jobs: if probing { jobs(&all) } else { Vec::new() },
        features: all,
        collectors: collectors_out,
    }
}

/// Each job against the features' answers.
fn jobs(answers: &[Answer]) -> Vec<JobReport> {
    let ok = |f: Feature| answers.iter().any(|a| a.name == f.name() && a.ok);
    let detail = |f: Feature| {
        answers
            .iter()
            .find(|a| a.name == f.name())
            .map_or(String::new(), |a| a.detail.clone())
    };
    JOBS.iter()
        .map(|(name, needs)| {
            let mut report = JobReport {
                name,
                ok: true,
                uses: Vec::new(),
                without: Vec::new(),
            };
            let mut groups: Vec<&str> = Vec::new();
            for need in needs.iter() {
                let f = need.feature;
                match need.role {
                    Role::Needed if ok(f) => report.uses.push(f.name()),
                    Role::Needed => {
                        report.ok = false;
                        report
                            .without
                            .push(format!("needs {}: {}", f.name(), detail(f)));
                    }
                    Role::OneOf(group) if !groups.contains(&group) => {
                        groups.push(group);
                        let members: Vec<Feature> = needs
                            .iter()
                            .filter(|n| matches!(n.role, Role::OneOf(g) if g == group))
                            .map(|n| n.feature)
                            .collect();
                        match members.iter().find(|m| ok(**m)) {
                            Some(m) => report.uses.push(m.name()),
                            None => {
                                report.ok = false;
                                let names: Vec<&str> = members.iter().map(|m| m.name()).collect();
                                report.without.push(format!(
                                    "needs {group} ({}): none works",
                                    names.join(", ")
                                ));
                            }
                        }
                    }
                    Role::OneOf(_) => {}
                    Role::Optional(_) if ok(f) => report.uses.push(f.name()),
                    Role::Optional(gives) => {
                        report
                            .without
                            .push(format!("without {} ({})", f.name(), gives))
                    }
                }
            }
            report
        })
        .collect()
}

/// Starts every collector of the registry for real (small maps), then stops them.
fn probe_collectors(config: LoadConfig) -> Vec<CollectorReport> {
    let limits = Limits {
        table_capacity: 64,
        series_ttl: std::time::Duration::from_secs(60),
    };
    let (_running, attachments) = collector::start_all(
        collectors::ALL,
        limits,
        &OptionValues::new(),
        config,
        &std::sync::Arc::new(std::sync::Mutex::new(Enricher::off())),
    );
    collectors::ALL
        .iter()
        .zip(attachments)
        .map(|(d, a)| CollectorReport {
            name: d.name,
            default: d.default,
            hook: a.hook.map_or("none".into(), |h| h.to_string()),
            detail: if a.failures.is_empty() {
                "ok".into()
            } else {
                a.reason()
            },
            families: d
                .families
                .iter()
                .map(|f| FamilyReport {
                    name: f.name,
                    kind: f.kind.as_str(),
                    labels: f.labels,
                })
                .collect(),
        })
        .collect()
}

/// The table; text that comes from elsewhere (paths, kernel messages) in the printable form.
fn print_table(r: &Report) {
    use crate::decode::escape_controls as shown;
    println!("kernel       {}", shown(&r.kernel));
    println!("btf          {} {}", mark(r.btf.ok), shown(&r.btf.detail));
    println!("tracefs      {}", r.tracefs);
    println!("bpffs        {} {}", mark(r.bpffs.ok), r.bpffs.detail);
    println!(
        "privileges   {} euid {}, {}",
        mark(r.privileges.can_load),
        r.privileges.euid,
        if r.privileges.capabilities.is_empty() {
            "no BPF capabilities".into()
        } else {
            r.privileges.capabilities.join(" ")
        }
    );
    println!(
        "minimal      {} (setcap {}+ep, run as any user; dropped after attach)",
        r.privileges.minimal.join(" "),
        r.privileges.minimal.join(",")
    );
    println!("\nFEATURE            OK   DETAIL");
    for f in &r.features {
        println!("{:<18} {:<4} {}", f.name, mark(f.ok), shown(&f.detail));
    }
    println!("\nJOB          OK   USES / WITHOUT");
    for j in &r.jobs {
        println!("{:<12} {:<4} {}", j.name, mark(j.ok), j.uses.join(", "));
        for w in &j.without {
            println!("{:<17} {}", "", shown(w));
        }
    }
    println!("\nCOLLECTOR    DEFAULT  HOOK        DETAIL");
    for c in &r.collectors {
        println!(
            "{:<12} {:<8} {:<11} {}",
            c.name,
            if c.default { "yes" } else { "no" },
            c.hook,
            shown(&c.detail)
        );
    }
    println!(
        "\n{}",
        if r.ok {
            "ok: the default collectors can run"
        } else {
            "not ok: see above"
        }
    );
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "no"
    }
}
