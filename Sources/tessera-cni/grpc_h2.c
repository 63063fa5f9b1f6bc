#include "grpc_h2.h"

#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static const char *const code_names[] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED",
};

const char *grpc_code_name(int code) {
  if (code < 0 || code >= (int)(sizeof(code_names) / sizeof(code_names[0]))) return "UNKNOWN";
  return code_names[code];
}

int grpc_parse_status(const char *v, size_t len) {
  if (len == 0 || len > 3) return GRPC_UNKNOWN;
  int n = 0;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9') return GRPC_UNKNOWN;
    n = n * 10 + (v[i] - '0');
  }
  return n <= GRPC_UNAUTHENTICATED ? n : GRPC_UNKNOWN;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void grpc_percent_decode(const char *in, size_t len, char *out, size_t cap) {
  if (cap == 0) return;
  size_t o = 0;
  for (size_t i = 0; i < len && o + 1 < cap; i++) {
    int hi, lo;
    if (in[i] == '%' && i + 2 < len && (hi = hexval(in[i + 1])) >= 0 && (lo = hexval(in[i + 2])) >= 0) {
      char c = (char)(hi << 4 | lo);
      out[o++] = c ? c : '?';
      i += 2;
    } else {
      out[o++] = in[i];
    }
  }
  out[o] = '\0';
  util_utf8_sanitize(out);
}

void grpc_format_timeout(int64_t ms, char *buf, size_t cap) {
  if (ms < 1) ms = 1;
  if (ms <= 99999999)
    snprintf(buf, cap, "%lldm", (long long)ms);
  else
    snprintf(buf, cap, "%lldS", (long long)((ms + 999) / 1000 > 99999999 ? 99999999 : (ms + 999) / 1000));
}

int grpc_unframe(const uint8_t *body, size_t len, const uint8_t **msg, size_t *msg_len, const char **why) {
  if (len < 5) {
    *why = len == 0 ? "response has no message" : "truncated message header";
    return -1;
  }
  if (body[0] != 0) {
    *why = body[0] == 1 ? "compressed response (no compression was negotiated)" : "invalid message flags";
    return -1;
  }
  uint32_t n = (uint32_t)body[1] << 24 | (uint32_t)body[2] << 16 | (uint32_t)body[3] << 8 | body[4];
  if ((size_t)n > len - 5) {
    *why = "truncated message";
    return -1;
  }
  if ((size_t)n != len - 5) {
    *why = "more than one message in a unary response";
    return -1;
  }
  *msg = body + 5;
  *msg_len = n;
  return 0;
}

int grpc_code_from_http(int http_status) {
  switch (http_status) {
  case 400: return GRPC_INTERNAL;
  case 401: return GRPC_UNAUTHENTICATED;
  case 403: return GRPC_PERMISSION_DENIED;
  case 404: return GRPC_UNIMPLEMENTED;
  case 429:
  case 502:
  case 503:
  case 504: return GRPC_UNAVAILABLE;
  default: return GRPC_UNKNOWN;
  }
}

struct call {
  int fd;
  int32_t stream_id;
  const uint8_t *req;
  size_t req_len, req_off;
  uint8_t *body;
  size_t body_len, body_cap;
  int http_status;
  int grpc_status; /* -1 until seen */
  int bad_content_type;
  int overflow;
  int closed;
  uint32_t rst_error;
  int send_errno;
  uint32_t goaway_sent;  /* error code of a GOAWAY this client sent (protocol error), +1 */
  uint32_t goaway_recvd; /* error code of the server's GOAWAY, +1 */
  char grpc_message[512];
};

