// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* Empty programs, one per hook kind, and one per optional feature of capture: the feature
 * probes (features.rs, which both the loaders and `ksight doctor` use) load and attach each
 * alone to learn what this kernel really offers. The bench floors use the sys_enter/sys_exit ones, and the
 * probe_floor_* programs below (empty programs on the collectors' hooks, bench/collectors.sh). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "abi.h"

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

/* The uprobe probe fires for real: runs in ksight's own process of a uprobe and a uretprobe
 * on one of its functions ([0]: entry, [1]: return), read back by doctor. */
const volatile struct ks_config ks_config SEC(".rodata.cfg") = {};
__u64 probe_uprobe_runs[2] = {};

static __always_inline void count_own_run(int which)
{
	if ((bpf_get_current_pid_tgid() >> 32) == ks_config.self_tgid)
		__sync_fetch_and_add(&probe_uprobe_runs[which], 1);
}

SEC("uprobe")
int BPF_KPROBE(probe_uprobe)
{
	count_own_run(0);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(probe_uretprobe)
{
	count_own_run(1);
	return 0;
}

SEC("perf_event")
int probe_perf_event(void *ctx)
{
	return 0;
}

/* Bench floors: the tp_btf hooks of the tcp, sched, block, memory, signals and page_faults
 * collectors (doctor does not use them). */
SEC("tp_btf/sched_switch")
int BPF_PROG(probe_floor_sched_switch)
{
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(probe_floor_sched_wakeup)
{
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(probe_floor_sched_wakeup_new)
{
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(probe_floor_inet_sock_set_state)
{
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(probe_floor_tcp_retransmit_skb)
{
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(probe_floor_tcp_send_reset)
{
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(probe_floor_tcp_receive_reset)
{
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(probe_floor_block_rq_issue)
{
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(probe_floor_block_rq_complete)
{
	return 0;
}

SEC("tp_btf/signal_generate")
int BPF_PROG(probe_floor_signal_generate)
{
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(probe_floor_sched_process_exit)
{
	return 0;
}

SEC("tp_btf/page_fault_user")
int BPF_PROG(probe_floor_page_fault_user)
{
	return 0;
}

/* Capture's optional features, each probed alone: a TC program for tcx and for a clsact
 * filter; the cgroup socket hooks writing socket storage; the task_file iterator reading a
 * file's socket and its storage (a kernel may refuse any one of them). probe_sk is created
 * only for the probes that use it. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} probe_sk SEC(".maps");

SEC("tcx/ingress")
int probe_tcx(struct __sk_buff *skb)
{
	return -1; /* TCX_NEXT */
}

SEC("tc")
int probe_tc(struct __sk_buff *skb)
{
	return -1; /* TC_ACT_UNSPEC */
}

static __always_inline void probe_mark(struct bpf_sock *sk)
{
	__u64 *seen;

	if (!sk)
		return;
	seen = bpf_sk_storage_get(&probe_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (seen)
		*seen = 1;
}

SEC("cgroup/sock_create")
int probe_sock_create(struct bpf_sock *sk)
{
	probe_mark(sk);
	return 1; /* allow */
}

SEC("cgroup/connect4")
int probe_connect4(struct bpf_sock_addr *ctx)
{
	probe_mark(ctx->sk);
	return 1; /* allow */
}

SEC("iter/task_file")
int probe_task_file(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct socket *sock;

	if (!file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (sock && sock->sk)
		bpf_sk_storage_get(&probe_sk, sock->sk, 0, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
