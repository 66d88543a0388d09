// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* signals collector: signals generated, by signal and the target's process name. */
#include "maps.bpf.h"

KS_TABLE(sig, struct ks_signal_key, 4096);

static __always_inline int on_signal(int sig, struct task_struct *target)
{
	struct ks_signal_key key = { .signal = sig }, ovf = { .signal = sig, .overflow = 1 };

	if (!ks_config.include_self && BPF_CORE_READ(target, tgid) == ks_config.self_tgid)
		return 0;
	ks_leader_comm(target, key.comm);
	key.cgroup = ks_task_cgroup(target);
	KS_TABLE_ADD(sig, &key, &ovf, 1);
	return 0;
}

KS_TP_BTF_AND_RAW(generate, signal_generate, on_signal(sig, task),
		  int sig, struct kernel_siginfo *info, struct task_struct *task)
