//! Collectors that are one labelled counter table keyed by process name (plus a label or two):
//! `process`, `files`, `memory`, `signals` and `page_faults`. Each is a `Spec` in its own
//! file; the table machinery (drain, TTL fold, overflow series) is `table.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ksight_bpf::abi::ks_comm_key;

use crate::bpf::table::Tabled;
use crate::bpf::LoadedObject;
use crate::collector::{Builder, Collector, Context};
use crate::decode;
use crate::enrich::SharedEnricher;
use crate::metrics::model::{Family, FamilyDoc, Labels};

pub struct Spec {
    /// The KS_TABLE this collector reads.
    pub table: &'static str,
    /// Tables of the same object this collector leaves empty (shrunk to one entry).
    pub unused_tables: &'static [&'static str],
    /// The counter families the table's rows go to.
    pub families: &'static [&'static FamilyDoc],
    /// Histograms from per-CPU `struct ks_hist` maps of the object: (map, family).
    pub histograms: &'static [(&'static str, &'static FamilyDoc)],
    /// Wraps the table with its key type (`Tabled::new::<KEY>`).
    pub start: fn(Arc<LoadedObject>, &str, Duration) -> Result<Tabled>,
    /// A key's row; None for a key that belongs to no family.
    pub row: fn(&[u8]) -> Result<Option<Row>>,
    /// More upkeep after each drain.
    pub upkeep: Option<fn(&LoadedObject) -> Result<()>>,
    /// Told true once started and false when stopped: a switch in an object the collector
    /// may share with another (files counts in syscalls' programs).
    pub switch: Option<fn(&LoadedObject, bool)>,
}

/// Where a table key's count goes.
pub struct Row {
    /// Index into `Spec::families`.
    pub family: usize,
    pub labels: Labels,
    /// The cgroup id that enrichment labels come from.
    pub cgroup: u64,
}

/// The row of a `struct ks_comm_key` table: one family, labelled by process name.
pub fn comm_row(key: &[u8]) -> Result<Option<Row>> {
    let k = plain::from_bytes::<ks_comm_key>(key).map_err(|e| anyhow!("{e:?}"))?;
    Ok(Some(Row {
        family: 0,
        labels: vec![("comm", decode::comm_or_overflow(&k.comm, k.overflow))],
        cgroup: k.cgroup,
    }))
}

/// The builder of a table collector, sized by `--table.capacity`.
pub fn builder(spec: &'static Spec, context: &Context) -> Box<dyn Builder> {
    Box::new(TableBuilder {
        spec,
        capacity: context.limits.table_capacity,
        ttl: context.limits.series_ttl,
        enricher: context.enricher.clone(),
    })
}

struct TableBuilder {
    spec: &'static Spec,
    capacity: u32,
    ttl: Duration,
    enricher: SharedEnricher,
}

impl Builder for TableBuilder {
    fn max_entries(&self) -> Vec<(String, u32)> {
        let own = ["_a", "_b"].map(|s| (format!("{}{s}", self.spec.table), self.capacity));
        let unused = self
            .spec
            .unused_tables
            .iter()
            .flat_map(|t| ["_a", "_b", "_ovf"].map(|s| (format!("{t}{s}"), 1)));
        own.into_iter().chain(unused).collect()
    }

    fn start(&self, obj: Arc<LoadedObject>) -> Result<Box<dyn Collector>> {
        let tabled = (self.spec.start)(obj, self.spec.table, self.ttl)?;
        if let Some(switch) = self.spec.switch {
            switch(&tabled.obj, true);
        }
        Ok(Box::new(TableCollector {
            spec: self.spec,
            tabled,
            enricher: self.enricher.clone(),
        }))
    }
}

struct TableCollector {
    spec: &'static Spec,
    tabled: Tabled,
    enricher: SharedEnricher,
}

impl Drop for TableCollector {
    fn drop(&mut self) {
        if let Some(switch) = self.spec.switch {
            switch(&self.tabled.obj, false);
        }
    }
}

impl Collector for TableCollector {
    fn collect(&mut self, out: &mut Vec<Family>) -> Result<()> {
        let spec = self.spec;
        let mut families: Vec<Family> = spec.families.iter().map(|&doc| Family::of(doc)).collect();
        for (key, n) in self.tabled.read()? {
            let Some(row) = (spec.row)(&key)? else {
                continue;
            };
            let Some(family) = families.get_mut(row.family) else {
                continue;
            };
            family.add(super::enriched(row.labels, &self.enricher, row.cgroup), n);
        }
        out.extend(families.into_iter().map(Family::sorted));
        for &(map, doc) in spec.histograms {
            out.push(super::hist_family(&self.tabled.obj, map, doc)?);
        }
        Ok(())
    }

    fn maintain(&mut self, now: Instant) -> Result<()> {
        self.tabled.maintain(now)?;
        match self.spec.upkeep {
            Some(upkeep) => upkeep(&self.tabled.obj),
            None => Ok(()),
        }
    }

    fn object(&self) -> &Arc<LoadedObject> {
        &self.tabled.obj
    }

    fn series_folded(&self) -> u64 {
        self.tabled.table.totals.folded()
    }
}
