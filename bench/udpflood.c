// SPDX-License-Identifier: MIT OR Apache-2.0
// udpflood DST_IP PORT COUNT RATE SIZE: COUNT datagrams of SIZE bytes to DST_IP:PORT from one
// unconnected socket (sendto: the cgroup sendmsg hook runs for each), paced to RATE per
// second (0: as fast as possible). Prints the elapsed nanoseconds on stdout.
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: udpflood DST_IP PORT COUNT RATE SIZE\n");
		return 2;
	}
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
	long count = atol(argv[3]), rate = atol(argv[4]);
	size_t size = atol(argv[5]);
	char buf[1500];
	int s = socket(AF_INET, SOCK_DGRAM, 0);

	if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1 || s < 0 || size > sizeof(buf))
		return 2;
	memset(buf, 0x5a, sizeof(buf));
	long long start = now_ns();
	for (long i = 0; i < count; i++) {
		if (rate > 0)
			while (now_ns() - start < i * 1000000000LL / rate)
				;
		if (sendto(s, buf, size, 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
			perror("sendto");
			return 1;
		}
	}
	printf("%lld\n", now_ns() - start);
	return 0;
}
