//! ksight: Linux kernel data for the people who run servers, with eBPF.

mod bpf;
mod capture;
mod cli;
mod collector;
mod collectors;
mod common;
mod configs;
mod decode;
#[cfg(test)]
mod docs;
mod doctor;
mod enrich;
mod fault_injection;
mod metrics;
mod privileges;
mod profile;
mod profiler;
mod serve;
mod trace;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Subcommands that print a report and hold nothing that needs undoing on exit.
fn reports_only(command: &cli::Command) -> bool {
    match command {
        cli::Command::Doctor(_) | cli::Command::Unpin(_) => true,
        cli::Command::Serve(args) => args.check,
        _ => false,
    }
}

/// `ksight doctor | head` ends as other Unix tools do when the reader goes away: by SIGPIPE,
/// which Rust ignores by default so that `println!` would panic instead. Only for reports:
/// trace, profile and capture handle a closed output themselves, since they have programs to
/// detach and figures to print when it happens.
fn end_quietly_on_closed_pipe() {
    // SAFETY: restores one signal's default disposition; no handler of ours is replaced.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            if err.use_stderr() {
                // One line: clap's first line says what was wrong.
                let text = err.to_string();
                let first = text.lines().next().unwrap_or("invalid arguments");
                // clap quotes the offending argument as given: it may hold escape sequences.
                let first = decode::escape_controls(first.trim_start_matches("error: "));
                eprintln!("ksight: {first}");
                eprintln!("Try 'ksight --help' for more information.");
            } else {
                let _ = err.print();
            }
            return ExitCode::from(code);
        }
    };
    init_logging(&cli.log, cli.log_format);
    // Before ensure_tracefs may move ksight to a mount namespace of its own: a BPF
    // filesystem mounted from there would be invisible to bpftool on the host.
    if let cli::Command::Serve(args) = &cli.command {
        if args.pin.is_some() && !args.check {
            bpf::pins::mount_bpffs_on_host();
        }
    }
    let tracefs = crate::bpf::tracefs::ensure_tracefs();
    tracing::debug!(tracefs = tracefs.describe());
    // Every BPF object loaded from here to exit may need the path (collectors live on their
    // own thread): it is made 'static once, here.
    let btf: Option<&'static std::path::Path> = cli.btf.map(|p| &*Box::leak(p.into_boxed_path()));
    bpf::features::set(bpf::features::Setting { btf, tracefs });
    if reports_only(&cli.command) {
        end_quietly_on_closed_pipe();
    }
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(args, btf),
        cli::Command::Doctor(args) => doctor::run(args, btf),
        cli::Command::Trace(args) => trace::run(args, btf),
        cli::Command::Unpin(args) => bpf::pins::unpin(args),
        cli::Command::Profile(args) => profile::run(args, btf),
        cli::Command::Capture(args) => capture::run(args, btf),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ksight: error: {err:#}");
            if err.downcast_ref::<common::exit::BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(filter: &str, format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        cli::LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .with_span_name(false)
                    .with_span_path(false)
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .init(),
        cli::LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    // libbpf's own messages go to debug logs; its warnings would repeat our one-line errors.
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, |level, msg| {
        let msg = msg.trim_end();
        match level {
            libbpf_rs::PrintLevel::Warn => tracing::debug!(target: "libbpf", "{msg}"),
            _ => tracing::trace!(target: "libbpf", "{msg}"),
        }
    })));
}
