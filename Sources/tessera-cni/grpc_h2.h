/* A unary gRPC call over HTTP/2 (nghttp2) on an AF_UNIX socket, one connection per call. */
#ifndef TESSERA_GRPC_H2_H
#define TESSERA_GRPC_H2_H

#include <stddef.h>
#include <stdint.h>

enum grpc_code {
  GRPC_OK = 0,
  GRPC_CANCELLED = 1,
  GRPC_UNKNOWN = 2,
  GRPC_INVALID_ARGUMENT = 3,
  GRPC_DEADLINE_EXCEEDED = 4,
  GRPC_NOT_FOUND = 5,
  GRPC_ALREADY_EXISTS = 6,
  GRPC_PERMISSION_DENIED = 7,
  GRPC_RESOURCE_EXHAUSTED = 8,
  GRPC_FAILED_PRECONDITION = 9,
  GRPC_ABORTED = 10,
  GRPC_OUT_OF_RANGE = 11,
  GRPC_UNIMPLEMENTED = 12,
  GRPC_INTERNAL = 13,
  GRPC_UNAVAILABLE = 14,
  GRPC_DATA_LOSS = 15,
  GRPC_UNAUTHENTICATED = 16,
};

#define GRPC_MAX_RESPONSE (16u << 20)

struct grpc_status {
  int code;          /* enum grpc_code */
  int local;         /* 1: produced by this client (connect failure, local deadline, ...) */
  char message[512]; /* grpc-message, percent-decoded, or the local reason */
  uint32_t reset;    /* the HTTP/2 error code of a RST_STREAM that ended the call, else 0 */
  size_t req_len;    /* bytes of the request message sent */
};

/* A request this large that is reset is taken to be refused for its size (a server's
 * default limit on received messages is 4 MiB). */
#define GRPC_LARGE_REQUEST (1u << 20)

/* Calls method_path (e.g. "/grpc.health.v1.Health/Check") with the serialized request.
 * deadline_ms is absolute on util_now_ms()'s clock and bounds connect, every poll and the
 * grpc-timeout header. Returns st->code; on GRPC_OK *resp (malloc'd, caller frees) holds the
 * single response message. Connect failures give UNAVAILABLE, an expired deadline
 * DEADLINE_EXCEEDED, protocol violations INTERNAL. */
int grpc_unary_call(const char *socket_path, const char *method_path, const uint8_t *req, size_t req_len,
                    int64_t deadline_ms, uint8_t **resp, size_t *resp_len, struct grpc_status *st);

const char *grpc_code_name(int code);

/* grpc-status header value -> code; anything but 1-3 ASCII digits gives GRPC_UNKNOWN. */
int grpc_parse_status(const char *v, size_t len);

/* grpc-message percent-decoding into out (NUL-terminated, truncated to cap-1). */
void grpc_percent_decode(const char *in, size_t len, char *out, size_t cap);

/* grpc-timeout header value for ms milliseconds ("1500m", or seconds when too long). */
void grpc_format_timeout(int64_t ms, char *buf, size_t cap);

/* Checks body is exactly one uncompressed length-prefixed message; returns 0 and points
 * msg into body, or -1 with a reason. */
int grpc_unframe(const uint8_t *body, size_t len, const uint8_t **msg, size_t *msg_len, const char **why);

/* HTTP status of a non-200 response -> gRPC code (gRPC's http-grpc-status-mapping). */
int grpc_code_from_http(int http_status);

#endif
