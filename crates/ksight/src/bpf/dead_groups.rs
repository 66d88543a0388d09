//! The user side of `KS_DEAD_GROUPS` (bpf/include/maps.bpf.h): claims of thread groups already
//! counted as dead, kept in a plain hash, deleted here once no exiting thread can still ask.

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags};

use crate::bpf::LoadedObject;

/// Claims older than this are deleted: every thread of a group reaches the exit tracepoint
/// within moments of the last one.
const CLAIM_TTL_NS: u64 = 5_000_000_000;

/// Deletes the claims in `map` that no exiting thread can still ask about.
pub fn forget_old(obj: &LoadedObject, map: &str) -> Result<()> {
    let map = obj.map(map)?;
    let now = crate::common::clock::monotonic_ns();
    // Keys first, deletes after: deleting the key an iteration stands on restarts it from
    // the first key, which made this quadratic (minutes under emulation).
    let keys: Vec<Vec<u8>> = map.keys().collect();
    for key in keys {
        let Some(value) = map.lookup(&key, MapFlags::ANY)? else {
            continue;
        };
        let died = u64::from_ne_bytes(value[..8].try_into()?);
        if now.saturating_sub(died) > CLAIM_TTL_NS {
            map.delete(&key)?;
        }
    }
    Ok(())
}
