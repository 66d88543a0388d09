//! What every collector is: a descriptor (its name, object, candidate hooks in order of
//! measured cost, options), a builder made from the command line, and the running collector
//! that starting the builder returns, which turns its maps into metric families at scrape
//! time. Each collector's file holds its descriptor; `collectors/mod.rs` lists them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::{info, warn};

use crate::bpf::fallback::{first_that_attaches, Attempt, Outcome};
use crate::bpf::hooks::{Candidate, Hook};
use crate::bpf::{self, LoadConfig, LoadSpec, LoadedObject};
use crate::enrich::SharedEnricher;
use crate::metrics::model::{Family, FamilyDoc};

/// One collector, as the registry, the command line, doctor and the README see it.
pub struct Descriptor {
    /// A contract: flags, `ksight_collector_up{collector}`, doctor's table.
    pub name: &'static str,
    /// Started unless the command line says otherwise.
    pub default: bool,
    /// One line for `--help`, doctor and the README's list.
    pub help: &'static str,
    pub object: &'static [u8],
    /// Cheapest first.
    pub candidates: &'static [Candidate],
    /// Its settings: `--collector.NAME.OPTION`.
    pub options: &'static [Opt],
    /// Every metric family it exports: docs/metrics.md, the dashboard and the alert rules'
    /// checks are made from these.
    pub families: &'static [&'static FamilyDoc],
    pub build: fn(&Context) -> Box<dyn Builder>,
}

/// A collector's setting: a count within bounds, given as `--collector.NAME.OPTION N`.
pub struct Opt {
    pub name: &'static str,
    pub help: &'static str,
    pub default: u32,
    pub min: u32,
    pub max: u32,
    /// The spelling it had before the registry, still accepted (hidden from --help).
    pub alias: Option<&'static str>,
}

impl Descriptor {
    /// The flag of option `opt`.
    pub fn option_flag(&self, opt: &Opt) -> String {
        format!("collector.{}.{}", self.name, opt.name)
    }
}

/// Settings every collector shares (flags of `serve`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Capacity of each labelled counter map.
    pub table_capacity: u32,
    /// A series idle this long is folded into the overflow series.
    pub series_ttl: Duration,
}

/// Values given for collectors' options, by flag (`collector.NAME.OPTION`).
pub type OptionValues = BTreeMap<String, u32>;

/// What a descriptor's `build` may use.
pub struct Context<'a> {
    pub descriptor: &'static Descriptor,
    /// `--btf`, for a builder that reads the kernel's types.
    pub btf: Option<&'static std::path::Path>,
    pub limits: Limits,
    pub enricher: &'a SharedEnricher,
    pub options: &'a OptionValues,
}

impl Context<'_> {
    /// The value of this collector's option `name`: the one given, or its default.
    pub fn option(&self, name: &str) -> u32 {
        let d = self.descriptor;
        let Some(opt) = d.options.iter().find(|o| o.name == name) else {
            // A collector asking for an option it does not declare is a bug, caught by the
            // registry's tests; the answer is harmless.
            return 0;
        };
        self.options
            .get(&d.option_flag(opt))
            .copied()
            .unwrap_or(opt.default)
    }
}

/// A collector before it runs.
pub trait Builder {
    /// Map sizes to apply before load.
    fn max_entries(&self) -> Vec<(String, u32)> {
        Vec::new()
    }
    /// Read-only data sections to fill before load (the verifier sees them as constants).
    fn sections(&self) -> Vec<(&'static str, Vec<u8>)> {
        Vec::new()
    }
    /// The running collector over a loaded object (its own, or a shared host's).
    fn start(&self, obj: Arc<LoadedObject>) -> Result<Box<dyn Collector>>;
}

/// A builder with nothing to size or set before load.
pub struct Simple(pub fn(Arc<LoadedObject>) -> Result<Box<dyn Collector>>);

impl Builder for Simple {
    fn start(&self, obj: Arc<LoadedObject>) -> Result<Box<dyn Collector>> {
        (self.0)(obj)
    }
}

/// A running collector.
pub trait Collector: Send {
    /// Adds this collector's families to a scrape.
    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()>;
    /// Periodic upkeep: drain tables, fold idle series.
    fn maintain(&mut self, _now: Instant) -> Result<()> {
        Ok(())
    }
    /// The object whose programs and maps it reads (shared with its host, if it has one).
    fn object(&self) -> &Arc<LoadedObject>;
    /// Series ended by its TTL or series budget since start (`ksight_series_folded_total`).
    fn series_folded(&self) -> u64 {
        0
    }
}

/// A started collector and its name.
pub struct Running {
    pub name: &'static str,
    pub collector: Box<dyn Collector>,
}

/// Map sizes as `max_entries` returns them.
pub fn sizes(list: &[(&str, u32)]) -> Vec<(String, u32)> {
    list.iter().map(|(m, n)| (m.to_string(), *n)).collect()
}

