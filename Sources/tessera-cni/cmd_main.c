/* Main-plugin mode (the config has an `ipam` section): tessera-cni creates the pod's veth
 * pair itself, so nothing can reach the pod before its policy is in force. ADD keeps both
 * links down until CreateEndpoint(sync) returns; a down link delivers no packet. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd_common.h"
#include "ipam.h"
#include "link.h"
#include "log.h"
#include "util.h"

#define MAIN_MAX_IPS 16
#define CLEANUP_MS 5000 /* cleanup after a failure gets its own deadline: the call's may be spent */

struct pod_ip {
  const char *cidr;    /* "10.0.0.5/24", borrowed from the IPAM result */
  const char *gateway; /* borrowed */
  int v6;
  char addr[INET6_ADDRSTRLEN];        /* without prefix */
  char subnet[INET6_ADDRSTRLEN + 4];  /* the network of cidr, "10.0.0.0/24" */
  char host[INET6_ADDRSTRLEN + 4];    /* "10.0.0.5/32" */
  char gw_host[INET6_ADDRSTRLEN + 4]; /* "10.0.0.1/32" */
};

static int ipam_invalid(struct cni_error *err, const char *what, size_t i) {
  return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "unusable IPAM result", "ips[%zu]: %s", i, what);
}

/* Reads the IPAM result's ips: each needs an address and a gateway of the same family; the
 * gateway is put on the host veth (as Debian's ptp does) and is the pod's next hop. */
static int parse_ips(json_t *res, struct pod_ip *ips, size_t *n, struct cni_error *err) {
  json_t *arr = json_object_get(res, "ips"), *it;
  size_t i;
  *n = 0;
  if (!json_is_array(arr) || json_array_size(arr) == 0)
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "unusable IPAM result", "the IPAM plugin returned no ips");
  if (json_array_size(arr) > MAIN_MAX_IPS) return ipam_invalid(err, "too many addresses", MAIN_MAX_IPS);
  json_array_foreach(arr, i, it) {
    struct pod_ip *p = &ips[i];
    memset(p, 0, sizeof(*p));
    json_t *a = json_object_get(it, "address"), *g = json_object_get(it, "gateway");
    if (!json_is_string(a)) return ipam_invalid(err, "no address", i);
    if (!json_is_string(g))
      return ipam_invalid(err,
                          "no gateway (tessera-cni puts the gateway on the host veth and routes the pod "
                          "through it; give the range a gateway)",
                          i);
    p->cidr = json_string_value(a);
    p->gateway = json_string_value(g);
    const char *slash = strchr(p->cidr, '/');
    if (!slash || (size_t)(slash - p->cidr) >= sizeof(p->addr)) return ipam_invalid(err, "address without prefix", i);
    memcpy(p->addr, p->cidr, (size_t)(slash - p->cidr));
    p->addr[slash - p->cidr] = '\0';
    unsigned char bin[16], gbin[16];
    int plen = atoi(slash + 1);
    p->v6 = strchr(p->addr, ':') != NULL;
    int fam = p->v6 ? AF_INET6 : AF_INET, bits = p->v6 ? 128 : 32;
    if (inet_pton(fam, p->addr, bin) != 1 || plen < 0 || plen > bits) return ipam_invalid(err, "bad address", i);
    if (inet_pton(fam, p->gateway, gbin) != 1) return ipam_invalid(err, "gateway of another family", i);
    for (int b = plen; b < bits; b++) bin[b / 8] &= (unsigned char)~(0x80 >> (b % 8));
    char net[INET6_ADDRSTRLEN];
    inet_ntop(fam, bin, net, sizeof(net));
    snprintf(p->subnet, sizeof(p->subnet), "%s/%d", net, plen);
    snprintf(p->host, sizeof(p->host), "%s/%d", p->addr, bits);
    snprintf(p->gw_host, sizeof(p->gw_host), "%s/%d", p->gateway, bits);
  }
  *n = i;
  return 0;
}

/* The spec's result: host veth, pod interface (with sandbox), ips on interface 1, routes and
 * dns as IPAM gave them. */
