/* CNI error codes and the error value every function fills. Only main prints it. */
#ifndef TESSERA_CNI_ERROR_H
#define TESSERA_CNI_ERROR_H

#include <stddef.h>

/* Codes 1-99 are reserved by the CNI specification (SPEC.md, "Error"). */
enum cni_error_code {
  CNI_OK = 0,
  CNI_ERR_INCOMPATIBLE_VERSION = 1,
  CNI_ERR_UNSUPPORTED_FIELD = 2,
  CNI_ERR_UNKNOWN_CONTAINER = 3,
  CNI_ERR_INVALID_ENV = 4,
  CNI_ERR_IO = 5,
  CNI_ERR_DECODING = 6,
  CNI_ERR_INVALID_NETCONF = 7,
  CNI_ERR_TRY_AGAIN_LATER = 11,
  CNI_ERR_NOT_AVAILABLE = 50,
  CNI_ERR_NOT_AVAILABLE_DEGRADED = 51,
  /* Plugin-specific codes (>= 100), documented in README.md. */
  TSR_ERR_ENDPOINT_EXISTS = 101,
  TSR_ERR_ENDPOINT_NOT_FOUND = 102,
  TSR_ERR_ENDPOINT_NOT_READY = 103,
  TSR_ERR_ENDPOINT_MISMATCH = 104,
  TSR_ERR_SERVICE_REFUSED = 105, /* FAILED_PRECONDITION / NOT_FOUND from CreateEndpoint: retrying cannot help */
  TSR_ERR_NO_HOST_VETH = 106,    /* the container interface has no host-side veth peer */
  TSR_ERR_LINK = 107,            /* main plugin: netlink could not create or configure the interface */
  CNI_ERR_INTERNAL = 999,
};

#define CNI_ERROR_MSG_MAX 512
#define CNI_ERROR_DETAILS_MAX 1024

struct cni_error {
  int code;
  char msg[CNI_ERROR_MSG_MAX];
  char details[CNI_ERROR_DETAILS_MAX];
};

void cni_error_clear(struct cni_error *err);

/* Fills err and returns code, so callers can `return cni_error_set(...)`.
 * details_fmt may be NULL. Output longer than the buffers is truncated. */
int cni_error_set(struct cni_error *err, int code, const char *msg, const char *details_fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The CNI error JSON ({"cniVersion","code","msg","details"}), newline-terminated.
 * Returns a malloc'd string or NULL on allocation failure. */
char *cni_error_to_json(const struct cni_error *err, const char *cni_version);

#endif
