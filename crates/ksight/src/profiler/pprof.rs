//! pprof: a gzip'd `profile.proto` (github.com/google/pprof/proto/profile.proto), written
//! with prost messages declared here (the few fields ksight fills; no protoc).

use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use prost::Message;

use super::model::{Frame, Profile};

#[derive(Clone, PartialEq, Message)]
pub struct PbProfile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
}

/// Strings, locations and functions, each stored once.
#[derive(Default)]
struct Tables {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    locations: HashMap<Frame, u64>,
    profile: PbProfile,
}

impl Tables {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(id) = self.string_ids.get(s) {
            return *id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), id);
        id
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.string(kind),
            unit: self.string(unit),
        }
    }

    /// One location (and one function) per distinct frame.
    fn location(&mut self, frame: &Frame) -> u64 {
        if let Some(id) = self.locations.get(frame) {
            return *id;
        }
        let id = self.locations.len() as u64 + 1;
        let shown = match frame.kernel {
            true => format!("{}_[k]", frame.name),
            false => frame.name.clone(),
        };
        let name = self.string(&shown);
        self.profile.function.push(Function {
            id,
            name,
            system_name: name,
        });
        self.profile.location.push(Location {
            id,
            line: vec![Line { function_id: id }],
        });
        self.locations.insert(frame.clone(), id);
        id
    }

    fn label(&mut self, key: &str, value: &str) -> Label {
        Label {
            key: self.string(key),
            str: self.string(value),
            num: 0,
        }
    }

    fn number(&mut self, key: &str, num: u32) -> Label {
        Label {
            key: self.string(key),
            str: 0,
            num: i64::from(num),
        }
    }
}

/// Sample types samples/count and cpu/nanoseconds; labels pid, thread (numbers), comm,
/// thread_name and container (when known).
pub fn to_proto(profile: &Profile) -> PbProfile {
    let mut t = Tables::default();
    t.string("");
    let period = profile.period_ns() as i64;
    t.profile.sample_type = vec![
        t.value_type("samples", "count"),
        t.value_type("cpu", "nanoseconds"),
    ];
    t.profile.period_type = Some(t.value_type("cpu", "nanoseconds"));
    t.profile.period = period;
    for s in &profile.stacks {
        let location_id = s.frames.iter().rev().map(|f| t.location(f)).collect();
        let mut label = vec![
            t.number("pid", s.pid),
            t.number("thread", s.tid),
            t.label("comm", &s.comm),
            t.label("thread_name", &s.thread),
        ];
        if let Some(c) = &s.container {
            label.push(t.label("container", c));
        }
        let count = s.count as i64;
        t.profile.sample.push(Sample {
            location_id,
            value: vec![count, count.saturating_mul(period)],
            label,
        });
    }
    let since_epoch = profile
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.profile.time_nanos = since_epoch.as_nanos() as i64;
    t.profile.duration_nanos = profile.duration.as_nanos() as i64;
    t.profile.string_table = std::mem::take(&mut t.strings);
    t.profile
}

pub fn encode(profile: &Profile) -> Result<Vec<u8>> {
    let bytes = to_proto(profile).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes)?;
    Ok(gz.finish()?)
}

#[cfg(test)]
mod tests {
    use super::super::model::Stack;
    use super::*;

    #[test]
    fn samples_and_labels_round_trip() {
        let frame = |name: &str| Frame {
            name: name.to_string(),
            kernel: false,
        };
        let profile = Profile {
            stacks: vec![Stack {
                pid: 42,
                tid: 43,
                comm: "app".to_string(),
                thread: "worker".to_string(),
                container: Some("abc".to_string()),
                frames: vec![frame("main"), frame("leaf")],
                count: 5,
            }],
            frequency: 100,
            started: std::time::SystemTime::UNIX_EPOCH,
            duration: std::time::Duration::from_secs(2),
        };
        let gz = encode(&profile).expect("encode");
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw)
            .expect("gunzip");
        let p = PbProfile::decode(&raw[..]).expect("decode");
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(p.sample[0].value, vec![5, 5 * 10_000_000]);
        assert_eq!(s(p.sample_type[1].r#type), "cpu");
        let leaf = p.sample[0].location_id[0];
        let function = p.location[leaf as usize - 1].line[0].function_id;
        assert_eq!(s(p.function[function as usize - 1].name), "leaf");
        let labels: Vec<(&str, &str, i64)> = p.sample[0]
            .label
            .iter()
            .map(|l| (s(l.key), s(l.str), l.num))
            .collect();
        assert!(labels.contains(&("pid", "", 42)));
        assert!(labels.contains(&("container", "abc", 0)));
    }
}
