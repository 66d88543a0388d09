//! The user side of a `KS_TABLE` (bpf/maps.bpf.h): counters keyed by labels, in two hash maps
//! used in turns, plus an overflow map for keys that did not fit.
//!
//! Draining without loss on every kernel (no need for the atomic lookup-and-delete of 5.14):
//! flip `ks_ctl.table_gen`, wait for every program that may still use the old map (a
//! map-in-map update makes the kernel run synchronize_rcu), then read and delete the old
//! map, which nothing writes any more. Totals live here between drains. A key that gained
//! nothing for longer than the TTL is folded into its overflow key, so its increments stay
//! counted under `comm="(other processes)"` and the series count stays bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use std::sync::Arc;

use ksight_bpf::abi::{ks_comm_key, ks_file_key, ks_proc_key, ks_signal_key};

use crate::bpf::LoadedObject;

/// A table key with a comm and an overflow flag (see abi.h).
pub trait LabelKey: plain::Plain + Default + Copy {
    /// Replaces the comm and cgroup by the overflow series, keeping the other labels.
    fn fold(&mut self);
}

impl LabelKey for ks_proc_key {
    fn fold(&mut self) {
        self.comm = Default::default();
        self.cgroup = 0;
        self.overflow = 1;
    }
}

impl LabelKey for ks_file_key {
    fn fold(&mut self) {
        self.comm = Default::default();
        self.cgroup = 0;
        self.overflow = 1;
    }
}

impl LabelKey for ks_signal_key {
    fn fold(&mut self) {
        self.comm = Default::default();
        self.cgroup = 0;
        self.overflow = 1;
    }
}

impl LabelKey for ks_comm_key {
    fn fold(&mut self) {
        self.comm = Default::default();
        self.cgroup = 0;
        self.overflow = 1;
    }
}

/// The key of the overflow series for `key` (unchanged if it does not parse).
pub fn overflow_key<K: LabelKey>(key: &[u8]) -> Vec<u8> {
    let mut k = K::default();
    if plain::copy_from_bytes(&mut k, key).is_err() {
        return key.to_vec();
    }
    k.fold();
    // SAFETY: ABI keys are plain old data without padding (asserted in ksight-bpf's tests).
    unsafe { plain::as_bytes(&k) }.to_vec()
}

/// A collector's object and the table it drains.
pub struct Tabled {
    pub obj: Arc<LoadedObject>,
    pub table: CounterTable,
}

impl Tabled {
    pub fn new<K: LabelKey>(obj: Arc<LoadedObject>, name: &str, ttl: Duration) -> Result<Self> {
        let table = CounterTable::new(&obj, name, ttl, overflow_key::<K>)?;
        Ok(Self { obj, table })
    }

    /// Flip, wait for running programs, drain the idle map.
    pub fn maintain(&mut self, now: Instant) -> Result<()> {
        let gen = self.obj.flip_table_gen();
        self.obj.barrier()?;
        self.table.drain(gen, now)
    }

    pub fn read(&self) -> Result<HashMap<Vec<u8>, u64>> {
        self.table.read(self.obj.table_gen())
    }
}

struct Series {
    total: u64,
    last_change: Instant,
}

pub struct CounterTable {
    maps: [MapHandle; 2],
    overflow: MapHandle,
    /// Turns a key into the key of its overflow series (same labels, comm folded).
    to_overflow: fn(&[u8]) -> Vec<u8>,
    totals: HashMap<Vec<u8>, Series>,
    ttl: Duration,
}

impl CounterTable {
    pub fn new(
        obj: &LoadedObject,
        name: &str,
        ttl: Duration,
        to_overflow: fn(&[u8]) -> Vec<u8>,
    ) -> Result<Self> {
        Ok(Self {
            maps: [
                obj.map(&format!("{name}_a"))?,
                obj.map(&format!("{name}_b"))?,
            ],
            overflow: obj.map(&format!("{name}_ovf"))?,
            to_overflow,
            totals: HashMap::new(),
            ttl,
        })
    }

    /// Moves everything out of the map that was live before `obj.flip_table_gen()` returned
    /// `gen`; the caller has passed `obj.barrier()` since.
    pub fn drain(&mut self, gen: u32, now: Instant) -> Result<()> {
        let idle = &self.maps[((gen + 1) & 1) as usize];
        let mut drained = Vec::new();
        for key in idle.keys().collect::<Vec<_>>() {
            if let Some(value) = idle.lookup(&key, MapFlags::ANY)? {
                drained.push((key.clone(), read_u64(&value)));
            }
            idle.delete(&key)?;
        }
        for (key, n) in drained {
            self.add(key, n, now);
        }
        self.fold_idle(now);
        Ok(())
    }

    fn add(&mut self, key: Vec<u8>, n: u64, now: Instant) {
        let series = self.totals.entry(key).or_insert(Series {
            total: 0,
            last_change: now,
        });
        if n > 0 {
            series.total += n;
            series.last_change = now;
        }
    }

    /// Folds keys idle past the TTL, then, while more keys than the map's capacity remain
    /// (cgroups and processes churning within one TTL), the least recently changed ones: the
    /// series budget of the table.
    fn fold_idle(&mut self, now: Instant) {
        let ttl = self.ttl;
        let mut foldable: Vec<(Instant, Vec<u8>)> = self
            .totals
            .iter()
            .filter(|(k, _)| (self.to_overflow)(k) != **k)
            .map(|(k, s)| (s.last_change, k.clone()))
            .collect();
        foldable.sort_unstable_by_key(|(changed, _)| *changed);
        let budget = self.maps[0].max_entries() as usize;
        let over_budget = self.totals.len().saturating_sub(budget);
        let idle: Vec<Vec<u8>> = foldable
            .into_iter()
            .enumerate()
            .filter(|(i, (changed, _))| *i < over_budget || now.duration_since(*changed) > ttl)
            .map(|(_, (_, key))| key)
            .collect();
        for key in idle {
            if let Some(series) = self.totals.remove(&key) {
                let target = self
                    .totals
                    .entry((self.to_overflow)(&key))
                    .or_insert(Series {
                        total: 0,
                        last_change: now,
                    });
                target.total += series.total;
            }
        }
    }

    /// Every key with its total: drained totals plus what the live map and the overflow map
    /// hold now, summed by key.
    pub fn read(&self, gen: u32) -> Result<HashMap<Vec<u8>, u64>> {
        let mut out: HashMap<Vec<u8>, u64> = self
            .totals
            .iter()
            .map(|(k, s)| (k.clone(), s.total))
            .collect();
        for map in [&self.maps[(gen & 1) as usize], &self.overflow] {
            for key in map.keys() {
                if let Some(value) = map.lookup(&key, MapFlags::ANY)? {
                    *out.entry(key).or_insert(0) += read_u64(&value);
                }
            }
        }
        Ok(out)
    }
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_ne_bytes(buf)
}
