/* gRPC framing helpers, status mapping, and the client against misbehaving sockets. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "endpoint_client.h"
#include "grpc_h2.h"
#include "test.h"
#include "util.h"

static void test_percent_decode(void) {
  char out[64];
  grpc_percent_decode("100%25 broken%3A %C3%A9", 23, out, sizeof(out));
  CHECK_STR(out, "100% broken: \xc3\xa9");
  grpc_percent_decode("bad %zz %4", 10, out, sizeof(out));
  CHECK_STR(out, "bad %zz %4");
  grpc_percent_decode("%00x%ff", 7, out, sizeof(out)); /* NUL and invalid UTF-8 are replaced */
  CHECK_STR(out, "?x?");
  grpc_percent_decode("abcdef", 6, out, 4);
  CHECK_STR(out, "abc");
}

static void test_status_and_timeout(void) {
  CHECK_INT(grpc_parse_status("0", 1), 0);
  CHECK_INT(grpc_parse_status("14", 2), 14);
  CHECK_INT(grpc_parse_status("16", 2), 16);
  CHECK_INT(grpc_parse_status("17", 2), GRPC_UNKNOWN);
  CHECK_INT(grpc_parse_status("", 0), GRPC_UNKNOWN);
  CHECK_INT(grpc_parse_status("1a", 2), GRPC_UNKNOWN);
  CHECK_INT(grpc_parse_status("0014", 4), GRPC_UNKNOWN);
  CHECK_STR(grpc_code_name(6), "ALREADY_EXISTS");
  CHECK_STR(grpc_code_name(99), "UNKNOWN");
  CHECK_INT(grpc_code_from_http(503), GRPC_UNAVAILABLE);
  CHECK_INT(grpc_code_from_http(404), GRPC_UNIMPLEMENTED);
  char buf[32];
  grpc_format_timeout(10000, buf, sizeof(buf));
  CHECK_STR(buf, "10000m");
  grpc_format_timeout(0, buf, sizeof(buf));
  CHECK_STR(buf, "1m");
  grpc_format_timeout(100000000, buf, sizeof(buf));
  CHECK_STR(buf, "100000S");
}

