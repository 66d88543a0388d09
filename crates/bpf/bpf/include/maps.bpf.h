/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* BPF-side helpers shared by every ksight object: loss counting, keyed counters, comm. */
#ifndef KSIGHT_MAPS_BPF_H
#define KSIGHT_MAPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "abi.h"
#include "arch.bpf.h"
#include "hist.h"

/*
 * A tracepoint's programs with one body, one per hook kind: NAME_btf (tp_btf, the cheapest,
 * typed arguments read directly), NAME_raw (raw_tp, its fallback where BTF-enabled tracing is
 * missing) and, with KS_TP_EVERY_HOOK, NAME_tp (the classic tracepoint CATEGORY/TP, the last
 * resort; its context is the event's record, not the arguments, so its body is TP_CALL). The
 * user side picks one by name (crates/ksight/src/collectors/NAME.rs candidates).
 */
#define KS_TP_BTF_AND_RAW(name, tp, call, args...)                                          \
	SEC("tp_btf/" #tp)                                                                  \
	int BPF_PROG(name##_btf, ##args)                                                    \
	{                                                                                   \
		return call;                                                                \
	}                                                                                   \
	SEC("raw_tp/" #tp)                                                                  \
	int BPF_PROG(name##_raw, ##args)                                                    \
	{                                                                                   \
		return call;                                                                \
	}

#define KS_TP_EVERY_HOOK(name, category, tp, call, tp_call, args...)                        \
	KS_TP_BTF_AND_RAW(name, tp, call, ##args)                                           \
	SEC("tp/" #category "/" #tp)                                                        \
	int name##_tp(void *ctx)                                                            \
	{                                                                                   \
		return tp_call;                                                             \
	}

#define KS_EEXIST 17
#define KS_E2BIG 7

static __always_inline bool ks_is_open_nr(__u64 nr)
{
#ifdef KS_NR_OPEN
	return nr == KS_NR_OPENAT || nr == KS_NR_OPEN || nr == KS_NR_OPENAT2 || nr == KS_NR_CREAT;
#else
	return nr == KS_NR_OPENAT || nr == KS_NR_OPENAT2;
#endif
}

const volatile struct ks_config ks_config SEC(".rodata.cfg") = {};
volatile struct ks_ctl ks_ctl SEC(".data.ctl") = {};

/* Increments that could not be stored: ksight_events_lost_total. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_NR_LOSSES);
	__type(key, __u32);
	__type(value, __u64);
} ks_losses SEC(".maps");

/* Updating this map-in-map makes the kernel wait (synchronize_rcu) for every running BPF
 * program: user space's barrier after flipping ks_ctl.table_gen. */
struct ks_barrier_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} ks_barrier_in SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct ks_barrier_inner);
} ks_barrier SEC(".maps") = {
	.values = { &ks_barrier_in },
};

static __always_inline void ks_lose(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&ks_losses, &reason);

	if (n)
		*n += 1;
}

static __always_inline bool ks_is_self(void)
{
	return !ks_config.include_self && (bpf_get_current_pid_tgid() >> 32) == ks_config.self_tgid;
}

/* The process's name: the thread-group leader's comm, zero-padded. */
static __always_inline void ks_leader_comm(struct task_struct *task, char comm[KS_COMM_LEN])
{
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);

	bpf_probe_read_kernel_str(comm, KS_COMM_LEN, &leader->comm);
}

/* The task's cgroup id in the hierarchy user space chose (ks_config.cgroup_mode), read from
 * the task rather than with bpf_get_current_cgroup_id() so it works for other tasks (a
 * signal's target) and for cgroup v1. Costs nothing when labels are off. */
static __always_inline __u64 ks_task_cgroup(struct task_struct *task)
{
	if (ks_config.cgroup_mode == KS_CGROUP_V2)
		return BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	if (ks_config.cgroup_mode == KS_CGROUP_V1_MEMORY &&
	    bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id)) {
		/* the controller's index depends on the kernel's config: relocated, not constant */
		__u64 memory = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
		struct css_set *set = BPF_CORE_READ(task, cgroups);
		struct cgroup_subsys_state *css = NULL;

		if (!set || memory >= 16)
			return 0;
		bpf_probe_read_kernel(&css, sizeof(css),
				      (void *)set + bpf_core_field_offset(struct css_set, subsys) +
					      memory * sizeof(css));
		if (css)
			return BPF_CORE_READ(css, cgroup, kn, id);
	}
	return 0;
}

/* bpf_map_update_elem's error, as an int. Before 6.4 ("bpf: return long from bpf_map_ops
 * funcs") the verifier turns the helper into a direct call of the map's update op, which
 * returns int: r0 then holds -EEXIST as 0x00000000ffffffef, not a 64-bit -17, and a 64-bit
 * compare misreads it (on 5.10 an insert race now and then lost an exit that way, counted as
 * a failed update). Every error of a map update is compared through this. */
static __always_inline int ks_update(void *map, void *key, void *value, __u64 flags)
{
	return (int)bpf_map_update_elem(map, key, value, flags);
}

/* The value under key in a hash map, inserted as *init if absent; NULL when the map cannot
 * take it, with the kernel's error in *err (-E2BIG: full). Several CPUs may insert the same
 * new key at once: BPF_NOEXIST lets one win, and the others (EEXIST) look up the winner's. */
static __always_inline void *ks_lookup_or_insert(void *map, void *key, void *init, int *err)
{
	void *v = bpf_map_lookup_elem(map, key);

	*err = 0;
	if (v)
		return v;
	*err = ks_update(map, key, init, BPF_NOEXIST);
	if (*err && *err != -KS_EEXIST)
		return NULL;
	v = bpf_map_lookup_elem(map, key);
	if (!v && !*err)
		*err = -KS_EEXIST; /* inserted, yet gone: nothing deletes from a live table */
	return v;
}

