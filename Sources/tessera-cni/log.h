/* Optional append-only log file (netconf logFile/logLevel): one line per call. */
#ifndef TESSERA_CNI_LOG_H
#define TESSERA_CNI_LOG_H

#include <stdint.h>

/* Opens path for appending (created 0640). A NULL path or an open failure disables
 * logging: the log never makes a call fail. */
void log_open(const char *path, int level);
void log_close(void);

/* A debug line (logLevel "debug" only). */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The per-call summary: written at "info" and above on success, always on error. */
void log_call(const char *command, const char *container_id, const char *ifname, int code, const char *msg,
              int64_t elapsed_us);

#endif
