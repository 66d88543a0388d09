//! A real Prometheus server on loopback scrapes ksight and finds a count through its query API.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_and_queries_ksight() {
    if !privileged() {
        return;
    }
    let server = Server::start(&[]);
    let comm = unique_comm("prom");
    in_child(&comm, || {
        for _ in 0..777 {
            // SAFETY: getppid cannot fail.
            unsafe { libc::getppid() };
        }
    });

    let dir = std::env::temp_dir().join(format!("ksight-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ksight\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            server.port
        ),
    )
    .expect("write config");
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus runs (Debian package prometheus)");
    let _prometheus = Prometheus(child);

    let query = format!("/api/v1/query?query=ksight_syscalls_total%7Bsyscall%3D%22getppid%22%2Ccomm%3D%22{comm}%22%7D");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((_, body)) = http_get(port, &query, None) {
            let reply: serde_json::Value =
                serde_json::from_str(&body).expect("query API answers JSON");
            if let Some(sample) = reply["data"]["result"].as_array().and_then(|r| r.first()) {
                assert_eq!(sample["value"][1], "777", "{reply}");
                assert_eq!(sample["metric"]["job"], "ksight");
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not find the series within 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
