// Pipe ping-pong between two processes pinned to one CPU: prints the mean ns per round trip
// of N round trips (each = 2 context switches + 2 wakeups). Usage: pingpong N [CPU].
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

static void must(int ok, const char *what)
{
	if (!ok) {
		perror(what);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000;
	int cpu = argc > 2 ? atoi(argv[2]) : 0;
	int ping[2], pong[2];
	struct timespec a, b;
	cpu_set_t set;
	char c = 0;
	pid_t child;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	must(sched_setaffinity(0, sizeof(set), &set) == 0, "sched_setaffinity");
	must(pipe(ping) == 0 && pipe(pong) == 0, "pipe");
	child = fork();
	must(child >= 0, "fork");
	if (child == 0) {
		for (long i = 0; i < n; i++) {
			must(read(ping[0], &c, 1) == 1, "child read");
			must(write(pong[1], &c, 1) == 1, "child write");
		}
		_exit(0);
	}
	/* one warm-up round trip: the child is running and waiting on the pipe */
	must(write(ping[1], &c, 1) == 1 && read(pong[0], &c, 1) == 1, "warm-up");
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 1; i < n; i++) {
		must(write(ping[1], &c, 1) == 1, "write");
		must(read(pong[0], &c, 1) == 1, "read");
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	waitpid(child, NULL, 0);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (n - 1));
	return 0;
}
