// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * tcp collector, from four tracepoints (no kprobe): connections established (active/passive,
 * IPv4/IPv6), connect latency (SYN_SENT -> ESTABLISHED), connection lifetime (ESTABLISHED ->
 * CLOSE) and the bytes it moved (summed when it closes), state transitions, retransmits, and
 * resets sent and received.
 *
 * --collector.tcp.netns N counts only the sockets of one network namespace (its inode): a
 * constant, so the verifier drops the test when it is 0 (every namespace).
 */
#include "maps.bpf.h"

const volatile __u32 ks_tcp_netns SEC(".rodata.tcp") = 0;

/* Whether the socket (or, for a reset sent on behalf of no socket, the packet's device) is
 * in the namespace asked for. */
static __always_inline bool wanted(const struct sock *sk, const struct sk_buff *skb)
{
	__u32 inum;

	if (!ks_tcp_netns)
		return true;
	if (sk)
		inum = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	else if (skb)
		inum = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	else
		return false;
	return inum == ks_tcp_netns;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_TCP_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} tcp_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_TCP_STATES * KS_TCP_STATES);
	__type(key, __u32);
	__type(value, __u64);
} tcp_transitions SEC(".maps");

KS_HIST(tcp_connect_lat);
KS_HIST(tcp_lifetime);

/* When each tracked socket entered SYN_SENT or ESTABLISHED (ns); deleted at CLOSE. A plain
 * hash, not an LRU: a full map is counted as a loss, never silently evicted. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} tcp_since SEC(".maps");

static __always_inline void remember(const struct sock *sk)
{
	__u64 key = (__u64)sk, now = bpf_ktime_get_ns();

	if (bpf_map_update_elem(&tcp_since, &key, &now, BPF_ANY))
		ks_lose(KS_LOSS_MAP_FULL);
}

/* Time since remember(sk), forgetting it; 0 when the socket was not tracked. */
static __always_inline __u64 forget(const struct sock *sk)
{
	__u64 key = (__u64)sk, *since = bpf_map_lookup_elem(&tcp_since, &key), ns = 0;

	if (!since)
		return 0;
	ns = bpf_ktime_get_ns() - *since;
	bpf_map_delete_elem(&tcp_since, &key);
	return ns;
}

static __always_inline void established(const struct sock *sk, int old, __u16 family)
{
	bool v6 = family == KS_AF_INET6;
	__u64 ns;

	if (old == TCP_SYN_SENT) {
		ks_count(&tcp_counts, v6 ? KS_TCP_ACTIVE_V6 : KS_TCP_ACTIVE_V4, 1);
		ns = forget(sk);
		if (ns)
			ks_hist_add(&tcp_connect_lat, ns);
	} else if (old == TCP_SYN_RECV) {
		ks_count(&tcp_counts, v6 ? KS_TCP_PASSIVE_V6 : KS_TCP_PASSIVE_V4, 1);
	}
	remember(sk);
}

static __always_inline void closed(const struct sock *sk, int old)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	__u64 ns = forget(sk);

	/* a socket that never reached ESTABLISHED (failed connect, listener) moved no data */
	if (old == TCP_SYN_SENT || old == TCP_SYN_RECV || old == TCP_LISTEN || old == TCP_CLOSE)
		return;
	/* untracked: established before ksight started, or tcp_since was full */
	if (ns)
		ks_hist_add(&tcp_lifetime, ns);
	ks_count(&tcp_counts, KS_TCP_BYTES_SENT, BPF_CORE_READ(tp, bytes_acked));
	ks_count(&tcp_counts, KS_TCP_BYTES_RECEIVED, BPF_CORE_READ(tp, bytes_received));
}

static __always_inline int on_state(const struct sock *sk, int old, int new)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (!wanted(sk, 0))
		return 0;
	if (family != KS_AF_INET && family != KS_AF_INET6)
		return 0;
	if (old >= 0 && old < KS_TCP_STATES && new >= 0 && new < KS_TCP_STATES)
		ks_count(&tcp_transitions, old * KS_TCP_STATES + new, 1);
	if (new == TCP_SYN_SENT)
		remember(sk);
	else if (new == TCP_ESTABLISHED)
		established(sk, old, family);
	else if (new == TCP_CLOSE)
		closed(sk, old);
	return 0;
}

KS_TP_BTF_AND_RAW(state, inet_sock_set_state, on_state(sk, old, new),
		  const struct sock *sk, int old, int new)

/* A tracepoint that only counts: its tp_btf program and its raw_tp twin. Each of the three
 * has the socket first and (but tcp_receive_reset) the packet second, on every kernel. */
#define KS_TCP_COUNTER(tp, prog, counter, skb_of)                                         \
	SEC("tp_btf/" #tp)                                                                \
	int BPF_PROG(prog##_btf, const struct sock *sk)                                   \
	{                                                                                 \
		if (wanted(sk, skb_of))                                                   \
			ks_count(&tcp_counts, counter, 1);                                \
		return 0;                                                                 \
	}                                                                                 \
	SEC("raw_tp/" #tp)                                                                \
	int BPF_PROG(prog##_raw, const struct sock *sk)                                   \
	{                                                                                 \
		if (wanted(sk, skb_of))                                                   \
			ks_count(&tcp_counts, counter, 1);                                \
		return 0;                                                                 \
	}

/* The tracepoint's second argument, where it has one (read only with a filter set). */
#define KS_SKB_ARG ((const struct sk_buff *)ctx[1])
KS_TCP_COUNTER(tcp_retransmit_skb, retransmit, KS_TCP_RETRANSMITS, KS_SKB_ARG)
KS_TCP_COUNTER(tcp_send_reset, reset_sent, KS_TCP_RESETS_SENT, KS_SKB_ARG)
KS_TCP_COUNTER(tcp_receive_reset, reset_received, KS_TCP_RESETS_RECEIVED, 0)
