/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * The whole kernel/user ABI of ksight: the only file both languages read.
 * Rust gets these types from the skeleton of an anchor object build.rs generates.
 * Every struct is padding-free so a key compares byte for byte.
 */
#ifndef KSIGHT_ABI_H
#define KSIGHT_ABI_H

/*
 * Numbers both sides use are enum constants, never macros: BTF keeps enums, so Rust reads
 * them from the generated types (ks_sizes::KS_COMM_LEN) instead of a copy.
 */
enum ks_sizes {
	KS_COMM_LEN = 16,
	/* Syscall numbers counted per comm slot; numbers outside go to the last one. */
	KS_SYSCALL_SLOTS = 512,
	KS_SYSCALL_INVALID = KS_SYSCALL_SLOTS - 1,
	/* Comm slot 0 holds what did not fit: "(other processes)". */
	KS_SLOT_OVERFLOW = 0,
	/* Errno values a syscall can return: [-4095, -1]. */
	KS_MAX_ERRNO = 4095,
	/* TCP states are < 16: transitions are counted at index from * KS_TCP_STATES + to. */
	KS_TCP_STATES = 16,
	KS_PATH_LEN = 256, /* trace: file names and paths, NUL-terminated, truncated beyond */
	KS_ARGS_LEN = 256, /* trace: argv bytes read from the new image (NUL-separated) */
	KS_LINE_LEN = 512, /* trace readline: a line's bytes with its NUL, marked truncated beyond */
};

/* Marks a task whose events are not counted (ksight itself): kernel-side only. */
#define KS_SLOT_SKIP 0xffffffffu

/* Histogram buckets: le = 2^k seconds for k in [KS_HIST_MIN_EXP, KS_HIST_MAX_EXP], then +Inf. */
enum ks_hist_geometry {
	KS_HIST_MIN_EXP = -20,
	KS_HIST_MAX_EXP = 15,
	KS_HIST_BOUNDS = KS_HIST_MAX_EXP - KS_HIST_MIN_EXP + 1,
	KS_HIST_SLOTS = KS_HIST_BOUNDS + 1,
};

/* Why an increment could not be stored under its own labels. Exported as
 * ksight_events_lost_total{collector,reason}. */
enum ks_loss {
	KS_LOSS_MAP_FULL = 0,     /* nowhere to put it, even in the overflow series */
	KS_LOSS_UPDATE_FAILED = 1, /* a map update failed for another reason (EBUSY, ENOMEM) */
	KS_NR_LOSSES = 2,
};

enum ks_proc_kind {
	KS_PROC_EXEC = 0,
	KS_PROC_FORK = 1,
	KS_PROC_EXIT = 2,
	KS_PROC_KILLED = 3,
};

/* Set by user space before load (section .rodata.cfg of every object). */
struct ks_config {
	__u32 self_tgid;
	__u32 include_self;
	__u32 cgroup_mode; /* enum ks_cgroup_mode: which cgroup id goes into keys */
	__u32 reserved;
};

/* Which cgroup id labels a process's counts (--labels cgroup,container,…). */
enum ks_cgroup_mode {
	KS_CGROUP_OFF = 0, /* no cgroup labels: the key's cgroup stays 0 */
	KS_CGROUP_V2 = 1,  /* the task's cgroup v2 id (kernfs id of its directory) */
	KS_CGROUP_V1_MEMORY = 2, /* the kernfs id of its cgroup in the v1 memory hierarchy */
};

/* Shared with user space through a mmapped map (section .data.ctl of every object). */
struct ks_ctl {
	__u32 epoch;       /* bumped whenever a cached comm slot may be stale */
	__u32 table_gen;   /* which map of each double-buffered table is live */
	__u32 count_opens; /* the syscalls object also counts opens (files collector, shared) */
	__u32 reserved;
};

/* Per-CPU cache of the comm slot of the task that ran last on this CPU, keyed by an
 * address unique to the task (its saved registers, or the task itself). */
struct ks_slot_cache {
	__u64 task;
	__u32 epoch;
	__u32 slot;
};

/* A process name and cgroup: the syscalls collector's slot key. */
struct ks_comm {
	__u64 cgroup;
	char comm[KS_COMM_LEN];
};

/* One comm slot's syscall counts: a per-CPU array value, so a scrape copies whole rows. */
struct ks_syscall_row {
	__u64 counts[KS_SYSCALL_SLOTS];
};

