// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * block collector: I/O latency (request issued to the driver -> completed) as a histogram
 * and bytes, by device and operation. block_rq_issue lost its request_queue argument in
 * 5.11 (commit a54895fa): user space reads the kernel's BTF and sets ks_block_issue_takes_queue
 * before load, so one program reads the request from the right argument (libbpf-tools
 * biolatency's way); the verifier sees a constant and checks only the branch taken.
 */
#include "maps.bpf.h"

#define KS_REQ_OP_MASK ((1u << 8) - 1)
#define KS_MINORBITS 20

const volatile __u32 ks_block_issue_takes_queue SEC(".rodata.block") = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct ks_block_key);
	__type(value, struct ks_hist);
} block_lat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct ks_block_key);
	__type(value, __u64);
} block_bytes SEC(".maps");

/* When each request in flight was issued (ns), by its address; deleted when it completes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} block_issued SEC(".maps");

/* request::rq_disk went away in 5.17 (the disk is rq->q->disk since 5.15). */
struct request___pre517 {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

static __always_inline struct ks_block_key block_key(struct request *rq)
{
	struct request___pre517 *old = (void *)rq;
	struct ks_block_key key = { .op = BPF_CORE_READ(rq, cmd_flags) & KS_REQ_OP_MASK };
	struct gendisk *disk;

	if (bpf_core_field_exists(old->rq_disk))
		disk = BPF_CORE_READ(old, rq_disk);
	else
		disk = BPF_CORE_READ(rq, q, disk);
	if (disk)
		key.dev = (BPF_CORE_READ(disk, major) << KS_MINORBITS) |
			  BPF_CORE_READ(disk, first_minor);
	return key;
}

static __always_inline int on_issue(struct request *rq)
{
	__u64 key = (__u64)rq, now = bpf_ktime_get_ns();

	if (bpf_map_update_elem(&block_issued, &key, &now, BPF_ANY))
		ks_lose(KS_LOSS_MAP_FULL);
	return 0;
}

static __always_inline void add_latency(struct ks_block_key *key, __u64 ns)
{
	static const struct ks_hist zero;
	struct ks_hist *h = ks_lookup_or_zero(&block_lat, key, (void *)&zero);

	if (h)
		ks_hist_record(h, ns);
}

static __always_inline void add_bytes(struct ks_block_key *key, __u64 bytes)
{
	__u64 zero = 0, *v = ks_lookup_or_zero(&block_bytes, key, &zero);

	if (v)
		*v += bytes;
}

/* Called once per completed chunk: a request can complete in parts; its latency is taken at
 * the first one, its bytes summed over all. */
static __always_inline int on_complete(struct request *rq, unsigned int nr_bytes)
{
	__u64 addr = (__u64)rq, *since = bpf_map_lookup_elem(&block_issued, &addr);
	struct ks_block_key key = block_key(rq);

	add_bytes(&key, nr_bytes);
	if (!since)
		return 0;
	add_latency(&key, bpf_ktime_get_ns() - *since);
	bpf_map_delete_elem(&block_issued, &addr);
	return 0;
}

/* The request block_rq_issue passes: its first argument, or its second before 5.11. */
static __always_inline struct request *issued_request(unsigned long long *ctx)
{
	if (ks_block_issue_takes_queue)
		return (struct request *)ctx[1];
	return (struct request *)ctx[0];
}

KS_TP_BTF_AND_RAW(issue, block_rq_issue, on_issue(issued_request(ctx)))
KS_TP_BTF_AND_RAW(complete, block_rq_complete, on_complete(rq, nr_bytes), struct request *rq,
		  int error, unsigned int nr_bytes)
