//! A real Prometheus server (Debian's package) on loopback, scraping one ksight.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, http_get};

/// Scrape interval and timeout. Prometheus caps the timeout at the interval: at 1 s, every
/// scrape of a guest under emulation on a loaded host timed out and a query found nothing.
pub const SCRAPE: &str = "3s";
/// How long a query may wait for its answer (Prometheus' start, first scrapes).
pub const QUERY_DEADLINE: Duration = Duration::from_secs(120);

/// A Prometheus server scraping one ksight every SCRAPE, killed on drop.
pub struct Prometheus {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(target_port: u16, flags: &[&str]) -> Prometheus {
        Prometheus::start_scraping(target_port, "", flags)
    }

    /// Scraping with `job_extra` added to the job (YAML lines indented by four spaces: a
    /// scheme, tls_config, basic_auth).
    pub fn start_scraping(target_port: u16, job_extra: &str, flags: &[&str]) -> Prometheus {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("ksight-prom-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {SCRAPE}\n  scrape_timeout: {SCRAPE}\nscrape_configs:\n  - job_name: ksight\n{job_extra}    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
            ),
        )
        .expect("write config");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs (Debian package prometheus)");
        Prometheus { child, port, dir }
    }

    /// The first sample of an instant query, once it has one that `ready` accepts.
    pub fn query_until(&self, promql: &str, ready: impl Fn(f64) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + QUERY_DEADLINE;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(samples) = self.query(promql) {
                if let Some(sample) = samples.first() {
                    if value(sample).is_some_and(&ready) {
                        return sample.clone();
                    }
                }
                last = Some(samples);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "Prometheus gave no ready answer to {promql} within {QUERY_DEADLINE:?}; last: {last:?}; \
             its target: {}",
            self.target_health()
        );
    }

    /// The samples an instant query returns now.
    pub fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (_, body) = http_get(self.port, &path, None).map_err(|e| e.to_string())?;
        let answer: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        match answer["data"]["result"].as_array() {
            Some(samples) => Ok(samples.clone()),
            None => Err(format!("no result: {answer}")),
        }
    }

    /// The scrape target's health, last error and last scrape duration, for a failure message.
    pub fn target_health(&self) -> String {
        let Ok((_, body)) = http_get(self.port, "/api/v1/targets", None) else {
            return "(targets API did not answer)".into();
        };
        let targets: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let t = &targets["data"]["activeTargets"][0];
        format!(
            "health {} lastError {} lastScrapeDuration {}",
            t["health"], t["lastError"], t["lastScrapeDuration"]
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn value(sample: &serde_json::Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}

pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
