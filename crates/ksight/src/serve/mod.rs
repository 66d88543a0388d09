//! `ksight serve`: start the collectors, then answer /metrics from their maps.
//!
//! The collectors live on one thread that owns every BPF object (worker.rs); HTTP handlers
//! (http.rs) ask it for a snapshot through a channel. If that thread ends, so does ksight,
//! with one line and a non-zero status, so a supervisor restarts it.

mod auth;
mod config_file;
mod http;
mod listen;
pub mod own;
mod reload;
mod web_config;
mod worker;

use std::path::Path;
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use tokio::sync::oneshot;
use tracing::info;

use crate::bpf::LoadConfig;
use crate::collector::{self, Attachment, Limits};
use crate::common::limits::raise_open_files;
use crate::configs::collector::ConfigCollector;
use crate::enrich::{Enricher, LabelSet, SharedEnricher};
use crate::privileges;
use http::WebLimits;
use worker::{ScrapeRequest, Scrapes, Worker};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on for HTTP: HOST:PORT, [V6]:PORT, or :PORT for every interface
    /// (IPv6 and IPv4). Repeat it to listen on several.
    #[arg(
        long = "web.listen-address",
        default_value = ":9712",
        value_name = "ADDR",
        action = clap::ArgAction::Append
    )]
    pub listen: Vec<String>,

    /// TLS, basic auth and response headers, in exporter-toolkit's web config format; read
    /// again when it changes.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config: Option<std::path::PathBuf>,

    /// Listen on the sockets systemd passes (socket activation) instead of addresses.
    #[arg(long = "web.systemd-socket")]
    pub systemd_socket: bool,

    /// The path of the metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", value_name = "PATH",
          value_parser = http::parse_telemetry_path)]
    pub telemetry_path: String,

    /// Leave out ksight's own process_* metrics.
    #[arg(long = "web.disable-exporter-metrics")]
    pub disable_exporter_metrics: bool,

    /// Comma-separated collectors to run (default: every default collector).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub collectors: Option<Vec<String>>,

    /// --collector.NAME, --no-collector.NAME, --collector.disable-defaults.
    #[command(flatten)]
    pub selection: crate::collectors::Selection,

    /// Fail when any selected collector, or any program of a config, cannot attach
    /// (default: run the others). `--config.strict` is ebpf_exporter's spelling.
    #[arg(long, alias = "config.strict")]
    pub strict: bool,

    /// Load and attach every selected collector and config, print the table, and exit 0
    /// (all attached), 1 (the kernel refused one) or 2 (bad input). `--config.check` is
    /// ebpf_exporter's spelling.
    #[arg(long, alias = "config.check")]
    pub check: bool,

    /// The folder of ebpf_exporter configs: `<name>.yaml` beside `<name>.bpf.o`.
    #[arg(long = "config.dir", value_name = "DIR")]
    pub config_dir: Option<std::path::PathBuf>,

    /// Comma-separated configs of --config.dir to run beside the collectors.
    #[arg(
        long = "config.names",
        value_delimiter = ',',
        value_name = "LIST",
        requires = "config_dir"
    )]
    pub config_names: Vec<String>,

    /// Count ksight's own process too (left out by default).
    #[arg(long)]
    pub include_self: bool,

    /// Fold a series into comm="(other processes)" after this long without increments.
    #[arg(long = "series-ttl", default_value = "10m", value_parser = crate::common::units::parse_duration, value_name = "DURATION")]
    pub series_ttl: Duration,

    /// --capabilities.keep and --user: what is kept after attaching (by default nothing).
    #[command(flatten)]
    pub privileges: crate::privileges::drop::DropArgs,

    /// At most this many scrapes wait for the collectors; more get 503 at once.
    #[arg(long = "web.max-requests", default_value_t = 40, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_requests: u32,

    /// At most this many open connections; when full, the longest idle one is closed.
    #[arg(long = "web.max-connections", default_value_t = 1024, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// A request's headers must arrive within this; also how long a kept-alive connection
    /// may wait idle for its next request.
    #[arg(long = "web.read-header-timeout", default_value = "10s", value_parser = crate::common::units::parse_duration, value_name = "DURATION")]
    pub read_header_timeout: Duration,

    /// A response write that makes no progress this long ends the connection.
    #[arg(long = "web.write-timeout", default_value = "10s", value_parser = crate::common::units::parse_duration, value_name = "DURATION")]
    pub write_timeout: Duration,

    /// How often tables are drained and idle series folded.
    #[arg(long = "fold-interval", default_value = "15s", value_parser = crate::common::units::parse_duration, value_name = "DURATION")]
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

    /// Pin the maps under /sys/fs/bpf/ksight/NAME/COLLECTOR/MAP for bpftool; removed on a
    /// clean exit (`ksight unpin NAME` after a SIGKILL).
    #[arg(long, value_parser = crate::bpf::pins::parse_name, value_name = "NAME")]
    pub pin: Option<String>,
}

