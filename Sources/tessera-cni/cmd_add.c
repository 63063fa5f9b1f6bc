/* ADD: register the endpoint created by the previous plugin, wait until its policy is in
 * force (CreateEndpoint with sync), and pass the previous result through. */
#include <inttypes.h>

#include "cmd_common.h"
#include "log.h"

int cmd_add(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  struct netconf *nc = &inv->conf;
  int rc;
  if ((rc = netconf_parse_prev_result(nc, err))) return rc;
  if ((rc = netconf_parse_labels(nc, err))) return rc;
  /* Build the result first: nothing can fail after the endpoint exists. */
  if ((rc = result_passthrough(nc, out, err))) return rc;

  struct endpoint_create_params p = {
      .container_id = inv->env.container_id,
      .interface_name = inv->env.ifname,
      .host_interface = nc->host_interface,
      .netns = inv->env.netns,
      .pod_namespace = inv->args.pod_namespace,
      .pod_name = inv->args.pod_name,
      .ips = nc->ips,
      .n_ips = nc->n_ips,
      .labels = nc->labels,
      .n_labels = nc->n_labels,
  };
  struct endpoint_target t = cmd_target(inv);
  uint64_t id = 0;
  uint32_t identity = 0;
  if ((rc = endpoint_create(&t, &p, &id, &identity, err))) {
    cni_output_free(out);
    return rc;
  }
  log_debug("ADD container=%s endpoint=%" PRIu64 " identity=%" PRIu32 " host_interface=%s ips=%zu labels=%zu",
            inv->env.container_id, id, identity, nc->host_interface ? nc->host_interface : "", nc->n_ips,
            nc->n_labels);
  return 0;
}
