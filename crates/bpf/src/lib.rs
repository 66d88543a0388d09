//! ksight's kernel side: the compiled CO-RE objects and the Rust view of `bpf/include/abi.h`.
//!
//! The ABI types come from one place only: `bpf/include/abi.h`. build.rs compiles an anchor object
//! (never loaded) with a global of every ABI type, so BTF, and so its skeleton's `types`,
//! holds them all.

#[allow(
    clippy::all,
    dead_code,
    non_camel_case_types,
    non_upper_case_globals,
    unused
)]
mod abi_skel {
    include!(concat!(env!("OUT_DIR"), "/abi.skel.rs"));
}

/// The structs and enums of `bpf/include/abi.h`, as generated from BTF (every `struct ks_*` is
/// `plain::Plain`: the keys and records are read from raw map and ring-buffer bytes).
pub mod abi {
    pub use super::abi_skel::types::*;

    /// `char` in abi.h's structs, as the generated types hold it: the BPF target's char is
    /// signed on every host (Rust's `c_char` is not: it is u8 on aarch64).
    pub type AbiChar = i8;

    include!(concat!(env!("OUT_DIR"), "/abi_plain.rs"));
}

/// The compiled objects, one per capability so one can fail without the others: a constant
/// per `bpf/NAME.bpf.c`, named NAME in capitals.
pub mod objects {
    include!(concat!(env!("OUT_DIR"), "/objects.rs"));
}

/// Programs of `bpf/examples/`, written the way users write ebpf_exporter configs' programs:
/// the config tests write them out beside their YAML.
pub mod examples {
    include!(concat!(env!("OUT_DIR"), "/examples.rs"));
}

extern "C" {
    fn ksight_hist_slot_host(ns: u64) -> u32;
    fn ksight_hist_bound_host(index: u32) -> u64;
}

/// Histogram geometry shared with the kernel (`bpf/include/hist.h`).
pub mod hist {
    use super::abi::ks_hist_geometry as G;

    // The generated enum is u32: -20 arrives as its two's complement, which `as` restores.
    pub const MIN_EXP: i32 = G::KS_HIST_MIN_EXP.0 as i32;
    pub const MAX_EXP: i32 = G::KS_HIST_MAX_EXP.0 as i32;
    /// Finite buckets; one more (+Inf) follows them.
    pub const BOUNDS: usize = G::KS_HIST_BOUNDS.0 as usize;
    pub const SLOTS: usize = G::KS_HIST_SLOTS.0 as usize;

    /// Upper bound of finite bucket `index`, in seconds: 2^(MIN_EXP + index).
    pub fn bound_seconds(index: usize) -> f64 {
        2f64.powi(MIN_EXP + index as i32)
    }

    /// The slot the kernel's code puts `ns` in (the same C, built for the host).
    pub fn slot_of(ns: u64) -> usize {
        // SAFETY: a pure C function over integers, no pointers.
        unsafe { super::ksight_hist_slot_host(ns) as usize }
    }

    /// The kernel's table entry for finite bucket `index`, in nanoseconds.
    pub fn bound_ns(index: usize) -> u64 {
        // SAFETY: a pure C function over integers, bounds-checked in C.
        unsafe { super::ksight_hist_bound_host(index as u32) }
    }

    /// The native-histogram schema the slots are: bucket i of schema 0 is (2^(i-1), 2^i] s.
    pub const NATIVE_SCHEMA: i32 = 0;

