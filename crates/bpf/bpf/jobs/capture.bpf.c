// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * ksight capture: every packet on the chosen interfaces, copied at TC (tcx or clsact,
 * ingress and egress) into a ring buffer with the process behind it.
 *
 * The process: socket storage (cap_owners) filled by cgroup socket hooks on the cgroup v2
 * root (creation, connect, bind, sendmsg, recvmsg run in the process's own context) and,
 * for sockets that existed before the capture, by a task_file iterator run once at start.
 * BPF_F_CLONE hands a listener's owner to the sockets it accepts. A packet going out carries
 * its socket (skb->sk); one coming in is matched to its socket by a lookup at TC ingress.
 * No kprobe anywhere.
 *
 * --pid/--comm/--container are checked before the copy: a packet they reject costs no
 * ring-buffer space. A copy that finds the buffer full is counted per interface and CPU
 * (cap_ifstats.lost), which user space reports: delivered + lost is every matching packet.
 */
#include "maps.bpf.h"
#include <bpf/bpf_endian.h>

#define KS_ETH_HLEN 14
#define KS_ETH_P_IP 0x0800
#define KS_ETH_P_IPV6 0x86DD
#define KS_IPPROTO_TCP 6
#define KS_IPPROTO_UDP 17
#define KS_TC_NEXT -1 /* TC_ACT_UNSPEC and TCX_NEXT: let the next program decide */

const volatile struct ks_cap_config ks_cap SEC(".rodata.capture") = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 << 20); /* -B */
} cap_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, KS_CAP_MAX_IFACES);
	__type(key, __u32); /* ifindex */
	__type(value, struct ks_cap_ifstats);
} cap_ifstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct ks_cap_owner);
} cap_owners SEC(".maps");

/* --container: the cgroup ids to keep (user space fills it right after load). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} cap_cgroups SEC(".maps");

/* A record under construction: too big for the stack and for a per-CPU value (32 KiB at
 * most), so one slot per CPU of a plain array, indexed by the CPU. TC programs run with
 * bottom halves off, so nothing else on this CPU uses the slot meanwhile. */
struct ks_cap_scratch {
	struct ks_cap_hdr h;
	__u8 data[KS_CAP_MAX_SNAPLEN + 1];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* set to the number of possible CPUs before load */
	__type(key, __u32);
	__type(value, struct ks_cap_scratch);
} cap_scratch SEC(".maps");

/* ---- owners ---------------------------------------------------------------------------- */

static __always_inline void owner_of_task(struct ks_cap_owner *o, struct task_struct *task)
{
	o->pid = BPF_CORE_READ(task, tgid);
	o->tid = BPF_CORE_READ(task, pid);
	o->uid = BPF_CORE_READ(task, cred, uid.val);
	o->cgroup = ks_task_cgroup(task);
	ks_leader_comm(task, o->comm);
}

/* The current process becomes the socket's owner (only rewritten when it changed). */
static __always_inline int remember(struct bpf_sock *sk)
{
	struct ks_cap_owner *o;
	__u64 id;

	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&cap_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return 1;
	id = bpf_get_current_pid_tgid();
	if (o->pid == id >> 32 && o->tid == (__u32)id)
		return 1;
	owner_of_task(o, (struct task_struct *)bpf_get_current_task());
	return 1; /* always allow: ksight only watches */
}

SEC("cgroup/sock_create")
int cap_sock_create(struct bpf_sock *sk)
{
	return remember(sk);
}

