// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * ksight trace: one record per event into a ring buffer, for exec, open, fork, exit, signal,
 * tcp and readline; per-process syscall counts for `trace syscalls`.
 *
 * Every program checks the filters of .rodata.trace (constants: the verifier drops the
 * branches of filters that are not set) BEFORE reserving ring-buffer space, so filtered-out
 * events cost no space and are never counted as lost. A failed reserve is counted per kind
 * in trace_lost, which user space reads after draining the buffer: delivered + lost is
 * everything that matched.
 *
 * Hooks: tp_btf programs, raw_tp twins for kernels without tp_btf. Opens and failed execs
 * come from sys_exit: the arguments are still in the saved user registers there, and a path
 * read after the syscall is paged in (at entry it may not be).
 */
#include "maps.bpf.h"
#include <bpf/bpf_endian.h>

#define KS_O_CREAT_TRUNC_WRONLY (0100 | 01000 | 01)


#define KS_SIGNAL_DELIVERED 0
#define KS_SIGNAL_LOSE_INFO 4

const volatile struct ks_trace_config ks_trace SEC(".rodata.trace") = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* --ring-buffer-size */
} trace_events SEC(".maps");

/* Records that matched the filters but found the ring buffer full, per kind. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KS_EV_KINDS);
	__type(key, __u32);
	__type(value, __u64);
} trace_lost SEC(".maps");

/* --cgroup/--container: the cgroup ids to keep (user space fills it right after load). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} trace_cgroups SEC(".maps");

/* Processes already reported dead (maps.bpf.h: several threads can see live == 0). */
KS_DEAD_GROUPS(trace_dead);

/* Who owns a tcp socket (who connected, or who listens on the port it was accepted on) and
 * when it was established; passive transitions run in softirq, where current is anyone. */
struct ks_tcp_addrs {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 pad;
};

/* The local port is gone from the socket by the time it reaches CLOSE: addresses are kept
 * from when it was established. */
struct ks_tcp_owner {
	struct ks_ev_hdr h; /* ts_ns: when it became ESTABLISHED (0: not yet) */
	__u64 sk;           /* for listeners: the listening socket */
	struct ks_tcp_addrs addrs;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* struct sock * */
	__type(value, struct ks_tcp_owner);
} trace_tcp_socks SEC(".maps");

/* A listening port, per network namespace: pods listening on the same port in their own
 * namespaces each get their own accepts. */
struct ks_listen_key {
	__u32 netns; /* the namespace's inode number */
	__u16 family;
	__u16 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ks_listen_key);
	__type(value, struct ks_tcp_owner);
} trace_tcp_listen SEC(".maps");

/* trace syscalls: counts per (pid, nr), in two maps used in turns (ks_ctl.table_gen). */
#define KS_SYSTOP_MAP(name)                                                                \
	struct {                                                                          \
		__uint(type, BPF_MAP_TYPE_PERCPU_HASH);                                   \
		__uint(max_entries, 16384);                                               \
		__type(key, struct ks_systop_key);                                        \
		__type(value, struct ks_systop_val);                                      \
	} name SEC(".maps")

KS_SYSTOP_MAP(trace_systop_a);
KS_SYSTOP_MAP(trace_systop_b);

static __always_inline bool wanted(__u32 kind)
{
	return ks_trace.kinds & (1u << kind);
}

static __always_inline bool filter_on(__u32 flag)
{
	return ks_trace.flags & flag;
}

static __always_inline void lose(__u32 kind)
{
	__u64 *n = bpf_map_lookup_elem(&trace_lost, &kind);

	if (n)
		*n += 1;
}

/* Wake the reader only once enough is waiting: a wakeup per record would cost the traced
 * process more than the record (the reader also polls on a short timer). */
