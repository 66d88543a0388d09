// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * files collector: ksight_file_opens_total{comm,result} for open, openat, openat2 and creat.
 * Its own hooks (used when the syscalls collector is off): the per-syscall exit tracepoints.
 * With the syscalls collector on, its sys_exit program counts opens instead (opens.bpf.h).
 * io_uring opens pass through neither and are not counted.
 */
#include "opens.bpf.h"

static __always_inline int on_open_exit(long ret)
{
	ks_count_open(ret);
	return 0;
}

#ifdef KS_NR_OPEN /* arm64 has neither open nor creat */
SEC("tp/syscalls/sys_exit_open")
int exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret);
}
#endif

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

#ifdef KS_NR_OPEN /* arm64 has neither open nor creat */
SEC("tp/syscalls/sys_exit_creat")
int exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	return on_open_exit(ctx->ret);
}
#endif

/* fexit on the syscalls' own entry points: each costs only its syscall (the tracepoints cost
 * every syscall a probe call). Not do_sys_openat2: Debian's 7.x inlines it into the open
 * paths, so an fexit there attaches and sees nothing (the kernel matrix caught it). */
#ifdef KS_NR_OPEN
SEC("fexit/" KS_SYSCALL(open))
int BPF_PROG(fexit_open, struct pt_regs *regs, long ret)
{
	return on_open_exit(ret);
}
#endif

SEC("fexit/" KS_SYSCALL(openat))
int BPF_PROG(fexit_openat, struct pt_regs *regs, long ret)
{
	return on_open_exit(ret);
}

SEC("fexit/" KS_SYSCALL(openat2))
int BPF_PROG(fexit_openat2, struct pt_regs *regs, long ret)
{
	return on_open_exit(ret);
}

#ifdef KS_NR_OPEN
SEC("fexit/" KS_SYSCALL(creat))
int BPF_PROG(fexit_creat, struct pt_regs *regs, long ret)
{
	return on_open_exit(ret);
}
#endif
