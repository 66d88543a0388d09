//! The collector thread: it owns every BPF object, answers scrapes and runs upkeep.
//!
//! - **Single flight**: scrapes waiting when a sweep starts share it: one sweep of the maps,
//!   one encoding per format, however many clients asked.
//! - **Upkeep on its own clock**: draining, folding and claim expiry run when due, checked
//!   after every sweep, so no scrape load can postpone them by more than one sweep.
//! - **Health**: each collector's last scrape (success, duration), upkeep failures by step,
//!   last successful upkeep and folded series are exported with every scrape.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tracing::warn;

use super::own::{
    self, COLLECTOR_SCRAPE_DURATION, COLLECTOR_SCRAPE_SUCCESS, SCRAPE_DURATION, SERIES_FOLDED,
    UPKEEP_DURATION, UPKEEP_FAILURES, UPKEEP_LAST_SUCCESS, WEB_CONFIG_RELOAD_FAILURES,
};
use crate::bpf::table::StepFailed;
use crate::collector::{Attachment, Running};
use crate::enrich::SharedEnricher;
use crate::metrics::encode::{encode, Format};
use crate::metrics::model::{Family, Value};

/// A scrape: the format wanted, whether gzip, and where to send the encoded body.
pub struct ScrapeRequest {
    pub format: Format,
    pub gzip: bool,
    pub reply: oneshot::Sender<Body>,
}

/// An encoded exposition, and whether it is gzipped.
#[derive(Clone)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub gzip: bool,
}

/// What every scrape needs besides the collectors.
pub struct Scrapes {
    pub attachments: Vec<Attachment>,
    pub enricher: SharedEnricher,
    pub bpf_stats: bool,
    /// ksight's own process_* metrics (off with --web.disable-exporter-metrics).
    pub exporter_metrics: bool,
    /// Web config reloads refused, when serve has a web config.
    pub web_config_failures: Option<Arc<AtomicU64>>,
}

/// One running collector's record for the self-metrics.
#[derive(Default)]
struct Health {
    scrape_ok: bool,
    scrape_seconds: f64,
    upkeep_failures: BTreeMap<&'static str, u64>,
    /// Unix time of its last successful upkeep (0: none yet).
    upkeep_ok_at: f64,
}

pub struct Worker {
    running: Vec<Running>,
    health: Vec<Health>,
    scrapes: Scrapes,
    upkeep_interval: Duration,
    upkeep_seconds: f64,
}

impl Worker {
    pub fn new(running: Vec<Running>, scrapes: Scrapes, upkeep_interval: Duration) -> Self {
        let health = running.iter().map(|_| Health::default()).collect();
        Self {
            running,
            health,
            scrapes,
            upkeep_interval,
            upkeep_seconds: 0.0,
        }
    }

