//! What the subcommands share, below them: stop handling, clocks, the process and cgroup
//! filters, the ELF reader, resource limits, command-line units, the exit-code rule.

pub mod clock;
pub mod elf;
pub mod exit;
pub mod files;
pub mod filters;
pub mod kernel;
pub mod limits;
pub mod stop;
pub mod units;
