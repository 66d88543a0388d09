//! The metric collectors. Names are a contract: they appear in flags and in
//! `ksight_collector_up{collector}`.

pub mod files;
pub mod process;
pub mod syscalls;

use std::time::Duration;

use crate::collector::Collector;

/// Collectors on by default, in the order they are started and reported.
pub const DEFAULT: &[&str] = &["syscalls", "process", "files"];
/// Every collector that exists.
pub const ALL: &[&str] = &["syscalls", "process", "files"];

/// Sizes and TTL shared by all collectors (flags of `serve`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_comms: u32,
    pub table_capacity: u32,
    pub errors_capacity: u32,
    pub series_ttl: Duration,
}

pub fn build(name: &str, limits: Limits) -> Option<Box<dyn Collector>> {
    Some(match name {
        "syscalls" => Box::new(syscalls::Syscalls::new(
            limits.max_comms,
            limits.errors_capacity,
            limits.table_capacity,
            limits.series_ttl,
        )),
        "process" => Box::new(process::Process::new(
            limits.table_capacity,
            limits.series_ttl,
        )),
        "files" => Box::new(files::Files::new(limits.table_capacity, limits.series_ttl)),
        _ => return None,
    })
}
