//! One scrape's metrics, built fresh from the maps (so vanished label values disappear), and
//! encoded by `encode.rs` in whichever format the scraper asked for.

use ksight_bpf::hist::{self, NativeBucket};

pub type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// As the exposition's TYPE line names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// (upper bound in the base unit, cumulative count); the last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
    /// The same observations as a native histogram, when the bounds are its buckets.
    pub native: Option<Native>,
}

/// A native (sparse, exponential) histogram, for the protobuf exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Native {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    /// (bucket index, count) of the non-empty positive buckets, by ascending index.
    pub positive: Vec<(i32, u64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
    Histogram(Histogram),
}

/// A metric family as it is declared, once: the exposition's name, TYPE and HELP, and what
/// docs/metrics.md, the Grafana dashboard and the alert rules' checks are made from.
#[derive(Debug)]
pub struct FamilyDoc {
    pub name: &'static str,
    pub kind: Kind,
    /// Its own labels; `--labels` adds cgroup, container, pod and unit to series with `comm`.
    pub labels: &'static [&'static str],
    /// HELP.
    pub help: &'static str,
    /// What docs/metrics.md says beyond HELP ("": HELP says it all).
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "read by the docs generator (docs.rs, a test)")
    )]
    pub notes: &'static str,
}

impl FamilyDoc {
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "read by the docs generator (docs.rs, a test)")
    )]
    /// The text of docs/metrics.md's "what" column.
    pub fn what(&self) -> &'static str {
        if self.notes.is_empty() {
            self.help
        } else {
            self.notes
        }
    }
}

/// A metric family. `name` is the full sample name of counters (with `_total`). Samples are
/// kept in the order they were added; a collector adds each label set once.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<(Labels, Value)>,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// An empty family as `doc` declares it.
    pub fn of(doc: &'static FamilyDoc) -> Self {
        Self::new(doc.name, doc.kind, doc.help)
    }

    /// Adds a counter sample whose labels this family does not hold yet.
    pub fn add(&mut self, labels: Labels, n: u64) {
        self.samples.push((labels, Value::Int(n)));
    }

    pub fn set(&mut self, labels: Labels, value: Value) {
        match self.samples.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, v)) => *v = value,
            None => self.samples.push((labels, value)),
        }
    }

    pub fn with(mut self, labels: Labels, value: Value) -> Self {
        self.set(labels, value);
        self
    }

    /// Orders samples by labels, for families built from hash maps, and sums counters that
    /// ended up with the same labels (two cgroups whose enrichment labels are equal).
    pub fn sorted(mut self) -> Self {
        self.samples.sort_by(|a, b| a.0.cmp(&b.0));
        self.samples.dedup_by(|later, kept| {
            if later.0 != kept.0 {
                return false;
            }
            if let (Value::Int(a), Value::Int(b)) = (&mut kept.1, &later.1) {
                *a += b;
            }
            true
        });
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
        native: None,
    }
}

/// A histogram of the kernel's slots (`ksight_bpf::hist`), classic and native at once.
pub fn slot_histogram(slot_counts: &[u64; hist::SLOTS], sum: f64, count: u64) -> Histogram {
    Histogram {
        native: Some(native(slot_counts)),
        ..histogram(slot_counts, hist::bound_seconds, sum, count)
    }
}

fn native(slot_counts: &[u64; hist::SLOTS]) -> Native {
    let mut native = Native {
        schema: hist::NATIVE_SCHEMA,
        zero_threshold: hist::native_zero_threshold(),
        zero_count: 0,
        positive: Vec::new(),
    };
    for (slot, &n) in slot_counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        match hist::native_bucket(slot) {
            NativeBucket::Zero => native.zero_count += n,
            NativeBucket::Positive(index) => native.positive.push((index, n)),
        }
    }
    native
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_sums_counters_with_equal_labels() {
        let mut f = Family::new("x_total", Kind::Counter, "x");
        f.add(vec![("comm", "b".into())], 1);
        f.add(vec![("comm", "a".into())], 2);
        f.add(vec![("comm", "b".into())], 3);
        let f = f.sorted();
        assert_eq!(
            f.samples,
            vec![
                (vec![("comm", "a".to_string())], Value::Int(2)),
                (vec![("comm", "b".to_string())], Value::Int(4)),
            ]
        );
    }
}
