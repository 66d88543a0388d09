//! The Prometheus protobuf exposition: length-delimited `io.prometheus.client.MetricFamily`
//! messages, the only format that carries native histograms to Prometheus 2.x.
//!
//! The messages are prost derive structs written by hand from the fields of `metrics.proto`
//! (client_model) that ksight writes, with their tags and wire types: no `protoc` or protox
//! at build time, and decoders skip the fields left out. prometheus-client 0.25's
//! `prometheus_protobuf` feature has the same messages and a native-histogram encoder, but
//! they are generated at build (protoc, or protox and its dependency tree) and its encoder
//! only runs over a `Registry` of its own metric types; ksight builds a plain snapshot from
//! the BPF maps on every scrape, as its text encoders do, so mapping that snapshot to these
//! few messages directly is less code and fewer moving parts.

use prost::Message;

use super::model::{Family, Histogram, Kind, Labels, Native, Value};

#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 4,
}

#[derive(Clone, PartialEq, Message)]
pub struct Gauge {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Counter {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    #[prost(uint64, tag = "1")]
    pub cumulative_count: u64,
    /// Inclusive.
    #[prost(double, tag = "2")]
    pub upper_bound: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct BucketSpan {
    /// Gap to the previous span, or the index of the first bucket for the first span.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoHistogram {
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    /// Classic buckets by increasing bound; +Inf is implied by `sample_count`.
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(sint32, tag = "5")]
    pub schema: i32,
    #[prost(double, tag = "6")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "7")]
    pub zero_count: u64,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// Each bucket's count minus the previous bucket's (the first: minus zero).
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<ProtoHistogram>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    /// The sample name: counters keep `_total`, as Go's client writes them.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub help: String,
    #[prost(enumeration = "MetricType", tag = "3")]
    pub r#type: i32,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

/// The scrape body: every family as one length-delimited `MetricFamily`.
pub fn encode(families: &[Family]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * 1024);
    for family in families {
        // Writing into a Vec grows it as needed, so this cannot run out of room.
        let _ = metric_family(family).encode_length_delimited(&mut out);
    }
    out
}

fn metric_family(f: &Family) -> MetricFamily {
    let kind = match f.kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
        Kind::Histogram => MetricType::Histogram,
    };
    MetricFamily {
        name: f.name.to_string(),
        help: f.help.to_string(),
        r#type: kind as i32,
        metric: f
            .samples
            .iter()
            .map(|(labels, value)| metric(f.kind, labels, value))
            .collect(),
    }
}

fn metric(kind: Kind, labels: &Labels, value: &Value) -> Metric {
    let scalar = match value {
        Value::Int(n) => *n as f64,
        Value::Float(x) => *x,
        Value::Histogram(h) => {
            return Metric {
                label: label_pairs(labels),
                histogram: Some(histogram(h)),
                ..Default::default()
            }
        }
    };
    Metric {
        label: label_pairs(labels),
        counter: (kind == Kind::Counter).then_some(Counter { value: scalar }),
        gauge: (kind != Kind::Counter).then_some(Gauge { value: scalar }),
        ..Default::default()
    }
}

fn label_pairs(labels: &Labels) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| LabelPair {
            name: name.to_string(),
            value: value.clone(),
        })
        .collect()
}

fn histogram(h: &Histogram) -> ProtoHistogram {
    let mut out = ProtoHistogram {
        sample_count: h.count,
        sample_sum: h.sum,
        bucket: h
            .buckets
            .iter()
            .filter(|(le, _)| le.is_finite())
            .map(|&(upper_bound, cumulative_count)| Bucket {
                cumulative_count,
                upper_bound,
            })
            .collect(),
        ..Default::default()
    };
    if let Some(native) = &h.native {
        add_native(&mut out, native);
    }
    out
}

fn add_native(out: &mut ProtoHistogram, native: &Native) {
    out.schema = native.schema;
    out.zero_threshold = native.zero_threshold;
    out.zero_count = native.zero_count;
    let (spans, deltas) = spans_and_deltas(&native.positive);
    out.positive_span = spans;
    out.positive_delta = deltas;
}

