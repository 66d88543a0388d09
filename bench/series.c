// Creates about COMMS x 50 syscall series (and 50 x errno ones) for the scrape benchmark:
// COMMS children named bench-NNN each make 50 different syscalls on fd -1 (all fail EBADF).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static const long calls[] = {
	0, 1, 3, 5, 8, 16, 17, 18, 19, 20, 32, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52,
	54, 55, 72, 73, 74, 75, 77, 78, 81, 91, 93, 138, 187, 190, 193, 196, 199, 217, 221,
	232, 233, 254, 255, 285, 287, 306, 308, 39,
};

int main(int argc, char **argv)
{
	int comms = argc > 1 ? atoi(argv[1]) : 100;

	for (int c = 0; c < comms; c++) {
		pid_t pid = fork();
		if (pid == 0) {
			char name[16];
			snprintf(name, sizeof(name), "bench-%03d", c);
			prctl(PR_SET_NAME, name, 0, 0, 0);
			for (unsigned i = 0; i < sizeof(calls) / sizeof(calls[0]); i++)
				syscall(calls[i], -1, 0, 0, 0, 0, 0);
			_exit(0);
		}
		waitpid(pid, NULL, 0);
	}
	return 0;
}
