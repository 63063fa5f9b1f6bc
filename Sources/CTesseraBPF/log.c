/*
 * libbpf messages: what libbpf printed while the calling thread's last
 * call ran, for tessera_bpf_last_log() (include/tessera_bpf.h).
 */
#include "tessera_bpf_internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define LOG_CAP 16384
static _Thread_local char last_log[LOG_CAP];
static _Thread_local size_t last_log_len;
static pthread_once_t print_once = PTHREAD_ONCE_INIT;

static int print_to_log(enum libbpf_print_level level, const char *fmt, va_list args)
{
	int n;

	if (level == LIBBPF_DEBUG)
		return 0;
	if (last_log_len >= LOG_CAP - 1) {
		/* Keep the tail: the verifier's last lines say what failed. */
		memmove(last_log, last_log + LOG_CAP / 2, LOG_CAP / 2);
		last_log_len = LOG_CAP / 2 - 1;
	}
	n = vsnprintf(last_log + last_log_len, LOG_CAP - last_log_len, fmt, args);
	if (n > 0)
		last_log_len +=
			(size_t)n < LOG_CAP - last_log_len ? (size_t)n : LOG_CAP - 1 - last_log_len;
	return 0;
}

static void install_print(void)
{
	libbpf_set_print(print_to_log);
}

void log_reset(void)
{
	pthread_once(&print_once, install_print);
	last_log_len = 0;
	last_log[0] = '\0';
}

void log_append(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	print_to_log(LIBBPF_WARN, fmt, args);
	va_end(args);
}

const char *tessera_bpf_last_log(void)
{
	return last_log;
}