static __always_inline __u64 wakeup_flag(void)
{
	if (!ks_trace.wakeup_bytes)
		return 0;
	if (bpf_ringbuf_query(&trace_events, BPF_RB_AVAIL_DATA) >= ks_trace.wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void *reserve(__u32 size, __u32 kind)
{
	void *e = bpf_ringbuf_reserve(&trace_events, size, 0);

	if (!e)
		lose(kind);
	return e;
}

static __always_inline void submit(void *e)
{
	bpf_ringbuf_submit(e, wakeup_flag());
}

/* b is the filter's comm in .rodata.trace: read through volatile, or the compiler folds it
 * to the zeros the object was built with. */
static __always_inline bool comm_equal(const char a[KS_COMM_LEN], const volatile char *b)
{
	const __u64 *x = (const __u64 *)a;
	const volatile __u64 *y = (const volatile __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

/* The subject filters (pid, uid, cgroup, comm) against a filled header. */
static __always_inline bool subject_passes(const struct ks_ev_hdr *h)
{
	if (filter_on(KS_TF_PID) && h->pid != ks_trace.pid)
		return false;
	if (filter_on(KS_TF_UID) && h->uid != ks_trace.uid)
		return false;
	if (filter_on(KS_TF_CGROUP) && !bpf_map_lookup_elem(&trace_cgroups, &h->cgroup))
		return false;
	if (filter_on(KS_TF_COMM) && !comm_equal(h->comm, ks_trace.comm))
		return false;
	return true;
}

/* Fills h from current; false if current is filtered out (checked cheapest first). */
static __always_inline bool current_subject(struct ks_ev_hdr *h, __u32 kind)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();

	h->pid = id >> 32;
	if (filter_on(KS_TF_PID) && h->pid != ks_trace.pid)
		return false;
	if (!ks_config.include_self && h->pid == ks_config.self_tgid)
		return false;
	h->tid = (__u32)id;
	h->uid = (__u32)bpf_get_current_uid_gid();
	h->cgroup = ks_task_cgroup(task);
	h->kind = kind;
	h->ts_ns = bpf_ktime_get_ns();
	ks_leader_comm(task, h->comm);
	return subject_passes(h);
}

/* ---- exec ---------------------------------------------------------------------------- */

static __always_inline __u32 parent_tgid(struct task_struct *task)
{
	return BPF_CORE_READ(task, real_parent, tgid);
}

/* argv of the new image: its arg_start..arg_end, written by the kernel during exec. */
static __always_inline void read_new_argv(struct ks_ev_exec *e, struct task_struct *task)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	__u64 start = BPF_CORE_READ(mm, arg_start), end = BPF_CORE_READ(mm, arg_end);
	__u64 size = end > start ? end - start : 0;
	__u32 len = size < KS_ARGS_LEN ? size : KS_ARGS_LEN;

	e->args_size = size;
	e->args_len = 0;
	if (len > 0 && len <= KS_ARGS_LEN && !bpf_probe_read_user(e->args, len, (void *)start))
		e->args_len = len;
}

static __always_inline int on_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	struct ks_ev_hdr h = {};
	struct ks_ev_exec *e;

	if (filter_on(KS_TF_FAILED) || !current_subject(&h, KS_EV_EXEC))
		return 0;
	e = reserve(sizeof(*e), KS_EV_EXEC);
	if (!e)
		return 0;
	e->h = h;
	e->ret = 0;
	e->ppid = parent_tgid(task);
	bpf_probe_read_kernel_str(e->filename, KS_PATH_LEN, BPF_CORE_READ(bprm, filename));
	read_new_argv(e, task);
	submit(e);
	return 0;
}

/* A failed execve/execveat: the old image is intact, its pointers still valid. */
static __always_inline void exec_failed(struct pt_regs *regs, __u64 nr, long ret)
{
	const char *name = (const char *)(nr == KS_NR_EXECVE ? PT_REGS_PARM1_CORE_SYSCALL(regs)
							      : PT_REGS_PARM2_CORE_SYSCALL(regs));
	struct ks_ev_hdr h = {};
	struct ks_ev_exec *e;

	if (!current_subject(&h, KS_EV_EXEC))
		return;
	e = reserve(sizeof(*e), KS_EV_EXEC);
	if (!e)
		return;
	e->h = h;
	e->ret = ret;
	e->ppid = parent_tgid((struct task_struct *)bpf_get_current_task());
	e->args_len = 0;
	e->args_size = 0;
	bpf_probe_read_user_str(e->filename, KS_PATH_LEN, name);
	submit(e);
}

KS_TP_BTF_AND_RAW(exec, sched_process_exec, on_exec(task, bprm),
		  struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)

/* ---- open ---------------------------------------------------------------------------- */

static __always_inline void open_args(struct pt_regs *regs, __u64 nr, const char **path,
				      __u64 *flags)
{
#ifdef KS_NR_OPEN
	if (nr == KS_NR_OPEN || nr == KS_NR_CREAT) {
		*path = (const char *)PT_REGS_PARM1_CORE_SYSCALL(regs);
		*flags = nr == KS_NR_CREAT ? KS_O_CREAT_TRUNC_WRONLY : PT_REGS_PARM2_CORE_SYSCALL(regs);
		return;
	}
#endif
	*path = (const char *)PT_REGS_PARM2_CORE_SYSCALL(regs);
	if (nr == KS_NR_OPENAT)
		*flags = PT_REGS_PARM3_CORE_SYSCALL(regs);
	else if (bpf_probe_read_user(flags, sizeof(*flags), (void *)PT_REGS_PARM3_CORE_SYSCALL(regs)))
		*flags = 0; /* openat2's struct open_how starts with the flags */
}

static __always_inline void on_open(struct pt_regs *regs, __u64 nr, long ret)
{
	struct ks_ev_hdr h = {};
	struct ks_ev_open *e;
	const char *path;
	__u64 flags = 0;

	if (filter_on(KS_TF_FAILED) && ret >= 0)
		return;
	if (!current_subject(&h, KS_EV_OPEN))
		return;
	e = reserve(sizeof(*e), KS_EV_OPEN);
	if (!e)
		return;
	e->h = h;
	e->ret = ret;
	e->nr = nr;
	e->pad = 0;
	open_args(regs, nr, &path, &flags);
	e->flags = flags;
	bpf_probe_read_user_str(e->path, KS_PATH_LEN, path);
	submit(e);
}

/* ---- syscalls (counted) -------------------------------------------------------------- */

static __always_inline void systop_add(void *map, struct ks_systop_key *key, long ret)
{
	struct ks_systop_val *v = bpf_map_lookup_elem(map, key), fresh = {};
	int err;

	if (!v) {
		ks_leader_comm((struct task_struct *)bpf_get_current_task(), fresh.comm);
		v = ks_lookup_or_insert(map, key, &fresh, &err);
		if (!v) {
			lose(KS_EV_SYSCALLS); /* map full, or a failed update: counted, shown */
			return;
		}
	}
	v->count += 1; /* per-CPU value: no atomics needed */
	if (ret < 0 && ret >= -KS_MAX_ERRNO)
		v->errors += 1;
}

static __always_inline void count_syscall(__u64 nr, long ret)
{
	struct ks_systop_key key;
	struct ks_ev_hdr h = {};

	if (filter_on(KS_TF_FAILED) && !(ret < 0 && ret >= -KS_MAX_ERRNO))
		return;
	if (filter_on(KS_TF_UID | KS_TF_COMM | KS_TF_CGROUP)) {
		if (!current_subject(&h, KS_EV_SYSCALLS))
			return;
	} else {
		h.pid = bpf_get_current_pid_tgid() >> 32;
		if (filter_on(KS_TF_PID) && h.pid != ks_trace.pid)
			return;
		if (!ks_config.include_self && h.pid == ks_config.self_tgid)
			return;
	}
	key.pid = h.pid;
	key.nr = nr;
	if (ks_ctl.table_gen & 1)
		systop_add(&trace_systop_b, &key, ret);
	else
		systop_add(&trace_systop_a, &key, ret);
}

static __always_inline int on_sys_exit(struct pt_regs *regs, __u64 nr, long ret)
{
	if (wanted(KS_EV_SYSCALLS))
		count_syscall(nr, ret);
	if (wanted(KS_EV_OPEN) && ks_is_open_nr(nr))
		on_open(regs, nr, ret);
	else if (wanted(KS_EV_EXEC) && ret < 0 && (nr == KS_NR_EXECVE || nr == KS_NR_EXECVEAT))
		exec_failed(regs, nr, ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit_btf, struct pt_regs *regs, long ret)
{
	return on_sys_exit(regs, KS_SYSCALL_NR(regs), ret);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(sys_exit_raw, struct pt_regs *regs, long ret)
{
	return on_sys_exit(regs, KS_SYSCALL_NR_CORE(regs), ret);
}

/* ---- fork, exit ---------------------------------------------------------------------- */

static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child)
{
	struct ks_ev_hdr h = {};
	struct ks_ev_fork *e;

	/* a new thread is not a new process; a fork never "fails" once it exists */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid) || filter_on(KS_TF_FAILED))
		return 0;
	if (!current_subject(&h, KS_EV_FORK))
		return 0;
	e = reserve(sizeof(*e), KS_EV_FORK);
	if (!e)
		return 0;
	e->h = h;
	e->child_pid = BPF_CORE_READ(child, tgid);
	e->pad = 0;
	submit(e);
	return 0;
}

