#include "link.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/rtnetlink.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

void link_host_name(const char *container_id, const char *ifname, char out[IF_NAMESIZE]) {
  uint64_t h = 0xcbf29ce484222325ULL;
  const char *parts[] = {container_id, "/", ifname};
  for (size_t i = 0; i < 3; i++)
    for (const unsigned char *p = (const unsigned char *)parts[i]; *p; p++) {
      h ^= *p;
      h *= 0x100000001b3ULL;
    }
  snprintf(out, IF_NAMESIZE, LINK_HOST_PREFIX "%012llx", (unsigned long long)(h & 0xffffffffffffULL));
}

static int nl_fail(struct cni_error *err, const char *what, const char *name, int nlerr) {
  return cni_error_set(err, TSR_ERR_LINK, "cannot set up the pod's interface", "%s %s: %s", what, name,
                       nl_geterror(nlerr));
}

static int connect_here(struct nl_sock **out) {
  struct nl_sock *s = nl_socket_alloc();
  if (!s) return -NLE_NOMEM;
  int rc = nl_connect(s, NETLINK_ROUTE);
  if (rc < 0) {
    nl_socket_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

int link_open(const char *netns_path, struct nl_sock **out, struct cni_error *err) {
  *out = NULL;
  if (!netns_path) {
    int rc = connect_here(out);
    return rc < 0 ? nl_fail(err, "netlink socket in", "the host namespace", rc) : 0;
  }
  int target = open(netns_path, O_RDONLY | O_CLOEXEC);
  if (target < 0)
    return cni_error_set(err, CNI_ERR_UNKNOWN_CONTAINER, "cannot open the container's network namespace", "%s: %s",
                         netns_path, strerror(errno));
  int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) {
    int e = errno;
    close(target);
    return cni_error_set(err, CNI_ERR_INTERNAL, "cannot open the plugin's network namespace", "/proc/self/ns/net: %s",
                         strerror(e));
  }
  /* The plugin is single-threaded, so switching the thread's namespace for the socket()
   * call switches nothing else; the socket keeps the pod's namespace afterwards. */
  if (setns(target, CLONE_NEWNET) != 0) {
    int e = errno;
    close(target);
    close(self);
    return cni_error_set(err, CNI_ERR_UNKNOWN_CONTAINER, "cannot enter the container's network namespace",
                         "setns %s: %s", netns_path, strerror(e));
  }
  int rc = connect_here(out);
  if (setns(self, CLONE_NEWNET) != 0) {
    /* Carrying on in the pod's namespace would configure the wrong host: stop here. */
    fprintf(stderr, "tessera-cni: cannot return to the host network namespace: %s\n", strerror(errno));
    abort();
  }
  close(target);
  close(self);
  return rc < 0 ? nl_fail(err, "netlink socket in", netns_path, rc) : 0;
}

void link_close(struct nl_sock *s) {
  if (s) nl_socket_free(s);
}

static int is_veth(struct rtnl_link *l) {
  const char *kind = rtnl_link_get_type(l);
  return kind && strcmp(kind, "veth") == 0;
}

int link_find_host_peer(struct nl_sock *pod, struct nl_sock *host, const char *ifname, struct link_peer *out,
                        struct cni_error *err) {
  memset(out, 0, sizeof(*out));
  struct rtnl_link *c = NULL, *h = NULL;
  int rc = rtnl_link_get_kernel(pod, 0, ifname, &c);
  if (rc < 0)
    return cni_error_set(err, TSR_ERR_NO_HOST_VETH, "container interface not found",
                         "%s inside the container's namespace: %s", ifname, nl_geterror(rc));
  const char *kind = rtnl_link_get_type(c);
  if (!is_veth(c)) {
    rc = cni_error_set(err, TSR_ERR_NO_HOST_VETH,
                       "container interface is not a veth: tessera-cni needs a host-side veth peer",
                       "%s is of kind %s; policy is enforced on the host end of a veth pair, so macvlan, ipvlan, "
                       "host-device and similar interfaces cannot be used (use ptp, bridge, or tessera-cni as the "
                       "main plugin)",
                       ifname, kind ? kind : "(none)");
    goto out;
  }
  out->pod_ifindex = rtnl_link_get_ifindex(c);
  int peer = rtnl_link_get_link(c);
  if (peer <= 0) {
    rc = cni_error_set(err, TSR_ERR_NO_HOST_VETH, "container veth has no peer", "%s reports no IFLA_LINK", ifname);
    goto out;
  }
  rc = rtnl_link_get_kernel(host, peer, NULL, &h);
  if (rc < 0) {
    rc = cni_error_set(err, TSR_ERR_NO_HOST_VETH, "the container veth's peer is not in the plugin's namespace",
                       "%s's peer ifindex %d: %s", ifname, peer, nl_geterror(rc));
    goto out;
  }
  /* The same ifindex may name an unrelated device here when the peer lives in a third
   * namespace: accept it only if it is a veth whose own peer is the container's interface. */
  if (!is_veth(h) || rtnl_link_get_link(h) != out->pod_ifindex) {
    rc = cni_error_set(err, TSR_ERR_NO_HOST_VETH, "the container veth's peer is not in the plugin's namespace",
                       "ifindex %d here is %s (%s), not the peer of %s", peer, rtnl_link_get_name(h),
                       rtnl_link_get_type(h) ? rtnl_link_get_type(h) : "no kind", ifname);
    goto out;
  }
  out->host_ifindex = peer;
  util_strlcpy(out->host_name, rtnl_link_get_name(h), sizeof(out->host_name));
  rc = 0;
out:
  if (c) rtnl_link_put(c);
  if (h) rtnl_link_put(h);
  return rc;
}

int link_veth_create(struct nl_sock *host, const char *host_name, const char *pod_name, int netns_fd, int mtu,
                     struct cni_error *err) {
  struct rtnl_link *l = rtnl_link_veth_alloc();
  if (!l) return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  struct rtnl_link *peer = rtnl_link_veth_get_peer(l);
  rtnl_link_set_name(l, host_name);
  rtnl_link_set_name(peer, pod_name);
  rtnl_link_set_ns_fd(peer, netns_fd);
  if (mtu > 0) {
    rtnl_link_set_mtu(l, (unsigned)mtu);
    rtnl_link_set_mtu(peer, (unsigned)mtu);
  }
  int rc = rtnl_link_add(host, l, NLM_F_CREATE | NLM_F_EXCL);
  rtnl_link_put(peer);
  rtnl_link_veth_release(l);
  if (rc < 0) {
    if (rc == -NLE_EXIST)
      return cni_error_set(err, TSR_ERR_LINK, "cannot create the pod's veth pair",
                           "%s (host) or %s (container) exists already; run DEL for the old attachment first",
                           host_name, pod_name);
    return nl_fail(err, "create veth", host_name, rc);
  }
  return 0;
}

int tessera_link_lookup(struct nl_sock *s, const char *name, int *ifindex, char mac[18], struct cni_error *err) {
  struct rtnl_link *l = NULL;
  int rc = rtnl_link_get_kernel(s, 0, name, &l);
  if (rc < 0) return nl_fail(err, "look up", name, rc);
  *ifindex = rtnl_link_get_ifindex(l);
  if (mac) {
    struct nl_addr *a = rtnl_link_get_addr(l);
    mac[0] = '\0';
    if (a) nl_addr2str(a, mac, 18);
  }
  rtnl_link_put(l);
  return 0;
}

int link_delete(struct nl_sock *s, const char *name, struct cni_error *err) {
  struct rtnl_link *l = rtnl_link_alloc();
  if (!l) return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  rtnl_link_set_name(l, name);
  int rc = rtnl_link_delete(s, l);
  rtnl_link_put(l);
  if (rc < 0 && rc != -NLE_NODEV && rc != -NLE_OBJ_NOTFOUND) return nl_fail(err, "delete", name, rc);
  return 0;
}

int link_set_up(struct nl_sock *s, int ifindex, const char *name, struct cni_error *err) {
  struct rtnl_link *orig = rtnl_link_alloc(), *change = rtnl_link_alloc();
  int rc = -NLE_NOMEM;
  if (orig && change) {
    rtnl_link_set_ifindex(orig, ifindex);
    rtnl_link_set_flags(change, IFF_UP);
    rc = rtnl_link_change(s, orig, change, 0);
  }
  if (orig) rtnl_link_put(orig);
  if (change) rtnl_link_put(change);
  return rc < 0 ? nl_fail(err, "set up", name, rc) : 0;
}

int link_set_down(struct nl_sock *s, int ifindex, const char *name, struct cni_error *err) {
  struct rtnl_link *orig = rtnl_link_alloc(), *change = rtnl_link_alloc();
  int rc = -NLE_NOMEM;
  if (orig && change) {
    rtnl_link_set_ifindex(orig, ifindex);
    rtnl_link_unset_flags(change, IFF_UP);
    rc = rtnl_link_change(s, orig, change, 0);
  }
  if (orig) rtnl_link_put(orig);
  if (change) rtnl_link_put(change);
  return rc < 0 ? nl_fail(err, "set down", name, rc) : 0;
}

static int parse_addr(const char *text, struct nl_addr **out, struct cni_error *err) {
  int rc = nl_addr_parse(text, AF_UNSPEC, out);
  if (rc < 0) return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid address", "%.64s: %s", text, nl_geterror(rc));
  return 0;
}

int link_addr_add(struct nl_sock *s, int ifindex, const char *cidr, int no_prefix_route, struct cni_error *err) {
  struct nl_addr *local = NULL;
  int rc = parse_addr(cidr, &local, err);
  if (rc) return rc;
  struct rtnl_addr *a = rtnl_addr_alloc();
  if (!a) {
    nl_addr_put(local);
    return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  }
  rtnl_addr_set_ifindex(a, ifindex);
  rtnl_addr_set_family(a, nl_addr_get_family(local));
  rtnl_addr_set_local(a, local);
  unsigned flags = no_prefix_route ? IFA_F_NOPREFIXROUTE : 0;
  if (nl_addr_get_family(local) == AF_INET6) flags |= IFA_F_NODAD;
  if (flags) rtnl_addr_set_flags(a, flags);
  rc = rtnl_addr_add(s, a, 0);
  rtnl_addr_put(a);
  nl_addr_put(local);
  if (rc < 0 && rc != -NLE_EXIST) return nl_fail(err, "add address", cidr, rc);
  return 0;
}

int link_addr_present(struct nl_sock *s, int ifindex, const char *cidr, struct cni_error *err) {
  struct nl_addr *want = NULL;
  int rc = parse_addr(cidr, &want, err);
  if (rc) return -rc;
  struct nl_cache *cache = NULL;
  rc = rtnl_addr_alloc_cache(s, &cache);
  if (rc < 0) {
    nl_addr_put(want);
    return -nl_fail(err, "list addresses of ifindex", "", rc);
  }
  int found = 0;
  for (struct nl_object *o = nl_cache_get_first(cache); o && !found; o = nl_cache_get_next(o)) {
    struct rtnl_addr *a = (struct rtnl_addr *)o;
    struct nl_addr *l = rtnl_addr_get_local(a);
    found = rtnl_addr_get_ifindex(a) == ifindex && l && nl_addr_get_family(l) == nl_addr_get_family(want) &&
            nl_addr_get_len(l) == nl_addr_get_len(want) &&
            memcmp(nl_addr_get_binary_addr(l), nl_addr_get_binary_addr(want), nl_addr_get_len(l)) == 0;
  }
  nl_cache_free(cache);
  nl_addr_put(want);
  return found;
}

int link_route_add(struct nl_sock *s, int ifindex, const char *dst, const char *gw, const char *src, int link_scope,
                   struct cni_error *err) {
  struct nl_addr *d = NULL, *g = NULL, *p = NULL;
  struct rtnl_route *r = NULL;
  int rc = parse_addr(dst, &d, err);
  if (!rc && gw) rc = parse_addr(gw, &g, err);
  if (!rc && src) rc = parse_addr(src, &p, err);
  if (rc) goto out;
  r = rtnl_route_alloc();
  struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
  if (!r || !nh) {
    if (nh) rtnl_route_nh_free(nh);
    rc = cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
    goto out;
  }
  rtnl_route_set_family(r, (uint8_t)nl_addr_get_family(d));
  rtnl_route_set_dst(r, d);
  rtnl_route_set_table(r, RT_TABLE_MAIN);
  rtnl_route_set_protocol(r, RTPROT_BOOT);
  rtnl_route_set_type(r, RTN_UNICAST);
  rtnl_route_set_scope(r, (uint8_t)(link_scope ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE));
  if (p) rtnl_route_set_pref_src(r, p);
  rtnl_route_nh_set_ifindex(nh, ifindex);
  if (g) rtnl_route_nh_set_gateway(nh, g);
  rtnl_route_add_nexthop(r, nh);
  int nrc = rtnl_route_add(s, r, NLM_F_CREATE | NLM_F_REPLACE);
  rc = nrc < 0 ? nl_fail(err, "add route to", dst, nrc) : 0;
out:
  if (r) rtnl_route_put(r);
  if (d) nl_addr_put(d);
  if (g) nl_addr_put(g);
  if (p) nl_addr_put(p);
  return rc;
}
