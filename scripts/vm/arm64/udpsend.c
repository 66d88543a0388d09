// SPDX-License-Identifier: MIT OR Apache-2.0
/* udpsend [N]: N one-byte UDP datagrams to 127.0.0.1:9999, 1 ms apart, from one process that
 * also holds the receiving socket, so both directions of each datagram on lo have an owner
 * (scripts/vm/arm64/smoke: capture's attribution in the arm64 guest). */
#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 300;
	int s = socket(AF_INET, SOCK_DGRAM, 0), r = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9999) };
	inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
	bind(r, (struct sockaddr *)&to, sizeof to); /* the receiver: ingress packets have an owner too */
	for (int i = 0; i < n; i++) {
		sendto(s, "x", 1, 0, (struct sockaddr *)&to, sizeof to);
		usleep(1000);
	}
	return 0;
}
