//! A config's map entries → metric families: counters summed by their decoded labels,
//! histograms assembled from bucket keys (the last label) into cumulative buckets, with the
//! sum read from the key after the last bucket, as ebpf_exporter's configs define them.

use std::collections::BTreeMap;

use super::schema::{BucketType, HistogramConfig};
use crate::decode::labels::{Decoded, Labels};
use crate::decode::lookup::Lookup;
use crate::metrics::model::{Family, Histogram, Kind, Value};

/// What decoding one scrape's entries left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Entries a decoder rejected (counted in the config's decoder-error metric).
    pub rejected: u64,
    /// Entries a `regexp` left out on purpose.
    pub skipped: u64,
    /// Histogram entries whose bucket label is no bucket number.
    pub bad_buckets: u64,
}

/// The decoded label values of each entry (a key and its value, per-CPU values already summed
/// or split), entries with equal labels summed.
fn decode_all(
    entries: impl IntoIterator<Item = (Vec<u8>, u64)>,
    labels: &Labels,
    lookup: &mut dyn Lookup,
    dropped: &mut Dropped,
) -> BTreeMap<Vec<String>, u64> {
    let mut sums = BTreeMap::new();
    for (key, value) in entries {
        match labels.decode(&key, lookup) {
            Ok(Decoded::Labels(values)) => {
                let sum: &mut u64 = sums.entry(values).or_default();
                *sum = sum.wrapping_add(value);
            }
            Ok(Decoded::Skip) => dropped.skipped += 1,
            Err(e) => {
                dropped.rejected += 1;
                tracing::debug!(error = %e, "entry left out");
            }
        }
    }
    sums
}

/// A metric of a config: its exposition name and HELP, its labels' names and decoders.
pub struct Shape<'a> {
    pub name: &'static str,
    pub help: &'static str,
    /// Every label's name, the bucket's last for a histogram.
    pub label_names: &'a [&'static str],
    pub labels: &'a Labels,
}

/// A counter family: one sample per decoded label set.
pub fn counter(
    shape: &Shape<'_>,
    entries: impl IntoIterator<Item = (Vec<u8>, u64)>,
    lookup: &mut dyn Lookup,
    dropped: &mut Dropped,
) -> Family {
    let mut family = Family::new(shape.name, Kind::Counter, shape.help);
    for (values, n) in decode_all(entries, shape.labels, lookup, dropped) {
        family.add(shape.label_names.iter().copied().zip(values).collect(), n);
    }
    family
}

/// A histogram family: entries grouped by every label but the last, whose value is the
/// bucket key.
pub fn histogram(
    shape: &Shape<'_>,
    config: &HistogramConfig,
    entries: impl IntoIterator<Item = (Vec<u8>, u64)>,
    lookup: &mut dyn Lookup,
    dropped: &mut Dropped,
) -> Family {
    let mut groups: BTreeMap<Vec<String>, BTreeMap<u64, u64>> = BTreeMap::new();
    for (mut values, n) in decode_all(entries, shape.labels, lookup, dropped) {
        let Some(bucket) = values.pop().as_deref().and_then(bucket_key) else {
            dropped.bad_buckets += 1;
            continue;
        };
        let counts = groups.entry(values).or_default();
        *counts.entry(bucket).or_default() += n;
    }
    let mut family = Family::new(shape.name, Kind::Histogram, shape.help);
    let names = shape.label_names;
    let group_names = &names[..names.len().saturating_sub(1)];
    for (values, counts) in groups {
        let labels = group_names.iter().copied().zip(values).collect();
        // groups are distinct label sets: no sample to merge with
        family
            .samples
            .push((labels, Value::Histogram(buckets(config, &counts))));
    }
    family
}

