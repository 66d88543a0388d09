//! The user side of a `KS_TABLE` (bpf/include/maps.bpf.h): counters keyed by labels, in two hash maps
//! used in turns, plus an overflow map for keys that did not fit.
//!
//! Draining without loss on every kernel (no need for the atomic lookup-and-delete of 5.14):
//! flip `ks_ctl.table_gen`, wait for every program that may still use the old map (a
//! map-in-map update makes the kernel run synchronize_rcu), then move the old map's entries,
//! which nothing writes any more, into the totals kept here. A step that fails leaves the
//! old map as it is, still read at every scrape, and the next round retries it: exported
//! totals never drop. A key that gained nothing for longer than the TTL is folded: its series
//! ends (its history is not moved anywhere, so no other series jumps); its later increments
//! start a new series, or land in the overflow series if the map is full.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use ksight_bpf::abi::{ks_comm_key, ks_file_key, ks_proc_key, ks_signal_key};

use crate::bpf::{check_sizes, LoadedObject};

/// A table key with a comm and an overflow flag (see abi.h).
pub trait LabelKey: plain::Plain + Default + Copy {
    /// True for the key of an overflow series (kept whatever its age).
    fn is_overflow(&self) -> bool;
}

macro_rules! label_key {
    ($($key:ty),*) => {
        $(impl LabelKey for $key {
            fn is_overflow(&self) -> bool {
                self.overflow != 0
            }
        })*
    };
}

label_key!(ks_proc_key, ks_file_key, ks_signal_key, ks_comm_key);

/// Whether the raw `key` is an overflow key (a key that does not parse is kept too).
pub fn is_overflow_key<K: LabelKey>(key: &[u8]) -> bool {
    let mut k = K::default();
    plain::copy_from_bytes(&mut k, key).is_err() || k.is_overflow()
}

/// An upkeep step that failed, attached to its error so serve can count it by step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepFailed(pub &'static str);

impl fmt::Display for StepFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.0)
    }
}

/// A collector's object and the table it drains.
pub struct Tabled {
    pub obj: Arc<LoadedObject>,
    pub table: CounterTable,
    /// The generation flipped away from whose map is not drained yet (a step failed).
    undrained: Option<u32>,
}

impl Tabled {
    pub fn new<K: LabelKey>(obj: Arc<LoadedObject>, name: &str, ttl: Duration) -> Result<Self> {
        let table = CounterTable::new::<K>(&obj, name, ttl)?;
        Ok(Self {
            obj,
            table,
            undrained: None,
        })
    }

    /// Flip, wait for running programs, drain the idle map, fold idle series. After a failed
    /// step the same idle map is retried (no new flip) until it is drained.
    pub fn maintain(&mut self, now: Instant) -> Result<()> {
        let gen = match self.undrained {
            Some(gen) => gen,
            None => {
                crate::fault_injection::check("flip", &self.table.name)
                    .context(StepFailed("flip"))?;
                let gen = self.obj.flip_table_gen().context(StepFailed("flip"))?;
                self.undrained = Some(gen);
                gen
            }
        };
        crate::fault_injection::check("barrier", &self.table.name)
            .context(StepFailed("barrier"))?;
        self.obj.barrier().context(StepFailed("barrier"))?;
        self.table.drain(gen, now).context(StepFailed("drain"))?;
        self.undrained = None;
        self.table.totals.fold(now);
        Ok(())
    }

    /// Every key with its total now.
    pub fn read(&self) -> Result<HashMap<Vec<u8>, u64>> {
        self.table.read(self.obj.table_gen(), self.undrained)
    }
}

/// A series' drained total and when it last grew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Series {
    total: u64,
    last_change: Instant,
}

/// Drained totals by key, apart from any map: what folding decides is tested on its own.
pub struct Totals {
    series: HashMap<Vec<u8>, Series>,
    ttl: Duration,
    /// At most this many series stay after a fold (the map's capacity).
    budget: usize,
    /// Overflow keys are never folded: they are where what does not fit is counted.
    is_overflow: fn(&[u8]) -> bool,
    /// Series ended by a fold, since start.
    folded: u64,
}

impl Totals {
    pub fn new(ttl: Duration, budget: usize, is_overflow: fn(&[u8]) -> bool) -> Self {
        Self {
            series: HashMap::new(),
            ttl,
            budget,
            is_overflow,
            folded: 0,
        }
    }

    pub fn add(&mut self, key: Vec<u8>, n: u64, now: Instant) {
        let series = self.series.entry(key).or_insert(Series {
            total: 0,
            last_change: now,
        });
        if n > 0 {
            series.total += n;
            series.last_change = now;
        }
    }

    /// Ends the series idle past the TTL, then, while more series than the budget remain
    /// (cgroups and processes churning within one TTL), the least recently grown ones. An
    /// ended series' total goes with it: moving it into the overflow series would show there
    /// as a burst that never happened.
    pub fn fold(&mut self, now: Instant) {
        let mut foldable: Vec<(Instant, Vec<u8>)> = self
            .series
            .iter()
            .filter(|(k, _)| !(self.is_overflow)(k))
            .map(|(k, s)| (s.last_change, k.clone()))
            .collect();
        foldable.sort_unstable_by_key(|(changed, _)| *changed);
        let over_budget = self.series.len().saturating_sub(self.budget);
        for (i, (changed, key)) in foldable.into_iter().enumerate() {
            if i < over_budget || now.duration_since(changed) > self.ttl {
                self.series.remove(&key);
                self.folded += 1;
            }
        }
    }

    /// Series ended by folds since start.
    pub fn folded(&self) -> u64 {
        self.folded
    }