static void test_unframe(void) {
  const uint8_t *m;
  size_t n;
  const char *why;
  const uint8_t ok[] = {0, 0, 0, 0, 2, 0x08, 0x01};
  CHECK_INT(grpc_unframe(ok, sizeof(ok), &m, &n, &why), 0);
  CHECK_INT(n, 2);
  CHECK(m == ok + 5);
  const uint8_t empty[] = {0, 0, 0, 0, 0};
  CHECK_INT(grpc_unframe(empty, sizeof(empty), &m, &n, &why), 0);
  CHECK_INT(n, 0);
  CHECK_INT(grpc_unframe(ok, 0, &m, &n, &why), -1);
  CHECK_INT(grpc_unframe(ok, 4, &m, &n, &why), -1);
  CHECK_INT(grpc_unframe(ok, 6, &m, &n, &why), -1);
  const uint8_t compressed[] = {1, 0, 0, 0, 0};
  CHECK_INT(grpc_unframe(compressed, sizeof(compressed), &m, &n, &why), -1);
  const uint8_t two[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  CHECK_INT(grpc_unframe(two, sizeof(two), &m, &n, &why), -1);
  const uint8_t huge[] = {0, 0xff, 0xff, 0xff, 0xff};
  CHECK_INT(grpc_unframe(huge, sizeof(huge), &m, &n, &why), -1);
}

static void test_status_mapping(void) {
  struct endpoint_target t = {.socket_path = "/run/tessera/endpoint.sock", .deadline_ms = 0, .timeout_ms = 10000};
  struct grpc_status st = {0};
  struct cni_error err;
  static const struct {
    int grpc;
    int local;
    int cni;
  } cases[] = {
      {GRPC_OK, 0, 0},
      {GRPC_UNAVAILABLE, 1, CNI_ERR_TRY_AGAIN_LATER},
      {GRPC_UNAVAILABLE, 0, CNI_ERR_TRY_AGAIN_LATER},
      {GRPC_DEADLINE_EXCEEDED, 0, CNI_ERR_TRY_AGAIN_LATER},
      {GRPC_DEADLINE_EXCEEDED, 1, CNI_ERR_TRY_AGAIN_LATER},
      {GRPC_ABORTED, 0, CNI_ERR_TRY_AGAIN_LATER}, /* a concurrent change won: a retry can succeed */
      {GRPC_INVALID_ARGUMENT, 0, CNI_ERR_INVALID_NETCONF},
      {GRPC_ALREADY_EXISTS, 0, TSR_ERR_ENDPOINT_EXISTS},
      {GRPC_NOT_FOUND, 0, TSR_ERR_SERVICE_REFUSED}, /* CreateEndpoint: e.g. the host device is missing */
      {GRPC_FAILED_PRECONDITION, 0, TSR_ERR_SERVICE_REFUSED},
      {GRPC_RESOURCE_EXHAUSTED, 0, CNI_ERR_INVALID_NETCONF},
      {GRPC_RESOURCE_EXHAUSTED, 1, CNI_ERR_INVALID_NETCONF},
      {GRPC_INTERNAL, 0, CNI_ERR_INTERNAL},
      {GRPC_INTERNAL, 1, CNI_ERR_INTERNAL}, /* a small request that is reset is not about its size */
      {GRPC_UNIMPLEMENTED, 0, CNI_ERR_INTERNAL},
      {GRPC_PERMISSION_DENIED, 0, CNI_ERR_INTERNAL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    st.code = cases[i].grpc;
    st.local = cases[i].local;
    util_strlcpy(st.message, "label reserved:x is reserved", sizeof(st.message));
    cni_error_clear(&err);
    CHECK_INT(endpoint_status_to_cni(ENDPOINT_RPC_CREATE, &t, &st, &err), cases[i].cni);
  }
  st.code = GRPC_INVALID_ARGUMENT;
  st.local = 0;
  endpoint_status_to_cni(ENDPOINT_RPC_CREATE, &t, &st, &err);
  CHECK_STR(err.msg, "label reserved:x is reserved"); /* the server's message */

  /* Permanent refusals carry the service's message and are never "try again". */
  st.code = GRPC_FAILED_PRECONDITION;
  util_strlcpy(st.message, "host interface tsr0 does not exist", sizeof(st.message));
  CHECK_INT(endpoint_status_to_cni(ENDPOINT_RPC_CREATE, &t, &st, &err), TSR_ERR_SERVICE_REFUSED);
  CHECK_STR(err.msg, "host interface tsr0 does not exist");
  CHECK(strstr(err.details, "FAILED_PRECONDITION") != NULL);
  /* NOT_FOUND is "no such endpoint" for Get and Delete. */
  st.code = GRPC_NOT_FOUND;
  CHECK_INT(endpoint_status_to_cni(ENDPOINT_RPC_GET, &t, &st, &err), TSR_ERR_ENDPOINT_NOT_FOUND);
  CHECK_INT(endpoint_status_to_cni(ENDPOINT_RPC_DELETE, &t, &st, &err), TSR_ERR_ENDPOINT_NOT_FOUND);
  /* A large request reset by the server: too large, a configuration error. */
  st.code = GRPC_INTERNAL;
  st.local = 1;
  st.reset = 2;
  st.req_len = GRPC_LARGE_REQUEST;
  CHECK_INT(endpoint_status_to_cni(ENDPOINT_RPC_CREATE, &t, &st, &err), CNI_ERR_INVALID_NETCONF);
  CHECK_STR(err.msg, "request too large for the endpoint service");
  st.req_len = 100;
  CHECK_INT(endpoint_status_to_cni(ENDPOINT_RPC_CREATE, &t, &st, &err), CNI_ERR_INTERNAL);
  st.reset = 0;
  st.req_len = 0;
}

/* A misbehaving peer on a Unix socket: closes at once, stays silent, or speaks HTTP/1. */
enum peer_kind { PEER_CLOSE, PEER_SILENT, PEER_HTTP1 };
struct peer {
  int listen_fd;
  enum peer_kind kind;
  char path[108];
};

static void *peer_main(void *arg) {
  struct peer *p = arg;
  int fd = accept(p->listen_fd, NULL, NULL);
  if (fd < 0) return NULL;
  if (p->kind == PEER_HTTP1) {
    const char *r = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    ssize_t w = send(fd, r, strlen(r), MSG_NOSIGNAL);
    (void)w;
    usleep(200 * 1000);
  } else if (p->kind == PEER_SILENT) {
    char buf[4096];
    while (recv(fd, buf, sizeof(buf), 0) > 0) {
    }
  }
  close(fd);
  return NULL;
}

static int peer_listen(struct peer *p, int backlog) {
  snprintf(p->path, sizeof(p->path), "/tmp/tsr-cni-test-%d-%d.sock", (int)getpid(), (int)p->kind);
  unlink(p->path);
  p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  util_strlcpy(a.sun_path, p->path, sizeof(a.sun_path));
  if (bind(p->listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(p->listen_fd, backlog) != 0) return -1;
  return 0;
}

static int call_peer(enum peer_kind kind, int64_t timeout_ms, struct grpc_status *st) {
  struct peer p = {.kind = kind};
  if (peer_listen(&p, 4) != 0) return -1;
  pthread_t th;
  pthread_create(&th, NULL, peer_main, &p);
  uint8_t *resp = NULL;
  size_t len = 0;
  int rc =
      grpc_unary_call(p.path, HEALTH_RPC_CHECK, (const uint8_t *)"", 0, util_now_ms() + timeout_ms, &resp, &len, st);
  CHECK(resp == NULL);
  shutdown(p.listen_fd, SHUT_RDWR);
  close(p.listen_fd);
  pthread_join(th, NULL);
  unlink(p.path);
  return rc;
}

static void test_client_failures(void) {
  struct grpc_status st;
  uint8_t *resp = NULL;
  size_t len = 0;
  /* No socket: UNAVAILABLE at once. */
  CHECK_INT(grpc_unary_call("/nonexistent/x.sock", HEALTH_RPC_CHECK, NULL, 0, util_now_ms() + 1000, &resp, &len, &st),
            GRPC_UNAVAILABLE);
  CHECK(st.local);
  /* Deadline already passed. */
  CHECK_INT(grpc_unary_call("/nonexistent/x.sock", HEALTH_RPC_CHECK, NULL, 0, util_now_ms() - 1, &resp, &len, &st),
            GRPC_DEADLINE_EXCEEDED);

  CHECK_INT(call_peer(PEER_CLOSE, 2000, &st), GRPC_UNAVAILABLE);
  int64_t t0 = util_now_ms();
  CHECK_INT(call_peer(PEER_SILENT, 150, &st), GRPC_DEADLINE_EXCEEDED);
  int64_t took = util_now_ms() - t0;
  CHECK(took >= 140 && took < 1500);
  CHECK_INT(call_peer(PEER_HTTP1, 2000, &st), GRPC_INTERNAL);
}

/* A listener that never accepts, with its backlog full: connect gives EAGAIN until the deadline. */
static void test_backlog_full(void) {
  struct peer p = {.kind = PEER_SILENT};
  CHECK_INT(peer_listen(&p, 0), 0);
  int fillers[8];
  int nf = 0;
  for (; nf < 8; nf++) {
    fillers[nf] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    util_strlcpy(a.sun_path, p.path, sizeof(a.sun_path));
    if (connect(fillers[nf], (struct sockaddr *)&a, sizeof(a)) != 0) {
      CHECK(errno == EAGAIN);
      close(fillers[nf]);
      break;
    }
  }
  struct grpc_status st;
  uint8_t *resp = NULL;
  size_t len = 0;
  int64_t t0 = util_now_ms();
  CHECK_INT(grpc_unary_call(p.path, HEALTH_RPC_CHECK, NULL, 0, t0 + 120, &resp, &len, &st), GRPC_DEADLINE_EXCEEDED);
  CHECK(util_now_ms() - t0 >= 110);
  for (int i = 0; i < nf; i++) close(fillers[i]);
  close(p.listen_fd);
  unlink(p.path);
}

const struct test_case grpc_tests[] = {
    {"percent_decode", test_percent_decode},
    {"status_and_timeout", test_status_and_timeout},
    {"unframe", test_unframe},
    {"status_mapping", test_status_mapping},
    {"client_failures", test_client_failures},
    {"backlog_full", test_backlog_full},
};
const size_t grpc_tests_count = sizeof(grpc_tests) / sizeof(grpc_tests[0]);