KS_TP_BTF_AND_RAW(fork, sched_process_fork, on_fork(parent, child),
		  struct task_struct *parent, struct task_struct *child)

static __always_inline int on_exit(struct task_struct *task)
{
	__u32 code = BPF_CORE_READ(task, exit_code);
	struct ks_ev_hdr h = {};
	struct ks_ev_exit *e;

	/* the process is gone when its last thread goes (reported once) */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	if (filter_on(KS_TF_FAILED) && code == 0)
		return 0;
	if (!current_subject(&h, KS_EV_EXIT) || !ks_first_to_see_group_dead(&trace_dead, task))
		return 0;
	e = reserve(sizeof(*e), KS_EV_EXIT);
	if (!e)
		return 0;
	e->h = h;
	e->ppid = parent_tgid(task);
	e->code = code;
	e->lifetime_ns = h.ts_ns - BPF_CORE_READ(task, group_leader, start_time);
	submit(e);
	return 0;
}

KS_TP_BTF_AND_RAW(exit, sched_process_exit, on_exit(task), struct task_struct *task)

/* ---- signal -------------------------------------------------------------------------- */

static __always_inline int on_signal(int sig, struct task_struct *task, int result)
{
	struct ks_ev_hdr h = {};
	struct ks_ev_signal *e;

	if (filter_on(KS_TF_FAILED) && (result == KS_SIGNAL_DELIVERED || result == KS_SIGNAL_LOSE_INFO))
		return 0;
	if (!current_subject(&h, KS_EV_SIGNAL))
		return 0;
	e = reserve(sizeof(*e), KS_EV_SIGNAL);
	if (!e)
		return 0;
	e->h = h;
	e->target_pid = BPF_CORE_READ(task, tgid);
	e->target_tid = BPF_CORE_READ(task, pid);
	e->sig = sig;
	e->result = result;
	ks_leader_comm(task, e->target_comm);
	submit(e);
	return 0;
}

