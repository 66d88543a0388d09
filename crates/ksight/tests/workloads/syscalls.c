// SPDX-License-Identifier: MIT OR Apache-2.0
/* ksight profile tests: a loop of 64 KiB reads from /dev/zero in spin_syscalls for SECONDS:
 * most of its time in the kernel, clearing the buffer with interrupts on (so the sampling
 * timer lands there on arm64 too, which takes no interrupt in its entry code). The system
 * call instruction is inline: glibc's syscall() has no frame pointer, and a frame-pointer
 * unwinder sampling inside it would skip its caller. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/syscall.h>

#define CHUNK 65536

static char buf[CHUNK];
static volatile long sink;

static inline long inline_read(long fd, char *to, long len)
{
#if defined(__x86_64__)
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"((long)SYS_read), "D"(fd), "S"(to), "d"(len)
			 : "rcx", "r11", "memory");
	return ret;
#elif defined(__aarch64__)
	register long nr __asm__("x8") = SYS_read;
	register long x0 __asm__("x0") = fd;
	register long x1 __asm__("x1") = (long)to;
	register long x2 __asm__("x2") = len;

	__asm__ volatile("svc #0" : "+r"(x0) : "r"(nr), "r"(x1), "r"(x2) : "memory");
	return x0;
#else
#error "syscalls.c: no inline system call for this architecture"
#endif
}

__attribute__((noinline)) void spin_syscalls(int fd)
{
	for (int i = 0; i < 100; i++)
		sink += inline_read(fd, buf, CHUNK);
}

int main(int argc, char **argv)
{
	time_t end = time(NULL) + (argc > 1 ? atoi(argv[1]) : 3);
	int fd = open("/dev/zero", O_RDONLY);

	if (fd < 0)
		return 1;
	puts("ready"); /* the tests wait for it: main runs */
	fflush(stdout);
	while (time(NULL) < end)
		spin_syscalls(fd);
	return 0;
}
