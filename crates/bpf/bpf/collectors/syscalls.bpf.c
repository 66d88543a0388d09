// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * syscalls collector: ksight_syscalls_total{syscall,comm}, ksight_syscall_errors_total.
 *
 * One hook on the hot path (sys_exit gives the number and the result). Counts go to a
 * per-CPU array indexed by [comm slot][syscall nr]; the comm slot of the task that ran last
 * on a CPU is cached per CPU, so a syscall costs no string copy and no hash lookup unless the
 * CPU switched tasks or ks_ctl.epoch moved (exec, exit, rename, or a slot fold by user space).
 * exit and exit_group never return: they are counted when the thread dies, from the syscall
 * number still in its saved registers.
 */
#include "opens.bpf.h"


struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 128); /* comm slots */
	__type(key, __u32);
	__type(value, struct ks_syscall_row);
} sys_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, struct ks_comm);
	__type(value, __u32);
} sys_comm_slots SEC(".maps");

/* Free comm slots, filled by user space (1..capacity-1) and refilled by folds. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 128);
	__type(value, __u32);
} sys_free_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_slot_cache);
} sys_slot_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, struct ks_errno_key);
	__type(value, __u64);
} sys_errors SEC(".maps");

static __always_inline __u32 resolve_slot(struct task_struct *task)
{
	struct ks_comm key = {};
	__u32 *found, slot;

	if (ks_is_self())
		return KS_SLOT_SKIP;
	ks_leader_comm(task, key.comm);
	key.cgroup = ks_task_cgroup(task);
	found = bpf_map_lookup_elem(&sys_comm_slots, &key);
	if (found)
		return *found;
	if (bpf_map_pop_elem(&sys_free_slots, &slot))
		return KS_SLOT_OVERFLOW;
	if (!bpf_map_update_elem(&sys_comm_slots, &key, &slot, BPF_NOEXIST))
		return slot;
	/* lost a race for this comm, or the map is full: give the slot back */
	bpf_map_push_elem(&sys_free_slots, &slot, 0);
	found = bpf_map_lookup_elem(&sys_comm_slots, &key);
	return found ? *found : KS_SLOT_OVERFLOW;
}

/* identity: an address unique to the current task while it lives (its saved registers on
 * the sys_exit path: free, where bpf_get_current_task() would cost a helper call). */
static __always_inline __u32 current_slot(__u64 identity)
{
	__u32 zero = 0, epoch = ks_ctl.epoch;
	struct ks_slot_cache *cache = bpf_map_lookup_elem(&sys_slot_cache, &zero);

	if (!cache)
		return KS_SLOT_SKIP;
	if (cache->task == identity && cache->epoch == epoch)
		return cache->slot;
	cache->slot = resolve_slot((struct task_struct *)bpf_get_current_task());
	cache->task = identity;
	cache->epoch = epoch;
	return cache->slot;
}

static __always_inline void count_syscall(__u32 slot, __u64 nr)
{
	struct ks_syscall_row *row = bpf_map_lookup_elem(&sys_counts, &slot);

	if (nr >= KS_SYSCALL_SLOTS)
		nr = KS_SYSCALL_INVALID;
	if (row)
		row->counts[nr] += 1;
}

static __always_inline void count_error(__u64 nr, long ret)
{
	struct ks_errno_key key = {
		.nr = nr < KS_SYSCALL_SLOTS ? nr : KS_SYSCALL_INVALID,
		.err = -ret,
	};
	int err = ks_try_add(&sys_errors, &key, 1);

	if (err)
		ks_lose(ks_insert_loss(err));
}

static __always_inline int on_sys_exit(__u64 identity, __u64 nr, long ret)
{
	__u32 slot = current_slot(identity);

	if (slot == KS_SLOT_SKIP)
		return 0;
	count_syscall(slot, nr);
	if (ret < 0 && ret >= -KS_MAX_ERRNO)
		count_error(nr, ret);
	if (ks_is_open_nr(nr) && ks_ctl.count_opens)
		ks_count_open(ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit_btf, struct pt_regs *regs, long ret)
{
	return on_sys_exit((__u64)regs, KS_SYSCALL_NR(regs), ret);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(sys_exit_raw, struct pt_regs *regs, long ret)
{
	return on_sys_exit((__u64)regs, KS_SYSCALL_NR_CORE(regs), ret);
}

SEC("tp/raw_syscalls/sys_exit")
int sys_exit_tp(struct trace_event_raw_sys_exit *ctx)
{
	return on_sys_exit(bpf_get_current_task(), ctx->id, ctx->ret);
}

/* task_pt_regs(current): bpf_task_pt_regs() from 5.15 (it wants a BTF task pointer,
 * which raw_tp and tracepoint arguments are not, so it is given current's), the top of the
 * kernel stack before. */
static __always_inline struct pt_regs *current_regs(void)
{
	struct task_struct *task;

	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	task = (struct task_struct *)bpf_get_current_task();
	return (struct pt_regs *)((__u64)BPF_CORE_READ(task, stack) + KS_THREAD_SIZE) - 1;
}

/* Thread death (task is current): count exit/exit_group (they never reach sys_exit) and drop cached slots. */
static __always_inline int on_task_exit(struct task_struct *task)
{
	__u64 nr = KS_SYSCALL_NR_CORE(current_regs());
	__u32 slot;

	if (nr == KS_NR_EXIT || nr == KS_NR_EXIT_GROUP) {
		slot = resolve_slot(task);
		if (slot != KS_SLOT_SKIP)
			count_syscall(slot, nr);
	}
	__sync_fetch_and_add(&ks_ctl.epoch, 1);
	return 0;
}

KS_TP_EVERY_HOOK(task_exit, sched, sched_process_exit, on_task_exit(task),
		 on_task_exit((struct task_struct *)bpf_get_current_task()), struct task_struct *task)

/* exec and a leader's rename change the process's name; joining a cgroup its cgroup label. */
static __always_inline int bump_epoch(void)
{
	__sync_fetch_and_add(&ks_ctl.epoch, 1);
	return 0;
}

KS_TP_EVERY_HOOK(exec, sched, sched_process_exec, bump_epoch(), bump_epoch())
KS_TP_EVERY_HOOK(rename, task, task_rename, bump_epoch(), bump_epoch())
KS_TP_EVERY_HOOK(cgroup_attach, cgroup, cgroup_attach_task, bump_epoch(), bump_epoch())