static int set_status(struct grpc_status *st, int code, int local, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int set_status(struct grpc_status *st, int code, int local, const char *fmt, ...) {
  st->code = code;
  st->local = local;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st->message, sizeof(st->message), fmt, ap);
  va_end(ap);
  util_utf8_sanitize(st->message);
  return code;
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t length, int flags, void *user_data) {
  (void)s;
  (void)flags;
  struct call *c = user_data;
  for (;;) {
    ssize_t n = send(c->fd, data, length, MSG_NOSIGNAL);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return NGHTTP2_ERR_WOULDBLOCK;
    c->send_errno = errno;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
}

static ssize_t data_read_cb(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
                            nghttp2_data_source *source, void *user_data) {
  (void)s;
  (void)stream_id;
  (void)source;
  struct call *c = user_data;
  size_t n = c->req_len - c->req_off;
  if (n > length) n = length;
  memcpy(buf, c->req + c->req_off, n);
  c->req_off += n;
  if (c->req_off == c->req_len) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static int header_cb(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) {
  (void)s;
  (void)flags;
  struct call *c = user_data;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != c->stream_id) return 0;
  const char *n = (const char *)name, *v = (const char *)value;
  if (namelen == 7 && memcmp(n, ":status", 7) == 0) {
    int code = 0;
    for (size_t i = 0; i < valuelen && i < 3; i++) code = code * 10 + (v[i] >= '0' && v[i] <= '9' ? v[i] - '0' : 0);
    c->http_status = code;
  } else if (namelen == 11 && memcmp(n, "grpc-status", 11) == 0) {
    c->grpc_status = grpc_parse_status(v, valuelen);
  } else if (namelen == 12 && memcmp(n, "grpc-message", 12) == 0) {
    grpc_percent_decode(v, valuelen, c->grpc_message, sizeof(c->grpc_message));
  } else if (namelen == 12 && memcmp(n, "content-type", 12) == 0) {
    c->bad_content_type =
        !(valuelen >= 16 && memcmp(v, "application/grpc", 16) == 0 && (valuelen == 16 || v[16] == '+' || v[16] == ';'));
  }
  return 0;
}

static int data_chunk_cb(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *user_data) {
  (void)s;
  (void)flags;
  struct call *c = user_data;
  if (stream_id != c->stream_id || len == 0) return 0;
  if (c->body_len + len > GRPC_MAX_RESPONSE) {
    c->overflow = 1;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  if (c->body_len + len > c->body_cap) {
    size_t cap = c->body_cap ? c->body_cap : 4096;
    while (cap < c->body_len + len) cap *= 2;
    uint8_t *nb = realloc(c->body, cap);
    if (!nb) {
      c->overflow = 1;
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    c->body = nb;
    c->body_cap = cap;
  }
  memcpy(c->body + c->body_len, data, len);
  c->body_len += len;
  return 0;
}

static int stream_close_cb(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *user_data) {
  (void)s;
  struct call *c = user_data;
  if (stream_id == c->stream_id) {
    c->closed = 1;
    c->rst_error = error_code;
  }
  return 0;
}

static int frame_send_cb(nghttp2_session *s, const nghttp2_frame *frame, void *user_data) {
  (void)s;
  struct call *c = user_data;
  if (frame->hd.type == NGHTTP2_GOAWAY && !c->goaway_sent) c->goaway_sent = frame->goaway.error_code + 1;
  return 0;
}

static int frame_recv_cb(nghttp2_session *s, const nghttp2_frame *frame, void *user_data) {
  (void)s;
  struct call *c = user_data;
  if (frame->hd.type == NGHTTP2_GOAWAY && !c->goaway_recvd) c->goaway_recvd = frame->goaway.error_code + 1;
  return 0;
}

/* Why the session ended without our stream closing. */
static void set_session_end(struct call *c, struct grpc_status *st) {
  if (c->goaway_sent > 1)
    set_status(st, GRPC_INTERNAL, 1, "HTTP/2 protocol error in the server's response (%s)",
               nghttp2_http2_strerror(c->goaway_sent - 1));
  else if (c->goaway_recvd)
    set_status(st, GRPC_UNAVAILABLE, 1, "server closed the connection (GOAWAY %s)",
               nghttp2_http2_strerror(c->goaway_recvd - 1));
  else
    set_status(st, GRPC_UNAVAILABLE, 1, "connection closed by the server before the response");
}

/* Connects, retrying EAGAIN (full backlog) until the deadline. Returns fd or -1 with st set. */
static int connect_uds(const char *path, int64_t deadline_ms, struct grpc_status *st) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof(addr.sun_path)) {
    set_status(st, GRPC_INVALID_ARGUMENT, 1, "socket path longer than %zu bytes", sizeof(addr.sun_path) - 1);
    return -1;
  }
  util_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    set_status(st, GRPC_UNAVAILABLE, 1, "socket: %s", strerror(errno));
    return -1;
  }
  long backoff_ms = 1;
  for (;;) {
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) return fd;
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EINPROGRESS) {
      int64_t left = deadline_ms - util_now_ms();
      if (left <= 0) break;
      if (e == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int r = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (r > 0) {
          int soerr = 0;
          socklen_t sl = sizeof(soerr);
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
          if (soerr == 0) return fd;
          set_status(st, GRPC_UNAVAILABLE, 1, "connect %s: %s", path, strerror(soerr));
          close(fd);
          return -1;
        }
        continue;
      }
      long sleep_ms = backoff_ms < left ? backoff_ms : (long)left;
      struct timespec ts = {.tv_sec = sleep_ms / 1000, .tv_nsec = (sleep_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
      if (backoff_ms < 50) backoff_ms *= 2;
      continue;
    }
    set_status(st, GRPC_UNAVAILABLE, 1, "connect %s: %s", path, strerror(e));
    close(fd);
    return -1;
  }
  set_status(st, GRPC_DEADLINE_EXCEEDED, 1, "deadline exceeded while connecting to %s (backlog full)", path);
  close(fd);
  return -1;
}

