// Loopback TCP connections: connect + accept + close, N times in one thread; prints the mean
// ns per connection. The client closes with SO_LINGER 0 (a reset: no TIME_WAIT, so the
// ephemeral ports never run out); the server's socket then closes on the reset.
// Per connection: 6 inet_sock_set_state transitions (client CLOSE->SYN_SENT->ESTABLISHED->
// CLOSE, server SYN_RECV->ESTABLISHED->CLOSE, plus the child's creation), 1 reset sent and
// 1 received. Usage: connect N.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

static void must(int ok, const char *what)
{
	if (!ok) {
		perror(what);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct linger lin = { .l_onoff = 1, .l_linger = 0 };
	socklen_t len = sizeof(addr);
	struct timespec a, b;
	int one = 1, lfd;

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	must(lfd >= 0, "socket");
	must(setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0, "SO_REUSEADDR");
	must(bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) == 0, "bind");
	must(listen(lfd, 128) == 0, "listen");
	must(getsockname(lfd, (struct sockaddr *)&addr, &len) == 0, "getsockname");
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0), s;

		must(c >= 0, "socket");
		must(connect(c, (struct sockaddr *)&addr, sizeof(addr)) == 0, "connect");
		s = accept(lfd, NULL, NULL);
		must(s >= 0, "accept");
		must(setsockopt(c, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin)) == 0, "SO_LINGER");
		close(c);
		close(s);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
