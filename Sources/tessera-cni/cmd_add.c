/* ADD. With an `ipam` section tessera-cni is the main plugin (cmd_main.c). Chained, it
 * registers the endpoint of the interface the previous plugin created, waits until its
 * policy is in force (CreateEndpoint with sync), and passes the previous result through. */
#include <inttypes.h>

#include "cmd_common.h"
#include "link.h"
#include "log.h"

/* The host side of the container's veth, read from the kernel: the result's order of
 * interfaces says nothing (bridge lists the bridge first, and a shared device must never
 * carry one pod's programs). */
static int find_host_interface(struct cni_invocation *inv, struct link_peer *peer, struct cni_error *err) {
  int rc = netconf_find_container_interface(&inv->conf, inv->env.ifname, err);
  if (rc) return rc;
  struct nl_sock *pod = NULL, *host = NULL;
  if (!(rc = link_open(inv->env.netns, &pod, err)) && !(rc = link_open(NULL, &host, err)))
    rc = link_find_host_peer(pod, host, inv->env.ifname, peer, err);
  link_close(pod);
  link_close(host);
  return rc;
}

int cmd_add(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  struct netconf *nc = &inv->conf;
  if (nc->ipam) return cmd_add_main(inv, out, err);
  int rc;
  if ((rc = netconf_parse_prev_result(nc, err))) return rc;
  if ((rc = netconf_parse_labels(nc, err))) return rc;
  if ((rc = netconf_check_label_limits(nc, err))) return rc;
  if ((rc = netconf_parse_ports(nc, err))) return rc;
  struct link_peer peer;
  if ((rc = find_host_interface(inv, &peer, err))) return rc;
  /* Build the result first: nothing can fail after the endpoint exists. */
  if ((rc = result_passthrough(nc, out, err))) return rc;

  struct endpoint_create_params p = {
      .container_id = inv->env.container_id,
      .interface_name = inv->env.ifname,
      .host_interface = peer.host_name,
      .netns = inv->env.netns,
      .pod_namespace = inv->args.pod_namespace,
      .pod_name = inv->args.pod_name,
      .ips = nc->ips,
      .n_ips = nc->n_ips,
      .labels = nc->labels,
      .n_labels = nc->n_labels,
      .named_ports = nc->ports,
      .n_named_ports = nc->n_ports,
      .network = nc->name,
  };
  struct endpoint_target t = cmd_target(inv);
  uint64_t id = 0;
  uint32_t identity = 0;
  if ((rc = endpoint_create(&t, &p, &id, &identity, err))) {
    cni_output_free(out);
    return rc;
  }
  log_debug("ADD container=%s endpoint=%" PRIu64 " identity=%" PRIu32
            " host_interface=%s ifindex=%d ips=%zu labels=%zu named_ports=%zu",
            inv->env.container_id, id, identity, peer.host_name, peer.host_ifindex, nc->n_ips, nc->n_labels,
            nc->n_ports);
  return 0;
}
