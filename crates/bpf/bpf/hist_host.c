/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Host build of hist.h for the unit tests: the same code the kernel runs. */
#define __always_inline inline __attribute__((always_inline))
#include "abi_host.h"
#include "hist.h"

unsigned int ksight_hist_slot_host(unsigned long long ns)
{
	return ks_hist_slot(ns);
}

unsigned long long ksight_hist_bound_host(unsigned int i)
{
	return i < KS_HIST_BOUNDS ? ks_hist_bounds_ns[i] : ~0ULL;
}
