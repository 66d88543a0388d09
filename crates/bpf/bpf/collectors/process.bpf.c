// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * process collector: execs, forks and exits of processes (thread groups, not threads),
 * processes killed by a signal, and their lifetime (fork of the leader to group death).
 */
#include "maps.bpf.h"

KS_TABLE(proc, struct ks_proc_key, 4096);

KS_HIST(proc_lifetime);

KS_DEAD_GROUPS(proc_dead);

static __always_inline void count(struct task_struct *task, __u8 kind, __u8 signal)
{
	struct ks_proc_key key = { .kind = kind, .signal = signal };
	struct ks_proc_key ovf = { .kind = kind, .signal = signal, .overflow = 1 };

	ks_leader_comm(task, key.comm);
	key.cgroup = ks_task_cgroup(task);
	KS_TABLE_ADD(proc, &key, &ovf, 1);
}

/* After exec, current is the leader and holds the new image's comm. */
static __always_inline int on_exec(struct task_struct *task)
{
	if (!ks_is_self())
		count(task, KS_PROC_EXEC, 0);
	return 0;
}

/* A child that is its own thread-group leader is a new process. */
static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child)
{
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid) || ks_is_self())
		return 0;
	count(parent, KS_PROC_FORK, 0);
	return 0;
}

/* Runs for every thread; the group is dead once signal->live reached zero (counted once). */
static __always_inline int on_exit(struct task_struct *task)
{
	__u32 code;
	__u64 born;

	if (BPF_CORE_READ(task, signal, live.counter) != 0 || ks_is_self())
		return 0;
	if (!ks_first_to_see_group_dead(&proc_dead, task))
		return 0;
	code = BPF_CORE_READ(task, exit_code);
	count(task, KS_PROC_EXIT, 0);
	if (code & 0x7f)
		count(task, KS_PROC_KILLED, code & 0x7f);
	born = BPF_CORE_READ(task, group_leader, start_time);
	ks_hist_add(&proc_lifetime, bpf_ktime_get_ns() - born);
	return 0;
}

KS_TP_BTF_AND_RAW(exec, sched_process_exec, on_exec(task), struct task_struct *task)

KS_TP_BTF_AND_RAW(fork, sched_process_fork, on_fork(parent, child),
		  struct task_struct *parent, struct task_struct *child)

KS_TP_BTF_AND_RAW(exit, sched_process_exit, on_exit(task), struct task_struct *task)