/// How a collector's start went.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub collector: &'static str,
    /// The hook it attached with; None when no candidate worked.
    pub hook: Option<Hook>,
    /// Why each candidate that was tried before (or instead) failed.
    pub failures: Vec<(Hook, String)>,
    /// The collector whose programs this one shares, if any.
    pub shared_with: Option<&'static str>,
}

impl Attachment {
    pub fn reason(&self) -> String {
        self.failures
            .iter()
            .map(|(h, why)| format!("{h}: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `KSIGHT_BREAK_HOOK=collector:hook[,…]` points that candidate at a kernel function that does
/// not exist, so tests can prove the fallback on every kernel (fault-injection builds only).
pub fn broken_target(collector: &str, hook: Hook) -> Option<&'static str> {
    crate::fault_injection::hook_broken(&format!("{collector}:{hook}"))
        .then_some("ksight_no_such_function")
}

/// Attaches each of `programs` to a set of events `open` opens (load leaves perf_event
/// programs to their owner).
fn attach_to_perf_events(
    obj: &mut LoadedObject,
    programs: &[&str],
    open: fn() -> Result<Vec<std::os::fd::OwnedFd>>,
) -> Result<()> {
    for program in programs {
        for fd in open()? {
            obj.attach_perf_event(program, fd)?;
        }
    }
    Ok(())
}

/// A running collector another one can share programs with.
struct Host {
    name: &'static str,
    hook: Hook,
    obj: Arc<LoadedObject>,
}

/// The maps of `descriptor`'s other candidates that `candidate` does not use itself.
fn other_candidates_maps(descriptor: &Descriptor, candidate: &Candidate) -> Vec<&'static str> {
    descriptor
        .candidates
        .iter()
        .flat_map(|c| c.maps.iter().copied())
        .filter(|m| !candidate.maps.contains(m))
        .collect()
}

/// Tries each candidate in order; the first that loads and attaches wins. A shared candidate
/// applies only when its host is running. Starting consumes the builder.
fn start(
    descriptor: &'static Descriptor,
    builder: Box<dyn Builder>,
    config: LoadConfig,
    hosts: &[Host],
) -> (Option<Box<dyn Collector>>, Attachment) {
    let name = descriptor.name;
    let sizes = builder.max_entries();
    let owned_sections = builder.sections();
    let sections: Vec<(&str, &[u8])> = owned_sections
        .iter()
        .map(|(name, bytes)| (*name, bytes.as_slice()))
        .collect();
    let attempts = descriptor.candidates.iter().map(|candidate| {
        if let Some(host_name) = candidate.shared_with {
            let Some(host) = hosts.iter().find(|h| h.name == host_name) else {
                return Attempt::Pass;
            };
            let started = builder.start(host.obj.clone());
            let started = started.map_err(|e| anyhow::anyhow!("sharing {host_name}: {e:#}"));
            return Attempt::Shared(host.hook, started.map(|c| (c, Some(host_name))));
        }
        let builder = &builder;
        let (sizes, sections) = (&sizes, &sections);
        Attempt::Load(
            candidate.hook,
            Box::new(move || {
                let spec = LoadSpec {
                    name,
                    bytes: descriptor.object,
                    programs: candidate.programs,
                    max_entries: sizes,
                    broken_target: broken_target(name, candidate.hook),
                    sections,
                    skip_maps: &other_candidates_maps(descriptor, candidate),
                };
                let mut obj = bpf::load(&spec, config)?;
                if let Some(open) = candidate.perf_events {
                    attach_to_perf_events(&mut obj, candidate.programs, open)?;
                }
                Ok((builder.start(Arc::new(obj))?, None))
            }),
        )
    });
    let Outcome { attached, failures } = first_that_attaches(attempts);
    if let Some(((collector, shared_with), hook)) = attached {
        info!(collector = name, hook = %hook, shared_with, "attached");
        let attachment = Attachment {
            collector: name,
            hook: Some(hook),
            failures,
            shared_with,
        };
        return (Some(collector), attachment);
    }
    let attachment = Attachment {
        collector: name,
        hook: None,
        failures,
        shared_with: None,
    };
    warn!(collector = name, reason = %attachment.reason(), "could not attach");
    (None, attachment)
}

/// Builds and starts each collector in order (a host before those that share it): the ones
/// running, and how every start went.
pub fn start_all(
    selected: &[&'static Descriptor],
    limits: Limits,
    options: &OptionValues,
    config: LoadConfig,
    enricher: &SharedEnricher,
) -> (Vec<Running>, Vec<Attachment>) {
    let mut running = Vec::new();
    let mut attachments = Vec::new();
    let mut hosts = Vec::new();
    for &descriptor in selected {
        let context = Context {
            descriptor,
            btf: config.btf,
            limits,
            enricher,
            options,
        };
        let builder = (descriptor.build)(&context);
        let (started, attachment) = start(descriptor, builder, config, &hosts);
        if let (Some(collector), Some(hook)) = (started, attachment.hook) {
            hosts.push(Host {
                name: descriptor.name,
                hook,
                obj: collector.object().clone(),
            });
            running.push(Running {
                name: descriptor.name,
                collector,
            });
        }
        attachments.push(attachment);
    }
    (running, attachments)
}
