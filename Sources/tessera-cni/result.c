#include "result.h"

#include <stdlib.h>
#include <string.h>

void cni_output_free(struct cni_output *out) {
  free(out->text);
  out->text = NULL;
}

/* Dumps o into out->text with a trailing newline; takes the reference to o. */
static int dump(json_t *o, struct cni_output *out, struct cni_error *err) {
  char *body = o ? json_dumps(o, JSON_INDENT(4)) : NULL;
  if (o) json_decref(o);
  if (!body) return cni_error_set(err, CNI_ERR_INTERNAL, "cannot encode the result", NULL);
  size_t n = strlen(body);
  char *text = realloc(body, n + 2);
  if (!text) {
    free(body);
    return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  }
  text[n] = '\n';
  text[n + 1] = '\0';
  out->text = text;
  return 0;
}

int result_passthrough(const struct netconf *nc, struct cni_output *out, struct cni_error *err) {
  if (!nc->prev_result) return cni_error_set(err, CNI_ERR_INTERNAL, "no prevResult to pass through", NULL);
  json_t *o = json_object();
  if (!o) return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  json_object_set_new(o, "cniVersion", json_string(nc->cni_version));
  const char *k;
  json_t *v;
  json_object_foreach(nc->prev_result, k, v) {
    if (strcmp(k, "cniVersion") != 0 && json_object_set(o, k, v) != 0) {
      json_decref(o);
      return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
    }
  }
  return dump(o, out, err);
}

int result_version(const char *cni_version, struct cni_output *out, struct cni_error *err) {
  json_t *o = json_pack("{s:s, s:[s,s,s]}", "cniVersion", cni_version, "supportedVersions", "0.4.0", "1.0.0", "1.1.0");
  return dump(o, out, err);
}
