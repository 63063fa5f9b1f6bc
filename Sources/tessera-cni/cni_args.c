#include "cni_args.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static int set_value(char **slot, const char *v, size_t n, struct cni_error *err) {
  char *copy = strndup(v, n);
  if (!copy) return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  free(*slot);
  *slot = copy;
  return 0;
}

int cni_args_parse(const char *s, struct cni_args *out, struct cni_error *err) {
  memset(out, 0, sizeof(*out));
  if (!s) return 0;
  const char *p = s;
  while (*p) {
    const char *end = strchr(p, ';');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len > 0) {
      const char *eq = memchr(p, '=', len);
      if (!eq || eq == p) {
        cni_args_free(out);
        return cni_error_set(err, CNI_ERR_INVALID_ENV, "invalid CNI_ARGS", "pair %.*s is not of the form KEY=VALUE",
                             (int)(len > 200 ? 200 : len), p);
      }
      size_t klen = (size_t)(eq - p);
      const char *v = eq + 1;
      size_t vlen = len - klen - 1;
      char **slot = NULL;
      if (klen == 17 && memcmp(p, "K8S_POD_NAMESPACE", 17) == 0)
        slot = &out->pod_namespace;
      else if (klen == 12 && memcmp(p, "K8S_POD_NAME", 12) == 0)
        slot = &out->pod_name;
      if (slot) {
        if (!util_utf8_valid(v, vlen)) {
          cni_args_free(out);
          return cni_error_set(err, CNI_ERR_INVALID_ENV, "invalid CNI_ARGS", "value of %.*s is not valid UTF-8",
                               (int)klen, p);
        }
        int rc = set_value(slot, v, vlen, err);
        if (rc) {
          cni_args_free(out);
          return rc;
        }
      }
    }
    if (!end) break;
    p = end + 1;
  }
  return 0;
}

void cni_args_free(struct cni_args *a) {
  free(a->pod_namespace);
  free(a->pod_name);
  a->pod_namespace = a->pod_name = NULL;
}