/* ksight_syscall_errors_total{syscall,errno} */
struct ks_errno_key {
	__u32 nr;
	__u32 err;
};

/* Keys of per-process counters start with the cgroup id (0 unless --labels asks for it).
 * ksight_process_*_total{comm[,signal]}; overflow != 0 means comm is "(other processes)". */
struct ks_proc_key {
	__u64 cgroup;
	char comm[KS_COMM_LEN];
	__u8 kind;
	__u8 signal;
	__u8 overflow;
	__u8 pad[5];
};

/* ksight_file_opens_total{comm,result}; err 0 is "ok". */
struct ks_file_key {
	__u64 cgroup;
	char comm[KS_COMM_LEN];
	__u16 err;
	__u8 overflow;
	__u8 pad[5];
};

struct ks_hist {
	__u64 buckets[KS_HIST_SLOTS];
	__u64 sum_ns;
	__u64 count;
};

/* signals collector: ksight_signals_total{signal,comm}, by the target's process name. */
struct ks_signal_key {
	__u64 cgroup;
	char comm[KS_COMM_LEN];
	__u8 signal;
	__u8 overflow;
	__u8 pad[6];
};

/* A counter by process name only: ksight_oom_kills_total, ksight_page_faults_total. */
struct ks_comm_key {
	__u64 cgroup;
	char comm[KS_COMM_LEN];
	__u8 overflow;
	__u8 pad[7];
};

/* tcp collector: per-CPU counters indexed by this enum (ksight_tcp_*_total). */
enum ks_tcp_counter {
	KS_TCP_ACTIVE_V4 = 0,
	KS_TCP_ACTIVE_V6 = 1,
	KS_TCP_PASSIVE_V4 = 2,
	KS_TCP_PASSIVE_V6 = 3,
	KS_TCP_RETRANSMITS = 4,
	KS_TCP_RESETS_SENT = 5,
	KS_TCP_RESETS_RECEIVED = 6,
	KS_TCP_BYTES_SENT = 7,
	KS_TCP_BYTES_RECEIVED = 8,
	KS_TCP_NR_COUNTERS = 9,
};

/* block collector: a device (the kernel's dev_t: major << 20 | minor) and a REQ_OP_*. */
struct ks_block_key {
	__u32 dev;
	__u32 op;
};

/* ======================================================================================
 * trace events (ksight trace): records of the ring buffer, its config and its counters.
 * Every record starts with a struct ks_ev_hdr whose kind says which struct it is.
 * ====================================================================================== */

/* What ksight trace can report; also the index of the per-CPU loss counters. */
enum ks_ev_kind {
	KS_EV_EXEC = 0,
	KS_EV_OPEN = 1,
	KS_EV_FORK = 2,
	KS_EV_EXIT = 3,
	KS_EV_SIGNAL = 4,
	KS_EV_TCP = 5,
	KS_EV_SYSCALLS = 6, /* counted in maps, not streamed: its loss is a full map */
	KS_EV_READLINE = 7, /* uprobes on readline() of bash and libreadline */
	KS_EV_KINDS = 8,
};

/* ks_trace_config.flags: which filters are set. */
enum ks_trace_filter {
	KS_TF_PID = 1,
	KS_TF_UID = 2,
	KS_TF_COMM = 4,
	KS_TF_CGROUP = 8, /* the cgroup id is a key of the map trace_cgroups */
	KS_TF_FAILED = 16,
};

/* Address families (socket.h; macros, so not in vmlinux.h): ks_ev_tcp.family. */
enum ks_af {
	KS_AF_INET = 2,
	KS_AF_INET6 = 10,
};

/* What ks_ev_tcp reports. */
enum ks_tcp_what {
	KS_TCP_CONNECT = 0, /* SYN_SENT -> ESTABLISHED, or SYN_SENT -> CLOSE (failed) */
	KS_TCP_ACCEPT = 1,  /* SYN_RECV -> ESTABLISHED */
	KS_TCP_CLOSE = 2,   /* -> CLOSE after being established */
};

/* Set by user space before load (section .rodata.trace of trace.bpf.c): filters are
 * constants the verifier folds, checked before any ring-buffer space is reserved. */
