//! The metric collectors. Names are a contract: they appear in flags and in
//! `ksight_collector_up{collector}`.

pub mod block;
pub mod by_comm;
pub mod files;
pub mod process;
pub mod sched;
pub mod syscalls;
pub mod tcp;

use std::time::Duration;

use anyhow::Result;
use ksight_bpf::abi::ks_hist;

use crate::bpf::{self, LoadedObject};
use crate::collector::Collector;
use crate::enrich::SharedEnricher;
use crate::metrics::model::{slot_histogram, Family, Histogram, Kind, Labels, Value};
use by_comm::ByComm;

/// Collectors on by default, in the order they are started and reported.
pub const DEFAULT: &[&str] = &[
    "syscalls", "process", "files", "tcp", "sched", "block", "memory", "signals",
];
/// Every collector that exists: the defaults, then the opt-in ones.
pub const ALL: &[&str] = &[
    "syscalls",
    "process",
    "files",
    "tcp",
    "sched",
    "block",
    "memory",
    "signals",
    "page_faults",
];

/// node_exporter's selection flags, made for every name in `ALL` (so no collector can lack
/// them): `--collector.NAME` adds one, `--no-collector.NAME` removes one, and
/// `--collector.disable-defaults` starts from none instead of `DEFAULT`.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub enabled: Vec<&'static str>,
    pub disabled: Vec<&'static str>,
    pub disable_defaults: bool,
}

const DISABLE_DEFAULTS: &str = "collector.disable-defaults";