pub fn run(args: ServeArgs, btf: Option<&'static Path>) -> Result<ExitCode> {
    let selected = args
        .selection
        .resolve(args.collectors.as_deref(), !args.config_names.is_empty())?;
    if args.config_names.is_empty() && args.config_dir.is_some() {
        return Err(crate::common::exit::bad_input(anyhow!(
            "--config.dir needs --config.names: which configs of it to run"
        )));
    }
    let addresses = args
        .listen
        .iter()
        .map(|a| listen::Address::parse(a))
        .collect::<Result<Vec<_>>>()?;
    let web = http::WebState {
        file: args
            .web_config
            .clone()
            .map(reload::Watched::new)
            .transpose()
            .map_err(crate::common::exit::bad_input)?,
        auth: Default::default(),
    };
    if args.pin.is_some() && args.privileges.user.is_some() {
        return Err(crate::common::exit::bad_input(anyhow!(
            "--pin and --user cannot go together: the pins under {} are root's",
            crate::bpf::pins::BPFFS
        )));
    }
    privileges::require_bpf_privileges()?;
    // Before loading anything: a NAME held by a running ksight fails fast.
    let pins = match (&args.pin, args.check) {
        (Some(name), false) => Some(crate::bpf::pins::PinDir::acquire(name)?),
        _ => None,
    };
    let (enricher, cgroup_mode) = Enricher::new(args.labels);
    let enricher: SharedEnricher = Arc::new(Mutex::new(enricher));
    let config = LoadConfig {
        cgroup_mode,
        ..load_config(btf, args.include_self)?
    };
    // Bind before loading anything: a taken port fails fast and loads nothing.
    let listeners = match (args.check, args.systemd_socket) {
        (true, _) => Vec::new(),
        (false, true) => listen::systemd_sockets()?,
        (false, false) => addresses
            .iter()
            .map(|a| a.bind())
            .collect::<Result<Vec<_>>>()?,
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
    let (mut running, attachments) =
        collector::start_all(&selected, limits, options, config, &enricher);
    let configs = start_configs(&args, config)?;
    print_attachments(&attachments, args.check);
    print_config_programs(&configs, args.check);
    let failed: Vec<&Attachment> = attachments.iter().filter(|a| a.hook.is_none()).collect();
    let config_failures = configs
        .iter()
        .flat_map(|c| c.failures().map(move |p| (c.name, p)));
    let config_failures: Vec<_> = config_failures.collect();
    if args.check {
        let all = failed.is_empty() && config_failures.is_empty();
        return Ok(if all {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if let (true, Some((config, p))) = (args.strict, config_failures.first()) {
        bail!(
            "--strict: program {} of config {config} could not attach: {}",
            p.program,
            p.failure.as_deref().unwrap_or_default()
        );
    }
    running.extend(configs.into_iter().map(|c| collector::Running {
        name: c.name,
        collector: Box::new(c),
    }));
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
    raise_open_files();
    // Pinned before the capability drop: creating pins may need what is dropped.
    if let Some(pins) = &pins {
        let objects: Vec<_> = running
            .iter()
            .map(|r| (r.name, r.collector.object()))
            .collect();
        pins.pin_all(&objects)?;
    }
    // Before any thread exists: threads started from here inherit the reduced sets.
    let probe = running.first().map(|r| r.collector.object().clone());
    crate::privileges::drop::drop_after_attach(&args.privileges, || {
        probe.as_deref().is_none_or(crate::bpf::can_read_maps)
    })?;
    let (tx, rx) = mpsc::channel::<ScrapeRequest>();
    let scrapes = Scrapes {
        web_config_failures: web.file.as_ref().map(|f| f.failures()),
        attachments,
        enricher,
        bpf_stats: args.bpf_stats,
        exporter_metrics: !args.disable_exporter_metrics,
    };
    let worker = Worker::new(running, scrapes, args.fold_interval);
    let (gone_tx, gone_rx) = oneshot::channel();
    let worker = std::thread::Builder::new()
        .name("ksight-collect".into())
        .spawn(move || {
            // Sent when this thread ends, by return or by panic (the guard drops either way).
            let _gone = Gone(Some(gone_tx));
            worker.run(rx)
        })?;
    let limits_web = WebLimits {
        max_requests: args.max_requests as usize,
        max_connections: args.max_connections as usize,
        read_header_timeout: args.read_header_timeout,
        write_timeout: args.write_timeout,
    };
    let routes = http::Routes {
        telemetry_path: args.telemetry_path.clone(),
    };
    let served = http::serve(listeners, routes, web, tx, limits_web, gone_rx);
    let joined = worker.join();
    if let Err(err) = served {
        let why = match &joined {
            Err(panic) => panic_message(panic.as_ref()),
            Ok(()) => "it returned".into(),
        };
        bail!("{err:#}: {why}; exiting so a supervisor can restart ksight");
    }
    joined.map_err(|panic| {
        anyhow!(
            "collector thread panicked: {}",
            panic_message(panic.as_ref())
        )
    })?;
    info!("detached; bye");
    Ok(ExitCode::SUCCESS)
}

/// Tells the HTTP side that the collector thread has ended.
struct Gone(Option<oneshot::Sender<()>>);

impl Drop for Gone {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned());
    text.unwrap_or_else(|| "it panicked".into())
}

/// Each config of --config.names, loaded and attached; a config that cannot be read or
/// does not match its object is bad input (nothing runs).
fn start_configs(args: &ServeArgs, config: LoadConfig) -> Result<Vec<ConfigCollector>> {
    let Some(dir) = &args.config_dir else {
        return Ok(Vec::new());
    };
    args.config_names
        .iter()
        .map(|name| {
            // A config's name labels ksight's own series (map sizes, program runs) as a
            // collector's does: the two must not be confused.
            if crate::collectors::find(name).is_some() {
                return Err(crate::common::exit::bad_input(anyhow!(
                    "config {}: a collector has that name; rename the config's files",
                    crate::decode::printable(name.as_bytes())
                )));
            }
            ConfigCollector::start(dir, name, config).map_err(crate::common::exit::bad_input)
        })
        .collect()
}

fn print_config_programs(configs: &[ConfigCollector], to_stdout: bool) {
    if configs.is_empty() {
        return;
    }
    let mut text = format!(
        "{:<20} {:<24} {:<28} {}\n",
        "CONFIG", "PROGRAM", "SECTION", "NOTE"
    );
    for c in configs {
        for p in &c.programs {
            let note = p.failure.as_deref().unwrap_or("attached");
            let shown = |t: &str| crate::decode::printable(t.as_bytes());
            text.push_str(&format!(
                "{:<20} {:<24} {:<28} {}\n",
                shown(c.name),
                shown(&p.program),
                shown(&p.section),
                shown(note)
            ));
        }
    }
    if to_stdout {
        print!("{text}");
    } else {
        eprint!("{text}");
    }
}

fn load_config(btf: Option<&'static Path>, include_self: bool) -> Result<LoadConfig> {
    crate::bpf::btf::resolve_btf(btf)?;
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
