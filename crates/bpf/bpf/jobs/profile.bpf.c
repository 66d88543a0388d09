// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * ksight profile: one run per tick of a software cpu-clock perf event on each CPU.
 *
 * The filters of .rodata.prof (constants: the verifier drops the branches of filters that
 * are not set) are checked before any stack is walked. A kept sample walks its kernel stack
 * and its user stack by frame pointers into prof_stacks, then adds one to prof_counts under
 * (process, thread, user stack id, kernel stack id): the common case is one map lookup and
 * an atomic add.
 * A process without usable frame pointers gets its samples sent to user space instead, as
 * copies of the top of its user stack with the registers (as perf --call-graph dwarf), which
 * user space unwinds from .eh_frame: prof_unwind says per process which way it goes (user
 * space judges each new process from its first copies, which also carry the frame-pointer
 * stack to check).
 * Every run is counted in prof_stats by what became of it, so user space can account for
 * each one against the kernel's own run count.
 */
#include "maps.bpf.h"

#define KS_EFAULT 14
#define KS_ENOMEM 12
#define KS_ENOENT 2

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

/* The processes sampled: added at a process's first count or first copy. User space polls
 * this small map to remember new processes while they live, not the whole counts map, and
 * profile_mmap reads it. As many entries as prof_counts: full only when more processes were
 * sampled by copies alone than the counts map holds (counted, KS_PROF_PIDS_FAILED). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* --counts-map-entries */
	__type(key, __u32);
	__type(value, __u8);
} prof_pids SEC(".maps");

/* pid -> enum ks_prof_unwind, set by user space when it has judged the process (a process
 * it cannot note stays on stack copies). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} prof_unwind SEC(".maps");

/* Samples with a copy of their user stack (struct ks_prof_copy). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* --ring-buffer-size */
} prof_copies SEC(".maps");

/* Processes that exec'd (struct ks_prof_exec): user space reads their mappings at once. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
} prof_execs SEC(".maps");

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

/* Notes a process in prof_pids: user space remembers its mappings, and its mmaps of code
 * tell user space to read them again (profile_mmap). */
static __always_inline void note_pid(__u32 pid)
{
	__u8 seen = 1;
	int err;

	if (bpf_map_lookup_elem(&prof_pids, &pid))
		return;
	err = ks_update(&prof_pids, &pid, &seen, BPF_NOEXIST);
	if (err && err != -KS_EEXIST)
		ks_count(&prof_stats, KS_PROF_PIDS_FAILED, 1);
}

/* Adds one under key: a lookup and an atomic add when the key exists (the common case);
 * else an insert, and the process noted in prof_pids. */
static __always_inline int count(struct ks_prof_key *key)
{
	__u64 one = 1, *n = bpf_map_lookup_elem(&prof_counts, key);
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
	note_pid(key->pid);
	return 0;
}

/* A user-space address, not the kernel's (arch.bpf.h). */
static __always_inline bool user_address(__u64 addr)
{
	return addr >> KS_USER_ADDRESS_BITS == 0;
}

/* The user registers at the sample: the sampled ones when it hit user mode, else the task's
 * saved ones (bpf_task_pt_regs, 5.15; older kernels have no way: false). */
static __always_inline bool user_regs(struct bpf_perf_event_data *ctx, struct ks_prof_copy *rec)
{
	struct pt_regs regs;

	if (user_address(PT_REGS_IP(&ctx->regs))) {
		rec->ip = PT_REGS_IP(&ctx->regs);
		rec->sp = PT_REGS_SP(&ctx->regs);
		rec->bp = PT_REGS_FP(&ctx->regs);
#ifdef __TARGET_ARCH_arm64
		rec->lr = PT_REGS_RET(&ctx->regs);
#endif
		return true;
	}
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return false;
	/* bpf_get_current_task_btf (5.11) is there wherever bpf_task_pt_regs is. */
	if (bpf_probe_read_kernel(&regs, sizeof(regs),
				  (void *)bpf_task_pt_regs(bpf_get_current_task_btf())))
		return false;
	rec->ip = PT_REGS_IP(&regs);
	rec->sp = PT_REGS_SP(&regs);
	rec->bp = PT_REGS_FP(&regs);
#ifdef __TARGET_ARCH_arm64
	rec->lr = PT_REGS_RET(&regs);
#endif
	return user_address(rec->ip);
}

/* Copies the largest power of two of bytes down to KS_PROF_STACK_COPY_MIN that is readable
 * from sp (the stack's top may be nearer than KS_PROF_STACK_COPY). */