KS_TP_BTF_AND_RAW(signal, signal_generate, on_signal(sig, task, result),
		  int sig, struct kernel_siginfo *info, struct task_struct *task, int group,
		  int result)

/* ---- tcp ----------------------------------------------------------------------------- */

static __always_inline struct ks_listen_key listen_key(struct sock *sk)
{
	struct ks_listen_key k = {
		.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
		.family = BPF_CORE_READ(sk, __sk_common.skc_family),
		.port = BPF_CORE_READ(sk, __sk_common.skc_num),
	};

	return k;
}

static __always_inline void read_addrs(struct ks_tcp_addrs *a, struct sock *sk)
{
	a->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	a->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	a->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (a->family == KS_AF_INET6) {
		BPF_CORE_READ_INTO(&a->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&a->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)a->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)a->daddr, sk, __sk_common.skc_daddr);
	}
}

static __always_inline void put_addrs(struct ks_ev_tcp *e, const struct ks_tcp_addrs *a)
{
	__builtin_memcpy(e->saddr, a->saddr, 16);
	__builtin_memcpy(e->daddr, a->daddr, 16);
	e->family = a->family;
	e->sport = a->sport;
	e->dport = a->dport;
}

/* The process in whose context the socket starts (connect, listen) owns it. */
static __always_inline void remember_owner(void *map, void *key, struct sock *sk)
{
	struct ks_tcp_owner o = { .sk = (__u64)sk };

	if (!current_subject(&o.h, KS_EV_TCP))
		return; /* not ours to report: no entry, no event later */
	o.h.ts_ns = 0;
	/* for a connect that fails (SYN_SENT -> CLOSE); the local port comes later */
	read_addrs(&o.addrs, sk);
	/* No room: the socket's events could not be attributed (or, filtered, reported). */
	if (ks_update(map, key, &o, BPF_ANY))
		lose(KS_EV_TCP);
}

