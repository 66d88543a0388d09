// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * A program in one of the sections ebpf_exporter attaches itself: a cpu-clock perf event
 * (type 1 = PERF_TYPE_SOFTWARE, config 0 = PERF_COUNT_SW_CPU_CLOCK) at 99 Hz on every CPU,
 * counting samples by process name (crates/ksight/tests/configs.rs, with
 * tests/configs/example_sampled.yaml).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct comm_key {
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct comm_key);
	__type(value, __u64);
} example_cpu_samples_total SEC(".maps");

SEC("perf_event/type=1,config=0,frequency=99")
int example_cpu_clock(struct bpf_perf_event_data *ctx)
{
	struct comm_key key = {};
	__u64 one = 1, *value;

	bpf_get_current_comm(key.comm, sizeof(key.comm));
	value = bpf_map_lookup_elem(&example_cpu_samples_total, &key);
	if (value)
		__sync_fetch_and_add(value, 1);
	else
		bpf_map_update_elem(&example_cpu_samples_total, &key, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