struct ks_trace_config {
	__u32 flags;        /* enum ks_trace_filter bits */
	__u32 pid;          /* KS_TF_PID: thread-group id */
	__u32 uid;          /* KS_TF_UID */
	__u32 kinds;        /* bit (1 << enum ks_ev_kind) per requested kind */
	__u32 wakeup_bytes; /* wake the reader once this much is waiting; 0: every record */
	char comm[KS_COMM_LEN]; /* KS_TF_COMM: the process's (leader's) comm */
};

/* Who did it: the current process, or for tcp the socket's owner (pid 0 if unknown). */
struct ks_ev_hdr {
	__u64 ts_ns;  /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 cgroup; /* cgroup id (kernfs id) in the hierarchy of ks_config.cgroup_mode */
	__u32 kind;   /* enum ks_ev_kind */
	__u32 pid;    /* thread-group id */
	__u32 tid;
	__u32 uid;
	char comm[KS_COMM_LEN]; /* the thread-group leader's comm */
};

struct ks_ev_exec {
	struct ks_ev_hdr h;
	__s32 ret;       /* 0, or -errno of a failed execve/execveat */
	__u32 ppid;
	__u32 args_len;  /* bytes of args filled */
	__u32 args_size; /* arg_end - arg_start: more than args_len means truncated */
	char filename[KS_PATH_LEN];
	char args[KS_ARGS_LEN];
};

struct ks_ev_open {
	struct ks_ev_hdr h;
	__s64 ret;   /* fd, or -errno */
	__u64 flags; /* O_* flags as passed */
	__u32 nr;    /* syscall number: open, openat, openat2, creat */
	__u32 pad;
	char path[KS_PATH_LEN];
};

/* A new process (not a thread); h is the parent. */
struct ks_ev_fork {
	struct ks_ev_hdr h;
	__u32 child_pid;
	__u32 pad;
};

/* A process whose last thread exited. */
struct ks_ev_exit {
	struct ks_ev_hdr h;
	__u32 ppid;
	__u32 code; /* wait status: exit code << 8, or the killing signal (| 0x80 on core dump) */
	__u64 lifetime_ns;
};

/* A signal generated (signal:signal_generate); h is the sender (current). */
struct ks_ev_signal {
	struct ks_ev_hdr h;
	__u32 target_pid;
	__u32 target_tid;
	__s32 sig;
	__s32 result; /* TRACE_SIGNAL_*: delivered, ignored, already pending, overflow, lose info */
	char target_comm[KS_COMM_LEN];
};

struct ks_ev_tcp {
	struct ks_ev_hdr h;
	__u64 duration_ns; /* close: since ESTABLISHED; 0 if not seen */
	__u8 saddr[16];    /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 family;      /* AF_INET, AF_INET6 */
	__u16 sport;       /* host order */
	__u16 dport;
	__u8 what;         /* enum ks_tcp_what */
	__u8 failed;       /* connect that never got established */
	__s32 oldstate;    /* TCP_* */
	__s32 newstate;
};

/* A line readline() returned (uretprobe); h is the reading process. */
struct ks_ev_readline {
	struct ks_ev_hdr h;
	__u64 wait_ns;  /* since readline() was called (uprobe); 0 when its entry was not seen */
	__u32 len;      /* bytes in line before its NUL */
	__u8 truncated; /* the line had more than KS_LINE_LEN - 1 bytes: line holds the first ones */
	__u8 unreadable; /* the returned pointer could not be read: line is empty */
	__u16 pad;
	char line[KS_LINE_LEN];
};

/* ksight trace syscalls: counts per (process, syscall), two maps used in turns. */
struct ks_systop_key {
	__u32 pid;
	__u32 nr;
};

struct ks_systop_val {
	__u64 count;
	__u64 errors;
	char comm[KS_COMM_LEN];
};

/* ======================================================================================
 * ksight profile: samples of a cpu-clock perf event, counted in the kernel per
 * (process, thread, user stack, kernel stack); stacks in a stack trace map.
 * ====================================================================================== */

/* What became of each run of the sampling program: a per-CPU array indexed by this enum.
 * Every run ends in exactly one of STORED, IDLE, FILTERED, LOST_FULL, LOST_FAILED, so their
 * sum is the program's run count; the STACK_* reasons count stored samples that miss a
 * stack (the sample is kept, its missing stack shown as such). */
