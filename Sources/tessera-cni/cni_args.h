/* CNI_ARGS: `K=V;K=V`. Only K8S_POD_NAMESPACE and K8S_POD_NAME are used. */
#ifndef TESSERA_CNI_ARGS_H
#define TESSERA_CNI_ARGS_H

#include "cni_error.h"

struct cni_args {
  char *pod_namespace; /* NULL when absent */
  char *pod_name;      /* NULL when absent */
};

/* Parses s (may be NULL or empty). Unknown keys (IgnoreUnknown, K8S_POD_INFRA_CONTAINER_ID,
 * ...) are ignored; a later duplicate key wins. A non-empty pair without `=` or with an
 * empty key, or a value that is not UTF-8, gives CNI_ERR_INVALID_ENV. */
int cni_args_parse(const char *s, struct cni_args *out, struct cni_error *err);

void cni_args_free(struct cni_args *a);

#endif
