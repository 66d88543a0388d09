// SPDX-License-Identifier: MIT OR Apache-2.0
/* bench/rlloop.c (bench/readline.sh): reads every line of stdin with readline() of
 * libreadline.so, from memory (stdin is read first; no syscall per character), then prints
 * the lines read and the ns per line. Probes on readline() show as added ns per line. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <readline/readline.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static char *input;
static size_t input_len, input_at;

static void no_redisplay(void)
{
}

static int nothing_waiting(void)
{
	return 0;
}

/* Characters come from memory: no syscall per character, so the probes' cost stands out. */
static int memory_getc(FILE *unused)
{
	(void)unused;
	return input_at < input_len ? (unsigned char)input[input_at++] : EOF;
}

int main(void)
{
	long long start, lines = 0;
	char *line;

	size_t cap = 1 << 20, n;

	input = malloc(cap);
	while (input && (n = fread(input + input_len, 1, cap - input_len, stdin)) > 0) {
		input_len += n;
		if (input_len == cap)
			input = realloc(input, cap *= 2);
	}
	if (!input)
		return 1;
	rl_getc_function = memory_getc;
	rl_input_available_hook = nothing_waiting;
	rl_outstream = fopen("/dev/null", "w");
	/* no terminal to set up, nothing to draw: what is left is readline() itself */
	rl_prep_term_function = NULL;
	rl_deprep_term_function = NULL;
	rl_redisplay_function = no_redisplay;
	rl_catch_signals = 0;
	rl_catch_sigwinch = 0;
	start = now_ns();
	while ((line = readline(""))) {
		lines++;
		free(line);
	}
	printf("%lld %.1f\n", lines, lines ? (double)(now_ns() - start) / lines : 0.0);
	return 0;
}