static int build_result(const struct cni_invocation *inv, json_t *ipam_res, const char *host_name, const char *host_mac,
                        const char *pod_mac, struct cni_output *out, struct cni_error *err) {
  json_t *o = json_object(), *ifs = json_array(), *ips = json_array();
  if (!o || !ifs || !ips) goto oom;
  json_object_set_new(o, "cniVersion", json_string(inv->conf.cni_version));
  json_array_append_new(ifs, json_pack("{s:s, s:s}", "name", host_name, "mac", host_mac));
  json_array_append_new(
      ifs, json_pack("{s:s, s:s, s:s}", "name", inv->env.ifname, "mac", pod_mac, "sandbox", inv->env.netns));
  json_object_set_new(o, "interfaces", ifs);
  ifs = NULL;
  size_t i;
  json_t *it;
  json_array_foreach(json_object_get(ipam_res, "ips"), i, it) {
    json_t *c = json_deep_copy(it);
    if (!c) goto oom;
    json_object_set_new(c, "interface", json_integer(1));
    json_array_append_new(ips, c);
  }
  json_object_set_new(o, "ips", ips);
  ips = NULL;
  json_t *routes = json_object_get(ipam_res, "routes"), *dns = json_object_get(ipam_res, "dns");
  if (json_is_array(routes)) json_object_set(o, "routes", routes);
  if (json_is_object(dns)) json_object_set(o, "dns", dns);
  char *body = json_dumps(o, JSON_INDENT(4));
  json_decref(o);
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
oom:
  if (o) json_decref(o);
  if (ifs) json_decref(ifs);
  if (ips) json_decref(ips);
  return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
}

/* Routes of the pod, the way Debian's ptp sets them: the gateway is on-link, the IPAM routes
 * (default) and the rest of the subnet go through it, so every packet leaves through the host
 * veth where the programs are. */
static int pod_routes(struct nl_sock *pod, int ifindex, json_t *ipam_res, const struct pod_ip *ips, size_t n,
                      struct cni_error *err) {
  int rc;
  for (size_t i = 0; i < n; i++) {
    if ((rc = link_route_add(pod, ifindex, ips[i].gw_host, NULL, ips[i].addr, 1, err))) return rc;
    if ((rc = link_route_add(pod, ifindex, ips[i].subnet, ips[i].gateway, ips[i].addr, 0, err))) return rc;
  }
  size_t j;
  json_t *r;
  json_array_foreach(json_object_get(ipam_res, "routes"), j, r) {
    json_t *dst = json_object_get(r, "dst"), *gw = json_object_get(r, "gw");
    if (!json_is_string(dst)) continue;
    int v6 = strchr(json_string_value(dst), ':') != NULL;
    const struct pod_ip *via = NULL;
    for (size_t i = 0; i < n && !via; i++)
      if (ips[i].v6 == v6) via = &ips[i];
    if (!via) continue; /* a route of a family the pod has no address in */
    const char *g = json_is_string(gw) ? json_string_value(gw) : via->gateway;
    if ((rc = link_route_add(pod, ifindex, json_string_value(dst), g, via->addr, 0, err))) return rc;
  }
  return 0;
}

static void write_sysctl(const char *path, const char *value) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  if (write(fd, value, strlen(value)) < 0) log_debug("sysctl %s: %s", path, strerror(errno));
  close(fd);
}