enum ks_prof_stat {
	KS_PROF_STORED = 0,          /* added to prof_counts */
	KS_PROF_IDLE = 1,            /* the idle task: not profiled */
	KS_PROF_FILTERED = 2,        /* not the process the filters ask for, or ksight itself */
	KS_PROF_LOST_FULL = 3,       /* prof_counts was full: the sample is lost */
	KS_PROF_LOST_FAILED = 4,     /* another prof_counts update failure (EBUSY, ENOMEM) */
	KS_PROF_USTACK_COLLISION = 5, /* its slot held another stack in both maps (EEXIST) */
	KS_PROF_USTACK_FULL = 6,     /* stack map had no free entry (ENOMEM) */
	KS_PROF_KSTACK_COLLISION = 7,
	KS_PROF_KSTACK_FULL = 8,
	KS_PROF_STACK_OTHER = 9,     /* any other bpf_get_stackid error than "no stack" (EFAULT) */
	KS_PROF_PIDS_FAILED = 10,    /* prof_pids could not note a new process (full: more
				      * processes sampled by copies alone than prof_counts
				      * holds): it is noted at its next new count or copy, or
				      * read at the end */
	KS_PROF_COPIED = 11,         /* sent to user space as a stack copy (prof_copies) */
	KS_PROF_COPY_RINGBUF_FULL = 12, /* prof_copies was full: stored with its frame-pointer
				      * stack instead */
	KS_PROF_COPY_NO_REGS = 13,   /* sampled in the kernel on a kernel without
				      * bpf_task_pt_regs (before 5.15): no user registers, stored
				      * with its frame-pointer stack instead */
	KS_PROF_COPY_UNREADABLE = 14, /* not even 512 bytes of user stack readable at sp: stored
				       * with its frame-pointer stack instead */
	KS_PROF_EXEC_LOST = 15,      /* an exec prof_execs had no room for (not a sample) */
	KS_PROF_NR_STATS = 16,
};

/* ks_prof_config.flags: which filters are set. */
enum ks_prof_filter {
	KS_PF_PID = 1,
	KS_PF_COMM = 2,
	KS_PF_CGROUP = 4, /* the cgroup id is a key of the map prof_cgroups */
};

/* How a process's user stacks are taken: ks_prof_config.unwind (--unwind) and the values of
 * the map prof_unwind (pid -> mode, set by user space once it has judged the process). */
enum ks_prof_unwind {
	/* --unwind auto; in prof_unwind: not judged yet (absent). Samples go to user space as
	 * stack copies that also carry the frame-pointer stack id, which user space checks
	 * against the unwind info of the process's mappings. */
	KS_PROF_UNWIND_AUTO = 0,
	KS_PROF_UNWIND_FP = 1,   /* frame pointers, counted in the kernel */
	KS_PROF_UNWIND_COPY = 2, /* stack copies unwound in user space (.eh_frame) */
};

enum ks_prof_sizes {
	/* The deepest stack the stack maps hold (the kernel's PERF_MAX_STACK_DEPTH). */
	KS_PROF_MAX_DEPTH = 127,
	/* A stack id with this bit is in prof_stacks_b, the map of stacks whose slot in
	 * prof_stacks held another stack (a stack map keeps one stack per hash slot). */
	KS_PROF_IN_MAP_B = 1 << 30,
	/* Bytes of user stack (from sp up) a stack copy holds at most (perf --call-graph dwarf
	 * copies 8 KiB by default); a copy is the largest power of two down to 512 that is
	 * readable. */
	KS_PROF_STACK_COPY = 16384,
	KS_PROF_STACK_COPY_MIN = 512,
};

/* Set by user space before load (section .rodata.prof of profile.bpf.c). */
struct ks_prof_config {
	__u32 flags; /* enum ks_prof_filter bits */
	__u32 pid;   /* KS_PF_PID: thread-group id */
	char comm[KS_COMM_LEN]; /* KS_PF_COMM: the process's (leader's) comm */
	__u32 unwind; /* enum ks_prof_unwind: --unwind */
};

/* prof_counts key; the value is a __u64 sample count. */
struct ks_prof_key {
	__u64 cgroup; /* in the hierarchy of ks_config.cgroup_mode (0: none) */
	__u32 pid;
	__u32 tid;
	__s32 user_stack;   /* stack id (KS_PROF_IN_MAP_B: of prof_stacks_b), or -errno
			     * (-EFAULT: no user stack) */
	__s32 kernel_stack; /* id in prof_stacks, or -errno (-EFAULT: sampled in user mode) */
	char comm[KS_COMM_LEN];   /* the process's (leader's) comm */
	char thread[KS_COMM_LEN]; /* the thread's comm */
};

