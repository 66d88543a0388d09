//! `ksight serve`: start the collectors, then answer /metrics from their maps.
//!
//! The collectors live on one thread that owns every BPF object; HTTP handlers ask it for a
//! snapshot through a channel, and between scrapes it drains tables and folds idle series.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::bpf::LoadConfig;
use crate::collector::{self, Attachment, Limits, Running};
use crate::enrich::{Enricher, LabelSet, SharedEnricher};
use crate::metrics::encode::{encode, Format};
use crate::metrics::model::{Family, Kind, Value};
use crate::metrics::own;
use crate::privileges;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on for HTTP (host:port, or :port for every interface).
    #[arg(
        long = "web.listen-address",
        default_value = ":9712",
        value_name = "ADDR"
    )]
    pub listen: String,

    /// Comma-separated collectors to run (default: every default collector).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub collectors: Option<Vec<String>>,

    /// --collector.NAME, --no-collector.NAME, --collector.disable-defaults.
    #[command(flatten)]
    pub selection: crate::collectors::Selection,

    /// Fail when any selected collector cannot attach (default: run the others).
    #[arg(long)]
    pub strict: bool,

    /// Load and attach every selected collector, print the table, and exit 0 or 1.
    #[arg(long)]
    pub check: bool,

    /// Count ksight's own process too (left out by default).
    #[arg(long)]
    pub include_self: bool,

    /// Fold a series into comm="(other processes)" after this long without increments.
    #[arg(long = "series-ttl", default_value = "10m", value_parser = crate::units::parse_duration, value_name = "DURATION")]
    pub series_ttl: Duration,

    /// How often tables are drained and idle series folded.
    #[arg(long = "fold-interval", default_value = "15s", value_parser = crate::units::parse_duration, value_name = "DURATION")]
    pub fold_interval: Duration,

    /// Capacity of each labelled counter map (process, files, memory, signals, page_faults).
    #[arg(long = "table.capacity", default_value_t = 4096, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1 << 22))]
    pub table_capacity: u32,

    /// Export the programs' run time and run count (turns on kernel BPF statistics).
    #[arg(long = "bpf-stats")]
    pub bpf_stats: bool,

    /// Cgroup labels to add to per-process series: a comma list of cgroup (path), container
    /// (64-hex id), pod (Kubernetes pod UID), unit (systemd unit). Default: none.
    #[arg(
        long,
        default_value = "",
        value_name = "LIST",
        hide_default_value = true
    )]
    pub labels: LabelSet,
}

/// A scrape: the format wanted, and where to send the encoded body.
type ScrapeRequest = (Format, oneshot::Sender<Vec<u8>>);

pub fn run(args: ServeArgs, btf: Option<&'static Path>) -> Result<ExitCode> {
    let selected = args.selection.resolve(args.collectors.as_deref())?;
    let addr = parse_listen(&args.listen)?;
    privileges::require_bpf_privileges()?;
    let (enricher, cgroup_mode) = Enricher::new(args.labels);
    let enricher: SharedEnricher = Arc::new(Mutex::new(enricher));
    let config = LoadConfig {
        cgroup_mode,
        ..load_config(btf, args.include_self)?
    };
    // Bind before loading anything: a taken port fails fast and loads nothing.
    let listener = if args.check {
        None
    } else {
        Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {}", args.listen))?,
        )
    };
    let _stats = if args.bpf_stats {
        Some(enable_bpf_stats()?)
    } else {
        None
    };
    let limits = Limits {
        table_capacity: args.table_capacity,
        series_ttl: args.series_ttl,
    };
    let options = &args.selection.options;
    let (running, attachments) =
        collector::start_all(&selected, limits, options, config, &enricher);
    print_attachments(&attachments, args.check);
    let failed: Vec<&Attachment> = attachments.iter().filter(|a| a.hook.is_none()).collect();
    if args.check {
        return Ok(if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if args.strict && !failed.is_empty() {
        bail!(
            "--strict: collector {} could not attach: {}",
            failed[0].collector,
            failed[0].reason()
        );
    }
    if running.is_empty() {
        bail!("no collector could attach");
    }
    let listener = listener.ok_or_else(|| anyhow!("no listener"))?;
    let (tx, rx) = mpsc::channel::<ScrapeRequest>();
    let worker_attachments = attachments.clone();
    let fold_interval = args.fold_interval;
    let bpf_stats = args.bpf_stats;
    let worker = std::thread::Builder::new()
        .name("ksight-collect".into())
        .spawn(move || {
            let scrapes = Scrapes {
                attachments: worker_attachments,
                enricher,
                bpf_stats,
            };
            collect_loop(running, scrapes, rx, fold_interval)
        })?;
    serve_http(listener, tx)?;
    worker
        .join()
        .map_err(|_| anyhow!("collector thread panicked"))?;
    info!("detached; bye");
    Ok(ExitCode::SUCCESS)
}

/// `:9712` listens on every interface; `host:port` and `[v6]:port` as usual.
pub fn parse_listen(text: &str) -> Result<SocketAddr> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    full.parse()
        .map_err(|_| anyhow!("invalid --web.listen-address {text:?} (use :PORT or HOST:PORT)"))
}