/// Sparse buckets (index, count), by ascending index, as spans of consecutive indices and
/// count deltas. Empty buckets between two runs become a span gap, not zero deltas.
fn spans_and_deltas(buckets: &[(i32, u64)]) -> (Vec<BucketSpan>, Vec<i64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let (mut next_index, mut previous) = (None, 0i64);
    for &(index, count) in buckets {
        match spans.last_mut() {
            Some(span) if next_index == Some(index) => span.length += 1,
            _ => spans.push(BucketSpan {
                // The first span starts at its index; later ones skip the gap after the last.
                offset: next_index.map_or(index, |next| index - next),
                length: 1,
            }),
        }
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        deltas.push(count - previous);
        previous = count;
        next_index = Some(index + 1);
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::model::slot_histogram;
    use ksight_bpf::hist::{self, MIN_EXP, SLOTS};

    /// The length-delimited body back into its messages.
    fn decode(mut body: &[u8]) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        while !body.is_empty() {
            out.push(MetricFamily::decode_length_delimited(&mut body).expect("a family"));
        }
        out
    }

    /// The absolute count of every native bucket, from spans and deltas.
    fn expand(h: &ProtoHistogram) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        let (mut index, mut count, mut deltas) = (0i32, 0i64, h.positive_delta.iter());
        for (i, span) in h.positive_span.iter().enumerate() {
            index = if i == 0 {
                span.offset
            } else {
                index + span.offset
            };
            for _ in 0..span.length {
                count += deltas.next().expect("a delta per bucket");
                out.push((index, count as u64));
                index += 1;
            }
        }
        assert!(deltas.next().is_none(), "no extra delta");
        out
    }

    fn slot_of_seconds(le: f64) -> usize {
        (0..hist::BOUNDS)
            .find(|&i| hist::bound_seconds(i) == le)
            .expect("a slot bound")
    }

    /// Slot counts for: the lowest slot (zero bucket), 2^-4 and 2^-3 (an edge, two
    /// neighbours), a gap, 1 s, the highest finite slot and +Inf.
    fn known_slots() -> [u64; SLOTS] {
        let mut slots = [0u64; SLOTS];
        slots[0] = 3;
        slots[slot_of_seconds(0.0625)] = 5;
        slots[slot_of_seconds(0.125)] = 50;
        slots[slot_of_seconds(1.0)] = 2;
        slots[hist::BOUNDS - 1] = 1;
        slots[hist::BOUNDS] = 4;
        slots
    }

    fn histogram_family() -> Family {
        let h = slot_histogram(&known_slots(), 12345.5, 65);
        Family::new("ksight_h_seconds", Kind::Histogram, "H.")
            .with(vec![("comm", "a\"b".into())], Value::Histogram(h))
    }

    #[test]
    fn native_histogram_round_trips_exactly() {
        let families = decode(&encode(&[histogram_family()]));
        assert_eq!(families.len(), 1);
        let f = &families[0];
        assert_eq!(f.name, "ksight_h_seconds");
        assert_eq!(f.r#type, MetricType::Histogram as i32);
        let m = &f.metric[0];
        assert_eq!(m.label, vec![pair("comm", "a\"b")]);
        let h = m.histogram.as_ref().expect("a histogram");
        assert_eq!((h.sample_count, h.sample_sum), (65, 12345.5));
        assert_eq!(h.schema, 0);
        assert_eq!(h.zero_threshold, 2f64.powi(-20));
        assert_eq!(h.zero_count, 3);
        assert_eq!(
            h.positive_span,
            vec![span(-4, 2), span(2, 1), span(14, 2)],
            "-4..=-3, then 0 after a gap of 2, then 15 and the +Inf slot at 16"
        );
        assert_eq!(h.positive_delta, vec![5, 45, -48, -1, 3]);
        assert_eq!(expand(h), vec![(-4, 5), (-3, 50), (0, 2), (15, 1), (16, 4)]);
        let native_total: u64 = h.zero_count + expand(h).iter().map(|(_, n)| n).sum::<u64>();
        assert_eq!(
            native_total, h.sample_count,
            "every observation is in a bucket"
        );
    }

    #[test]
    fn classic_buckets_ride_along() {
        let families = decode(&encode(&[histogram_family()]));
        let h = families[0].metric[0].histogram.clone().expect("histogram");
        assert_eq!(
            h.bucket.len(),
            hist::BOUNDS,
            "every finite bound, +Inf implied"
        );
        let at = |le: f64| {
            h.bucket
                .iter()
                .find(|b| b.upper_bound == le)
                .map(|b| b.cumulative_count)
        };
        assert_eq!(at(2f64.powi(MIN_EXP)), Some(3));
        assert_eq!(at(0.03125), Some(3));
        assert_eq!(at(0.0625), Some(8));
        assert_eq!(at(0.125), Some(58));
        assert_eq!(at(1.0), Some(60));
        assert_eq!(at(2f64.powi(15)), Some(61));
        assert!(h.bucket.iter().all(|b| b.upper_bound.is_finite()));
    }

    #[test]
    fn native_buckets_agree_with_classic_ones() {
        // Every schema-0 bucket (2^(i-1), 2^i] holds what the classic le=2^i adds to le=2^(i-1).
        let families = decode(&encode(&[histogram_family()]));
        let h = families[0].metric[0].histogram.clone().expect("histogram");
        for (index, count) in expand(&h) {
            let cumulative = |le: f64| {
                h.bucket
                    .iter()
                    .find(|b| b.upper_bound == le)
                    .map_or(h.sample_count, |b| b.cumulative_count)
            };
            let above = cumulative(2f64.powi(index));
            let below = cumulative(2f64.powi(index - 1));
            assert_eq!(above - below, count, "bucket {index}");
        }
    }

    #[test]
    fn empty_histogram_is_still_native() {
        let h = slot_histogram(&[0; SLOTS], 0.0, 0);
        let f = Family::new("ksight_h_seconds", Kind::Histogram, "H.")
            .with(vec![], Value::Histogram(h));
        let h = decode(&encode(&[f]))[0].metric[0]
            .histogram
            .clone()
            .expect("histogram");
        assert!(h.positive_span.is_empty() && h.positive_delta.is_empty());
        // Prometheus 2.42 reads zero_threshold 0 with no span as a classic histogram.
        assert!(h.zero_threshold > 0.0);
    }

    #[test]
    fn counters_and_gauges() {
        let mut counter = Family::new("ksight_x_total", Kind::Counter, "Xs.");
        counter.add(vec![("syscall", "read".into()), ("comm", "sh".into())], 7);
        counter.add(vec![("syscall", "write".into()), ("comm", "sh".into())], 0);
        let gauge = Family::new("ksight_g", Kind::Gauge, "G.").with(vec![], Value::Float(0.25));
        let families = decode(&encode(&[counter, gauge]));
        assert_eq!(families.len(), 2);
        let (c, g) = (&families[0], &families[1]);
        assert_eq!(
            (c.name.as_str(), c.help.as_str()),
            ("ksight_x_total", "Xs.")
        );
        assert_eq!(c.r#type, MetricType::Counter as i32);
        assert_eq!(c.metric.len(), 2);
        assert_eq!(
            c.metric[0].label,
            vec![pair("syscall", "read"), pair("comm", "sh")]
        );
        assert_eq!(c.metric[0].counter, Some(Counter { value: 7.0 }));
        assert_eq!(c.metric[1].label[0], pair("syscall", "write"));
        assert_eq!(c.metric[1].counter, Some(Counter { value: 0.0 }));
        assert!(c.metric[0].gauge.is_none() && c.metric[0].histogram.is_none());
        assert_eq!(g.r#type, MetricType::Gauge as i32);
        assert!(g.metric[0].label.is_empty());
        assert_eq!(g.metric[0].gauge, Some(Gauge { value: 0.25 }));
        assert!(g.metric[0].counter.is_none());
    }

    #[test]
    fn spans_split_on_gaps_only() {
        assert_eq!(spans_and_deltas(&[]), (vec![], vec![]));
        assert_eq!(
            spans_and_deltas(&[(-2, 1), (-1, 1), (0, 3), (5, 2)]),
            (vec![span(-2, 3), span(4, 1)], vec![1, 0, 2, -1])
        );
    }

    fn pair(name: &str, value: &str) -> LabelPair {
        LabelPair {
            name: name.into(),
            value: value.into(),
        }
    }

    fn span(offset: i32, length: u32) -> BucketSpan {
        BucketSpan { offset, length }
    }
}
