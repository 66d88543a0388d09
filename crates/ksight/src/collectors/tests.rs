//! Checks of the registry that need no root: flags, the README's list, and every name a
//! collector gives libbpf.

use std::time::Duration;

use clap::Parser;
use libbpf_rs::ObjectBuilder;

use super::*;
use crate::collector::{Context, Limits};

fn parse_serve(args: &[&str]) -> Result<crate::serve::ServeArgs> {
    let cli = crate::cli::Cli::try_parse_from(["ksight", "serve"].iter().chain(args))?;
    let crate::cli::Command::Serve(serve) = cli.command else {
        anyhow::bail!("parsed something other than serve")
    };
    Ok(serve)
}

fn select(args: &[&str]) -> Result<Vec<&'static str>> {
    let serve = parse_serve(args)?;
    let selected = serve
        .selection
        .resolve(serve.collectors.as_deref(), false)?;
    Ok(selected.iter().map(|d| d.name).collect())
}

fn all_names() -> Vec<&'static str> {
    ALL.iter().map(|d| d.name).collect()
}

#[test]
fn every_collector_has_both_flags() {
    for name in all_names() {
        let on = select(&[
            "--collector.disable-defaults",
            &format!("--collector.{name}"),
        ]);
        assert_eq!(on.ok(), Some(vec![name]), "--collector.{name}");
        let list = all_names().join(",");
        let off = select(&["--collectors", &list, &format!("--no-collector.{name}")]);
        assert!(off.is_ok_and(|o| !o.contains(&name) && o.len() == ALL.len() - 1));
    }
}

#[test]
fn defaults_lists_and_errors() {
    let default_names: Vec<&str> = defaults().iter().map(|d| d.name).collect();
    assert_eq!(select(&[]).ok(), Some(default_names.clone()));
    assert_eq!(
        select(&["--collector.page_faults", "--no-collector.tcp"]).ok(),
        Some(
            default_names
                .iter()
                .copied()
                .filter(|c| *c != "tcp")
                .chain(["page_faults"])
                .collect()
        )
    );
    assert_eq!(select(&["--collectors", "tcp,tcp"]).ok(), Some(vec!["tcp"]));
    // Started in the registry's order whatever the list's: files after its host syscalls.
    assert_eq!(
        select(&["--collectors", "files,syscalls"]).ok(),
        Some(vec!["syscalls", "files"])
    );
    assert!(select(&["--collectors", "bogus"]).is_err());
    assert!(select(&["--collector.disable-defaults"]).is_err());
}

#[test]
fn options_take_their_flag_their_old_spelling_and_stay_in_bounds() {
    for d in ALL {
        for opt in d.options {
            let flag = format!("--{}", d.option_flag(opt));
            let value = opt.max.to_string();
            let serve = parse_serve(&[&flag, &value]).expect("the maximum is accepted");
            assert_eq!(
                serve.selection.options.get(&d.option_flag(opt)),
                Some(&opt.max)
            );
            if let Some(alias) = opt.alias {
                let serve = parse_serve(&[&format!("--{alias}"), &value]).expect("the alias");
                assert_eq!(
                    serve.selection.options.get(&d.option_flag(opt)),
                    Some(&opt.max)
                );
            }
            let above = (u64::from(opt.max) + 1).to_string();
            assert!(parse_serve(&[&flag, &above]).is_err(), "{flag} {above}");
            if opt.min > 0 {
                let below = (opt.min - 1).to_string();
                assert!(parse_serve(&[&flag, &below]).is_err(), "{flag} {below}");
            }
            assert!(parse_serve(&[&flag, "-1"]).is_err(), "{flag} -1");
            assert!(
                opt.min <= opt.default && opt.default <= opt.max,
                "{flag} default"
            );
        }
    }
}

#[test]
fn names_are_unique_and_flag_safe() {
    let mut seen = Vec::new();
    for d in ALL {
        assert!(!seen.contains(&d.name), "{} twice", d.name);
        seen.push(d.name);
        let ok = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-')
        };
        assert!(ok(d.name), "{}", d.name);
        assert!(d.options.iter().all(|o| ok(o.name)), "{} options", d.name);
        assert!(
            !d.help.is_empty() && !d.help.contains('|'),
            "{} help",
            d.name
        );
        for c in d.candidates {
            if let Some(host) = c.shared_with {
                let host_at = ALL.iter().position(|a| a.name == host);
                let own_at = ALL.iter().position(|a| a.name == d.name);
                assert!(
                    host_at < own_at,
                    "{} shares {host}, which must start first",
                    d.name
                );
            }
        }
    }
}

/// Every program, map and section a collector names exists in its object.
#[test]
fn every_program_map_and_section_a_collector_names_exists() {
    let (enricher, _) = crate::enrich::Enricher::new(Default::default());
    let enricher: SharedEnricher = std::sync::Arc::new(std::sync::Mutex::new(enricher));
    let limits = Limits {
        table_capacity: 4,
        series_ttl: Duration::from_secs(1),
    };
    let options = OptionValues::new();
    for d in ALL {
        let context = Context {
            descriptor: d,
            btf: None,
            limits,
            enricher: &enricher,
            options: &options,
        };
        let builder = (d.build)(&context);
        let open = ObjectBuilder::default()
            .open_memory(d.object)
            .expect("the object opens");
        let programs: Vec<String> = open
            .progs()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        let maps: Vec<String> = open
            .maps()
            .map(|m| m.name().to_string_lossy().into_owned())
            .collect();
        for candidate in d.candidates.iter().filter(|c| c.shared_with.is_none()) {
            for program in candidate.programs {
                let name = d.name;
                assert!(
                    programs.iter().any(|p| p == program),
                    "{name}: no {program}"
                );
            }
            for map in candidate.maps {
                assert!(maps.iter().any(|m| m == map), "{}: no map {map}", d.name);
            }
        }
        for (map, _) in builder.max_entries() {
            assert!(maps.contains(&map), "{}: no map {map}", d.name);
        }
        for (section, _) in builder.sections() {
            assert!(
                maps.iter().any(|m| m == section),
                "{}: no {section}",
                d.name
            );
        }
    }
}
