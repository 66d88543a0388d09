//! Maps as ksight reads them: typed maps whose key and value sizes are checked once, when
//! opened; and the few raw operations libbpf-rs does not wrap: per-CPU array batch reads,
//! one entry's per-CPU sum, a busy hash map's entry count in one pass.

use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{anyhow, bail, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use super::LoadedObject;

/// A map of the object whose keys are `K` and values `V` (for a per-CPU map, each CPU's
/// value), as abi.h declares them: the sizes are checked when it is opened, so an object and
/// a binary that disagree fail at start with both sizes, not at a scrape with misread entries.
pub struct TypedMap<K, V> {
    map: MapHandle,
    types: PhantomData<(K, V)>,
}

impl<K: plain::Plain + Default + Copy, V: plain::Plain + Default + Copy> TypedMap<K, V> {
    pub fn open(obj: &LoadedObject, name: &str) -> Result<Self> {
        let map = obj.map(name)?;
        check_sizes::<K, V>(&map, name)?;
        Ok(Self {
            map,
            types: PhantomData,
        })
    }

    /// Every entry, with each CPU's value (a per-CPU map) or the one value.
    pub fn entries(&self) -> Result<Vec<(K, Vec<V>)>> {
        let per_cpu = matches!(
            self.map.map_type(),
            MapType::PercpuHash | MapType::PercpuArray | MapType::LruPercpuHash
        );
        let mut out = Vec::new();
        for raw_key in self.map.keys() {
            let values = if per_cpu {
                self.map.lookup_percpu(&raw_key, MapFlags::ANY)?
            } else {
                self.map.lookup(&raw_key, MapFlags::ANY)?.map(|v| vec![v])
            };
            let Some(values) = values else {
                continue; // deleted meanwhile
            };
            let values = values
                .iter()
                .map(|b| decode_as::<V>(b))
                .collect::<Result<_>>()?;
            out.push((decode_as::<K>(&raw_key)?, values));
        }
        Ok(out)
    }
}

/// Fails unless `map`'s key and value are the sizes of `K` and `V`.
pub fn check_sizes<K, V>(map: &MapHandle, name: &str) -> Result<()> {
    let (key, value) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    if map.key_size() as usize != key || map.value_size() as usize != value {
        bail!(
            "map {name}: key and value of {} and {} bytes, {key} and {value} expected (abi.h)",
            map.key_size(),
            map.value_size()
        );
    }
    Ok(())
}

fn decode_as<T: plain::Plain + Default + Copy>(bytes: &[u8]) -> Result<T> {
    let mut out = T::default();
    plain::copy_from_bytes(&mut out, bytes).map_err(|e| anyhow!("{e:?}"))?;
    Ok(out)
}

/// Sums a per-CPU array whose values are rows of u64 over CPUs, with batch reads: entry `k`,
/// column `j` lands at `k * columns + j`.
pub fn percpu_array_sums(map: &MapHandle) -> Result<Vec<u64>> {
    let value_size = map.value_size() as usize;
    if map.map_type() != MapType::PercpuArray || !value_size.is_multiple_of(8) {
        bail!(
            "{} is not a per-CPU array of u64 rows",
            map.name().to_string_lossy()
        );
    }
    let columns = value_size / 8;
    let cpus = libbpf_rs::num_possible_cpus()?;
    let entries = map.max_entries() as usize;
    let mut sums = vec![0u64; entries * columns];
    let chunk = 64usize.min(entries);
    let mut keys = vec![0u32; chunk];
    let mut values = vec![0u64; chunk * cpus * columns];
    let mut next = 0usize;
    while next < entries {
        let mut in_batch = next as u32;
        let mut out_batch = 0u32;
        let mut count = chunk.min(entries - next) as u32;
        let opts = libbpf_sys::bpf_map_batch_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
            ..Default::default()
        };
        // SAFETY: keys and values hold `count` entries of the map's key size and per-CPU value
        // size (value_size is a multiple of 8); batch tokens are u32 indexes for arrays.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                map.as_fd().as_raw_fd(),
                if next == 0 {
                    std::ptr::null_mut()
                } else {
                    (&raw mut in_batch).cast()
                },
                (&raw mut out_batch).cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        if ret == -ENOTSUPP || ret == -libc::EINVAL {
            // Batch reads of per-CPU arrays came after 5.10: read entry by entry there.
            return percpu_rows_one_by_one(map, columns);
        }
        if ret < 0 && ret != -libc::ENOENT {
            let err = std::io::Error::from_raw_os_error(-ret);
            bail!("batch read of {}: {err}", map.name().to_string_lossy());
        }
        for (i, key) in keys.iter().take(count as usize).enumerate() {
            let key = *key as usize;
            if key >= entries {
                continue;
            }
            let row = &mut sums[key * columns..(key + 1) * columns];
            for cpu in 0..cpus {
                let start = (i * cpus + cpu) * columns;
                for (sum, v) in row.iter_mut().zip(&values[start..start + columns]) {
                    *sum += v;
                }
            }
        }
        if ret == -libc::ENOENT || count == 0 {
            break;
        }
        // The token is the next index; some kernels leave it at 0 after the last full chunk.
        next = (out_batch as usize).max(next + count as usize);
    }
    Ok(sums)
}

/// The kernel's ENOTSUPP (not in libc): an operation this map type lacks.
const ENOTSUPP: i32 = 524;

