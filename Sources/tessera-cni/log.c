#include "log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "netconf.h"

static int log_fd = -1;
static int log_level = LOG_LEVEL_INFO;

void log_open(const char *path, int level) {
  log_close();
  if (!path) return;
  log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
  log_level = level;
}

void log_close(void) {
  if (log_fd >= 0) close(log_fd);
  log_fd = -1;
}

/* "2025-01-31T12:00:00.123Z pid=42 " */
static int prefix(char *buf, size_t cap) {
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  char ts[32];
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
  return snprintf(buf, cap, "%s.%03ldZ pid=%ld ", ts, (long)(tv.tv_usec / 1000), (long)getpid());
}

/* Control characters (a peer's message may hold newlines) would split the line. */
static void write_line(char *line, size_t len) {
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)line[i] < 0x20) line[i] = ' ';
  line[len] = '\n';
  ssize_t w = write(log_fd, line, len + 1); /* one write: O_APPEND keeps lines whole */
  (void)w;
}

void log_debug(const char *fmt, ...) {
  if (log_fd < 0 || log_level < LOG_LEVEL_DEBUG) return;
  char line[1536];
  int n = prefix(line, sizeof(line) - 1);
  n += snprintf(line + n, sizeof(line) - 1 - (size_t)n, "debug ");
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof(line) - 1 - (size_t)n, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (size_t)(m < 0 ? 0 : m);
  if (len > sizeof(line) - 2) len = sizeof(line) - 2;
  write_line(line, len);
}

void log_call(const char *command, const char *container_id, const char *ifname, int code, const char *msg,
              int64_t elapsed_us) {
  if (log_fd < 0 || (code == 0 && log_level < LOG_LEVEL_INFO)) return;
  char line[1536];
  int n = prefix(line, sizeof(line) - 1);
  int m;
  if (code == 0)
    m = snprintf(line + n, sizeof(line) - 1 - (size_t)n, "%s container=%.128s ifname=%.32s result=ok time=%.3fms",
                 command ? command : "-", container_id ? container_id : "-", ifname ? ifname : "-",
                 (double)elapsed_us / 1000.0);
  else
    m = snprintf(line + n, sizeof(line) - 1 - (size_t)n,
                 "%s container=%.128s ifname=%.32s result=error code=%d time=%.3fms msg=\"%.900s\"",
                 command ? command : "-", container_id ? container_id : "-", ifname ? ifname : "-", code,
                 (double)elapsed_us / 1000.0, msg ? msg : "");
  size_t len = (size_t)n + (size_t)(m < 0 ? 0 : m);
  if (len > sizeof(line) - 2) len = sizeof(line) - 2;
  write_line(line, len);
}
