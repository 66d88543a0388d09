//! The metric collectors: one file each, holding its `DESCRIPTOR`; this module lists them
//! (the registry) and makes from that list the selection flags, their help, doctor's table
//! and the README's list. Names are a contract: they appear in flags and in
//! `ksight_collector_up{collector}`.

mod table_collector;

/// The registry: a collector is one name here (its module, which holds `DESCRIPTOR`).
macro_rules! registry {
    ($($module:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every collector, in the order they start and are reported. A host (syscalls, whose
        /// programs files shares) comes before the collectors that share it.
        pub static ALL: &[&Descriptor] = &[$(&$module::DESCRIPTOR),*];
    };
}

registry!(
    syscalls,
    process,
    files,
    tcp,
    sched,
    block,
    memory,
    signals,
    page_faults
);

use anyhow::Result;
use ksight_bpf::abi::ks_hist;

use crate::bpf::{self, LoadedObject};
pub use crate::collector::Descriptor;
use crate::collector::OptionValues;
use crate::enrich::SharedEnricher;
use crate::metrics::model::{slot_histogram, Family, FamilyDoc, Histogram, Labels, Value};

/// The collector named `name`.
pub fn find(name: &str) -> Option<&'static Descriptor> {
    ALL.iter().copied().find(|d| d.name == name)
}

/// The collectors on by default, in `ALL`'s order.
pub fn defaults() -> Vec<&'static Descriptor> {
    ALL.iter().copied().filter(|d| d.default).collect()
}

fn names(list: &[&'static Descriptor]) -> String {
    list.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
}

/// node_exporter's selection flags, made for every collector of the registry (so none can
/// lack them): `--collector.NAME` adds one, `--no-collector.NAME` removes one,
/// `--collector.disable-defaults` starts from none; and each collector's options,
/// `--collector.NAME.OPTION`.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub enabled: Vec<&'static str>,
    pub disabled: Vec<&'static str>,
    pub disable_defaults: bool,
    pub options: OptionValues,
}

const DISABLE_DEFAULTS: &str = "collector.disable-defaults";

impl clap::FromArgMatches for Selection {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let flag = |id: String| matches.get_flag(&id);
        let mut options = OptionValues::new();
        for d in ALL {
            for opt in d.options {
                let id = d.option_flag(opt);
                if let Some(value) = matches.get_one::<u32>(&id) {
                    options.insert(id, *value);
                }
            }
        }
        Ok(Self {
            enabled: ALL
                .iter()
                .map(|d| d.name)
                .filter(|n| flag(format!("collector.{n}")))
                .collect(),
            disabled: ALL
                .iter()
                .map(|d| d.name)
                .filter(|n| flag(format!("no-collector.{n}")))
                .collect(),
            disable_defaults: matches.get_flag(DISABLE_DEFAULTS),
            options,
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
        let mut cmd = cmd.after_help(selection_help()).arg(switch(
            DISABLE_DEFAULTS.into(),
            "Start from no collector (then add with --collector.NAME)".into(),
        ));
        for d in ALL {
            let name = d.name;
            cmd = cmd
                .arg(switch(
                    format!("collector.{name}"),
                    format!("Run {name}: {}", d.help),
                ))
                .arg(switch(
                    format!("no-collector.{name}"),
                    format!("Leave out the {name} collector"),
                ));
            for opt in d.options {
                let id = d.option_flag(opt);
                let mut arg = clap::Arg::new(id.clone())
                    .long(id)
                    .help(format!("{} [{}..={}]", opt.help, opt.min, opt.max))
                    .value_name("N")
                    .default_value(opt.default.to_string())
                    .value_parser(
                        clap::value_parser!(u32).range(i64::from(opt.min)..=i64::from(opt.max)),
                    );
                if let Some(alias) = opt.alias {
                    arg = arg.alias(alias);
                }
                cmd = cmd.arg(arg);
            }
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

fn selection_help() -> String {
    let opt_in: Vec<&Descriptor> = ALL.iter().copied().filter(|d| !d.default).collect();
    format!(
        "Collectors on by default: {}.\nOpt-in: {}.\n\
         Selection: --collectors sets the list (default: the defaults, or none with \
         --collector.disable-defaults);\nthen every --collector.NAME adds one and every \
         --no-collector.NAME removes one.",
        names(&defaults()),
        names(&opt_in),
    )
}

impl Selection {
    /// The collectors to run: `list` (`--collectors`) or the defaults (none with
    /// `--collector.disable-defaults`), plus the enabled, minus the disabled, in `ALL`'s order.
    /// The collectors to run; none is an error unless `others` (configs) will run.
    pub fn resolve(
        &self,
        list: Option<&[String]>,
        others: bool,
    ) -> Result<Vec<&'static Descriptor>> {
        let base: Vec<&'static Descriptor> = match list {
            Some(list) => list
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|name| {
                    find(name).ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown collector {name:?}; valid collectors: {}",
                            names(ALL)
                        )
                    })
                })
                .collect::<Result<_>>()?,
            None if self.disable_defaults => Vec::new(),
            None => defaults(),
        };
        let enabled = self.enabled.iter().filter_map(|n| find(n));
        let mut out: Vec<&'static Descriptor> = Vec::new();
        for d in base.into_iter().chain(enabled) {
            if !self.disabled.contains(&d.name) && !out.iter().any(|o| o.name == d.name) {
                out.push(d);
            }
        }
        if out.is_empty() && !others {
            anyhow::bail!("no collector selected");
        }
        // Start in the registry's order, so a host starts before the collectors sharing it.
        out.sort_by_key(|d| ALL.iter().position(|a| a.name == d.name));
        Ok(out)
    }
}

/// The README's list of collectors and their options, made from the registry (a test keeps
/// the README equal to it).
#[cfg(test)]
pub fn readme_list() -> String {
    use std::fmt::Write as _;
    let mut text = String::from("| collector | default | what it counts |\n|---|---|---|\n");
    for d in ALL {
        let on = if d.default { "on" } else { "opt-in" };
        let _ = writeln!(text, "| `{}` | {on} | {} |", d.name, d.help);
    }
    text.push_str("\n| option | default | range | meaning |\n|---|---|---|---|\n");
    for d in ALL {
        for opt in d.options {
            let alias = opt
                .alias
                .map(|a| format!(" (was `--{a}`)"))
                .unwrap_or_default();
            let _ = writeln!(
                text,
                "| `--{}` | {} | {}–{} | {}{alias} |",
                d.option_flag(opt),
                opt.default,
                opt.min,
                opt.max,
                opt.help
            );
        }
    }
    text
}

/// Appends the enrichment labels of `cgroup` (none without --labels).
pub fn enriched(mut labels: Labels, enricher: &SharedEnricher, cgroup: u64) -> Labels {
    if let Ok(mut e) = enricher.lock() {
        labels.extend(e.labels(cgroup));
    }
    labels
}

/// A per-CPU `struct ks_hist` map as one histogram family with no labels.
pub fn hist_family(obj: &LoadedObject, map: &str, doc: &'static FamilyDoc) -> Result<Family> {
    let per_cpu: Vec<ks_hist> = bpf::percpu_value(&obj.map(map)?, 0)?;
    Ok(Family::of(doc).with(vec![], Value::Histogram(merge_hists(&per_cpu))))
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
mod tests;
