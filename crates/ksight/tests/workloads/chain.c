// SPDX-License-Identifier: MIT OR Apache-2.0
/* The CPU-bound workload of the ksight profile tests and of bench/profile.sh: a hot path
 * main -> outer -> middle -> leaf, every call of outer() the same work (CALL_WORK turns of
 * leaf's loop).
 *   chain [SECONDS]  calls outer() for SECONDS (default 3), prints nothing (the tests).
 *   chain -n CALLS   makes CALLS calls of outer() (default 400), then prints its elapsed ms
 *                    and its CPU ms (bench/profile.sh; the CPU time includes the sampling
 *                    interrupts it takes, and not the time other tasks of a shared machine
 *                    take its CPU).
 * Built with frame pointers and without (-fno-omit-frame-pointer, -fomit-frame-pointer), and
 * as a library whose main is chain_main (-shared -fPIC -Dmain=chain_main, run by dlopen.c).
 * leaf calls a function now and then so that it has a frame of its own: gcc 12 gives a
 * function that calls nothing no frame even with -fno-omit-frame-pointer
 * -mno-omit-leaf-frame-pointer, and then every frame-pointer unwinder (perf's too) skips
 * its caller. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* bench/profile.sh's figures are for this much work per call: change it, and they are no
 * longer comparable with earlier runs. */
#define CALL_WORK 1000000UL

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

static double ms(clockid_t clock)
{
	struct timespec t;
	clock_gettime(clock, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "-n") == 0) {
		long n = argc > 2 ? atol(argv[2]) : 400;
		double wall = ms(CLOCK_MONOTONIC), cpu = ms(CLOCK_PROCESS_CPUTIME_ID);
		for (long i = 0; i < n; i++)
			outer(CALL_WORK);
		cpu = ms(CLOCK_PROCESS_CPUTIME_ID) - cpu;
		wall = ms(CLOCK_MONOTONIC) - wall;
		printf("%.1f %.1f\n", wall, cpu);
		return 0;
	}
	double end = ms(CLOCK_MONOTONIC) + (argc > 1 ? atof(argv[1]) : 3) * 1e3;
	/* The tests wait for this line: the dynamic loader is done, main runs. */
	puts("ready");
	fflush(stdout);
	while (ms(CLOCK_MONOTONIC) < end)
		outer(CALL_WORK);
	return 0;
}
