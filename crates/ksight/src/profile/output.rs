//! The outputs: folded stacks, an SVG flame graph (inferno), pprof (pprof.rs).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result};

use super::args::Format;
use super::model::Profile;
use crate::profiler::pprof;

pub fn write(profile: &Profile, format: Format, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Folded => {
            for (stack, count) in folded(profile) {
                writeln!(out, "{stack} {count}")?;
            }
        }
        Format::Svg => svg(profile, out)?,
        Format::Pprof => out.write_all(&pprof::encode(profile)?)?,
    }
    out.flush().context("writing the profile")
}

/// `comm;outer;…;leaf count` lines (flamegraph.pl and inferno read them), sorted, one per
/// distinct stack; kernel frames carry the `_[k]` suffix those tools colour.
pub fn folded(profile: &Profile) -> BTreeMap<String, u64> {
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for s in &profile.stacks {
        let mut line = folded_frame(&s.comm);
        for f in &s.frames {
            line.push(';');
            line.push_str(&folded_frame(&f.name));
            if f.kernel {
                line.push_str("_[k]");
            }
        }
        *lines.entry(line).or_default() += s.count;
    }
    lines
}

/// A frame as folded text: printable, with `;` (the frame separator) written `\x3b`. Spaces
/// may stay: the count is after the last one.
fn folded_frame(name: &str) -> String {
    crate::decode::escape_controls(name).replace(';', "\\x3b")
}

fn svg(profile: &Profile, out: &mut dyn Write) -> Result<()> {
    let lines: Vec<String> = folded(profile)
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();
    let mut options = inferno::flamegraph::Options::default();
    options.title = "ksight profile".to_string();
    options.count_name = "samples".to_string();
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
        .context("drawing the flame graph")
}

#[cfg(test)]
mod tests {
    use super::super::model::{Frame, Stack};
    use super::*;

    fn profile() -> Profile {
        let frame = |name: &str, kernel| Frame {
            name: name.to_string(),
            kernel,
        };
        let stack = |tid, frames: Vec<Frame>, count| Stack {
            pid: 7,
            tid,
            comm: "a;b".to_string(),
            thread: "t".to_string(),
            container: None,
            frames,
            count,
        };
        Profile {
            stacks: vec![
                stack(7, vec![frame("main", false), frame("leaf", false)], 3),
                stack(8, vec![frame("main", false), frame("leaf", false)], 2),
                stack(
                    8,
                    vec![frame("main", false), frame("do_syscall_64", true)],
                    1,
                ),
            ],
            frequency: 49,
            started: std::time::SystemTime::UNIX_EPOCH,
            duration: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn folded_lines_merge_threads_and_escape_separators() {
        let lines = folded(&profile());
        assert_eq!(lines.get("a\\x3bb;main;leaf"), Some(&5));
        assert_eq!(lines.get("a\\x3bb;main;do_syscall_64_[k]"), Some(&1));
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn svg_names_the_frames() {
        let mut out = Vec::new();
        write(&profile(), Format::Svg, &mut out).expect("svg");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with("<?xml"));
        assert!(text.contains("leaf"));
    }
}
