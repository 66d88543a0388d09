//! The scrape body in any format; the text expositions, Prometheus 0.0.4 and OpenMetrics
//! 1.0.0, are written here over the snapshot model, the protobuf one in `proto.rs`.
//! (prometheus-client writes OpenMetrics only and wants its own registry types; the model
//! here is built per scrape from BPF maps, so every format is written from it directly.)

use std::fmt::Write;

pub use super::format::Format;
use super::model::{Family, Kind, Value};
use super::proto;

/// The body of a scrape in `format`.
pub fn encode(families: &[Family], format: Format) -> Vec<u8> {
    match format {
        Format::Protobuf => proto::encode(families),
        Format::Text004 | Format::OpenMetrics => text(families, format).into_bytes(),
    }
}

/// A text exposition (the protobuf format is not text: it is written by `proto::encode`).
pub fn text(families: &[Family], format: Format) -> String {
    let mut out = String::with_capacity(64 * 1024);
    for family in families {
        encode_family(&mut out, family, format);
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

fn encode_family(out: &mut String, f: &Family, format: Format) {
    let kind = f.kind.as_str();
    let type_name = match (f.kind, format) {
        (Kind::Counter, Format::OpenMetrics) => f.name.strip_suffix("_total").unwrap_or(f.name),
        _ => f.name,
    };
    let _ = writeln!(out, "# HELP {type_name} {}", escape_help(f.help, format));
    let _ = writeln!(out, "# TYPE {type_name} {kind}");
    for (labels, value) in &f.samples {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match value {
            Value::Int(n) => sample(out, f.name, &labels, None, &n.to_string()),
            Value::Float(x) => sample(out, f.name, &labels, None, &float(*x)),
            Value::Histogram(h) => {
                let bucket = format!("{}_bucket", f.name);
                for (le, n) in &h.buckets {
                    sample(out, &bucket, &labels, Some(&float(*le)), &n.to_string());
                }
                sample(
                    out,
                    &format!("{}_sum", f.name),
                    &labels,
                    None,
                    &float(h.sum),
                );
                sample(
                    out,
                    &format!("{}_count", f.name),
                    &labels,
                    None,
                    &h.count.to_string(),
                );
            }
        }
    }
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], le: Option<&str>, value: &str) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            escape_label(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Label values: backslash, double quote and newline escaped (both formats).
pub fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text: `\` and newline escaped in both formats; OpenMetrics escapes `"` as well (in
/// Prometheus' 0.0.4 text format a `\"` would be read as two characters).
fn escape_help(help: &str, format: Format) -> String {
    let text = help.replace('\\', "\\\\").replace('\n', "\\n");
    if format == Format::OpenMetrics {
        text.replace('"', "\\\"")
    } else {
        text
    }
}

/// Floats as Prometheus reads them: +Inf, and integers without a fraction.
pub fn float(x: f64) -> String {
    if x == f64::INFINITY {
        "+Inf".into()
    } else if x == f64::NEG_INFINITY {
        "-Inf".into()
    } else if x.is_nan() {
        "NaN".into()
    } else if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::model::{histogram, Family, Kind, Value};

    fn counter() -> Family {
        let mut f = Family::new("ksight_test_total", Kind::Counter, "A test.");
        f.add(vec![("comm", "a\"b\\c\nd".into())], 5);
        f
    }

    #[test]
    fn text_004_escapes_label_values() {
        let text = text(&[counter()], Format::Text004);
        assert_eq!(
            text,
            "# HELP ksight_test_total A test.\n# TYPE ksight_test_total counter\n\
             ksight_test_total{comm=\"a\\\"b\\\\c\\nd\"} 5\n"
        );
    }

    #[test]
    fn openmetrics_names_counter_family_without_total_and_ends_with_eof() {
        let text = text(&[counter()], Format::OpenMetrics);
        assert!(text.starts_with("# HELP ksight_test A test.\n# TYPE ksight_test counter\n"));
        assert!(text.contains("\nksight_test_total{"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn help_escapes_quotes_in_openmetrics_only() {
        let f = Family::new("ksight_q", Kind::Gauge, "say \"hi\" \\ now");
        let om = text(std::slice::from_ref(&f), Format::OpenMetrics);
        assert!(
            om.starts_with("# HELP ksight_q say \\\"hi\\\" \\\\ now\n"),
            "{om}"
        );
        let classic = text(&[f], Format::Text004);
        assert!(
            classic.starts_with("# HELP ksight_q say \"hi\" \\\\ now\n"),
            "{classic}"
        );
    }

    #[test]
    fn histogram_is_cumulative_with_inf() {
        let h = histogram(&[1, 0, 2, 4], |i| 2f64.powi(i as i32 - 1), 3.5, 7);
        let f = Family::new("ksight_h_seconds", Kind::Histogram, "H.")
            .with(vec![], Value::Histogram(h));
        let text = text(&[f], Format::Text004);
        assert!(text.contains("ksight_h_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(text.contains("ksight_h_seconds_bucket{le=\"1.0\"} 1\n"));
        assert!(text.contains("ksight_h_seconds_bucket{le=\"2.0\"} 3\n"));
        assert!(text.contains("ksight_h_seconds_bucket{le=\"+Inf\"} 7\n"));
        assert!(text.contains("ksight_h_seconds_sum 3.5\n"));
        assert!(text.contains("ksight_h_seconds_count 7\n"));
    }
}
