//! One config running: its object loaded from `<dir>/<name>.bpf.o`, every program attached
//! that can be (a program that cannot is a warning with the kernel's reason, and a 0 in
//! `ksight_config_program_attached`), and its maps read at each scrape into the metrics its
//! `<name>.yaml` declares.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::MapHandle;

use super::maps;
use super::schema::{self, Checked, HistogramConfig};
use super::sections;
use super::series::{self, Dropped, Shape};
use crate::bpf::{LoadConfig, LoadedObject, ProgramAttach};
use crate::collector::Collector;
use crate::decode::labels::Labels;
use crate::decode::lookup::{Host, Lookup};
use crate::metrics::model::{Family, FamilyDoc, Kind, Value};

pub static PROGRAM_ATTACHED: FamilyDoc = FamilyDoc {
    name: "ksight_config_program_attached",
    kind: Kind::Gauge,
    labels: &["config", "program", "section"],
    help:
        "Whether each program of a config (--config.names) is attached: 1, or 0 (the log says why).",
    notes: "",
};

pub static DECODER_ERRORS: FamilyDoc = FamilyDoc {
    name: "ksight_config_decoder_errors_total",
    kind: Kind::Counter,
    labels: &["config"],
    help: "Map entries of a config left out because a decoder rejected their key.",
    notes: "",
};

/// The prefix of a config's metric names (ebpf_exporter's).
pub const PREFIX: &str = "ebpf_exporter";

/// One metric of a config, ready to read.
struct Metric {
    map: MapHandle,
    split_by_cpu: bool,
    name: &'static str,
    help: &'static str,
    label_names: Vec<&'static str>,
    labels: Labels,
    /// Some: a histogram.
    histogram: Option<HistogramConfig>,
}

/// A config's programs and metrics.
pub struct ConfigCollector {
    pub name: &'static str,
    obj: Arc<LoadedObject>,
    metrics: Vec<Metric>,
    pub programs: Vec<ProgramAttach>,
    lookup: Host,
    decoder_errors: u64,
}

/// Names of a config live as long as ksight: they become metric names and labels, which the
/// exposition holds as `&'static str`. Configs are read once, at start.
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// A path from the command line, printed by the one rule.
fn shown(path: &Path) -> String {
    crate::decode::printable(path.as_os_str().as_encoded_bytes())
}

/// The mark of sections left to [`sections::attach`] (replaced by its outcome).
const OURS: &str = "attached by ksight";

impl ConfigCollector {
    /// Reads `<dir>/<name>.yaml`, loads `<dir>/<name>.bpf.o`, attaches its programs and
    /// checks every metric against its map. Configuration errors come back as errors whose
    /// text names the file and field (the caller makes them bad input).
    pub fn start(dir: &Path, name: &str, config: LoadConfig) -> Result<Self> {
        let yaml = dir.join(format!("{name}.yaml"));
        let object = dir.join(format!("{name}.bpf.o"));
        let checked = schema::read(&yaml).map_err(|why| anyhow!(why))?;
        if !object.is_file() {
            bail!(
                "{}: no such file (the program of {})",
                shown(&object),
                shown(&yaml)
            );
        }
        if let Some(what) = not_yet(&checked) {
            bail!("{}: {what} is not supported yet", shown(&yaml));
        }
        if checked.file.tracing.is_some() {
            tracing::warn!(
                config = name,
                "tracing spans are not exported by ksight: left out"
            );
        }
        let kaddrs = kernel_addresses(&checked.file.kaddrs).with_context(|| shown(&yaml))?;
        let mut obj = crate::bpf::load_file(&object, config, sections::program_type, &kaddrs)?;
        let mut programs =
            obj.attach_by_section(|section| sections::ours(section).then(|| OURS.to_string()));
        for p in programs
            .iter_mut()
            .filter(|p| p.failure.as_deref() == Some(OURS))
        {
            p.failure = sections::attach(&mut obj, &p.program, &p.section)
                .err()
                .map(|e| format!("{e:#}"));
        }
        for p in programs.iter().filter(|p| p.failure.is_some()) {
            tracing::warn!(config = name, program = %p.program, section = %p.section,
                reason = p.failure.as_deref().unwrap_or_default(), "program could not attach");
        }
        let metrics = metrics_of(&obj, checked, &yaml)?;
        // Read now, while ksight may still read kernel addresses (the capabilities go after
        // attaching): the ksym and kstack decoders need them at every scrape.
        let mut lookup = Host::default();
        lookup.kallsyms(false);
        Ok(ConfigCollector {
            name: leak(name.to_string()),
            obj: Arc::new(obj),
            metrics,
            programs,
            lookup,
            decoder_errors: 0,
        })
    }

    /// Programs that could not attach, with the kernel's reasons.
    pub fn failures(&self) -> impl Iterator<Item = &ProgramAttach> {
        self.programs.iter().filter(|p| p.failure.is_some())
    }

