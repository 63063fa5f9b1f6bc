#include "ipam.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

int ipam_find_plugin(const char *cni_path, const char *name, char *out, size_t cap) {
  const char *p = cni_path;
  while (p && *p) {
    const char *end = strchr(p, ':');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n > 0 && (size_t)snprintf(out, cap, "%.*s/%s", (int)n, p, name) < cap && access(out, X_OK) == 0) return 0;
    p = end ? end + 1 : NULL;
  }
  return -1;
}

/* The plugin's stdout when it failed: its CNI error, or what it printed. */
static int plugin_error(const char *type, const char *command, int status, const char *out, size_t len,
                        struct cni_error *err) {
  json_t *e = len ? json_loadb(out, len, 0, NULL) : NULL;
  json_t *code = e ? json_object_get(e, "code") : NULL;
  int rc;
  if (json_is_integer(code) && json_integer_value(code) > 0 && json_integer_value(code) < 1000000) {
    json_t *msg = json_object_get(e, "msg"), *details = json_object_get(e, "details");
    rc = cni_error_set(err, (int)json_integer_value(code), json_is_string(msg) ? json_string_value(msg) : "IPAM failed",
                       "IPAM plugin %s (%s)%s%s", type, command, json_is_string(details) ? ": " : "",
                       json_is_string(details) ? json_string_value(details) : "");
  } else {
    rc = cni_error_set(err, CNI_ERR_INTERNAL, "IPAM plugin failed", "%s %s exited with status %d: %.300s", type,
                       command, status, len ? out : "(no output)");
  }
  if (e) json_decref(e);
  return rc;
}

int ipam_exec(const char *cni_path, const char *ipam_type, const char *command, const char *config, size_t config_len,
              int64_t deadline_ms, json_t **result, struct cni_error *err) {
  if (result) *result = NULL;
  char path[4096];
  if (ipam_find_plugin(cni_path, ipam_type, path, sizeof(path)) != 0)
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "IPAM plugin not found", "no executable %s in CNI_PATH=%.300s",
                         ipam_type, cni_path ? cni_path : "");
  int in[2], outp[2];
  if (pipe2(in, O_CLOEXEC) != 0) return cni_error_set(err, CNI_ERR_INTERNAL, "pipe", "%s", strerror(errno));
  if (pipe2(outp, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    return cni_error_set(err, CNI_ERR_INTERNAL, "pipe", "%s", strerror(errno));
  }
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(in[0]), close(in[1]), close(outp[0]), close(outp[1]);
    return cni_error_set(err, CNI_ERR_INTERNAL, "cannot start the IPAM plugin", "fork: %s", strerror(e));
  }
  if (pid == 0) {
    /* The spec's delegation: the same environment, only CNI_COMMAND set for this call. */
    if (dup2(in[0], 0) < 0 || dup2(outp[1], 1) < 0 || setenv("CNI_COMMAND", command, 1) != 0) _exit(127);
    signal(SIGPIPE, SIG_DFL);
    char *argv[] = {path, NULL};
    execv(path, argv);
    _exit(127);
  }
  close(in[0]);
  close(outp[1]);
  int wfd = in[1], rfd = outp[0];
  fcntl(wfd, F_SETFL, O_NONBLOCK);
  size_t written = 0, got = 0, cap = 4096;
  char *buf = malloc(cap);
  int rc = 0;
  if (!buf) rc = cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  if (config_len == 0) {
    close(wfd);
    wfd = -1;
  }
  while (!rc && rfd >= 0) {
    int64_t left = deadline_ms - util_now_ms();
    if (left <= 0) {
      rc = cni_error_set(err, CNI_ERR_TRY_AGAIN_LATER, "IPAM plugin did not answer in time", "%s %s: timeoutMs expired",
                         ipam_type, command);
      break;
    }
    struct pollfd fds[2] = {{.fd = rfd, .events = POLLIN}, {.fd = wfd, .events = POLLOUT}};
    int n = poll(fds, wfd >= 0 ? 2 : 1, (int)(left > 1000000 ? 1000000 : left));
    if (n < 0) {
      if (errno == EINTR) continue;
      rc = cni_error_set(err, CNI_ERR_INTERNAL, "poll", "%s", strerror(errno));
      break;
    }
    if (wfd >= 0 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t w = write(wfd, config + written, config_len - written);
      if (w > 0) written += (size_t)w;
      if (w < 0 && errno != EAGAIN && errno != EINTR) written = config_len; /* plugin stopped reading */
      if (written >= config_len) {
        close(wfd);
        wfd = -1;
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (got + 1 >= cap) {
        if (cap >= IPAM_MAX_OUTPUT) {
          rc = cni_error_set(err, CNI_ERR_INTERNAL, "IPAM plugin output too large", "%s: more than %u bytes", ipam_type,
                             IPAM_MAX_OUTPUT);
          break;
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
          rc = cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
          break;
        }
        buf = nb;
        cap *= 2;
      }
      ssize_t r = read(rfd, buf + got, cap - 1 - got);
      if (r > 0)
        got += (size_t)r;
      else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(rfd);
        rfd = -1;
      }
    }
  }
  if (wfd >= 0) close(wfd);
  if (rfd >= 0) close(rfd);
  if (rc) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!rc) {
    buf[got] = '\0';
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0) {
      rc = plugin_error(ipam_type, command, code, buf, got, err);
    } else if (result && strcmp(command, "ADD") == 0) {
      json_error_t jerr;
      json_t *r = json_loadb(buf, got, 0, &jerr);
      if (!json_is_object(r)) {
        if (r) json_decref(r);
        rc = cni_error_set(err, CNI_ERR_DECODING, "cannot decode the IPAM plugin's result", "%s: %s", ipam_type,
                           jerr.text);
      } else {
        *result = r;
      }
    }
  }
  free(buf);
  return rc;
}
