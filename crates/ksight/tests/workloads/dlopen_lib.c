// SPDX-License-Identifier: MIT OR Apache-2.0
/* ksight profile tests: the library dlopen.c loads (built -shared -fomit-frame-pointer): a hot
 * path chain_run -> outer -> middle -> leaf, leaf calling lib_tick now and then (see chain.c). */
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) void lib_tick(void) { __asm__ volatile(""); }

__attribute__((noinline)) void leaf(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++) {
		sink += i * i;
		if ((i & 4095) == 0)
			lib_tick();
	}
}

__attribute__((noinline)) void middle(unsigned long n) { leaf(n); sink++; }
__attribute__((noinline)) void outer(unsigned long n) { middle(n); sink++; }

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((noinline)) void chain_run(double seconds)
{
	double end = now() + seconds;
	while (now() < end)
		outer(200000);
}