    fn own_families(&self) -> [Family; 2] {
        let mut attached = Family::of(&PROGRAM_ATTACHED);
        for p in &self.programs {
            let labels = vec![
                ("config", self.name.to_string()),
                ("program", p.program.clone()),
                ("section", crate::decode::printable(p.section.as_bytes())),
            ];
            attached.set(labels, Value::Int(u64::from(p.failure.is_none())));
        }
        let errors = Family::of(&DECODER_ERRORS).with(
            vec![("config", self.name.to_string())],
            Value::Int(self.decoder_errors),
        );
        [attached, errors]
    }
}

/// `kaddrs`: each symbol's address from /proc/kallsyms, as the global `kaddr_<symbol>`.
fn kernel_addresses(symbols: &[String]) -> Result<Vec<(String, u64)>> {
    if symbols.is_empty() {
        return Ok(Vec::new());
    }
    let kallsyms = crate::decode::kallsyms::Kallsyms::read().context("reading /proc/kallsyms")?;
    symbols
        .iter()
        .map(|symbol| {
            let address = kallsyms.address_of(symbol).ok_or_else(|| {
                anyhow!(
                    "kaddrs: {} is not in /proc/kallsyms (or its addresses are hidden)",
                    crate::decode::printable(symbol.as_bytes())
                )
            })?;
            Ok((format!("kaddr_{symbol}"), address))
        })
        .collect()
}

/// What of ebpf_exporter's schema this ksight does not run yet (said at start, not ignored).
fn not_yet(checked: &Checked) -> Option<String> {
    let file = &checked.file;
    if let Some(map) = &file.cgroup_id_map {
        return Some(format!("cgroup_id_map ({})", map.name));
    }
    None
}

/// Each counter and histogram of `checked` with its map, checked: the map exists, holds
/// 8-byte values, and its key is what the labels describe.
fn metrics_of(obj: &LoadedObject, checked: Checked, yaml: &Path) -> Result<Vec<Metric>> {
    let Checked {
        file,
        counter_labels,
        histogram_labels,
    } = checked;
    let shown = shown(yaml);
    let mut metrics = Vec::new();
    let counters = file.metrics.counters.into_iter().zip(counter_labels);
    for (i, (c, labels)) in counters.enumerate() {
        if c.perf_event_array {
            bail!("{shown}: metrics.counters[{i}] ({}): perf_event_array counters are not supported yet", c.name);
        }
        let at = format!("{shown}: metrics.counters[{i}] ({})", c.name);
        metrics.push(metric(obj, &at, c.name, c.help, labels, None)?);
    }
    let histograms = file.metrics.histograms.into_iter().zip(histogram_labels);
    for (i, (h, labels)) in histograms.enumerate() {
        let at = format!("{shown}: metrics.histograms[{i}] ({})", h.name);
        let (name, help) = (h.name.clone(), h.help.clone());
        metrics.push(metric(obj, &at, name, help, labels, Some(h))?);
    }
    Ok(metrics)
}

fn metric(
    obj: &LoadedObject,
    at: &str,
    name: String,
    help: String,
    labels: Labels,
    histogram: Option<HistogramConfig>,
) -> Result<Metric> {
    let map = obj
        .map(&name)
        .map_err(|_| anyhow!("{at}: the object has no map named {name}"))?;
    maps::check_value_size(&map).with_context(|| at.to_string())?;
    let split_by_cpu = histogram.is_none() && labels.names().last() == Some("cpu");
    let want = maps::described_key_size(&map, split_by_cpu);
    if labels.key_size() != want {
        bail!(
            "{at}: the labels describe {} key bytes, the map's key is {want}",
            labels.key_size()
        );
    }
    let label_names = labels.names().map(|n| leak(n.to_string())).collect();
    Ok(Metric {
        map,
        split_by_cpu,
        // exactly ebpf_exporter's name: dashboards and alerts carry over
        name: leak(format!("{PREFIX}_{name}")),
        help: leak(help),
        label_names,
        labels,
        histogram,
    })
}

impl Collector for ConfigCollector {
    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()> {
        for m in &self.metrics {
            let entries = maps::entries(&m.map, m.split_by_cpu)?;
            let shape = Shape {
                name: m.name,
                help: m.help,
                label_names: &m.label_names,
                labels: &m.labels,
            };
            let mut dropped = Dropped::default();
            let family = match &m.histogram {
                Some(h) => series::histogram(&shape, h, entries, &mut self.lookup, &mut dropped),
                None => series::counter(&shape, entries, &mut self.lookup, &mut dropped),
            };
            self.decoder_errors += dropped.rejected + dropped.bad_buckets;
            out.push(family);
        }
        out.extend(self.own_families());
        Ok(())
    }

    fn object(&self) -> &Arc<LoadedObject> {
        &self.obj
    }
}
