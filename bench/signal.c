// kill(SIGUSR1) N times to a child that ignores it (an ignored signal is still generated:
// the signal_generate tracepoint fires): prints the mean ns per signal. Usage: signal N.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 500000;
	struct timespec a, b;
	int ready[2];
	pid_t child;
	char c;

	if (pipe(ready)) {
		perror("pipe");
		return 1;
	}
	child = fork();
	if (child < 0) {
		perror("fork");
		return 1;
	}
	if (child == 0) {
		signal(SIGUSR1, SIG_IGN);
		if (write(ready[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	if (read(ready[0], &c, 1) != 1) {
		perror("child");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		if (kill(child, SIGUSR1)) {
			perror("kill");
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