    /// Serves scrapes and runs upkeep until every sender is gone; dropping the collectors
    /// then detaches their programs and frees their maps.
    pub fn run(mut self, rx: mpsc::Receiver<ScrapeRequest>) {
        let mut next_upkeep = Instant::now() + self.upkeep_interval;
        loop {
            let wait = next_upkeep.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(first) => {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    self.answer(waiting);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_upkeep {
                self.upkeep();
                next_upkeep = Instant::now() + self.upkeep_interval;
            }
        }
    }

    /// One sweep for every waiting scrape; one encoding per format asked.
    fn answer(&mut self, waiting: Vec<ScrapeRequest>) {
        if crate::fault_injection::check("panic", "worker").is_err() {
            panic!("injected panic (KSIGHT_BREAK_STEPS=panic)");
        }
        if let Ok(mut enricher) = self.scrapes.enricher.lock() {
            enricher.new_scrape();
        }
        let families = self.sweep();
        let mut bodies: Vec<((Format, bool), Body)> = Vec::new();
        for request in waiting {
            let wanted = (request.format, request.gzip);
            let body = match bodies.iter().find(|(w, _)| *w == wanted) {
                Some((_, body)) => body.clone(),
                None => {
                    let body = body_of(&families, request.format, request.gzip);
                    bodies.push((wanted, body.clone()));
                    body
                }
            };
            // The client may have gone (timeout): nothing to do then.
            let _ = request.reply.send(body);
        }
    }

    fn sweep(&mut self) -> Vec<Family> {
        let start = Instant::now();
        let mut families = vec![own::build_info()];
        families.extend(own::up_families(&self.scrapes.attachments));
        for (r, health) in self.running.iter_mut().zip(self.health.iter_mut()) {
            let t0 = Instant::now();
            let before = families.len();
            let result = crate::fault_injection::check("collect", r.name)
                .and_then(|()| r.collector.collect(&mut families));
            health.scrape_seconds = t0.elapsed().as_secs_f64();
            health.scrape_ok = result.is_ok();
            if let Err(err) = result {
                // No half of a collector's families: a scrape shows all of it or none.
                families.truncate(before);
                warn!(collector = r.name, "scrape failed: {err:#}");
            }
        }
        let objects: Vec<_> = self
            .running
            .iter()
            .map(|r| (r.name, r.collector.object()))
            .collect();
        own::object_families(&objects, &mut families);
        own::bpf_programs(&objects, self.scrapes.bpf_stats, &mut families);
        families.extend(self.health_families());
        // Always there (0 without --web.config.file), as every declared family is.
        let reload_failures = self
            .scrapes
            .web_config_failures
            .as_ref()
            .map_or(0, |f| f.load(Ordering::Relaxed));
        families.push(
            Family::of(&WEB_CONFIG_RELOAD_FAILURES).with(vec![], Value::Int(reload_failures)),
        );
        if self.scrapes.exporter_metrics {
            families.extend(own::process_families());
        }
        families.push(
            Family::of(&SCRAPE_DURATION).with(vec![], Value::Float(start.elapsed().as_secs_f64())),
        );
        families
    }

    fn upkeep(&mut self) {
        let start = Instant::now();
        let now_unix = unix_now();
        for (r, health) in self.running.iter_mut().zip(self.health.iter_mut()) {
            match r.collector.maintain(start) {
                Ok(()) => health.upkeep_ok_at = now_unix,
                Err(err) => {
                    let step = err.downcast_ref::<StepFailed>().map_or("other", |s| s.0);
                    *health.upkeep_failures.entry(step).or_insert(0) += 1;
                    warn!(
                        collector = r.name,
                        step, "upkeep failed, retried next round: {err:#}"
                    );
                }
            }
        }
        self.upkeep_seconds = start.elapsed().as_secs_f64();
    }

    fn health_families(&self) -> Vec<Family> {
        let mut success = Family::of(&COLLECTOR_SCRAPE_SUCCESS);
        let mut duration = Family::of(&COLLECTOR_SCRAPE_DURATION);
        let mut failures = Family::of(&UPKEEP_FAILURES);
        let mut last_ok = Family::of(&UPKEEP_LAST_SUCCESS);
        let mut folded = Family::of(&SERIES_FOLDED);
        for (r, h) in self.running.iter().zip(&self.health) {
            let collector = || vec![("collector", r.name.to_string())];
            success.set(collector(), Value::Int(h.scrape_ok as u64));
            duration.set(collector(), Value::Float(h.scrape_seconds));
            last_ok.set(collector(), Value::Float(h.upkeep_ok_at));
            folded.set(collector(), Value::Int(r.collector.series_folded()));
            for step in ["flip", "barrier", "drain", "other"] {
                let n = h.upkeep_failures.get(step).copied().unwrap_or(0);
                let mut labels = collector();
                labels.push(("step", step.to_string()));
                failures.set(labels, Value::Int(n));
            }
        }
        let upkeep = Family::of(&UPKEEP_DURATION).with(vec![], Value::Float(self.upkeep_seconds));
        vec![success, duration, failures, last_ok, folded, upkeep]
    }
}

/// The exposition in `format`, gzipped when asked (encoded once per sweep, shared).
fn body_of(families: &[Family], format: Format, gzip: bool) -> Body {
    let bytes = encode(families, format);
    if !gzip {
        return Body { bytes, gzip };
    }
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec does not fail; should it, the plain body goes out, marked as such.
    match encoder.write_all(&bytes).and_then(|()| encoder.finish()) {
        Ok(compressed) => Body {
            bytes: compressed,
            gzip: true,
        },
        Err(_) => Body { bytes, gzip: false },
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