/* The loss reason for a ks_lookup_or_insert error. */
static __always_inline __u32 ks_insert_loss(int err)
{
	return err == -KS_E2BIG ? KS_LOSS_MAP_FULL : KS_LOSS_UPDATE_FAILED;
}

/* Adds n under key (inserted as 0 first if absent); the kernel's error if it cannot. */
static __always_inline int ks_try_add(void *map, void *key, __u64 n)
{
	__u64 zero = 0, *v;
	int err;

	v = ks_lookup_or_insert(map, key, &zero, &err);
	if (!v)
		return err;
	__sync_fetch_and_add(v, n);
	return 0;
}

static __always_inline void ks_add(void *map, void *key, void *ovf_map, void *ovf_key, __u64 n)
{
	int err = ks_try_add(map, key, n);

	if (!err)
		return;
	if (err != -KS_E2BIG) {
		ks_lose(KS_LOSS_UPDATE_FAILED);
		return;
	}
	err = ks_try_add(ovf_map, ovf_key, n);
	if (err)
		ks_lose(ks_insert_loss(err));
}

static __always_inline void ks_hist_record(struct ks_hist *h, __u64 ns)
{
	__u32 slot = ks_hist_slot(ns);

	if (slot >= KS_HIST_SLOTS)
		return;
	h->buckets[slot] += 1;
	h->sum_ns += ns;
	h->count += 1;
}

/* Records ns in a KS_HIST map. */
static __always_inline void ks_hist_add(void *map, __u64 ns)
{
	__u32 zero = 0;
	struct ks_hist *h = bpf_map_lookup_elem(map, &zero);

	if (h)
		ks_hist_record(h, ns);
}

/* The value under key in a hash map, inserted as zeroes if absent; NULL (and a loss counted)
 * when the map cannot take it. */
static __always_inline void *ks_lookup_or_zero(void *map, void *key, void *zero)
{
	int err;
	void *v = ks_lookup_or_insert(map, key, zero, &err);

	if (!v)
		ks_lose(ks_insert_loss(err));
	return v;
}

/* Thread groups already seen dead. Several exiting threads can read signal->live == 0 (it
 * reaches zero in do_exit before the tracepoint), so the first to claim the group counts or
 * reports it. Keyed by the signal struct and the leader's start time, so a reused address is
 * a new key; the value is the time of death, and user space (dead_groups.rs) deletes claims
 * older than a few seconds. A plain hash, not an LRU: its "already there" answer is exact (an
 * LRU update takes a free node first and can fail for want of one even when the key exists). */
struct ks_dead_group {
	__u64 signal;
	__u64 start_time;
};

#define KS_DEAD_GROUPS(name)                                                              \
	struct {                                                                          \
		__uint(type, BPF_MAP_TYPE_HASH);                                          \
		__uint(max_entries, 4096);                                                \
		__type(key, struct ks_dead_group);                                        \
		__type(value, __u64);                                                     \
	} name SEC(".maps")

/* True for the first thread to see its group dead. Any failure other than "already claimed"
 * (EBUSY: older kernels' bucket lock, held on this CPU by a thread that has just claimed; a
 * full map) answers true unless the claim is there: a death is counted, never lost. */
static __always_inline bool ks_first_to_see_group_dead(void *claims, struct task_struct *task)
{
	struct ks_dead_group key = {
		.signal = (__u64)BPF_CORE_READ(task, signal),
		.start_time = BPF_CORE_READ(task, group_leader, start_time),
	};
	__u64 now = bpf_ktime_get_ns();
	int err = ks_update(claims, &key, &now, BPF_NOEXIST);

	if (!err)
		return true;
	if (err == -KS_EEXIST)
		return false;
	return !bpf_map_lookup_elem(claims, &key);
}

/* Adds n to slot idx of a per-CPU array of counters. Atomic: programs on different hooks
 * (one in softirq, one in process context) may share the array on one CPU. */
static __always_inline void ks_count(void *map, __u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(map, &idx);

	if (v)
		__sync_fetch_and_add(v, n);
}

/* A per-CPU histogram with no labels (one ks_hist per CPU), fed by ks_hist_add. */
#define KS_HIST(name)                                                                     \
	struct {                                                                          \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                                  \
		__uint(max_entries, 1);                                                   \
		__type(key, __u32);                                                       \
		__type(value, struct ks_hist);                                            \
	} name SEC(".maps")

/* A counter table keyed by labels: two hash maps used in turns (ks_ctl.table_gen) so user space
 * can drain the idle one with no increment lost on any kernel, and an overflow map for keys
 * that do not fit (keyed by the other labels only, so 1024 entries are plenty). */
#define KS_TABLE(name, key_t, cap)                                                        \
	struct {                                                                          \
		__uint(type, BPF_MAP_TYPE_HASH);                                          \
		__uint(max_entries, cap);                                                 \
		__type(key, key_t);                                                       \
		__type(value, __u64);                                                     \
	} name##_a SEC(".maps"), name##_b SEC(".maps");                                 \
	struct {                                                                          \
		__uint(type, BPF_MAP_TYPE_HASH);                                          \
		__uint(max_entries, 1024);                                                \
		__type(key, key_t);                                                       \
		__type(value, __u64);                                                     \
	} name##_ovf SEC(".maps")

#define KS_TABLE_ADD(name, key, ovf_key, n)                                               \
	do {                                                                              \
		if (ks_ctl.table_gen & 1)                                                     \
			ks_add(&name##_b, key, &name##_ovf, ovf_key, n);                  \
		else                                                                      \
			ks_add(&name##_a, key, &name##_ovf, ovf_key, n);                  \
	} while (0)

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#endif /* KSIGHT_MAPS_BPF_H */