/* A record of prof_copies: one sample whose user stack user space unwinds. key.user_stack
 * is the frame-pointer stack id while the process is not judged yet, else -ENOENT. */
struct ks_prof_copy {
	struct ks_prof_key key;
	__u64 ip; /* the user registers at the sample */
	__u64 sp;
	__u64 bp; /* the frame pointer: rbp on x86_64, x29 on arm64 */
#ifdef __TARGET_ARCH_arm64
	__u64 lr; /* x30: where a leaf function that has not saved it returns to */
#endif
	__u32 stack_len; /* bytes of stack from sp */
	__u32 pad;
	__u8 stack[KS_PROF_STACK_COPY];
};

/* ks_prof_exec.kind: why user space is to read a process's mappings (again). */
enum ks_prof_exec_kind {
	KS_PROF_EXECD = 0,   /* it exec'd: a new program (its verdict forgotten too) */
	KS_PROF_MAPPED = 1,  /* a sampled process mapped more code from a file (dlopen) */
	KS_PROF_REJUDGE = 2, /* the same, by a process judged to use its frame pointers: its
			      * prof_unwind entry is gone, so it is judged again from its next
			      * copies (the new code may have none) */
};

/* A record of prof_execs: a process whose mappings are read at once. */
struct ks_prof_exec {
	__u32 pid;
	__u32 kind; /* enum ks_prof_exec_kind */
};

/* One stack of prof_stacks: return addresses, innermost first, zero after the last. */
struct ks_prof_stack {
	__u64 ips[KS_PROF_MAX_DEPTH];
};

/* ======================================================================================
 * capture (ksight capture): packets copied at TC into a ring buffer, each record a
 * struct ks_cap_hdr followed by caplen bytes of the frame; the process behind a packet
 * comes from socket storage filled by cgroup socket hooks and a task_file iterator.
 * ====================================================================================== */

enum ks_cap_sizes {
	/* The most bytes copied per packet (-s); a GSO packet longer than this is truncated. */
	KS_CAP_MAX_SNAPLEN = 65535,
	/* Interfaces counted at once (-i any): the size of cap_ifstats. */
	KS_CAP_MAX_IFACES = 1024,
};

/* ks_cap_hdr.direction: the pcapng EPB flags' direction bits. */
enum ks_cap_direction {
	KS_CAP_INBOUND = 1,
	KS_CAP_OUTBOUND = 2,
};

/* ks_cap_config.flags: which process filters are set (checked before the copy). */
enum ks_cap_filter {
	KS_CF_PID = 1,
	KS_CF_COMM = 2,
	KS_CF_CGROUP = 4, /* the owner's cgroup id is a key of cap_cgroups */
};

/* Set by user space before load (section .rodata.capture of capture.bpf.c). */
struct ks_cap_config {
	__u32 flags;   /* enum ks_cap_filter bits */
	__u32 pid;     /* KS_CF_PID: thread-group id */
	__u32 snaplen; /* bytes copied at most, <= KS_CAP_MAX_SNAPLEN */
	__u32 wakeup_bytes; /* wake the reader once this much waits (it also polls) */
	char comm[KS_COMM_LEN]; /* KS_CF_COMM: the process's (leader's) comm */
};

/* Who uses a socket: the value of the socket storage map cap_owners. pid 0: nobody known. */
struct ks_cap_owner {
	__u64 cgroup; /* cgroup id in the hierarchy of ks_config.cgroup_mode */
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 pad;
	char comm[KS_COMM_LEN]; /* the thread-group leader's comm */
};

/* One packet: this header, then caplen bytes of the frame from its link-layer header. */
struct ks_cap_hdr {
	__u64 ts_ns;   /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 ifindex;
	__u32 len;     /* the packet's length on the wire (skb->len) */
	__u32 caplen;  /* bytes that follow */
	__u32 direction; /* enum ks_cap_direction */
	struct ks_cap_owner owner; /* pid 0: no process known for this packet */
};

/* Per interface and CPU (cap_ifstats, keyed by ifindex). */
struct ks_cap_ifstats {
	__u64 seen;    /* packets the programs saw on the interface */
	__u64 matched; /* of which passed --pid/--comm/--container */
	__u64 lost;    /* of which found the ring buffer full: counted, never copied */
};

#endif /* KSIGHT_ABI_H */