/* owner: the socket's owner, or NULL when unknown (shown as pid 0, and only without
 * subject filters). */
static __always_inline void tcp_event(struct sock *sk, struct ks_tcp_owner *owner, __u8 what,
				      int oldstate, int newstate, __u64 now)
{
	struct ks_ev_tcp *e;
	__u8 failed = what == KS_TCP_CONNECT && newstate == TCP_CLOSE;

	if (filter_on(KS_TF_FAILED) && !failed)
		return;
	if (!owner && filter_on(KS_TF_PID | KS_TF_UID | KS_TF_COMM | KS_TF_CGROUP))
		return;
	e = reserve(sizeof(*e), KS_EV_TCP);
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	if (owner) {
		e->h = owner->h;
		if (what == KS_TCP_CLOSE && owner->h.ts_ns)
			e->duration_ns = now - owner->h.ts_ns;
	}
	e->h.kind = KS_EV_TCP;
	e->h.ts_ns = now;
	e->what = what;
	e->failed = failed;
	e->oldstate = oldstate;
	e->newstate = newstate;
	if (owner && owner->addrs.family) {
		put_addrs(e, &owner->addrs);
	} else {
		struct ks_tcp_addrs a = {};

		read_addrs(&a, sk);
		put_addrs(e, &a);
	}
	submit(e);
}

static __always_inline void tcp_established(struct sock *sk, int oldstate, __u64 now)
{
	__u64 key = (__u64)sk;
	struct ks_listen_key port = listen_key(sk);
	struct ks_tcp_owner *o, copy;

	if (oldstate == TCP_SYN_SENT) {
		o = bpf_map_lookup_elem(&trace_tcp_socks, &key);
		if (!o)
			return; /* connected by a process filtered out */
		o->h.ts_ns = now;
		read_addrs(&o->addrs, sk);
		tcp_event(sk, o, KS_TCP_CONNECT, oldstate, TCP_ESTABLISHED, now);
		return;
	}
	/* accepted: owned by whoever listens on its local port */
	o = bpf_map_lookup_elem(&trace_tcp_listen, &port);
	if (!o) {
		if (!filter_on(KS_TF_PID | KS_TF_UID | KS_TF_COMM | KS_TF_CGROUP))
			tcp_event(sk, 0, KS_TCP_ACCEPT, oldstate, TCP_ESTABLISHED, now);
		return;
	}
	copy = *o;
	copy.sk = key;
	copy.h.ts_ns = now;
	read_addrs(&copy.addrs, sk);
	if (ks_update(&trace_tcp_socks, &key, &copy, BPF_ANY))
		lose(KS_EV_TCP); /* its close will not be attributed */
	tcp_event(sk, &copy, KS_TCP_ACCEPT, oldstate, TCP_ESTABLISHED, now);
}