#define NV(n, v)                                                                                                       \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }

/* Drives the session until the stream closes. Returns -1 with st set on failure. */
static int run_session(nghttp2_session *session, struct call *c, int64_t deadline_ms, struct grpc_status *st) {
  uint8_t buf[16384];
  while (!c->closed) {
    int rv = nghttp2_session_send(session);
    if (rv != 0) {
      if (c->send_errno)
        set_status(st, GRPC_UNAVAILABLE, 1, "send: %s", strerror(c->send_errno));
      else
        set_status(st, GRPC_INTERNAL, 1, "HTTP/2 send: %s", nghttp2_strerror(rv));
      return -1;
    }
    if (c->closed) break;
    if (!nghttp2_session_want_read(session) && !nghttp2_session_want_write(session)) {
      set_session_end(c, st);
      return -1;
    }
    int64_t left = deadline_ms - util_now_ms();
    if (left <= 0) {
      set_status(st, GRPC_DEADLINE_EXCEEDED, 1, "deadline exceeded waiting for the response");
      return -1;
    }
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (nghttp2_session_want_write(session)) p.events |= POLLOUT;
    int pr = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
    if (pr < 0) {
      if (errno == EINTR) continue;
      set_status(st, GRPC_INTERNAL, 1, "poll: %s", strerror(errno));
      return -1;
    }
    if (pr == 0) continue; /* the deadline check above ends the call */
    if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
    for (;;) {
      ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        set_status(st, GRPC_UNAVAILABLE, 1, "recv: %s", strerror(errno));
        return -1;
      }
      if (n == 0) {
        if (c->closed) break;
        set_session_end(c, st);
        return -1;
      }
      ssize_t m = nghttp2_session_mem_recv(session, buf, (size_t)n);
      if (m < 0) {
        if (c->overflow)
          set_status(st, GRPC_RESOURCE_EXHAUSTED, 1, "response larger than %u bytes", GRPC_MAX_RESPONSE);
        else
          set_status(st, GRPC_INTERNAL, 1, "HTTP/2 protocol error: %s", nghttp2_strerror((int)m));
        return -1;
      }
      if (c->closed) break;
    }
  }
  return 0;
}

