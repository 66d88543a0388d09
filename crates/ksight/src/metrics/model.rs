//! One scrape's metrics, built fresh from the maps (so vanished label values disappear), and
//! encoded by `encode.rs` in whichever format the scraper asked for.

use std::collections::BTreeMap;

pub type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// (upper bound in the base unit, cumulative count); the last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
    Histogram(Histogram),
}

/// A metric family. `name` is the full sample name of counters (with `_total`).
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: BTreeMap<Labels, Value>,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind,
            samples: BTreeMap::new(),
        }
    }

    /// Adds to a counter sample (same labels are summed: folds and duplicates merge).
    pub fn add(&mut self, labels: Labels, n: u64) {
        let entry = self.samples.entry(labels).or_insert(Value::Int(0));
        if let Value::Int(v) = entry {
            *v += n;
        }
    }

    pub fn set(&mut self, labels: Labels, value: Value) {
        self.samples.insert(labels, value);
    }

    pub fn with(mut self, labels: Labels, value: Value) -> Self {
        self.set(labels, value);
        self
    }
}

/// A histogram from per-slot counts (the last slot is +Inf) and bounds in seconds.
pub fn histogram(
    slot_counts: &[u64],
    bound: impl Fn(usize) -> f64,
    sum: f64,
    count: u64,
) -> Histogram {
    let mut cumulative = 0u64;
    let last = slot_counts.len().saturating_sub(1);
    let buckets = slot_counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            cumulative += n;
            (if i == last { f64::INFINITY } else { bound(i) }, cumulative)
        })
        .collect();
    Histogram {
        buckets,
        sum,
        count,
    }
}
