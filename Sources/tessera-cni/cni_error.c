#include "cni_error.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void cni_error_clear(struct cni_error *err) {
  memset(err, 0, sizeof(*err));
}

int cni_error_set(struct cni_error *err, int code, const char *msg, const char *details_fmt, ...) {
  err->code = code;
  util_strlcpy(err->msg, msg ? msg : "", sizeof(err->msg));
  err->details[0] = '\0';
  if (details_fmt) {
    va_list ap;
    va_start(ap, details_fmt);
    vsnprintf(err->details, sizeof(err->details), details_fmt, ap);
    va_end(ap);
  }
  /* Truncation or a peer's message may leave invalid UTF-8; JSON must not carry it. */
  util_utf8_sanitize(err->msg);
  util_utf8_sanitize(err->details);
  return code;
}

char *cni_error_to_json(const struct cni_error *err, const char *cni_version) {
  char msg[CNI_ERROR_MSG_MAX], details[CNI_ERROR_DETAILS_MAX];
  util_strlcpy(msg, err->msg, sizeof(msg));
  util_strlcpy(details, err->details, sizeof(details));
  util_utf8_sanitize(msg);
  util_utf8_sanitize(details);

  json_t *o = json_object();
  if (!o) return NULL;
  json_object_set_new(o, "cniVersion", json_string(cni_version ? cni_version : "1.1.0"));
  json_object_set_new(o, "code", json_integer(err->code));
  json_object_set_new(o, "msg", json_string(msg));
  json_object_set_new(o, "details", json_string(details));
  char *body = json_dumps(o, JSON_INDENT(4));
  json_decref(o);
  if (!body) return NULL;
  size_t n = strlen(body);
  char *out = realloc(body, n + 2);
  if (!out) {
    free(body);
    return NULL;
  }
  out[n] = '\n';
  out[n + 1] = '\0';
  return out;
}
