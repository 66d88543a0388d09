// O_DIRECT 4 KiB reads from a block device (bench/collectors.sh gives it a loop device on
// tmpfs), sequential, wrapping at the device's end: prints the mean ns per read of N reads.
// Usage: dio DEVICE N.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 2 ? atol(argv[2]) : 50000;
	struct timespec a, b;
	off_t size, off = 0;
	void *buf;
	int fd;

	if (argc < 2) {
		fprintf(stderr, "usage: dio DEVICE [N]\n");
		return 1;
	}
	fd = open(argv[1], O_RDONLY | O_DIRECT);
	if (fd < 0 || posix_memalign(&buf, 4096, 4096)) {
		perror(argv[1]);
		return 1;
	}
	size = lseek(fd, 0, SEEK_END) / 4096 * 4096;
	if (size <= 0) {
		fprintf(stderr, "%s: empty device\n", argv[1]);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		if (pread(fd, buf, 4096, off) != 4096) {
			perror("pread");
			return 1;
		}
		off = (off + 4096) % size;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
