//! What every collector is: an object, candidate hooks in order of measured cost, and a way
//! to turn its maps into metric families at scrape time.

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
    fn max_entries(&self) -> Vec<(&'static str, u32)> {
        Vec::new()
    }
    /// Takes the loaded object; prepares user-side state (queues, tables).
    fn started(&mut self, obj: LoadedObject) -> Result<()>;
    /// Adds this collector's families to a scrape.
    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()>;
    /// Periodic upkeep: drain tables, fold idle series.
    fn maintain(&mut self, _now: Instant) -> Result<()> {
        Ok(())
    }
    fn object_ref(&self) -> Option<&LoadedObject>;
}

/// How a collector's start went.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub collector: &'static str,
    /// The hook it attached with; None when no candidate worked.
    pub hook: Option<Hook>,
    /// Why each candidate that was tried before (or instead) failed.
    pub failures: Vec<(Hook, String)>,
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

/// Tries each candidate in order; the first that loads and attaches wins.
pub fn start(collector: &mut dyn Collector, config: LoadConfig) -> Attachment {
    let name = collector.name();
    let sizes = collector.max_entries();
    let mut failures = Vec::new();
    for candidate in collector.candidates() {
        let spec = LoadSpec {
            name,
            bytes: collector.object(),
            programs: candidate.programs,
            max_entries: &sizes,
        };
        match bpf::load(&spec, config).and_then(|obj| collector.started(obj)) {
            Ok(()) => {
                info!(collector = name, hook = %candidate.hook, "attached");
                return Attachment {
                    collector: name,
                    hook: Some(candidate.hook),
                    failures,
                };
            }
            Err(err) => failures.push((candidate.hook, format!("{err:#}"))),
        }
    }
    let attachment = Attachment {
        collector: name,
        hook: None,
        failures,
    };
    warn!(collector = name, reason = %attachment.reason(), "could not attach");
    attachment
}