    /// Where a slot's count goes in a schema-0 native histogram.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum NativeBucket {
        /// The zero bucket, `[0, native_zero_threshold()]`.
        Zero,
        /// Positive bucket `i`: (2^(i-1), 2^i] seconds.
        Positive(i32),
    }

    /// The zero bucket's threshold: the lowest slot is [0, 2^MIN_EXP] s (it holds 0 ns too),
    /// which is exactly the zero bucket of this width, where positive bucket MIN_EXP would
    /// claim (2^(MIN_EXP-1), 2^MIN_EXP] and misplace its short values. Being > 0, it also
    /// marks the histogram as native for Prometheus 2.42 even when it has no bucket.
    pub fn native_zero_threshold() -> f64 {
        bound_seconds(0)
    }

    /// The native bucket of slot `slot`. Finite slot i has le = 2^(MIN_EXP + i), which is
    /// schema-0 index MIN_EXP + i. The +Inf slot (values above 2^MAX_EXP s) becomes index
    /// MAX_EXP + 1, (2^MAX_EXP, 2^(MAX_EXP+1)]: native buckets have no overflow bucket, and
    /// this keeps every observation counted (count and sum stay exact) just above the last
    /// finite bound, as the classic `histogram_quantile` answers 2^MAX_EXP for that slot.
    /// A value above 2^(MAX_EXP+1) s (18 h) is thus under-stated by a quantile, never lost.
    pub fn native_bucket(slot: usize) -> NativeBucket {
        match slot {
            0 => NativeBucket::Zero,
            s => NativeBucket::Positive(MIN_EXP + s as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::abi;
    use super::hist::*;

    #[test]
    fn table_matches_powers_of_two_seconds() {
        for i in 0..BOUNDS {
            let exact = bound_seconds(i) * 1e9;
            assert_eq!(bound_ns(i), exact.floor() as u64, "bound {i}");
        }
    }

    #[test]
    fn slot_edges_are_upper_inclusive() {
        assert_eq!(slot_of(0), 0);
        for i in 0..BOUNDS {
            let b = bound_ns(i);
            assert_eq!(slot_of(b), i, "value on bound {i}");
            assert_eq!(slot_of(b + 1), i + 1, "value past bound {i}");
            if i > 0 {
                assert_eq!(slot_of(bound_ns(i - 1) + 1), i, "first value of slot {i}");
            }
        }
        assert_eq!(slot_of(u64::MAX), BOUNDS);
    }

    #[test]
    fn slot_agrees_with_seconds_bounds() {
        // Fractional bounds (below 2^-9 s): 976562.5 ns is 2^-10 s; 976562 is in, 976563 is not.
        assert_eq!(slot_of(976_562), (-10 - MIN_EXP) as usize);
        assert_eq!(slot_of(976_563), (-9 - MIN_EXP) as usize);
        assert_eq!(slot_of(1_000_000_000), (-MIN_EXP) as usize);
        assert_eq!(slot_of(1_000_000_001), (1 - MIN_EXP) as usize);
    }

    #[test]
    fn native_buckets_share_the_classic_bounds() {
        assert_eq!(native_bucket(0), NativeBucket::Zero);
        assert_eq!(native_zero_threshold(), bound_seconds(0));
        for slot in 1..BOUNDS {
            let NativeBucket::Positive(i) = native_bucket(slot) else {
                panic!("slot {slot} is not a positive bucket");
            };
            // Schema 0: bucket i is (2^(i-1), 2^i], the slot's (previous bound, bound].
            assert_eq!(
                2f64.powi(i),
                bound_seconds(slot),
                "upper edge of slot {slot}"
            );
            assert_eq!(
                2f64.powi(i - 1),
                bound_seconds(slot - 1),
                "lower edge {slot}"
            );
        }
        assert_eq!(native_bucket(BOUNDS), NativeBucket::Positive(MAX_EXP + 1));
    }

    #[test]
    fn abi_keys_have_no_padding() {
        assert_eq!(std::mem::size_of::<abi::ks_comm>(), 24);
        assert_eq!(std::mem::size_of::<abi::ks_proc_key>(), 32);
        assert_eq!(std::mem::size_of::<abi::ks_file_key>(), 32);
        assert_eq!(std::mem::size_of::<abi::ks_errno_key>(), 8);
        assert_eq!(std::mem::size_of::<abi::ks_signal_key>(), 32);
        assert_eq!(std::mem::size_of::<abi::ks_comm_key>(), 32);
        assert_eq!(std::mem::size_of::<abi::ks_block_key>(), 8);
        assert_eq!(std::mem::size_of::<abi::ks_hist>(), (SLOTS + 2) * 8);
        assert_eq!(std::mem::size_of::<abi::ks_systop_key>(), 8);
    }

    #[test]
    fn trace_records_have_their_c_sizes() {
        // The C layout, field by field (abi.h): a change there shows here.
        assert_eq!(std::mem::size_of::<abi::ks_trace_config>(), 36);
        assert_eq!(std::mem::size_of::<abi::ks_ev_hdr>(), 48);
        assert_eq!(std::mem::size_of::<abi::ks_ev_exec>(), 48 + 16 + 256 + 256);
        assert_eq!(std::mem::size_of::<abi::ks_ev_open>(), 48 + 24 + 256);
        assert_eq!(std::mem::size_of::<abi::ks_ev_fork>(), 56);
        assert_eq!(std::mem::size_of::<abi::ks_ev_exit>(), 64);
        assert_eq!(std::mem::size_of::<abi::ks_ev_signal>(), 48 + 16 + 16);
        assert_eq!(std::mem::size_of::<abi::ks_ev_tcp>(), 104);
    }

    #[test]
    fn capture_records_have_their_c_sizes() {
        assert_eq!(std::mem::size_of::<abi::ks_cap_config>(), 32);
        assert_eq!(std::mem::size_of::<abi::ks_cap_owner>(), 40);
        assert_eq!(std::mem::size_of::<abi::ks_cap_hdr>(), 24 + 40);
        assert_eq!(std::mem::size_of::<abi::ks_cap_ifstats>(), 24);
    }
}
