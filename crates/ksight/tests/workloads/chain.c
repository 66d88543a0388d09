// SPDX-License-Identifier: MIT OR Apache-2.0
/* ksight profile tests: a hot path main -> outer -> middle -> leaf for SECONDS (argv[1]).
 * leaf calls a function now and then so that it has a frame of its own: gcc 12 gives a
 * function that calls nothing no frame even with -fno-omit-frame-pointer
 * -mno-omit-leaf-frame-pointer, and then every frame-pointer unwinder (perf's too) skips
 * its caller. */
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) void tick(void) { __asm__ volatile(""); }

__attribute__((noinline)) void leaf(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++) {
		sink += i * i;
		if ((i & 4095) == 0)
			tick();
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

int main(int argc, char **argv)
{
	double end = now() + (argc > 1 ? atof(argv[1]) : 3);
	while (now() < end)
		outer(200000);
	return 0;
}
