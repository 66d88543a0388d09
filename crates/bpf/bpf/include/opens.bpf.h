/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Counting opens by (comm, result): used by files.bpf.c on its own hooks and by
 * syscalls.bpf.c, whose sys_exit program counts them too when the files collector shares it
 * (a second program on sys_exit would cost every syscall a second floor). */
#ifndef KSIGHT_OPENS_BPF_H
#define KSIGHT_OPENS_BPF_H

#include "maps.bpf.h"

KS_TABLE(files, struct ks_file_key, 4096);

static __always_inline void ks_count_open(long ret)
{
	struct ks_file_key key = {}, ovf = { .overflow = 1 };
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if (ks_is_self())
		return;
	if (ret < 0 && ret >= -KS_MAX_ERRNO)
		key.err = ovf.err = -ret;
	ks_leader_comm(task, key.comm);
	key.cgroup = ks_task_cgroup(task);
	KS_TABLE_ADD(files, &key, &ovf, 1);
}

#endif /* KSIGHT_OPENS_BPF_H */