/// A bucket label's text as its key: decimal, or `0x`-prefixed hex.
fn bucket_key(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Cumulative buckets from per-key counts: keys `bucket_min..=bucket_max` (or the fixed
/// keys, in order) with their upper bounds, the sum at the key after the last bucket.
pub fn buckets(config: &HistogramConfig, counts: &BTreeMap<u64, u64>) -> Histogram {
    let m = if config.bucket_multiplier == 0.0 {
        1.0
    } else {
        config.bucket_multiplier
    };
    let count_at = |k: u64| counts.get(&k).copied().unwrap_or(0);
    let mut running = 0u64;
    let mut buckets = Vec::new();
    let sum_key = match config.bucket_type {
        BucketType::Fixed => {
            for &k in &config.bucket_keys {
                if k >= 0.0 && k.fract() == 0.0 {
                    running += count_at(k as u64);
                }
                buckets.push((k * m, running));
            }
            config.bucket_keys.last().map(|&k| k as u64 + 1)
        }
        kind => {
            for i in config.bucket_min..=config.bucket_max {
                running += count_at(i);
                buckets.push((upper_bound(kind, i) * m, running));
            }
            config.bucket_max.checked_add(1)
        }
    };
    buckets.push((f64::INFINITY, running));
    Histogram {
        buckets,
        sum: sum_key.map_or(0, count_at) as f64 * m,
        count: running,
        native: None,
    }
}

/// The upper bound of bucket `i` before the multiplier.
fn upper_bound(kind: BucketType, i: u64) -> f64 {
    let exp2 = |e: u64| 2f64.powi(e.min(1023) as i32);
    match kind {
        BucketType::Exp2 => exp2(i),
        BucketType::Exp2zero if i == 0 => 0.0,
        BucketType::Exp2zero => exp2(i - 1),
        BucketType::Linear | BucketType::Fixed => i as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::labels::LabelConfig;

    fn config(yaml: &str) -> HistogramConfig {
        serde_norway::from_str(yaml).expect("histogram yaml")
    }

    fn counts(pairs: &[(u64, u64)]) -> BTreeMap<u64, u64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn exp2_buckets_are_cumulative_with_the_sum_after_the_last() {
        let c = config("{name: h, help: h, bucket_type: exp2, bucket_min: 0, bucket_max: 3, bucket_multiplier: 0.5}");
        let h = buckets(&c, &counts(&[(0, 1), (1, 2), (3, 4), (4, 100), (9, 7)]));
        assert_eq!(
            h.buckets,
            vec![(0.5, 1), (1.0, 3), (2.0, 3), (4.0, 7), (f64::INFINITY, 7)]
        );
        assert_eq!(
            (h.count, h.sum),
            (7, 50.0),
            "key 4 holds the sum; key 9 is outside"
        );
    }

    #[test]
    fn exp2zero_linear_and_fixed_bounds() {
        let zero = config("{name: h, help: h, bucket_type: exp2zero, bucket_max: 3}");
        let h = buckets(&zero, &counts(&[(0, 5), (1, 1), (3, 1)]));
        let bounds: Vec<f64> = h.buckets.iter().map(|b| b.0).collect();
        assert_eq!(bounds, [0.0, 1.0, 2.0, 4.0, f64::INFINITY]);
        let linear = config("{name: h, help: h, bucket_type: linear, bucket_min: 1, bucket_max: 3, bucket_multiplier: 10}");
        let h = buckets(&linear, &counts(&[(0, 9), (1, 1), (2, 1), (4, 3)]));
        assert_eq!(
            h.buckets,
            vec![(10.0, 1), (20.0, 2), (30.0, 2), (f64::INFINITY, 2)]
        );
        assert_eq!(
            h.sum, 30.0,
            "below bucket_min is outside; key 4 × 10 is the sum"
        );
        let fixed = config("{name: h, help: h, bucket_type: fixed, bucket_keys: [1, 5, 10]}");
        let h = buckets(&fixed, &counts(&[(1, 1), (5, 2), (10, 3), (11, 42)]));
        assert_eq!(
            h.buckets,
            vec![(1.0, 1), (5.0, 3), (10.0, 6), (f64::INFINITY, 6)]
        );
        assert_eq!(h.sum, 42.0);
    }

    #[test]
    fn entries_are_grouped_by_all_labels_but_the_bucket() {
        let labels: Vec<LabelConfig> = serde_norway::from_str(
            "[{name: op, size: 1, decoders: [{name: uint}, {name: static_map, static_map: {0: read, 1: write}}]},
              {name: bucket, size: 1, decoders: [{name: uint}]}]",
        )
        .expect("labels");
        let labels = Labels::new(&labels).expect("valid");
        let c = config("{name: h, help: h, bucket_type: linear, bucket_max: 1}");
        let entries = vec![
            (vec![0, 0], 1),
            (vec![0, 1], 2),
            (vec![1, 1], 5),
            (vec![7, 0], 1),
        ];
        let mut dropped = Dropped::default();
        let shape = Shape {
            name: "h",
            help: "h",
            label_names: &["op", "bucket"],
            labels: &labels,
        };
        let family = histogram(
            &shape,
            &c,
            entries,
            &mut crate::decode::lookup::Host::default(),
            &mut dropped,
        );
        let shown: Vec<(String, u64)> = family
            .samples
            .iter()
            .map(|(l, v)| match v {
                Value::Histogram(h) => (l[0].1.clone(), h.count),
                _ => unreachable!("histograms only"),
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("read".to_string(), 3),
                ("unknown:7".to_string(), 1),
                ("write".to_string(), 5)
            ]
        );
        assert_eq!(dropped, Dropped::default());
    }

    #[test]
    fn counters_sum_equal_labels_and_count_rejections() {
        let labels: Vec<LabelConfig> = serde_norway::from_str(
            "[{name: comm, size: 4, decoders: [{name: string}, {name: regexp, regexps: ['^(ng)']}]}]",
        )
        .expect("labels");
        let labels = Labels::new(&labels).expect("valid");
        let entries = vec![
            (b"ngx\0".to_vec(), 2),
            (b"ngy\0".to_vec(), 3),
            (b"cat\0".to_vec(), 9),
            (b"ng".to_vec(), 1),
        ];
        let mut dropped = Dropped::default();
        let shape = Shape {
            name: "c",
            help: "c",
            label_names: &["comm"],
            labels: &labels,
        };
        let family = counter(
            &shape,
            entries,
            &mut crate::decode::lookup::Host::default(),
            &mut dropped,
        );
        assert_eq!(
            family.samples,
            vec![(vec![("comm", "ng".to_string())], Value::Int(5))]
        );
        assert_eq!((dropped.skipped, dropped.rejected), (1, 1));
    }
}
