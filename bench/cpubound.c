// CPU-bound workload of bench/profile.sh: N calls of main -> outer -> middle -> leaf (built
// with and without frame pointers); prints its own elapsed ms and its CPU ms (the CPU time
// includes the sampling interrupts it takes, and not the time other tasks of a shared
// machine take its CPU).
#include <stdio.h>
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

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 400;
	struct timespec a, b, ca, cb;

	clock_gettime(CLOCK_MONOTONIC, &a);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ca);
	for (long i = 0; i < n; i++)
		outer(1000000);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cb);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f %.1f\n", (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6,
	       (cb.tv_sec - ca.tv_sec) * 1e3 + (cb.tv_nsec - ca.tv_nsec) / 1e6);
	return 0;
}