fn load_config(btf: Option<&'static Path>, include_self: bool) -> Result<LoadConfig> {
    privileges::resolve_btf(btf)?;
    Ok(LoadConfig {
        include_self,
        btf,
        ..LoadConfig::default()
    })
}

fn print_attachments(attachments: &[Attachment], to_stdout: bool) {
    let mut text = format!("{:<12} {:<11} {}\n", "COLLECTOR", "HOOK", "NOTE");
    for a in attachments {
        let hook = a.hook.map_or("none", |h| h.as_str());
        let note = if a.hook.is_none() {
            a.reason()
        } else if let Some(host) = a.shared_with {
            format!("shares the programs of {host}")
        } else if a.failures.is_empty() {
            "ok".into()
        } else {
            format!("fell back: {}", a.reason())
        };
        text.push_str(&format!("{:<12} {:<11} {}\n", a.collector, hook, note));
    }
    if to_stdout {
        print!("{text}");
    } else {
        eprint!("{text}");
    }
}

/// What every scrape needs besides the collectors.
struct Scrapes {
    attachments: Vec<Attachment>,
    enricher: SharedEnricher,
    bpf_stats: bool,
}

fn collect_loop(
    mut running: Vec<Running>,
    scrapes: Scrapes,
    rx: mpsc::Receiver<ScrapeRequest>,
    fold_interval: Duration,
) {
    let mut next_fold = Instant::now() + fold_interval;
    loop {
        let wait = next_fold.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok((format, reply)) => {
                if let Ok(mut enricher) = scrapes.enricher.lock() {
                    enricher.new_scrape();
                }
                let body = scrape(
                    &mut running,
                    &scrapes.attachments,
                    format,
                    scrapes.bpf_stats,
                );
                let _ = reply.send(body);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                for r in running.iter_mut() {
                    if let Err(err) = r.collector.maintain(now) {
                        warn!(collector = r.name, "upkeep failed: {err:#}");
                    }
                }
                next_fold = now + fold_interval;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Dropping the collectors detaches their programs and frees their maps.
    drop(running);
}

fn scrape(
    running: &mut [Running],
    attachments: &[Attachment],
    format: Format,
    bpf_stats: bool,
) -> Vec<u8> {
    let start = Instant::now();
    let mut families = vec![own::build_info()];
    families.extend(collector::up_families(attachments));
    for r in running.iter_mut() {
        let t0 = Instant::now();
        let result = r.collector.collect(&mut families);
        tracing::debug!(collector = r.name, elapsed = ?t0.elapsed(), "collected");
        if let Err(err) = result {
            warn!(collector = r.name, "scrape failed: {err:#}");
        }
    }
    let objects: Vec<_> = running
        .iter()
        .map(|r| (r.name, r.collector.object()))
        .collect();
    own::object_families(&objects, &mut families);
    own::bpf_programs(&objects, bpf_stats, &mut families);
    tracing::debug!(elapsed = ?start.elapsed(), "collectors done");
    families.extend(own::process_families());
    families.push(
        Family::new(
            "ksight_scrape_duration_seconds",
            Kind::Gauge,
            "Time to read the maps for this scrape.",
        )
        .with(vec![], Value::Float(start.elapsed().as_secs_f64())),
    );
    let body = encode(&families, format);
    tracing::debug!(elapsed = ?start.elapsed(), "encoded");
    body
}

fn serve_http(listener: std::net::TcpListener, tx: mpsc::Sender<ScrapeRequest>) -> Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        info!(address = %listener.local_addr()?, "serving /metrics");
        let app = axum::Router::new()
            .route("/", get(landing))
            .route("/metrics", get(metrics))
            .with_state(tx);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("signal received, detaching");
}

async fn landing() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html><head><title>ksight</title></head><body><h1>ksight</h1>",
        "<p>Linux kernel metrics with eBPF.</p><p><a href=\"/metrics\">Metrics</a></p>",
        "<p>version ",
        env!("CARGO_PKG_VERSION"),
        "</p></body></html>\n"
    ))
}

async fn metrics(State(tx): State<mpsc::Sender<ScrapeRequest>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let (reply_tx, reply_rx) = oneshot::channel();
    if tx.send((format, reply_tx)).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "collectors stopped\n").into_response();
    }
    match reply_rx.await {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n").into_response(),
    }
}

/// Turns on the kernel's BPF run-time statistics for as long as the returned fd lives.
fn enable_bpf_stats() -> Result<std::os::fd::OwnedFd> {
    // SAFETY: a plain bpf() command; a non-negative return is a new fd we then own.
    let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    if fd < 0 {
        bail!(
            "--bpf-stats: the kernel refused BPF_ENABLE_STATS: {}",
            std::io::Error::from_raw_os_error(-fd)
        );
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen(":9712").ok(), "0.0.0.0:9712".parse().ok());
        assert_eq!(parse_listen("127.0.0.1:1").ok(), "127.0.0.1:1".parse().ok());
        assert!(parse_listen("nope").is_err());
    }
}
