/* CHECK: the container's interface is a veth whose host peer carries the endpoint, and the
 * endpoint exists, is ready, and has the IPs of prevResult. */
#include <string.h>

#include "cmd_common.h"
#include "ipam.h"
#include "link.h"
#include "log.h"

static const char *state_name(int s) {
  static const char *const names[] = {"UNSPECIFIED",           "CREATING",     "WAITING_FOR_IDENTITY",
                                      "WAITING_TO_REGENERATE", "REGENERATING", "READY",
                                      "DISCONNECTING",         "DISCONNECTED", "RESTORING"};
  return s >= 0 && s < (int)(sizeof(names) / sizeof(names[0])) ? names[s] : "UNKNOWN";
}

static int contains(char *const *set, size_t n, const char *ip) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(set[i], ip) == 0) return 1;
  return 0;
}

/* Writes "a, b, c" into buf (truncated). */
static void join(char *const *items, size_t n, char *buf, size_t cap) {
  buf[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    if (i) strncat(buf, ", ", cap - strlen(buf) - 1);
    strncat(buf, items[i], cap - strlen(buf) - 1);
  }
}

/* Same set of addresses, compared in canonical form (the service may add a prefix length). */
static int ips_match(const struct netconf *nc, const Tessera__Endpoint__V1__Endpoint *ep) {
  size_t matched = 0;
  for (size_t i = 0; i < ep->n_ips; i++) {
    char canon[64];
    if (netconf_canonical_ip(ep->ips[i], canon, sizeof(canon)) != 0) return 0;
    if (!contains(nc->ips, nc->n_ips, canon)) return 0;
    matched++;
  }
  for (size_t i = 0; i < nc->n_ips; i++) {
    int found = 0;
    for (size_t j = 0; j < ep->n_ips && !found; j++) {
      char canon[64];
      found = netconf_canonical_ip(ep->ips[j], canon, sizeof(canon)) == 0 && strcmp(canon, nc->ips[i]) == 0;
    }
    if (!found) return 0;
  }
  return matched > 0 || nc->n_ips == 0;
}

/* Main-plugin mode: the host veth is the one ADD made, the pod has its addresses, and the
 * IPAM plugin still holds them. */
static int check_main(struct cni_invocation *inv, struct nl_sock *pod, const struct link_peer *peer,
                      struct cni_error *err) {
  char want[IF_NAMESIZE];
  link_host_name(inv->env.container_id, inv->env.ifname, want);
  if (strcmp(want, peer->host_name) != 0)
    return cni_error_set(err, TSR_ERR_ENDPOINT_MISMATCH, "container interface is not tessera-cni's veth",
                         "%s's peer is %s, expected %s", inv->env.ifname, peer->host_name, want);
  size_t i;
  json_t *it;
  json_array_foreach(json_object_get(inv->conf.prev_result, "ips"), i, it) {
    const char *cidr = json_string_value(json_object_get(it, "address"));
    int present = link_addr_present(pod, peer->pod_ifindex, cidr, err);
    if (present < 0) return -present;
    if (!present)
      return cni_error_set(err, TSR_ERR_ENDPOINT_MISMATCH, "container interface lacks an address of prevResult",
                           "%s has no %s", inv->env.ifname, cidr);
  }
  const char *ipam_type = json_string_value(json_object_get(inv->conf.ipam, "type"));
  return ipam_exec(inv->env.path, ipam_type, "CHECK", inv->stdin_data, inv->stdin_len, inv->deadline_ms, NULL, err);
}

int cmd_check(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  (void)out;
  struct netconf *nc = &inv->conf;
  int rc;
  if ((rc = netconf_parse_prev_result(nc, err))) return rc;
  if ((rc = netconf_find_container_interface(nc, inv->env.ifname, err))) return rc;
  struct nl_sock *pod = NULL, *host = NULL;
  struct link_peer peer;
  if (!(rc = link_open(inv->env.netns, &pod, err)) && !(rc = link_open(NULL, &host, err)))
    rc = link_find_host_peer(pod, host, inv->env.ifname, &peer, err);
  if (!rc && nc->ipam) rc = check_main(inv, pod, &peer, err);
  link_close(pod);
  link_close(host);
  if (rc) return rc;

  struct endpoint_target t = cmd_target(inv);
  Tessera__Endpoint__V1__Endpoint *ep = NULL;
  if ((rc = endpoint_get(&t, inv->env.container_id, inv->env.ifname, &ep, err))) {
    if (rc == TSR_ERR_ENDPOINT_NOT_FOUND)
      cni_error_set(err, rc, "endpoint not found", "no endpoint registered for container %s interface %s",
                    inv->env.container_id, inv->env.ifname);
    return rc;
  }
  if (ep->state != TESSERA__ENDPOINT__V1__ENDPOINT_STATE__ENDPOINT_STATE_READY) {
    rc = cni_error_set(err, TSR_ERR_ENDPOINT_NOT_READY, "endpoint is not ready",
                       "endpoint %llu of container %s is in state %s", (unsigned long long)ep->id,
                       inv->env.container_id, state_name((int)ep->state));
  } else if (!ips_match(nc, ep)) {
    char have[400], want[400];
    join(ep->ips, ep->n_ips, have, sizeof(have));
    join(nc->ips, nc->n_ips, want, sizeof(want));
    rc = cni_error_set(err, TSR_ERR_ENDPOINT_MISMATCH, "endpoint IPs do not match prevResult",
                       "endpoint %llu has [%s], prevResult has [%s]", (unsigned long long)ep->id, have, want);
  } else if (strcmp(peer.host_name, ep->host_interface) != 0) {
    rc = cni_error_set(err, TSR_ERR_ENDPOINT_MISMATCH, "endpoint is attached to another host interface",
                       "endpoint %llu is attached to %.32s, the container's veth peer is %s",
                       (unsigned long long)ep->id, ep->host_interface, peer.host_name);
  } else {
    log_debug("CHECK container=%s endpoint=%llu identity=%u ok", inv->env.container_id, (unsigned long long)ep->id,
              ep->identity);
  }
  tessera__endpoint__v1__endpoint__free_unpacked(ep, NULL);
  return rc;
}