int cmd_add_main(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  struct netconf *nc = &inv->conf;
  int rc;
  if (json_object_get(nc->root, "prevResult"))
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "tessera-cni with an ipam section is the main plugin",
                         "it creates the pod's interface itself and must be the first plugin of the chain (it got a "
                         "prevResult); drop its ipam section to chain it after ptp or bridge instead");
  if ((rc = netconf_parse_labels(nc, err))) return rc;
  if ((rc = netconf_check_label_limits(nc, err))) return rc;
  if ((rc = netconf_parse_ports(nc, err))) return rc;

  char host_name[IF_NAMESIZE];
  link_host_name(inv->env.container_id, inv->env.ifname, host_name);
  const char *ipam_type = json_string_value(json_object_get(nc->ipam, "type"));
  struct nl_sock *host = NULL, *pod = NULL;
  json_t *ipam_res = NULL;
  int netns_fd = -1, veth = 0, endpoint = 0;
  struct pod_ip ips[MAIN_MAX_IPS];
  size_t n_ips = 0;

  if ((rc = link_open(NULL, &host, err)) || (rc = link_open(inv->env.netns, &pod, err))) goto done;
  netns_fd = open(inv->env.netns, O_RDONLY | O_CLOEXEC);
  if (netns_fd < 0) {
    rc = cni_error_set(err, CNI_ERR_UNKNOWN_CONTAINER, "cannot open the container's network namespace", "%s: %s",
                       inv->env.netns, strerror(errno));
    goto done;
  }
  if ((rc = ipam_exec(inv->env.path, ipam_type, "ADD", inv->stdin_data, inv->stdin_len, inv->deadline_ms, &ipam_res,
                      err)))
    goto done;
  if ((rc = parse_ips(ipam_res, ips, &n_ips, err)) || (rc = netconf_parse_result(nc, ipam_res, err))) goto undo;

  if ((rc = link_veth_create(host, host_name, inv->env.ifname, netns_fd, nc->mtu, err))) goto undo;
  veth = 1;
  int host_ifindex = 0, pod_ifindex = 0;
  char host_mac[18], pod_mac[18];
  if ((rc = tessera_link_lookup(host, host_name, &host_ifindex, host_mac, err)) ||
      (rc = tessera_link_lookup(pod, inv->env.ifname, &pod_ifindex, pod_mac, err)))
    goto undo;
  for (size_t i = 0; i < n_ips; i++) {
    if ((rc = link_addr_add(pod, pod_ifindex, ips[i].cidr, 1, err))) goto undo;
    if ((rc = link_addr_add(host, host_ifindex, ips[i].gw_host, 0, err))) goto undo;
  }

  /* The programs are attached to the host veth while both ends are down. */
  struct endpoint_create_params p = {
      .container_id = inv->env.container_id,
      .interface_name = inv->env.ifname,
      .host_interface = host_name,
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
  endpoint = 1; /* a call that timed out may still have created it */
  if ((rc = endpoint_create(&t, &p, &id, &identity, err))) {
    /* Refused as a duplicate: the endpoint that exists is not ours to delete. */
    if (rc == TSR_ERR_ENDPOINT_EXISTS) endpoint = 0;
    goto undo;
  }
  struct timespec ready;
  clock_gettime(CLOCK_REALTIME, &ready);
  log_debug("ADD main container=%s endpoint=%" PRIu64 " ready at %lld.%06ld: raising the links", inv->env.container_id,
            id, (long long)ready.tv_sec, ready.tv_nsec / 1000);

  /* Policy is in force: only now may packets flow. */
  if ((rc = link_set_up(host, host_ifindex, host_name, err)) ||
      (rc = link_set_up(pod, pod_ifindex, inv->env.ifname, err)))
    goto undo;
  for (size_t i = 0; i < n_ips; i++) {
    write_sysctl(ips[i].v6 ? "/proc/sys/net/ipv6/conf/all/forwarding" : "/proc/sys/net/ipv4/ip_forward", "1");
    if ((rc = link_route_add(host, host_ifindex, ips[i].host, NULL, NULL, 1, err))) goto undo;
  }
  if ((rc = pod_routes(pod, pod_ifindex, ipam_res, ips, n_ips, err))) goto undo;
  if ((rc = build_result(inv, ipam_res, host_name, host_mac, pod_mac, out, err))) goto undo;
  log_debug("ADD main container=%s endpoint=%" PRIu64 " identity=%" PRIu32 " host_interface=%s ips=%zu",
            inv->env.container_id, id, identity, host_name, n_ips);
  goto done;

undo : {
  /* Undo in reverse, except that the veth goes before the endpoint: its links may be up
   * already, and without the endpoint's programs they would pass anything. The error
   * reported stays the first one. */
  struct cni_error ignored;
  struct endpoint_target ct = cmd_target(inv);
  ct.deadline_ms = util_now_ms() + CLEANUP_MS;
  int existed = 0;
  if (veth && link_delete(host, host_name, &ignored)) log_debug("ADD cleanup: %s", ignored.details);
  if (endpoint && endpoint_delete(&ct, inv->env.container_id, inv->env.ifname, &existed, &ignored))
    log_debug("ADD cleanup: DeleteEndpoint: %s: %s", ignored.msg, ignored.details);
  if (ipam_exec(inv->env.path, ipam_type, "DEL", inv->stdin_data, inv->stdin_len, util_now_ms() + CLEANUP_MS, NULL,
                &ignored))
    log_debug("ADD cleanup: IPAM DEL: %s: %s", ignored.msg, ignored.details);
  cni_output_free(out);
}
done:
  if (ipam_res) json_decref(ipam_res);
  nc->prev_result = NULL; /* it pointed into ipam_res */
  if (netns_fd >= 0) close(netns_fd);
  link_close(pod);
  link_close(host);
  return rc;
}

int cmd_del_main(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  (void)out;
  int existed = 0, rc;
  /* The veth first: without the endpoint's programs it would pass anything, so it goes
   * before them. Then the endpoint (or its queued deletion, which the endpoint service
   * runs before it serves an ADD again), and only then the addresses: they must not go
   * back to the pool while the endpoint holds them. */
  char host_name[IF_NAMESIZE];
  link_host_name(inv->env.container_id, inv->env.ifname, host_name);
  struct nl_sock *host = NULL;
  if ((rc = link_open(NULL, &host, err))) return rc;
  rc = link_delete(host, host_name, err); /* takes the pod's end with it */
  link_close(host);
  if (rc) return rc;
  if ((rc = cmd_del_endpoint(inv, &existed, err))) return rc;
  const char *ipam_type = json_string_value(json_object_get(inv->conf.ipam, "type"));
  if ((rc = ipam_exec(inv->env.path, ipam_type, "DEL", inv->stdin_data, inv->stdin_len, inv->deadline_ms, NULL, err)))
    return rc;
  log_debug("DEL main container=%s ifname=%s existed=%d host_interface=%s", inv->env.container_id, inv->env.ifname,
            existed, host_name);
  return rc;
}
