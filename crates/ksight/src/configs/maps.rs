//! A config's maps read as (key, value) entries: 8-byte values in host order, per-CPU values
//! summed, or split by CPU when the metric's last label is `cpu` (the CPU number appended to
//! the key as 2 bytes, as ebpf_exporter does).

use anyhow::{bail, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

/// Whether the map holds one value per CPU.
pub fn per_cpu(map: &MapHandle) -> bool {
    matches!(
        map.map_type(),
        MapType::PercpuHash | MapType::PercpuArray | MapType::LruPercpuHash
    )
}

/// The key size a metric's labels must describe: the map's, plus the 2 CPU bytes when the
/// values are split by CPU.
pub fn described_key_size(map: &MapHandle, split_by_cpu: bool) -> usize {
    map.key_size() as usize + if split_by_cpu && per_cpu(map) { 2 } else { 0 }
}

/// Checks what the metrics read: 8-byte values.
pub fn check_value_size(map: &MapHandle) -> Result<()> {
    if map.value_size() != 8 {
        bail!(
            "map {} holds {}-byte values; a metric reads 8-byte counters",
            map.name().to_string_lossy(),
            map.value_size()
        );
    }
    Ok(())
}

/// Every entry of `map`. Entries that vanish between the key walk and the lookup are left
/// out (a program deleted them: nothing to count).
pub fn entries(map: &MapHandle, split_by_cpu: bool) -> Result<Vec<(Vec<u8>, u64)>> {
    let mut out = Vec::new();
    for key in map.keys() {
        if per_cpu(map) {
            let Some(values) = map.lookup_percpu(&key, MapFlags::ANY)? else {
                continue;
            };
            push_per_cpu(&mut out, key, &values, split_by_cpu);
        } else if let Some(value) = map.lookup(&key, MapFlags::ANY)? {
            out.push((key, counter(&value)));
        }
    }
    Ok(out)
}

fn push_per_cpu(out: &mut Vec<(Vec<u8>, u64)>, key: Vec<u8>, values: &[Vec<u8>], split: bool) {
    if !split {
        let sum = values.iter().fold(0u64, |s, v| s.wrapping_add(counter(v)));
        out.push((key, sum));
        return;
    }
    for (cpu, value) in values.iter().enumerate() {
        let mut k = key.clone();
        k.extend_from_slice(&(cpu as u16).to_ne_bytes());
        out.push((k, counter(value)));
    }
}

/// A u64 in host order (values are checked to be 8 bytes at load).
fn counter(value: &[u8]) -> u64 {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_summed_or_split() {
        let values = vec![3u64.to_ne_bytes().to_vec(), 4u64.to_ne_bytes().to_vec()];
        let mut summed = Vec::new();
        push_per_cpu(&mut summed, vec![9], &values, false);
        assert_eq!(summed, vec![(vec![9], 7)]);
        let mut split = Vec::new();
        push_per_cpu(&mut split, vec![9], &values, true);
        let cpu = |n: u16| [vec![9], n.to_ne_bytes().to_vec()].concat();
        assert_eq!(split, vec![(cpu(0), 3), (cpu(1), 4)]);
    }
}
