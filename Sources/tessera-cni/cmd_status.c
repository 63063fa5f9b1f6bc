/* STATUS (1.1.0): ready when the endpoint service's health check says SERVING. */
#include <stdio.h>

#include "cmd_common.h"
#include "grpc/health/v1/health.pb-c.h"

int cmd_status(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  (void)out;
  struct endpoint_target t = cmd_target(inv);
  int status = 0;
  int rc = endpoint_health(&t, &status, err);
  if (rc) {
    char why[CNI_ERROR_MSG_MAX + CNI_ERROR_DETAILS_MAX + 4];
    snprintf(why, sizeof(why), "%s%s%s", err->msg, err->details[0] ? ": " : "", err->details);
    return cni_error_set(err, CNI_ERR_NOT_AVAILABLE, "endpoint service not available", "%s", why);
  }
  if (status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) {
    static const char *const names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    return cni_error_set(err, CNI_ERR_NOT_AVAILABLE, "endpoint service not available", "health check of %s: %s",
                         t.socket_path, status >= 0 && status < 4 ? names[status] : "UNKNOWN");
  }
  return 0;
}