int grpc_unary_call(const char *socket_path, const char *method_path, const uint8_t *req, size_t req_len,
                    int64_t deadline_ms, uint8_t **resp, size_t *resp_len, struct grpc_status *st) {
  memset(st, 0, sizeof(*st));
  st->req_len = req_len;
  *resp = NULL;
  *resp_len = 0;
  if (req_len > 0xFFFFFFFFu - 5) return set_status(st, GRPC_RESOURCE_EXHAUSTED, 1, "request too large");
  if (util_now_ms() >= deadline_ms)
    return set_status(st, GRPC_DEADLINE_EXCEEDED, 1, "deadline exceeded before the call started");

  struct call c;
  memset(&c, 0, sizeof(c));
  c.fd = -1;
  c.grpc_status = -1;
  c.stream_id = -1;

  uint8_t *framed = malloc(req_len + 5);
  if (!framed) return set_status(st, GRPC_RESOURCE_EXHAUSTED, 1, "out of memory");
  framed[0] = 0;
  framed[1] = (uint8_t)(req_len >> 24);
  framed[2] = (uint8_t)(req_len >> 16);
  framed[3] = (uint8_t)(req_len >> 8);
  framed[4] = (uint8_t)req_len;
  if (req_len) memcpy(framed + 5, req, req_len);
  c.req = framed;
  c.req_len = req_len + 5;

  int64_t t0 = util_now_us();
  nghttp2_session_callbacks *cbs = NULL;
  nghttp2_session *session = NULL;
  c.fd = connect_uds(socket_path, deadline_ms, st);
  if (c.fd < 0) goto done;

  if (nghttp2_session_callbacks_new(&cbs) != 0) {
    set_status(st, GRPC_RESOURCE_EXHAUSTED, 1, "out of memory");
    goto done;
  }
  nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
  nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_chunk_cb);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, stream_close_cb);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, frame_send_cb);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, frame_recv_cb);
  if (nghttp2_session_client_new(&session, cbs, &c) != 0) {
    set_status(st, GRPC_RESOURCE_EXHAUSTED, 1, "out of memory");
    goto done;
  }

  /* The server sends GOAWAY if the connection preface lacks SETTINGS. */
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
  };
  if (nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0) {
    set_status(st, GRPC_INTERNAL, 1, "HTTP/2 settings could not be submitted");
    goto done;
  }

  char timeout[32];
  grpc_format_timeout(deadline_ms - util_now_ms(), timeout, sizeof(timeout));
  nghttp2_nv hdrs[] = {
      NV(":method", "POST"),
      NV(":scheme", "http"),
      NV(":path", method_path),
      NV(":authority", "localhost"),
      NV("content-type", "application/grpc"),
      NV("te", "trailers"),
      NV("grpc-timeout", timeout),
      NV("user-agent", "tessera-cni/1.0 (nghttp2)"),
  };
  nghttp2_data_provider prd = {.source = {.ptr = NULL}, .read_callback = data_read_cb};
  c.stream_id = nghttp2_submit_request(session, NULL, hdrs, sizeof(hdrs) / sizeof(hdrs[0]), &prd, &c);
  if (c.stream_id < 0) {
    set_status(st, GRPC_INTERNAL, 1, "HTTP/2 request could not be submitted: %s", nghttp2_strerror(c.stream_id));
    goto done;
  }

  if (run_session(session, &c, deadline_ms, st) != 0) goto done;

  /* The stream is closed: decide the status from what the server sent. */
  if (c.grpc_status >= 0) {
    st->code = c.grpc_status;
    st->local = 0;
    util_strlcpy(st->message, c.grpc_message, sizeof(st->message));
    if (st->code == GRPC_OK && c.http_status != 200)
      set_status(st, grpc_code_from_http(c.http_status), 1, "HTTP status %d", c.http_status);
  } else if (c.http_status != 0 && c.http_status != 200) {
    set_status(st, grpc_code_from_http(c.http_status), 1, "HTTP status %d without grpc-status", c.http_status);
  } else if (c.rst_error == NGHTTP2_REFUSED_STREAM) {
    set_status(st, GRPC_UNAVAILABLE, 1, "stream refused by the server");
  } else if (c.rst_error == NGHTTP2_CANCEL) {
    set_status(st, GRPC_CANCELLED, 1, "stream cancelled by the server");
  } else if (c.rst_error != 0) {
    set_status(st, GRPC_INTERNAL, 1, "stream reset by the server (HTTP/2 error %u)", c.rst_error);
    st->reset = c.rst_error;
  } else {
    set_status(st, GRPC_INTERNAL, 1, "response without grpc-status");
  }
  if (st->code == GRPC_OK) {
    const uint8_t *msg;
    size_t msg_len;
    const char *why;
    if (c.bad_content_type) {
      set_status(st, GRPC_UNKNOWN, 1, "response content-type is not application/grpc");
    } else if (grpc_unframe(c.body, c.body_len, &msg, &msg_len, &why) != 0) {
      set_status(st, GRPC_INTERNAL, 1, "invalid response: %s", why);
    } else {
      *resp = malloc(msg_len ? msg_len : 1);
      if (!*resp) {
        set_status(st, GRPC_RESOURCE_EXHAUSTED, 1, "out of memory");
      } else {
        if (msg_len) memcpy(*resp, msg, msg_len);
        *resp_len = msg_len;
      }
    }
  }

done:
  log_debug("grpc %s socket=%s status=%s%s message=\"%.200s\" time=%.3fms", method_path, socket_path,
            grpc_code_name(st->code), st->local ? " (local)" : "", st->message, (double)(util_now_us() - t0) / 1000.0);
  if (session) nghttp2_session_del(session);
  if (cbs) nghttp2_session_callbacks_del(cbs);
  if (c.fd >= 0) close(c.fd);
  free(c.body);
  free(framed);
  return st->code;
}