#define KS_SOCK_ADDR_HOOK(name)                                                             \
	SEC("cgroup/" #name)                                                                \
	int cap_##name(struct bpf_sock_addr *ctx)                                           \
	{                                                                                   \
		return remember(ctx->sk);                                                   \
	}

KS_SOCK_ADDR_HOOK(connect4)
KS_SOCK_ADDR_HOOK(connect6)
KS_SOCK_ADDR_HOOK(bind4)
KS_SOCK_ADDR_HOOK(bind6)
KS_SOCK_ADDR_HOOK(sendmsg4)
KS_SOCK_ADDR_HOOK(sendmsg6)
KS_SOCK_ADDR_HOOK(recvmsg4)
KS_SOCK_ADDR_HOOK(recvmsg6)

/* Sockets that existed before the capture: one pass over every open file at start. The
 * first process found holding a socket owns it unless a hook has already named one. */
SEC("iter/task_file")
int cap_sockets(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct ks_cap_owner *o;
	struct socket *sock;
	struct sock *sk;

	if (!task || !file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = sock->sk;
	if (!sk)
		return 0;
	o = bpf_sk_storage_get(&cap_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (o && !o->pid)
		owner_of_task(o, task);
	return 0;
}

/* ---- packets --------------------------------------------------------------------------- */

static __always_inline void copy_owner(struct ks_cap_owner *dst, struct bpf_sock *sk)
{
	struct ks_cap_owner *o;

	if (!sk)
		return;
	o = bpf_sk_storage_get(&cap_owners, sk, 0, 0);
	if (o)
		*dst = *o;
}

/* The local socket an incoming TCP or UDP packet is for (its listener for a new
 * connection): TC ingress runs before the stack has looked it up. */
static __always_inline void ingress_owner(struct __sk_buff *skb, struct ks_cap_owner *dst)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size, l4;
	__u8 proto;

	if (skb->protocol == bpf_htons(KS_ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, KS_ETH_HLEN, &ip, sizeof(ip)))
			return;
		if (ip.frag_off & bpf_htons(0x1fff)) /* a later fragment has no ports */
			return;
		t.ipv4.saddr = ip.saddr;
		t.ipv4.daddr = ip.daddr;
		proto = ip.protocol;
		l4 = KS_ETH_HLEN + ip.ihl * 4;
		size = sizeof(t.ipv4);
	} else if (skb->protocol == bpf_htons(KS_ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, KS_ETH_HLEN, &ip6, sizeof(ip6)))
			return;
		__builtin_memcpy(t.ipv6.saddr, &ip6.saddr, 16);
		__builtin_memcpy(t.ipv6.daddr, &ip6.daddr, 16);
		proto = ip6.nexthdr; /* extension headers: not followed, left unattributed */
		l4 = KS_ETH_HLEN + sizeof(ip6);
		size = sizeof(t.ipv6);
	} else {
		return;
	}
	if (proto != KS_IPPROTO_TCP && proto != KS_IPPROTO_UDP)
		return;
	/* Source and destination ports are the first 4 bytes of both headers. */
	__be16 ports[2];
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
		return;
	if (size == sizeof(t.ipv4)) {
		t.ipv4.sport = ports[0];
		t.ipv4.dport = ports[1];
	} else {
		t.ipv6.sport = ports[0];
		t.ipv6.dport = ports[1];
	}
	if (proto == KS_IPPROTO_TCP) {
		sk = bpf_skc_lookup_tcp(skb, &t, size, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return;
		copy_owner(dst, bpf_sk_fullsock(sk)); /* request and time-wait sockets: none */
	} else {
		sk = bpf_sk_lookup_udp(skb, &t, size, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return;
		copy_owner(dst, sk);
	}
	bpf_sk_release(sk);
}

static __always_inline bool comm_equal(const char a[KS_COMM_LEN], const volatile char *b)
{
	const __u64 *x = (const __u64 *)a;
	const volatile __u64 *y = (const volatile __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

/* --pid/--comm/--container against the packet's owner: an unknown owner matches none. */
static __always_inline bool owner_passes(const struct ks_cap_owner *o)
{
	if (!ks_cap.flags)
		return true;
	if (!o->pid)
		return false;
	if ((ks_cap.flags & KS_CF_PID) && o->pid != ks_cap.pid)
		return false;
	if ((ks_cap.flags & KS_CF_COMM) && !comm_equal(o->comm, ks_cap.comm))
		return false;
	if ((ks_cap.flags & KS_CF_CGROUP) && !bpf_map_lookup_elem(&cap_cgroups, &o->cgroup))
		return false;
	return true;
}

static __always_inline struct ks_cap_ifstats *ifstats(__u32 ifindex)
{
	struct ks_cap_ifstats *st = bpf_map_lookup_elem(&cap_ifstats, &ifindex), zero = {};

	if (st)
		return st;
	/* user space adds each interface before attaching; this is for a race with it */
	bpf_map_update_elem(&cap_ifstats, &ifindex, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&cap_ifstats, &ifindex);
}

/* A wakeup per packet would cost more than the copy: the reader is woken once a quarter of
 * the buffer waits, and polls on a short timer for the rest. */
static __always_inline __u64 wakeup_flag(void)
{
	if (bpf_ringbuf_query(&cap_events, BPF_RB_AVAIL_DATA) >= ks_cap.wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline int capture(struct __sk_buff *skb, __u32 direction)
{
	__u32 cpu = bpf_get_smp_processor_id(), len = skb->len, caplen;
	struct ks_cap_ifstats *st = ifstats(skb->ifindex);
	struct ks_cap_scratch *rec;

	if (!st)
		return KS_TC_NEXT;
	st->seen += 1; /* per-CPU, bottom halves off: no other writer on this CPU */
	rec = bpf_map_lookup_elem(&cap_scratch, &cpu);
	if (!rec)
		return KS_TC_NEXT;
	__builtin_memset(&rec->h.owner, 0, sizeof(rec->h.owner));
	if (direction == KS_CAP_OUTBOUND) {
		struct bpf_sock *sk = skb->sk;

		if (sk)
			copy_owner(&rec->h.owner, bpf_sk_fullsock(sk));
	} else {
		ingress_owner(skb, &rec->h.owner);
	}
	if (!owner_passes(&rec->h.owner))
		return KS_TC_NEXT;
	st->matched += 1;
	caplen = len < ks_cap.snaplen ? len : ks_cap.snaplen;
	if (caplen > KS_CAP_MAX_SNAPLEN)
		caplen = KS_CAP_MAX_SNAPLEN;
	rec->h.ts_ns = bpf_ktime_get_ns();
	rec->h.ifindex = skb->ifindex;
	rec->h.len = len;
	rec->h.direction = direction;
	/* Older verifiers do not learn "not zero" from caplen != 0: the length is made
	 * last + 1 with last < KS_CAP_MAX_SNAPLEN, a range they follow (6.1 refused the other). */
	__u32 last = caplen - 1;
	barrier_var(last);
	if (last < KS_CAP_MAX_SNAPLEN) {
		if (bpf_skb_load_bytes(skb, 0, rec->data, last + 1))
			caplen = 0;
	} else {
		caplen = 0;
	}
	rec->h.caplen = caplen;
	if (bpf_ringbuf_output(&cap_events, rec, sizeof(rec->h) + caplen, wakeup_flag()))
		st->lost += 1;
	return KS_TC_NEXT;
}

/* One program per attach kind and direction, one body: tcx where the kernel has it (6.6+),
 * a clsact filter ("tc") otherwise. */
#define KS_CAP_PROG(name, section, direction)                                               \
	SEC(section)                                                                        \
	int name(struct __sk_buff *skb)                                                     \
	{                                                                                   \
		return capture(skb, direction);                                             \
	}

KS_CAP_PROG(cap_tc_ingress, "tc", KS_CAP_INBOUND)
KS_CAP_PROG(cap_tc_egress, "tc", KS_CAP_OUTBOUND)
KS_CAP_PROG(cap_tcx_ingress, "tcx/ingress", KS_CAP_INBOUND)
KS_CAP_PROG(cap_tcx_egress, "tcx/egress", KS_CAP_OUTBOUND)
