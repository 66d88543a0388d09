//! A `<name>.yaml` as ebpf_exporter's v2 configs write it, read strictly: an unknown key, a
//! metric without help, a histogram without its bucket label or with an empty range, or a
//! label ksight cannot decode is one line naming the file, the field and why.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::decode::labels::{LabelConfig, Labels};
use crate::decode::printable;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// ebpf_exporter's OpenTelemetry spans: ksight exports none (a warning says so).
    #[serde(default)]
    pub tracing: Option<serde_norway::Value>,
    /// Kernel symbols whose addresses are written into `kaddr_<symbol>` before load.
    #[serde(default)]
    pub kaddrs: Vec<String>,
    #[serde(default)]
    pub cgroup_id_map: Option<CgroupIdMapConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default)]
    pub counters: Vec<CounterConfig>,
    #[serde(default)]
    pub histograms: Vec<HistogramConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterConfig {
    /// The map's name, and the metric's after the prefix.
    pub name: String,
    pub help: String,
    /// Counted from events of a perf or ring buffer instead of read from a map.
    #[serde(default)]
    pub perf_event_array: bool,
    /// How long event counts are held before they start again (default 1 h).
    #[allow(
        dead_code,
        reason = "perf_event_array counters are refused at start for now"
    )]
    #[serde(default, deserialize_with = "duration")]
    pub flush_interval: Option<Duration>,
    #[serde(default)]
    pub labels: Vec<LabelConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketType {
    Exp2,
    Exp2zero,
    Linear,
    Fixed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramConfig {
    pub name: String,
    pub help: String,
    pub bucket_type: BucketType,
    /// Bucket bounds are multiplied by it (0 or unset: 1): 1e-6 makes microseconds seconds.
    #[serde(default)]
    pub bucket_multiplier: f64,
    #[serde(default)]
    pub bucket_min: u64,
    #[serde(default)]
    pub bucket_max: u64,
    /// `fixed` only: the bucket keys, in order.
    #[serde(default)]
    pub bucket_keys: Vec<f64>,
    /// The last label is the bucket.
    #[serde(default)]
    pub labels: Vec<LabelConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "cgroup_id_map is refused at start for now")]
pub struct CgroupIdMapConfig {
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub regexps: Vec<String>,
}

/// `1m`, `30s`, `500ms`, `1h30m` (Go's duration text), or a bare number of nanoseconds.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let value = serde_norway::Value::deserialize(d)?;
    let parsed = match &value {
        serde_norway::Value::Number(n) => n.as_u64().map(Duration::from_nanos),
        serde_norway::Value::String(s) => go_duration(s),
        _ => None,
    };
    parsed
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("not a duration: {value:?}")))
}

/// Go's `time.ParseDuration` for non-negative durations: a sequence of number+unit.
fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += Duration::from_nanos((number * nanos_per) as u64);
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A config checked: its labels ready to decode.
#[derive(Debug)]
pub struct Checked {
    pub file: ConfigFile,
    /// Each counter's labels, in the file's order.
    pub counter_labels: Vec<Labels>,
    /// Each histogram's labels, the bucket label last.
    pub histogram_labels: Vec<Labels>,
}

/// Reads and checks `path`; the error is one line naming the file and the field.
pub fn read(path: &Path) -> Result<Checked, String> {
    let shown = printable(path.as_os_str().as_encoded_bytes());
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    parse(&text).map_err(|why| format!("{shown}: {why}"))
}