    fn snapshot(&self) -> HashMap<Vec<u8>, u64> {
        self.series
            .iter()
            .map(|(k, s)| (k.clone(), s.total))
            .collect()
    }
}

pub struct CounterTable {
    /// The KS_TABLE's name (`proc`, `files`, …).
    name: String,
    maps: [MapHandle; 2],
    overflow: MapHandle,
    pub totals: Totals,
}

impl CounterTable {
    /// The table `name` of `obj`, its maps checked to hold `K` keys and u64 counts.
    pub fn new<K: LabelKey>(obj: &LoadedObject, name: &str, ttl: Duration) -> Result<Self> {
        let maps = [
            obj.map(&format!("{name}_a"))?,
            obj.map(&format!("{name}_b"))?,
        ];
        let overflow = obj.map(&format!("{name}_ovf"))?;
        for (map, part) in maps.iter().chain([&overflow]).zip(["a", "b", "ovf"]) {
            check_sizes::<K, u64>(map, &format!("{name}_{part}"))?;
        }
        let budget = maps[0].max_entries() as usize;
        Ok(Self {
            name: name.to_string(),
            maps,
            overflow,
            totals: Totals::new(ttl, budget, is_overflow_key::<K>),
        })
    }

    fn idle_map(&self, gen: u32) -> &MapHandle {
        &self.maps[((gen + 1) & 1) as usize]
    }

    /// Moves everything out of the map that was live before `obj.flip_table_gen()` returned
    /// `gen`; the caller has passed `obj.barrier()` since, so nothing writes it. A count is
    /// added to the totals only once its key is deleted: a failed delete leaves it in the map,
    /// where reads still find it and the next drain takes it, never counted twice.
    pub fn drain(&mut self, gen: u32, now: Instant) -> Result<()> {
        crate::fault_injection::check("drain", &self.name)?;
        let idle = &self.maps[((gen + 1) & 1) as usize];
        let keys: Vec<Vec<u8>> = idle.keys().collect();
        let mut failed = None;
        for key in keys {
            let Some(value) = idle.lookup(&key, MapFlags::ANY)? else {
                continue;
            };
            match idle.delete(&key) {
                Ok(()) => self.totals.add(key, read_u64(&value), now),
                Err(err) => failed = Some(err),
            }
        }
        match failed {
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
    }

    /// Every key with its total: drained totals plus what the live map, an undrained idle map
    /// and the overflow map hold now, summed by key.
    pub fn read(&self, gen: u32, undrained: Option<u32>) -> Result<HashMap<Vec<u8>, u64>> {
        let mut out = self.totals.snapshot();
        let live = &self.maps[(gen & 1) as usize];
        let idle = undrained.map(|g| self.idle_map(g));
        for map in [Some(live), idle, Some(&self.overflow)]
            .into_iter()
            .flatten()
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn is_overflow(key: &[u8]) -> bool {
        key.first() == Some(&0)
    }

    fn totals(budget: usize) -> Totals {
        Totals::new(Duration::from_secs(10), budget, is_overflow)
    }

    #[test]
    fn adds_by_key_and_keeps_growing_series() {
        let t0 = Instant::now();
        let mut t = totals(8);
        t.add(vec![1], 5, t0);
        t.add(vec![1], 2, t0 + Duration::from_secs(8));
        t.add(vec![2], 1, t0);
        t.fold(t0 + Duration::from_secs(15));
        let snap = t.snapshot();
        assert_eq!(snap.get(&vec![1]), Some(&7), "grew 7 s ago: kept");
        assert_eq!(snap.get(&vec![2]), None, "idle 15 s > TTL: folded");
        assert_eq!(t.folded(), 1);
    }

    #[test]
    fn a_fold_moves_no_history_into_the_overflow_series() {
        let t0 = Instant::now();
        let mut t = totals(8);
        t.add(vec![0], 3, t0); // the overflow series
        t.add(vec![7], 1_000_000, t0);
        t.fold(t0 + Duration::from_secs(60));
        let snap = t.snapshot();
        assert_eq!(
            snap.get(&vec![0]),
            Some(&3),
            "overflow unchanged, never folded"
        );
        assert_eq!(snap.len(), 1);
    }

    #[test]
    fn over_budget_the_least_recently_grown_go_first() {
        let t0 = Instant::now();
        let mut t = totals(3);
        for i in 1..=5u8 {
            t.add(vec![i], 1, t0 + Duration::from_millis(i as u64));
        }
        t.add(vec![0], 1, t0);
        t.fold(t0 + Duration::from_secs(1));
        let mut kept: Vec<u8> = t.snapshot().keys().map(|k| k[0]).collect();
        kept.sort();
        assert_eq!(kept, vec![0, 4, 5], "budget 3: overflow + the two newest");
        assert_eq!(t.folded(), 3);
    }

    #[test]
    fn zero_increments_do_not_refresh_a_series() {
        let t0 = Instant::now();
        let mut t = totals(8);
        t.add(vec![1], 1, t0);
        t.add(vec![1], 0, t0 + Duration::from_secs(9));
        t.fold(t0 + Duration::from_secs(11));
        assert!(t.snapshot().is_empty());
    }

    #[test]
    fn overflow_keys_are_recognised() {
        let mut key = ks_comm_key::default();
        // SAFETY: ABI keys are plain old data without padding.
        let raw = unsafe { plain::as_bytes(&key) }.to_vec();
        assert!(!is_overflow_key::<ks_comm_key>(&raw));
        key.overflow = 1;
        // SAFETY: as above.
        let raw = unsafe { plain::as_bytes(&key) }.to_vec();
        assert!(is_overflow_key::<ks_comm_key>(&raw));
        assert!(
            is_overflow_key::<ks_comm_key>(&[1, 2, 3]),
            "unparsable: kept"
        );
    }
}
