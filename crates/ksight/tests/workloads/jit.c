// SPDX-License-Identifier: MIT OR Apache-2.0
/* ksight profile tests: "JIT" code in an anonymous executable mapping, named only by
 * /tmp/perf-PID.map (the perf JIT interface), run for SECONDS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
#if defined(__x86_64__)
	/* mov rcx, 1000000; 1: dec rcx; jnz 1b; ret */
	static const unsigned char code[] = { 0x48, 0xb9, 0x40, 0x42, 0x0f, 0x00, 0, 0, 0, 0,
					       0x48, 0xff, 0xc9, 0x75, 0xfb, 0xc3 };
#elif defined(__aarch64__)
	/* movz x1, #0x4240; movk x1, #0xf, lsl #16 (1000000); 1: subs x1, x1, #1; b.ne 1b; ret */
	static const unsigned int code[] = { 0xd2884801, 0xf2a001e1, 0xf1000421, 0x54ffffe1,
					     0xd65f03c0 };
#else
#error "jit.c: no machine code for this architecture"
#endif
	void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char path[64];
	FILE *map;
	time_t end = time(NULL) + (argc > 1 ? atoi(argv[1]) : 3);

	if (page == MAP_FAILED)
		return 1;
	memcpy(page, code, sizeof(code));
	/* arm64's instruction cache is not coherent with its data cache. */
	__builtin___clear_cache((char *)page, (char *)page + sizeof(code));
	snprintf(path, sizeof(path), "/tmp/perf-%d.map", getpid());
	map = fopen(path, "w");
	if (!map)
		return 1;
	fprintf(map, "%lx %zx jit_hot_loop\n", (unsigned long)page, sizeof(code));
	fclose(map);
	puts("ready"); /* the tests wait for it: main runs, the perf map is written */
	fflush(stdout);
	while (time(NULL) < end)
		((void (*)(void))page)();
	return 0;
}
