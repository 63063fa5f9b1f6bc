#include "util.h"

#include <string.h>
#include <time.h>

int64_t util_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t util_now_ms(void) {
  return util_now_us() / 1000;
}

size_t util_strlcpy(char *dst, const char *src, size_t cap) {
  size_t n = strlen(src);
  if (cap > 0) {
    size_t c = n < cap - 1 ? n : cap - 1;
    memcpy(dst, src, c);
    dst[c] = '\0';
  }
  return n;
}

/* Length of the well-formed UTF-8 sequence at s (at most avail bytes), or 0. */
static size_t utf8_seq_len(const unsigned char *s, size_t avail) {
  unsigned char c = s[0];
  if (c == 0) return 0;
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F; /* no UTF-16 surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (avail < n) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return n;
}

int util_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    size_t n = utf8_seq_len(p + i, len - i);
    if (n == 0) return 0;
    i += n;
  }
  return 1;
}

void util_utf8_sanitize(char *s) {
  unsigned char *p = (unsigned char *)s;
  size_t len = strlen(s), i = 0;
  while (i < len) {
    size_t n = utf8_seq_len(p + i, len - i);
    if (n == 0) {
      p[i] = '?';
      n = 1;
    }
    i += n;
  }
}
