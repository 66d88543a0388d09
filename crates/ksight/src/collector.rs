//! What every collector is: an object, candidate hooks in order of measured cost, and a way
//! to turn its maps into metric families at scrape time.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tracing::{info, warn};

use crate::bpf::{self, LoadConfig, LoadSpec, LoadedObject};
use crate::hooks::{Candidate, Hook};
use crate::metrics::model::Family;

pub trait Collector: Send {
    fn name(&self) -> &'static str;
    fn object(&self) -> &'static [u8];
    /// Candidate hooks, cheapest first.
    fn candidates(&self) -> Vec<Candidate>;
    /// Map sizes to apply before load.
    fn max_entries(&self) -> Vec<(String, u32)> {
        Vec::new()
    }
    /// Read-only data sections to fill before load (the verifier sees them as constants).
    fn sections(&self) -> Vec<(&'static str, Vec<u8>)> {
        Vec::new()
    }
    /// Takes the loaded object (its own, or a shared host's); prepares user-side state.
    fn started(&mut self, obj: Arc<LoadedObject>) -> Result<()>;
    /// Adds this collector's families to a scrape.
    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()>;
    /// Periodic upkeep: drain tables, fold idle series.
    fn maintain(&mut self, _now: Instant) -> Result<()> {
        Ok(())
    }
    fn object_ref(&self) -> Option<&Arc<LoadedObject>>;
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
/// not exist, so tests can prove the fallback on every kernel.
pub fn broken_target(collector: &str, hook: Hook) -> Option<&'static str> {
    let wanted = format!("{collector}:{hook}");
    let list = std::env::var("KSIGHT_BREAK_HOOK").ok()?;
    list.split(',')
        .any(|item| item.trim() == wanted)
        .then_some("ksight_no_such_function")
}

/// A running collector another one can share programs with.
pub struct Host {
    pub name: &'static str,
    pub hook: Hook,
    pub obj: Arc<LoadedObject>,
}

/// Tries each candidate in order; the first that loads and attaches wins. A shared candidate
/// applies only when its host is running.
pub fn start(collector: &mut dyn Collector, config: LoadConfig, hosts: &[Host]) -> Attachment {
    let name = collector.name();
    let sizes = collector.max_entries();
    let owned_sections = collector.sections();
    let sections: Vec<(&str, &[u8])> = owned_sections
        .iter()
        .map(|(name, bytes)| (*name, bytes.as_slice()))
        .collect();
    let mut failures = Vec::new();
    let attached = |hook, failures, shared_with| {
        info!(collector = name, hook = %hook, shared_with, "attached");
        Attachment {
            collector: name,
            hook: Some(hook),
            failures,
            shared_with,
        }
    };
    for candidate in collector.candidates() {
        if let Some(host_name) = candidate.shared_with {
            let Some(host) = hosts.iter().find(|h| h.name == host_name) else {
                continue;
            };
            match collector.started(host.obj.clone()) {
                Ok(()) => return attached(host.hook, failures, Some(host_name)),
                Err(err) => failures.push((host.hook, format!("sharing {host_name}: {err:#}"))),
            }
            continue;
        }
        let spec = LoadSpec {
            name,
            bytes: collector.object(),
            programs: candidate.programs,
            max_entries: &sizes,
            broken_target: broken_target(name, candidate.hook),
            sections: &sections,
        };
        match bpf::load(&spec, config).and_then(|obj| collector.started(Arc::new(obj))) {
            Ok(()) => return attached(candidate.hook, failures, None),
            Err(err) => failures.push((candidate.hook, format!("{err:#}"))),
        }
    }
    let attachment = Attachment {
        collector: name,
        hook: None,
        failures,
        shared_with: None,
    };
    warn!(collector = name, reason = %attachment.reason(), "could not attach");
    attachment
}