fn percpu_rows_one_by_one(map: &MapHandle, columns: usize) -> Result<Vec<u64>> {
    let entries = map.max_entries() as usize;
    let mut sums = vec![0u64; entries * columns];
    for (key, row) in sums.chunks_mut(columns).enumerate() {
        let per_cpu = map
            .lookup_percpu(&(key as u32).to_ne_bytes(), MapFlags::ANY)?
            .unwrap_or_default();
        for bytes in per_cpu {
            for (sum, v) in row.iter_mut().zip(bytes.chunks_exact(8)) {
                *sum += u64::from_ne_bytes(v.try_into()?);
            }
        }
    }
    Ok(sums)
}

/// Sums the per-CPU copies of one entry of a per-CPU array.
pub fn percpu_value<T: plain::Plain + Default + Copy>(map: &MapHandle, key: u32) -> Result<Vec<T>> {
    let per_cpu = map
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)?
        .unwrap_or_default();
    per_cpu
        .iter()
        .map(|bytes| {
            let mut v = T::default();
            plain::copy_from_bytes(&mut v, bytes)
                .map_err(|e| anyhow!("bad per-CPU value: {e:?}"))?;
            Ok(v)
        })
        .collect()
}

/// Whether a map of this object can be read now (bpf() with the current capabilities).
pub fn can_read_maps(obj: &LoadedObject) -> bool {
    let Some((_, map)) = obj.maps().into_iter().next() else {
        return true;
    };
    let mut key = vec![0u8; map.key_size().max(4) as usize];
    // SAFETY: get_next_key from the start (NULL) into a buffer of the map's key size.
    let rc = unsafe {
        libbpf_sys::bpf_map_get_next_key(
            map.as_fd().as_raw_fd(),
            std::ptr::null(),
            key.as_mut_ptr().cast(),
        )
    };
    rc == 0 || rc == -libc::ENOENT
}

/// Entries in a hash map now, in one pass however busy the map is. Walking it key by key
/// (get_next_key) starts over whenever the key in hand was deleted meanwhile, which on a map
/// the kernel deletes from all the time (sockets, wakeups, requests in flight) may never end.
/// Batch lookups walk by bucket instead, so a deletion cannot send them back; kernels before
/// 5.6 (no batch operations) get a key walk cut at the map's capacity.
pub fn hash_entry_count(map: &MapHandle) -> Result<u64> {
    let capacity = map.max_entries() as usize;
    let cpus = if map.map_type() == MapType::PercpuHash {
        libbpf_rs::num_possible_cpus()?
    } else {
        1
    };
    // Per-CPU values come as one 8-byte-aligned slot per possible CPU.
    let value_size = (map.value_size() as usize).next_multiple_of(8) * cpus;
    let key_size = (map.key_size() as usize).max(4);
    let mut batch = 256usize.min(capacity.max(1));
    let mut keys = vec![0u8; batch * key_size];
    let mut values = vec![0u8; batch * value_size];
    let (mut cursor, mut next) = (vec![0u8; key_size], vec![0u8; key_size]);
    let mut started = false;
    let mut total = 0u64;
    loop {
        let mut count = batch as u32;
        let opts = libbpf_sys::bpf_map_batch_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
            ..Default::default()
        };
        let in_batch = if started {
            cursor.as_mut_ptr().cast()
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: the buffers hold `batch` keys and values of the map's sizes (per-CPU values
        // included), as count says; the cursor buffers hold one key each.
        let rc = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                map.as_fd().as_raw_fd(),
                in_batch,
                next.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let errno = if rc < 0 { -rc } else { 0 };
        match errno {
            0 | libc::ENOENT => total += u64::from(count),
            // A bucket holds more entries than one batch: a bigger batch, same cursor.
            libc::ENOSPC if batch < capacity.max(1) * 2 => {
                batch *= 2;
                keys.resize(batch * key_size, 0);
                values.resize(batch * value_size, 0);
                continue;
            }
            libc::EINVAL | ENOTSUPP | libc::EOPNOTSUPP => {
                return Ok(map.keys().take(capacity).count() as u64)
            }
            _ => bail!("batch lookup: {}", std::io::Error::from_raw_os_error(errno)),
        }
        if errno == libc::ENOENT {
            return Ok(total);
        }
        std::mem::swap(&mut cursor, &mut next);
        started = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libbpf_rs::MapFlags;

    fn may_create_maps() -> bool {
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root || std::env::var_os("CI").is_none(),
            "CI runs the suite as root"
        );
        root
    }

    fn hash(map_type: MapType, entries: u32) -> MapHandle {
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let map = MapHandle::create(map_type, Some("ks_count_test"), 4, 8, 4096, &opts)
            .expect("create a map (root)");
        let cpus = libbpf_rs::num_possible_cpus().expect("cpus");
        for k in 0..entries {
            let key = k.to_ne_bytes();
            if map_type == MapType::PercpuHash {
                let values = vec![vec![0u8; 8]; cpus];
                map.update_percpu(&key, &values, MapFlags::ANY)
                    .expect("update");
            } else {
                map.update(&key, &[0u8; 8], MapFlags::ANY).expect("update");
            }
        }
        map
    }

    #[test]
    fn hash_entries_are_counted_in_batches() {
        if !may_create_maps() {
            return;
        }
        for (map_type, n) in [
            (MapType::Hash, 0),
            (MapType::Hash, 1),
            (MapType::Hash, 3000),
            (MapType::PercpuHash, 700),
        ] {
            let map = hash(map_type, n);
            assert_eq!(
                hash_entry_count(&map).ok(),
                Some(u64::from(n)),
                "{map_type:?}"
            );
        }
    }
}
