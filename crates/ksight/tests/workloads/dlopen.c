// SPDX-License-Identifier: MIT OR Apache-2.0
/* ksight profile tests: runs its own code, built with frame pointers (so it is judged to use
 * them), until the file TRIGGER (argv[1]) exists; then dlopen's LIB (argv[2]: chain.c built
 * -shared -fomit-frame-pointer -Dmain=chain_main) and runs its hot path chain_main -> outer
 * -> middle -> leaf for SECONDS (argv[3]). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

__attribute__((noinline)) void tick(void) { __asm__ volatile(""); }

__attribute__((noinline)) void warm(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++) {
		sink += i * i;
		if ((i & 4095) == 0)
			tick();
	}
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	/* At most a minute: a test that never makes the file fails, not hangs. */
	double end = now() + 60;
	puts("ready"); /* the tests wait for it: main runs */
	fflush(stdout);
	while (access(argv[1], F_OK) != 0 && now() < end)
		warm(200000);
	void *lib = dlopen(argv[2], RTLD_NOW);
	if (!lib) {
		fprintf(stderr, "%s\n", dlerror());
		return 1;
	}
	int (*run)(int, char **) = (int (*)(int, char **))dlsym(lib, "chain_main");
	if (!run)
		return 1;
	char *args[] = {argv[0], argv[3], NULL};
	return run(2, args);
}