impl clap::FromArgMatches for Selection {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let flag = |id: String| matches.get_flag(&id);
        Ok(Self {
            enabled: ALL
                .iter()
                .copied()
                .filter(|n| flag(format!("collector.{n}")))
                .collect(),
            disabled: ALL
                .iter()
                .copied()
                .filter(|n| flag(format!("no-collector.{n}")))
                .collect(),
            disable_defaults: matches.get_flag(DISABLE_DEFAULTS),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for Selection {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let switch = |id: String, help: String| {
            clap::Arg::new(id.clone())
                .long(id)
                .help(help)
                .action(clap::ArgAction::SetTrue)
        };
        let mut cmd = cmd.arg(switch(
            DISABLE_DEFAULTS.into(),
            "Start from no collector (then add with --collector.NAME)".into(),
        ));
        for name in ALL {
            cmd = cmd
                .arg(switch(
                    format!("collector.{name}"),
                    format!("Run the {name} collector"),
                ))
                .arg(switch(
                    format!("no-collector.{name}"),
                    format!("Leave out the {name} collector"),
                ));
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl Selection {
    /// The collectors to run: `list` (`--collectors`) or the defaults (none with
    /// `--collector.disable-defaults`), plus the enabled, minus the disabled, in `ALL`'s order.
    pub fn resolve(&self, list: Option<&[String]>) -> anyhow::Result<Vec<&'static str>> {
        let base: Vec<&'static str> = match list {
            Some(list) => list
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|name| {
                    ALL.iter().copied().find(|c| *c == name).ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown collector {name:?}; valid collectors: {}",
                            ALL.join(", ")
                        )
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            None if self.disable_defaults => Vec::new(),
            None => DEFAULT.to_vec(),
        };
        let mut out: Vec<&'static str> = Vec::new();
        for name in base.into_iter().chain(self.enabled.iter().copied()) {
            if !self.disabled.contains(&name) && !out.contains(&name) {
                out.push(name);
            }
        }
        if out.is_empty() {
            anyhow::bail!("no collector selected");
        }
        Ok(out)
    }
}

/// Sizes and TTL shared by all collectors (flags of `serve`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_comms: u32,
    pub table_capacity: u32,
    pub errors_capacity: u32,
    pub series_ttl: Duration,
}

/// Builds a collector; per-process ones label their series through `enricher`.
pub fn build(name: &str, limits: Limits, enricher: &SharedEnricher) -> Option<Box<dyn Collector>> {
    let enricher = enricher.clone();
    Some(match name {
        "syscalls" => Box::new(syscalls::Syscalls::new(limits, enricher)),
        "process" => Box::new(process::Process::new(limits, enricher)),
        "files" => Box::new(files::Files::new(limits, enricher)),
        "tcp" => Box::new(tcp::Tcp::default()),
        "sched" => Box::new(sched::Sched::default()),
        "block" => Box::new(block::Block::default()),
        "memory" => Box::new(ByComm::new(&by_comm::MEMORY, limits, enricher)),
        "page_faults" => Box::new(ByComm::new(&by_comm::PAGE_FAULTS, limits, enricher)),
        "signals" => Box::new(ByComm::new(&by_comm::SIGNALS, limits, enricher)),
        _ => return None,
    })
}

/// Appends the enrichment labels of `cgroup` (none without --labels).
pub fn enriched(mut labels: Labels, enricher: &SharedEnricher, cgroup: u64) -> Labels {
    if let Ok(mut e) = enricher.lock() {
        labels.extend(e.labels(cgroup));
    }
    labels
}

/// A per-CPU `struct ks_hist` map as one histogram family with no labels.
pub fn hist_family(
    obj: &LoadedObject,
    map: &str,
    name: &'static str,
    help: &'static str,
) -> Result<Family> {
    let per_cpu: Vec<ks_hist> = bpf::percpu_value(&obj.map(map)?, 0)?;
    Ok(Family::new(name, Kind::Histogram, help)
        .with(vec![], Value::Histogram(merge_hists(&per_cpu))))
}

/// Per-CPU (or per-key) kernel histograms summed into one, in seconds.
pub fn merge_hists(parts: &[ks_hist]) -> Histogram {
    let mut slots = [0u64; ksight_bpf::hist::SLOTS];
    let (mut sum_ns, mut count) = (0u64, 0u64);
    for h in parts {
        for (s, b) in slots.iter_mut().zip(h.buckets.iter()) {
            *s += b;
        }
        sum_ns += h.sum_ns;
        count += h.count;
    }
    slot_histogram(&slots, sum_ns as f64 / 1e9, count)
}

#[cfg(test)]
mod selection_tests {
    use super::*;
    use clap::Parser;

    fn select(args: &[&str]) -> anyhow::Result<Vec<&'static str>> {
        let cli = crate::cli::Cli::try_parse_from(["ksight", "serve"].iter().chain(args))?;
        let crate::cli::Command::Serve(serve) = cli.command else {
            unreachable!("parsed serve")
        };
        serve.selection.resolve(serve.collectors.as_deref())
    }

    #[test]
    fn every_collector_has_both_flags() {
        for name in ALL {
            let on = select(&[
                "--collector.disable-defaults",
                &format!("--collector.{name}"),
            ]);
            assert_eq!(on.ok(), Some(vec![*name]), "--collector.{name}");
            let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
            let list = all.join(",");
            let off = select(&["--collectors", &list, &format!("--no-collector.{name}")]);
            assert!(off.is_ok_and(|o| !o.contains(name) && o.len() == ALL.len() - 1));
        }
    }

    #[test]
    fn defaults_lists_and_errors() {
        assert_eq!(select(&[]).ok(), Some(DEFAULT.to_vec()));
        assert_eq!(
            select(&["--collector.page_faults", "--no-collector.tcp"]).ok(),
            Some(
                DEFAULT
                    .iter()
                    .copied()
                    .filter(|c| *c != "tcp")
                    .chain(["page_faults"])
                    .collect()
            )
        );
        assert_eq!(select(&["--collectors", "tcp,tcp"]).ok(), Some(vec!["tcp"]));
        assert!(select(&["--collectors", "bogus"]).is_err());
        assert!(select(&["--collector.disable-defaults"]).is_err());
    }

    #[test]
    fn readme_names_every_collector() {
        let readme = include_str!("../../../../README.md");
        for name in ALL {
            assert!(
                readme.contains(&format!("`{name}`")),
                "README lacks `{name}`"
            );
        }
    }
}

/// Checks that need no root: every name a collector gives libbpf exists in its object.
#[cfg(test)]
mod object_tests {
    use super::*;
    use libbpf_rs::ObjectBuilder;

    #[test]
    fn every_program_map_and_section_a_collector_names_exists() {
        let (enricher, _) = crate::enrich::Enricher::new(Default::default());
        let enricher: SharedEnricher = std::sync::Arc::new(std::sync::Mutex::new(enricher));
        let limits = Limits {
            max_comms: 4,
            table_capacity: 4,
            errors_capacity: 4,
            series_ttl: Duration::from_secs(1),
        };
        for name in ALL {
            let collector = build(name, limits, &enricher).expect("every name builds");
            assert_eq!(collector.name(), *name);
            let open = ObjectBuilder::default()
                .open_memory(collector.object())
                .expect("the object opens");
            let programs: Vec<String> = open
                .progs()
                .map(|p| p.name().to_string_lossy().into_owned())
                .collect();
            let maps: Vec<String> = open
                .maps()
                .map(|m| m.name().to_string_lossy().into_owned())
                .collect();
            for candidate in collector.candidates() {
                if candidate.shared_with.is_some() {
                    continue;
                }
                for program in candidate.programs {
                    assert!(
                        programs.iter().any(|p| p == program),
                        "{name}: no program {program}"
                    );
                }
            }
            for (map, _) in collector.max_entries() {
                assert!(maps.contains(&map), "{name}: no map {map}");
            }
            for (section, _) in collector.sections() {
                assert!(
                    maps.iter().any(|m| m == section),
                    "{name}: no section {section}"
                );
            }
        }
    }
}
