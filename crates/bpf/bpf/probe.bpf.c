// SPDX-License-Identifier: GPL-2.0
/* Empty programs, one per hook kind: `ksight doctor` loads and attaches each to learn what
 * this kernel really offers. The bench floors use the sys_enter/sys_exit ones. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp/raw_syscalls/sys_enter")
int probe_tp(void *ctx)
{
	return 0;
}

SEC("raw_tp/sys_enter")
int probe_raw_tp(void *ctx)
{
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(probe_tp_btf)
{
	return 0;
}

SEC("raw_tp/sys_exit")
int probe_raw_tp_exit(void *ctx)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(probe_tp_btf_exit)
{
	return 0;
}

SEC("fentry/vfs_read")
int BPF_PROG(probe_fentry)
{
	return 0;
}

SEC("kprobe/vfs_read")
int BPF_KPROBE(probe_kprobe)
{
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(probe_uprobe)
{
	return 0;
}

SEC("perf_event")
int probe_perf_event(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