/// Parses and checks a config's text.
pub fn parse(text: &str) -> Result<Checked, String> {
    let file: ConfigFile = serde_norway::from_str(text).map_err(|e| one_line(&e.to_string()))?;
    let metrics = &file.metrics;
    if metrics.counters.is_empty() && metrics.histograms.is_empty() {
        return Err("metrics: no counters and no histograms".to_string());
    }
    let counter_labels = metrics
        .counters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let at = format!("metrics.counters[{i}]");
            named_and_helped(&at, &c.name, &c.help)?;
            Labels::new(&c.labels).map_err(|why| format!("{at} ({}): {why}", c.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let histogram_labels = metrics
        .histograms
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let at = format!("metrics.histograms[{i}]");
            named_and_helped(&at, &h.name, &h.help)?;
            check_buckets(h).map_err(|why| format!("{at} ({}): {why}", h.name))?;
            Labels::new(&h.labels).map_err(|why| format!("{at} ({}): {why}", h.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Checked {
        file,
        counter_labels,
        histogram_labels,
    })
}

fn named_and_helped(at: &str, name: &str, help: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{at}: name is empty"));
    }
    if !is_metric_name(name) {
        return Err(format!(
            "{at}: {:?} is not a metric name ([a-zA-Z_][a-zA-Z0-9_]*)",
            printable(name.as_bytes())
        ));
    }
    if help.trim().is_empty() {
        return Err(format!("{at} ({name}): help is empty"));
    }
    Ok(())
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_buckets(h: &HistogramConfig) -> Result<(), String> {
    if h.labels.is_empty() {
        return Err("no labels: the last label is the bucket".to_string());
    }
    if !(h.bucket_multiplier.is_finite() && h.bucket_multiplier >= 0.0) {
        return Err(format!(
            "bucket_multiplier {} is not a positive number",
            h.bucket_multiplier
        ));
    }
    match h.bucket_type {
        BucketType::Fixed if h.bucket_keys.is_empty() => {
            Err("bucket_type fixed needs bucket_keys".to_string())
        }
        BucketType::Fixed => Ok(()),
        _ if h.bucket_min >= h.bucket_max => Err(format!(
            "bucket_min {} is not below bucket_max {}",
            h.bucket_min, h.bucket_max
        )),
        _ => Ok(()),
    }
}

/// serde's errors span lines (the YAML context); the first line says what and where.
fn one_line(error: &str) -> String {
    error.lines().next().unwrap_or(error).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIOLATENCY: &str = "
metrics:
  histograms:
    - name: bio_latency_seconds
      help: Block IO latency histogram
      bucket_type: exp2
      bucket_min: 0
      bucket_max: 26
      bucket_multiplier: 0.000001 # microseconds to seconds
      labels:
        - name: device
          size: 32
          decoders:
            - name: string
        - name: operation
          size: 8
          decoders:
            - name: uint
            - name: static_map
              static_map:
                1: read
                2: write
        - name: bucket
          size: 8
          decoders:
            - name: uint
  counters:
    - name: bio_total
      help: Block IOs
      flush_interval: 1m30s
      labels:
        - name: device
          size: 4
          padding: 4
          decoders:
            - name: majorminor
";

    #[test]
    fn a_config_as_ebpf_exporter_writes_one() {
        let checked = parse(BIOLATENCY).expect("valid");
        let h = &checked.file.metrics.histograms[0];
        assert_eq!(
            (h.bucket_type, h.bucket_min, h.bucket_max),
            (BucketType::Exp2, 0, 26)
        );
        assert_eq!(checked.histogram_labels[0].key_size(), 48);
        assert_eq!(checked.counter_labels[0].key_size(), 8);
        let c = &checked.file.metrics.counters[0];
        assert_eq!(c.flush_interval, Some(Duration::from_secs(90)));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        assert_eq!(go_duration("5"), None, "a unit is needed");
        assert_eq!(go_duration("5 parsecs"), None);
    }

    #[test]
    fn bad_configs_say_which_field_and_why() {
        let error = |text: &str| parse(text).unwrap_err();
        assert!(error("metrics: {}").contains("no counters and no histograms"));
        assert!(error("metrics: {counters: [{name: x, help: y}]}\nbogus: 1").contains("bogus"));
        assert!(error("metrics: {counters: [{name: x, help: ''}]}").contains("help is empty"));
        assert!(
            error("metrics: {counters: [{name: 'x-y', help: h}]}").contains("not a metric name")
        );
        let e = error("metrics: {counters: [{name: x, help: h, labels: [{name: a, size: 4, decoders: [{name: nope}]}]}]}");
        assert!(
            e.starts_with("metrics.counters[0] (x): label \"a\": unknown decoder"),
            "{e}"
        );
        let hist =
            |extra: &str| format!("metrics: {{histograms: [{{name: h, help: h, {extra}}}]}}");
        assert!(error(&hist("bucket_type: exp2, bucket_max: 3")).contains("no labels"));
        let bucket = "labels: [{name: b, size: 8, decoders: [{name: uint}]}]";
        assert!(error(&hist(&format!(
            "bucket_type: exp2, bucket_min: 3, bucket_max: 3, {bucket}"
        )))
        .contains("not below"));
        assert!(error(&hist(&format!("bucket_type: fixed, {bucket}"))).contains("bucket_keys"));
        assert!(error(&hist(&format!("bucket_type: log10, {bucket}"))).contains("log10"));
        assert!(
            error("metrics: {counters: [{name: x, help: h, flush_interval: soon}]}")
                .contains("not a duration")
        );
    }
}
