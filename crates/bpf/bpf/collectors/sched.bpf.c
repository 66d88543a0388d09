// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * sched collector: run-queue latency (wakeup, or preemption while runnable, -> on CPU) as a
 * histogram, and context switches. One sched_switch program yields both figures.
 */
#include "maps.bpf.h"

#define KS_TASK_RUNNING 0

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sched_switches SEC(".maps");

KS_HIST(sched_runq_lat);

/* When each runnable task was queued (ns), by pid; deleted when it runs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} sched_queued SEC(".maps");

/* The same, in the task itself where the kernel has task storage for tracing programs
 * (5.11+) and the programs get BTF task pointers: no hash update, lookup and delete per
 * event (about half the cost of the hash variant), no shared table to fill. 0: not queued. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} sched_queued_at SEC(".maps");

/* task_struct::state was renamed __state in 5.14. */
struct task_struct___pre514 {
	volatile long state;
} __attribute__((preserve_access_index));

static __always_inline void queued(__u32 pid)
{
	__u64 now = bpf_ktime_get_ns();

	/* pid 0 is the idle task: never queued */
	if (pid && bpf_map_update_elem(&sched_queued, &pid, &now, BPF_ANY))
		ks_lose(KS_LOSS_MAP_FULL);
}

/* btf: the arguments are BTF pointers (tp_btf) the program may dereference directly, which
 * saves a probe-read helper call per field on this hot path; raw_tp needs the helper. A
 * compile-time constant at each call site, so each program keeps one branch. */
#define TASK_PID(btf, t) ((btf) ? (t)->pid : BPF_CORE_READ(t, pid))

static __always_inline long task_state(struct task_struct *t, const bool btf)
{
	if (bpf_core_field_exists(t->__state))
		return btf ? t->__state : BPF_CORE_READ(t, __state);
	return BPF_CORE_READ((struct task_struct___pre514 *)t, state);
}

static __always_inline int on_switch(struct task_struct *prev, struct task_struct *next,
				     const bool btf)
{
	__u32 zero = 0, pid = TASK_PID(btf, next);
	__u64 *since, *n = bpf_map_lookup_elem(&sched_switches, &zero);

	if (n)
		*n += 1;
	/* preempted while runnable: it waits on the run queue again */
	if (task_state(prev, btf) == KS_TASK_RUNNING)
		queued(TASK_PID(btf, prev));
	since = bpf_map_lookup_elem(&sched_queued, &pid);
	if (!since)
		return 0;
	ks_hist_add(&sched_runq_lat, bpf_ktime_get_ns() - *since);
	bpf_map_delete_elem(&sched_queued, &pid);
	return 0;
}

static __always_inline void queued_at(struct task_struct *t)
{
	__u64 *at;

	if (!t->pid)
		return;
	at = bpf_task_storage_get(&sched_queued_at, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (at)
		*at = bpf_ktime_get_ns();
	else
		ks_lose(KS_LOSS_UPDATE_FAILED);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(wakeup_ts, struct task_struct *p)
{
	queued_at(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(wakeup_new_ts, struct task_struct *p)
{
	queued_at(p);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_ts, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 zero = 0;
	__u64 *at, *n = bpf_map_lookup_elem(&sched_switches, &zero);

	if (n)
		*n += 1;
	if (task_state(prev, true) == KS_TASK_RUNNING)
		queued_at(prev);
	at = bpf_task_storage_get(&sched_queued_at, next, 0, 0);
	if (!at || !*at)
		return 0;
	ks_hist_add(&sched_runq_lat, bpf_ktime_get_ns() - *at);
	*at = 0;
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(wakeup_btf, struct task_struct *p)
{
	queued(TASK_PID(true, p));
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(wakeup_new_btf, struct task_struct *p)
{
	queued(TASK_PID(true, p));
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return on_switch(prev, next, true);
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(wakeup_raw, struct task_struct *p)
{
	queued(TASK_PID(false, p));
	return 0;
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(wakeup_new_raw, struct task_struct *p)
{
	queued(TASK_PID(false, p));
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return on_switch(prev, next, false);
}
