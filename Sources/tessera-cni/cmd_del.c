/* DEL: remove the endpoint; an endpoint that is already gone is success. Needs no prevResult.
 * In main-plugin mode (an `ipam` section) also the addresses and the veth (cmd_main.c). */
#include "cmd_common.h"
#include "log.h"

int cmd_del(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  if (inv->conf.ipam) return cmd_del_main(inv, out, err);
  struct endpoint_target t = cmd_target(inv);
  int existed = 0;
  int rc = endpoint_delete(&t, inv->env.container_id, inv->env.ifname, &existed, err);
  if (rc) return rc;
  log_debug("DEL container=%s ifname=%s existed=%d", inv->env.container_id, inv->env.ifname, existed);
  return 0;
}