static __always_inline bool copy_stack(struct ks_prof_copy *rec)
{
	void *sp = (void *)rec->sp;
	__u32 len = KS_PROF_STACK_COPY;

#pragma unroll
	for (int i = 0; i < 6; i++) {
		if (!bpf_probe_read_user(rec->stack, len, sp)) {
			rec->stack_len = len;
			return true;
		}
		len /= 2;
	}
	return false;
}

/* Sends the sample with a copy of its user stack; false (and counted why) if it could not,
 * and then the caller stores it with its frame-pointer stack. */
static __always_inline bool send_copy(struct bpf_perf_event_data *ctx, struct ks_prof_key *key)
{
	struct ks_prof_copy *rec = bpf_ringbuf_reserve(&prof_copies, sizeof(*rec), 0);
	__u32 stat = KS_PROF_COPY_NO_REGS;

	if (!rec) {
		ks_count(&prof_stats, KS_PROF_COPY_RINGBUF_FULL, 1);
		return false;
	}
	if (user_regs(ctx, rec)) {
		if (copy_stack(rec)) {
			rec->key = *key;
			bpf_ringbuf_submit(rec, 0);
			ks_count(&prof_stats, KS_PROF_COPIED, 1);
			/* A process sampled by copies alone (not judged yet) may still be in its
			 * dynamic loader: the libraries it maps next must be read too. */
			note_pid(key->pid);
			return true;
		}
		stat = KS_PROF_COPY_UNREADABLE;
	}
	bpf_ringbuf_discard(rec, 0);
	ks_count(&prof_stats, stat, 1);
	return false;
}

/* How this process's user stack is taken: --unwind, else what user space judged. */
static __always_inline __u32 unwind_mode(__u32 pid)
{
	__u8 *mode;

	if (ks_prof.unwind != KS_PROF_UNWIND_AUTO)
		return ks_prof.unwind;
	mode = bpf_map_lookup_elem(&prof_unwind, &pid);
	return mode ? *mode : KS_PROF_UNWIND_AUTO;
}

SEC("perf_event")
int profile_sample(struct bpf_perf_event_data *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();
	struct ks_prof_key key = {};
	__u32 mode;
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
	mode = unwind_mode(key.pid);
	/* Not judged yet: the frame-pointer stack goes along for user space to check. */
	key.user_stack = mode == KS_PROF_UNWIND_COPY ?
				 -KS_ENOENT :
				 stack_id(ctx, BPF_F_USER_STACK, KS_PROF_USTACK_COLLISION,
					  KS_PROF_USTACK_FULL);
	if (mode != KS_PROF_UNWIND_FP && send_copy(ctx, &key))
		return 0;
	if (key.user_stack == -KS_ENOENT)
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

/* Tells user space to read a process's mappings: false (and counted) if prof_execs is full. */
static __always_inline bool send_exec(__u32 pid, __u32 kind)
{
	struct ks_prof_exec *rec = bpf_ringbuf_reserve(&prof_execs, sizeof(*rec), 0);

	if (!rec) {
		ks_count(&prof_stats, KS_PROF_EXEC_LOST, 1);
		return false;
	}
	rec->pid = pid;
	rec->kind = kind;
	bpf_ringbuf_submit(rec, 0);
	return true;
}

/* A process that exec'd and that the filters keep: user space reads its mappings at once,
 * so a process that lives for a moment is still named. */
SEC("tp/sched/sched_process_exec")
int profile_exec(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct ks_prof_key key = {};

	key.pid = bpf_get_current_pid_tgid() >> 32;
	if (wanted(&key, task))
		send_exec(key.pid, KS_PROF_EXECD);
	return 0;
}

#define KS_PROT_EXEC 4

/* mmap of code from a file (the dynamic loader's libraries, dlopen) by a process already
 * sampled (stored or copied) or judged: user space reads its mappings again, and a process
 * judged to use its frame pointers goes back to stack copies until it is judged again, since
 * the new code may have none. A process not sampled yet needs neither: its mappings are read
 * at its first sample. At syscall entry the mapping is not there yet: user space reads again
 * a moment later (EXEC_SETTLE). */
SEC("tp/syscalls/sys_enter_mmap")
int profile_mmap(struct trace_event_raw_sys_enter *ctx)
{
	__u32 pid;
	__u8 *mode;

	if (!(ctx->args[2] & KS_PROT_EXEC) || (int)ctx->args[4] < 0)
		return 0;
	pid = bpf_get_current_pid_tgid() >> 32;
	mode = bpf_map_lookup_elem(&prof_unwind, &pid);
	if (mode && *mode == KS_PROF_UNWIND_FP) {
		if (send_exec(pid, KS_PROF_REJUDGE))
			bpf_map_delete_elem(&prof_unwind, &pid);
		return 0;
	}
	if (mode || bpf_map_lookup_elem(&prof_pids, &pid))
		send_exec(pid, KS_PROF_MAPPED);
	return 0;
}
