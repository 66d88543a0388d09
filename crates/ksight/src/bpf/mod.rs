//! The BPF layer, below every subcommand: loading an object (with its hooks tried in turn),
//! its maps, ring buffers and pins, the feature probes that say what this kernel allows, and
//! the BTF and tracefs the programs are loaded against.

pub mod btf;
pub mod dead_groups;
pub mod fallback;
pub mod features;
pub mod hooks;
mod load;
mod maps;
pub mod perf_event;
pub mod pins;
pub mod ring;
pub mod table;
pub mod tracefs;

pub use load::{
    kernel_reason, link_from_raw, load, load_file, load_unattached, LoadConfig, LoadSpec,
    LoadedObject, ProgramAttach,
};
pub use maps::{
    can_read_maps, check_sizes, hash_entry_count, percpu_array_sums, percpu_value, TypedMap,
};
pub use ring::poll_ring;
