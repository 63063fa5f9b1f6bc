/* Small helpers shared by the plugin: clocks, bounded copies, UTF-8 checks. */
#ifndef TESSERA_CNI_UTIL_H
#define TESSERA_CNI_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* CLOCK_MONOTONIC in milliseconds: deadlines are computed against this. */
int64_t util_now_ms(void);

/* CLOCK_MONOTONIC in microseconds, for timings in the log. */
int64_t util_now_us(void);

/* Copies at most cap-1 bytes and NUL-terminates; returns strlen(src). */
size_t util_strlcpy(char *dst, const char *src, size_t cap);

/* 1 when s[0..len) is well-formed UTF-8 without NUL bytes, else 0. */
int util_utf8_valid(const char *s, size_t len);

/* Replaces every byte that is not part of a well-formed UTF-8 sequence with '?'. */
void util_utf8_sanitize(char *s);

#endif
