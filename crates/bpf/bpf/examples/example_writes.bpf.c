// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * A program the way ebpf_exporter's users write theirs, for the config tests
 * (crates/ksight/tests/configs.rs, with tests/configs/example_writes.yaml): system calls by
 * process name and number (a counter), the sizes write(2) is asked to write (an exp2
 * histogram, the sum of the sizes in the key after the last bucket), and write calls keyed
 * by the address of ksys_write as the config's `kaddrs` hands it over (named back by the
 * `ksym` decoder).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "arch.bpf.h"

#define MAX_SLOT 20

struct call_key {
	char comm[16];
	__u32 nr;
	__u32 pad;
};

struct size_key {
	char comm[16];
	__u64 slot;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct call_key);
	__type(value, __u64);
} example_syscalls_total SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct size_key);
	__type(value, __u64);
} example_write_bytes SEC(".maps");

struct function_key {
	char comm[16];
	__u64 address;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct function_key);
	__type(value, __u64);
} example_kaddr_writes_total SEC(".maps");

/* filled in before load from the config's kaddrs */
const volatile __u64 kaddr_ksys_write = 0;

static __always_inline void add(void *map, const void *key, __u64 n)
{
	__u64 zero = 0, *value = bpf_map_lookup_elem(map, key);

	if (!value) {
		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		value = bpf_map_lookup_elem(map, key);
		if (!value)
			return;
	}
	__sync_fetch_and_add(value, n);
}

/* floor(log2(v)) of v > 0, without a loop (BPF has no count-leading-zeros) */
static __always_inline __u64 log2_32(__u32 v)
{
	__u32 r, shift;

	r = (v > 0xffff) << 4;
	v >>= r;
	shift = (v > 0xff) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xf) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u64 log2_64(__u64 v)
{
	__u32 hi = v >> 32;

	return hi ? log2_32(hi) + 32 : log2_32(v);
}

/* ceil(log2(n)), 0 for 0 and 1: slot i holds (2^(i-1), 2^i] */
static __always_inline __u64 exp2_slot(__u64 n)
{
	__u64 slot = n <= 1 ? 0 : log2_64(n - 1) + 1;

	return slot > MAX_SLOT ? MAX_SLOT : slot;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(example_sys_enter, struct pt_regs *regs, long id)
{
	struct call_key call = { .nr = id };
	struct size_key size = {};
	struct function_key function = {};
	__u64 count;

	bpf_get_current_comm(call.comm, sizeof(call.comm));
	add(&example_syscalls_total, &call, 1);
	if (id != KS_NR_WRITE)
		return 0;
	count = PT_REGS_PARM3_CORE_SYSCALL(regs);
	function.address = kaddr_ksys_write;
	__builtin_memcpy(function.comm, call.comm, sizeof(function.comm));
	add(&example_kaddr_writes_total, &function, 1);
	__builtin_memcpy(size.comm, call.comm, sizeof(size.comm));
	size.slot = exp2_slot(count);
	add(&example_write_bytes, &size, 1);
	size.slot = MAX_SLOT + 1;
	add(&example_write_bytes, &size, count);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
