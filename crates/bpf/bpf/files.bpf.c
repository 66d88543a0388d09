// SPDX-License-Identifier: GPL-2.0
/*
 * files collector: ksight_file_opens_total{comm,result} for open, openat, openat2 and creat.
 * The per-syscall exit tracepoints cost other syscalls only a bitmap test; io_uring opens
 * never pass through them and are not counted.
 */
#include "maps.bpf.h"

KS_TABLE(files, struct ks_file_key, 4096);

static __always_inline int on_open_exit(long ret)
{
	struct ks_file_key key = {}, ovf = { .overflow = 1 };

	if (ks_is_self())
		return 0;
	if (ret < 0 && ret >= -KS_MAX_ERRNO)
		key.err = ovf.err = -ret;
	ks_leader_comm((struct task_struct *)bpf_get_current_task(), key.comm);
	KS_TABLE_ADD(files, &key, &ovf, 1);
	return 0;
}

SEC("tp/syscalls/sys_exit_open")
int exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_openat")
int exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_openat2")
int exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret);
}

SEC("tp/syscalls/sys_exit_creat")
int exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret);
}
