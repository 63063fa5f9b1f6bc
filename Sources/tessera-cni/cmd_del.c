/* DEL: remove the endpoint; an endpoint that is already gone is success. Needs no prevResult.
 * In main-plugin mode (an `ipam` section) also the addresses and the veth (cmd_main.c).
 * With the endpoint service down, the deletion is queued and DEL succeeds (deletion_queue.h). */
#include "cmd_common.h"
#include "deletion_queue.h"
#include "link.h"
#include "log.h"

int cmd_del_endpoint(struct cni_invocation *inv, int *existed, struct cni_error *err) {
  struct endpoint_target t = cmd_target(inv);
  int rc = endpoint_delete(&t, inv->env.container_id, inv->env.ifname, existed, err);
  if (rc != CNI_ERR_TRY_AGAIN_LATER) return rc;
  struct cni_error queue_err;
  cni_error_clear(&queue_err);
  if (deletion_queue_add(t.socket_path, inv->env.container_id, inv->env.ifname, &queue_err)) {
    log_debug("DEL: %s (%s); and %s (%s)", err->msg, err->details, queue_err.msg, queue_err.details);
    return rc;
  }
  log_debug("DEL container=%s ifname=%s queued: %s (%s)", inv->env.container_id, inv->env.ifname, err->msg,
            err->details);
  cni_error_clear(err);
  *existed = 1;
  return 0;
}

/* Chained: the veth is the previous plugin's to delete, after this DEL; until then it would
 * pass anything without the endpoint's programs, so its host end goes down first. Best
 * effort: the namespace or the veth may be gone already (DEL must succeed then too). */
static void host_veth_down(struct cni_invocation *inv) {
  struct nl_sock *pod = NULL, *host = NULL;
  struct cni_error ignored;
  struct link_peer peer;
  if (!inv->env.netns || !*inv->env.netns) return;
  if (!link_open(inv->env.netns, &pod, &ignored) && !link_open(NULL, &host, &ignored) &&
      !link_find_host_peer(pod, host, inv->env.ifname, &peer, &ignored))
    if (link_set_down(host, peer.host_ifindex, peer.host_name, &ignored))
      log_debug("DEL: %s: %s", ignored.msg, ignored.details);
  link_close(pod);
  link_close(host);
}

int cmd_del(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  if (inv->conf.ipam) return cmd_del_main(inv, out, err);
  host_veth_down(inv);
  int existed = 0;
  int rc = cmd_del_endpoint(inv, &existed, err);
  if (rc) return rc;
  log_debug("DEL container=%s ifname=%s existed=%d", inv->env.container_id, inv->env.ifname, existed);
  return 0;
}
