/* GC (1.1.0): remove every endpoint not in cni.dev/valid-attachments. */
#include "cmd_common.h"
#include "log.h"

int cmd_gc(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  (void)out;
  struct netconf *nc = &inv->conf;
  int rc;
  if ((rc = netconf_parse_valid_attachments(nc, err))) return rc;
  struct endpoint_target t = cmd_target(inv);
  size_t removed = 0;
  if ((rc = endpoint_gc(&t, nc->attachments, nc->n_attachments, &removed, err))) return rc;
  log_debug("GC valid=%zu removed=%zu", nc->n_attachments, removed);
  return 0;
}
