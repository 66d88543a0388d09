// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * memory collector: OOM kills by the victim's process name and, opt-in (collector
 * page_faults), user page faults by process name.
 *
 * OOM kills are counted when the victim's thread-group leader exits with the group marked
 * as an OOM victim (signal->oom_mm, set by mark_oom_victim before the SIGKILL): the same on
 * every kernel, whereas the oom:mark_victim tracepoint passed only a pid before 6.8.
 */
#include "maps.bpf.h"

KS_TABLE(oom, struct ks_comm_key, 1024);
KS_TABLE(faults, struct ks_comm_key, 4096);

static __always_inline void count_by_comm(struct task_struct *task, int table)
{
	struct ks_comm_key key = {}, ovf = { .overflow = 1 };

	ks_leader_comm(task, key.comm);
	key.cgroup = ks_task_cgroup(task);
	if (table == 0)
		KS_TABLE_ADD(oom, &key, &ovf, 1);
	else
		KS_TABLE_ADD(faults, &key, &ovf, 1);
}

static __always_inline int on_exit(struct task_struct *task)
{
	if (BPF_CORE_READ(task, pid) != BPF_CORE_READ(task, tgid))
		return 0;
	if (!BPF_CORE_READ(task, signal, oom_mm))
		return 0;
	count_by_comm(task, 0);
	return 0;
}

static __always_inline int on_fault(void)
{
	if (!ks_is_self())
		count_by_comm((struct task_struct *)bpf_get_current_task(), 1);
	return 0;
}

KS_TP_BTF_AND_RAW(oom_exit, sched_process_exit, on_exit(task), struct task_struct *task)

SEC("tp_btf/page_fault_user")
int BPF_PROG(fault_btf)
{
	return on_fault();
}

SEC("raw_tp/page_fault_user")
int BPF_PROG(fault_raw)
{
	return on_fault();
}

/*
 * Where that tracepoint is missing (it is x86's: arm64 has none): the software page-fault
 * perf event, user mode only, period 1, opened on every CPU by the loader; the kernel runs
 * this program for each fault, in the faulting task.
 */
SEC("perf_event")
int fault_perf(struct bpf_perf_event_data *ctx)
{
	return on_fault();
}
