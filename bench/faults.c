// User page faults: mmap 1 MiB of anonymous memory (no huge pages), write one byte per 4 KiB
// page, munmap; repeated until N faults: prints the mean ns per fault (map and unmap
// included). Usage: faults N.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/mman.h>

#define PAGES 256

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000, rounds = (n + PAGES - 1) / PAGES;
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long r = 0; r < rounds; r++) {
		char *p = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		madvise(p, PAGES * 4096, MADV_NOHUGEPAGE);
		for (int i = 0; i < PAGES; i++)
			((volatile char *)p)[i * 4096] = 1;
		munmap(p, PAGES * 4096);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (rounds * PAGES));
	return 0;
}
