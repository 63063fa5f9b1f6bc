/* VERSION: the spec versions this plugin implements. Never fails on its input. */
#include <string.h>

#include "cmd.h"

int cmd_version(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  const char *version = "1.1.0";
  json_t *root = NULL;
  if (inv->stdin_data && inv->stdin_len) {
    root = json_loadb(inv->stdin_data, inv->stdin_len, 0, NULL);
    json_t *v = json_is_object(root) ? json_object_get(root, "cniVersion") : NULL;
    if (json_is_string(v) && netconf_version_supported(json_string_value(v))) version = json_string_value(v);
  }
  int rc = result_version(version, out, err);
  if (root) json_decref(root);
  return rc;
}
