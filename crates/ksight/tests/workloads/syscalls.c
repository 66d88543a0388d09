// SPDX-License-Identifier: MIT OR Apache-2.0
/* ksight profile tests: a syscall-heavy loop (getppid) in spin_syscalls for SECONDS. The
 * syscall instruction is inline: glibc's syscall() has no frame pointer, and a frame-pointer
 * unwinder sampling inside it would skip its caller. */
#include <stdlib.h>
#include <time.h>
#include <sys/syscall.h>

static volatile long sink;

__attribute__((noinline)) void spin_syscalls(void)
{
	for (int i = 0; i < 10000; i++) {
		long ret;

		__asm__ volatile("syscall" : "=a"(ret) : "0"((long)SYS_getppid) : "rcx", "r11", "memory");
		sink += ret;
	}
}

int main(int argc, char **argv)
{
	time_t end = time(NULL) + (argc > 1 ? atoi(argv[1]) : 3);
	while (time(NULL) < end)
		spin_syscalls();
	return 0;
}
