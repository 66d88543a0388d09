// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * ksight profile: one run per tick of a software cpu-clock perf event on each CPU.
 *
 * The filters of .rodata.prof (constants: the verifier drops the branches of filters that
 * are not set) are checked before any stack is walked. A kept sample walks its kernel stack
 * and its user stack by frame pointers into prof_stacks, then adds one to prof_counts under
 * (process, thread, user stack id, kernel stack id): the common case is one map lookup and
 * an atomic add.
 * Every run is counted in prof_stats by what became of it, so user space can account for
 * each one against the kernel's own run count.
 */
#include "maps.bpf.h"

#define KS_EFAULT 14
#define KS_ENOMEM 12

const volatile struct ks_prof_config ks_prof SEC(".rodata.prof") = {};

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384); /* --stack-map-entries */
	__type(key, __u32);
	__type(value, struct ks_prof_stack);
} prof_stacks SEC(".maps");

/* Stacks whose slot in prof_stacks holds another one (two stacks with the same hash slot:
 * with thousands of stacks, a birthday-paradox certainty). Only those come here, so the
 * same slot is free in this one unless two of them collide again. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096); /* a quarter of --stack-map-entries */
	__type(key, __u32);
	__type(value, struct ks_prof_stack);
} prof_stacks_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* --counts-map-entries */
	__type(key, struct ks_prof_key);
	__type(value, __u64);
} prof_counts SEC(".maps");

/* The processes of prof_counts, added when a process's first count is: user space polls
 * this small map to remember new processes while they live, not the whole counts map. As
 * many entries as prof_counts (a process has at least one count), so it cannot be full. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* --counts-map-entries */
	__type(key, __u32);
	__type(value, __u8);
} prof_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_PROF_NR_STATS);
	__type(key, __u32);
	__type(value, __u64);
} prof_stats SEC(".maps");

/* --cgroup/--container: the cgroup ids to keep (user space fills it before attaching). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} prof_cgroups SEC(".maps");

static __always_inline bool filter_on(__u32 flag)
{
	return ks_prof.flags & flag;
}

static __always_inline bool comm_equal(const char a[KS_COMM_LEN], const volatile char *b)
{
	for (int i = 0; i < KS_COMM_LEN; i++) {
		if (a[i] != b[i])
			return false;
		if (!a[i])
			return true;
	}
	return true;
}

/* The stack id (in prof_stacks, else in prof_stacks_b), or -errno; a failure other than
 * "no stack here" is counted by reason. */
static __always_inline __s32 stack_id(void *ctx, __u64 flags, __u32 collision, __u32 full)
{
	__s32 id = bpf_get_stackid(ctx, &prof_stacks, flags);

	if (id == -KS_EEXIST) {
		id = bpf_get_stackid(ctx, &prof_stacks_b, flags);
		if (id >= 0)
			return id | KS_PROF_IN_MAP_B;
	}
	if (id >= 0 || id == -KS_EFAULT)
		return id;
	if (id == -KS_EEXIST)
		ks_count(&prof_stats, collision, 1);
	else if (id == -KS_ENOMEM)
		ks_count(&prof_stats, full, 1);
	else
		ks_count(&prof_stats, KS_PROF_STACK_OTHER, 1);
	return id;
}

/* Whether the current task is one the filters keep; fills the key's process fields. */
static __always_inline bool wanted(struct ks_prof_key *key, struct task_struct *task)
{
	if (ks_is_self() || (filter_on(KS_PF_PID) && key->pid != ks_prof.pid))
		return false;
	ks_leader_comm(task, key->comm);
	if (filter_on(KS_PF_COMM) && !comm_equal(key->comm, ks_prof.comm))
		return false;
	key->cgroup = ks_task_cgroup(task);
	if (filter_on(KS_PF_CGROUP) && !bpf_map_lookup_elem(&prof_cgroups, &key->cgroup))
		return false;
	return true;
}

/* Adds one under key: a lookup and an atomic add when the key exists (the common case);
 * else an insert, and the process noted in prof_pids. */
static __always_inline int count(struct ks_prof_key *key)
{
	__u64 one = 1, *n = bpf_map_lookup_elem(&prof_counts, key);
	__u8 seen = 1;
	int err;

	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	err = ks_update(&prof_counts, key, &one, BPF_NOEXIST);
	if (err == -KS_EEXIST)
		return ks_try_add(&prof_counts, key, 1); /* another CPU inserted it meanwhile */
	if (err)
		return err;
	err = ks_update(&prof_pids, &key->pid, &seen, BPF_NOEXIST);
	if (err && err != -KS_EEXIST)
		ks_count(&prof_stats, KS_PROF_PIDS_FAILED, 1);
	return 0;
}

SEC("perf_event")
int profile_sample(struct bpf_perf_event_data *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();
	struct ks_prof_key key = {};
	int err;

	key.pid = id >> 32;
	key.tid = (__u32)id;
	if (key.tid == 0) {
		ks_count(&prof_stats, KS_PROF_IDLE, 1);
		return 0;
	}
	if (!wanted(&key, task)) {
		ks_count(&prof_stats, KS_PROF_FILTERED, 1);
		return 0;
	}
	bpf_get_current_comm(key.thread, sizeof(key.thread));
	key.kernel_stack = stack_id(ctx, 0, KS_PROF_KSTACK_COLLISION, KS_PROF_KSTACK_FULL);
	key.user_stack = stack_id(ctx, BPF_F_USER_STACK, KS_PROF_USTACK_COLLISION,
				  KS_PROF_USTACK_FULL);
	err = count(&key);
	if (!err)
		ks_count(&prof_stats, KS_PROF_STORED, 1);
	else if (err == -KS_E2BIG)
		ks_count(&prof_stats, KS_PROF_LOST_FULL, 1);
	else
		ks_count(&prof_stats, KS_PROF_LOST_FAILED, 1);
	return 0;
}