static __always_inline void tcp_closed(struct sock *sk, int oldstate, __u64 now)
{
	__u64 key = (__u64)sk;
	struct ks_listen_key port;
	struct ks_tcp_owner *o;

	if (oldstate == TCP_LISTEN) {
		port = listen_key(sk);
		o = bpf_map_lookup_elem(&trace_tcp_listen, &port);
		if (o && o->sk == key)
			bpf_map_delete_elem(&trace_tcp_listen, &port);
		return;
	}
	o = bpf_map_lookup_elem(&trace_tcp_socks, &key);
	if (oldstate == TCP_SYN_SENT) {
		if (o)
			tcp_event(sk, o, KS_TCP_CONNECT, oldstate, TCP_CLOSE, now);
	} else if (oldstate != TCP_SYN_RECV && (o || !filter_on(KS_TF_PID | KS_TF_UID | KS_TF_COMM | KS_TF_CGROUP))) {
		tcp_event(sk, o, KS_TCP_CLOSE, oldstate, TCP_CLOSE, now);
	}
	if (o)
		bpf_map_delete_elem(&trace_tcp_socks, &key);
}

static __always_inline int on_tcp_state(struct sock *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;
	struct ks_listen_key port;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_SYN_SENT) {
		remember_owner(&trace_tcp_socks, &key, sk);
	} else if (newstate == TCP_LISTEN) {
		port = listen_key(sk);
		remember_owner(&trace_tcp_listen, &port, sk);
	} else if (newstate == TCP_ESTABLISHED &&
		   (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV)) {
		tcp_established(sk, oldstate, bpf_ktime_get_ns());
	} else if (newstate == TCP_CLOSE) {
		tcp_closed(sk, oldstate, bpf_ktime_get_ns());
	}
	return 0;
}

KS_TP_BTF_AND_RAW(tcp_state, inet_sock_set_state, on_tcp_state(sk, oldstate, newstate),
		  struct sock *sk, int oldstate, int newstate)

/* ---- readline (uprobes) -------------------------------------------------------------- */

/* When each thread entered readline(): an LRU, since a thread that leaves readline() by
 * longjmp (bash on SIGINT) or dies inside it never returns to delete its entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tid */
	__type(value, __u64);
} trace_readline_start SEC(".maps");

/* Attached by user space to each binary or library that defines readline(). */
SEC("uprobe")
int BPF_KPROBE(readline_entry)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 now = bpf_ktime_get_ns();

	bpf_map_update_elem(&trace_readline_start, &tid, &now, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(readline_return, const char *line)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *entered = bpf_map_lookup_elem(&trace_readline_start, &tid);
	__u64 started = entered ? *entered : 0;
	struct ks_ev_hdr h = {};
	struct ks_ev_readline *e;
	char last = 0;
	long copied;

	if (entered)
		bpf_map_delete_elem(&trace_readline_start, &tid);
	/* NULL: end of input (Ctrl-D), no line */
	if (!line || filter_on(KS_TF_FAILED) || !current_subject(&h, KS_EV_READLINE))
		return 0;
	e = reserve(sizeof(*e), KS_EV_READLINE);
	if (!e)
		return 0;
	e->h = h;
	e->wait_ns = started && started <= h.ts_ns ? h.ts_ns - started : 0;
	e->pad = 0;
	e->truncated = 0;
	copied = bpf_probe_read_user_str(e->line, KS_LINE_LEN, line);
	e->unreadable = copied <= 0;
	e->len = copied > 0 ? copied - 1 : 0;
	if (copied <= 0)
		e->line[0] = 0;
	/* A full buffer ends with the NUL the helper put there: the line went on if the byte it
	 * replaced was not the line's own end. */
	if (copied == KS_LINE_LEN &&
	    !bpf_probe_read_user(&last, 1, line + KS_LINE_LEN - 1) && last)
		e->truncated = 1;
	submit(e);
	return 0;
}
