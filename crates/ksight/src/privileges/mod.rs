//! Privileges: what this process may do (check) and giving up what it no longer needs once
//! its programs are attached (drop).

mod check;
pub mod drop;

pub use check::{
    can_load_tracing, effective_caps, has_cap, minimal_caps, relevant_caps, require_bpf_privileges,
};
