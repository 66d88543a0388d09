//! `ksight trace --json` as a child process: started, waited for until attached (its
//! `start` record), stopped with SIGINT, and every record checked against the documented
//! JSON schema (docs/trace.md, `JSON schema`).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::KSIGHT;

pub struct Tracer {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
    pub start: Value,
}

pub struct Finished {
    pub records: Vec<Value>,
    pub stderr: String,
}

impl Tracer {
    pub fn start(args: &[&str]) -> Tracer {
        Tracer::start_with(args, &[])
    }

    /// Starts `ksight trace ARGS --json` and waits for its `start` record (attached).
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Tracer {
        let mut child = Command::new(KSIGHT)
            .arg("trace")
            .args(args)
            .args(["--json", "--log", "warn"])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ksight trace");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut tracer = Tracer {
            child,
            lines: rx,
            stdout: Some(stdout),
            stderr: Some(stderr),
            start: Value::Null,
        };
        let first = tracer.lines.recv_timeout(Duration::from_secs(30));
        let Ok(first) = first else {
            let f = tracer.finish();
            panic!("ksight trace did not start: {}", f.stderr);
        };
        tracer.start = serde_json::from_str(&first).expect("start record is JSON");
        assert_eq!(tracer.start["type"], "start", "first record: {first}");
        tracer
    }

    /// SIGINT, wait for exit 0, and every record it printed (start record excluded).
    pub fn finish(mut self) -> Finished {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait ksight");
        if let Some(h) = self.stdout.take() {
            let _ = h.join();
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let records: Vec<Value> = self
            .lines
            .try_iter()
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        assert!(status.success(), "ksight trace exited {status}: {stderr}");
        for r in &records {
            check_schema(r);
        }
        Finished { records, stderr }
    }
}

impl Finished {
    pub fn of_type(&self, t: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["type"] == t).collect()
    }

    pub fn summary(&self, kind: &str) -> (u64, u64, u64) {
        let s = self.of_type("summary");
        assert_eq!(s.len(), 1, "one summary record: {:?}", self.records.last());
        let e = &s[0]["events"][kind];
        let get = |f: &str| e[f].as_u64().expect("summary counts");
        (get("delivered"), get("lost"), get("generated"))
    }
}

/// The documented JSON schema (docs/trace.md, `JSON schema`): field names and types.
pub fn check_schema(r: &Value) {
    let t = r["type"].as_str().expect("type is a string");
    let has = |f: &str, ok: fn(&Value) -> bool| {
        assert!(ok(&r[f]), "{t} record: bad or missing {f}: {r}");
    };
    let (num, s, b) = (
        Value::is_u64 as fn(&Value) -> bool,
        Value::is_string as fn(&Value) -> bool,
        Value::is_boolean as fn(&Value) -> bool,
    );
    let opt_s: fn(&Value) -> bool = |v| v.is_null() || v.is_string();
    let opt_n: fn(&Value) -> bool = |v| v.is_null() || v.is_u64() || v.is_i64();
    has("time_ns", num);
    if matches!(
        t,
        "exec" | "open" | "fork" | "exit" | "signal" | "tcp" | "readline"
    ) {
        for f in ["pid", "tid", "uid", "cgroup_id"] {
            has(f, num);
        }
        has("comm", s);
        has("container", opt_s);
    }
    match t {
        "start" => has("events", Value::is_array),
        "exec" => {
            has("ppid", num);
            has("filename", s);
            has("argv", Value::is_array);
            has("argv_truncated", b);
            has("ret", Value::is_i64);
            has("error", opt_s);
        }
        "open" => {
            for f in ["syscall", "path", "flags_text"] {
                has(f, s);
            }
            has("flags", num);
            has("ret", Value::is_i64);
            has("fd", opt_n);
            has("error", opt_s);
        }
        "fork" => has("child_pid", num),
        "exit" => {
            has("ppid", num);
            has("exit_code", opt_n);
            has("signal", opt_s);
            has("core_dumped", b);
            has("lifetime_ns", num);
        }
        "signal" => {
            for f in ["signal", "target_comm", "result"] {
                has(f, s);
            }
            for f in ["target_pid", "target_tid"] {
                has(f, num);
            }
            has("signal_number", Value::is_i64);
        }
        "tcp" => {
            for f in ["event", "family", "saddr", "daddr", "oldstate", "newstate"] {
                has(f, s);
            }
            for f in ["sport", "dport"] {
                has(f, num);
            }
            has("failed", b);
            has("duration_ns", opt_n);
        }
        "readline" => {
            has("line", s);
            has("truncated", b);
            has("unreadable", b);
            has("wait_ns", opt_n);
        }
        "lost" => {
            has("event", s);
            has("count", num);
            has("total", num);
        }
        "summary" => {
            has("events", Value::is_object);
            has("skipped_runs", num);
        }
        "syscalls" => {
            has("interval_ns", num);
            has("rows", Value::is_array);
        }
        other => panic!("unknown record type {other}: {r}"),
    }
}
