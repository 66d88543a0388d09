/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * Histogram slot of a duration, shared by the BPF programs and the host unit tests.
 * Bounds are 2^k seconds in nanoseconds (floor: a whole ns is <= 2^k s exactly when it is
 * <= floor(2^k s)), upper bound inclusive, so classic and native (schema 0) buckets agree.
 */
#ifndef KSIGHT_HIST_H
#define KSIGHT_HIST_H

static const unsigned long long ks_hist_bounds_ns[KS_HIST_BOUNDS] = {
	953ULL, 1907ULL, 3814ULL, 7629ULL, 15258ULL, 30517ULL, 61035ULL, 122070ULL, /* 2^-20 .. 2^-13 */
	244140ULL, 488281ULL, 976562ULL, 1953125ULL, 3906250ULL, 7812500ULL, /* 2^-12 .. 2^-7 */
	15625000ULL, 31250000ULL, 62500000ULL, 125000000ULL, 250000000ULL, 500000000ULL,
	1000000000ULL, 2000000000ULL, 4000000000ULL, 8000000000ULL, 16000000000ULL, /* 2^0 .. 2^4 */
	32000000000ULL, 64000000000ULL, 128000000000ULL, 256000000000ULL, 512000000000ULL,
	1024000000000ULL, 2048000000000ULL, 4096000000000ULL, 8192000000000ULL,
	16384000000000ULL, 32768000000000ULL, /* 2^14, 2^15 */
};

/* First slot whose bound is >= ns; KS_HIST_BOUNDS (+Inf) when none. Binary search: 6 steps. */
static __always_inline unsigned int ks_hist_slot(unsigned long long ns)
{
	unsigned int lo = 0, hi = KS_HIST_BOUNDS;

#ifdef __clang__
#pragma unroll
#endif
	for (int step = 0; step < 6; step++) {
		unsigned int mid = (lo + hi) / 2;

		if (lo >= hi || mid >= KS_HIST_BOUNDS)
			break;
		if (ns <= ks_hist_bounds_ns[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

#endif /* KSIGHT_HIST_H */
