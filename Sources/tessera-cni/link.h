/* Network interfaces through netlink (libnl-route-3): finding the host side of a pod's veth,
 * and creating, addressing and raising the veth pair in main-plugin mode. */
#ifndef TESSERA_LINK_H
#define TESSERA_LINK_H

#include <net/if.h>

#include "cni_error.h"

struct nl_sock;

#define LINK_HOST_PREFIX "tsr"

/* The host veth's name in main-plugin mode: "tsr" and 12 hex digits of a 64-bit FNV-1a hash of
 * container id and interface name (like Cilium's lxc<hash>), 15 characters, so DEL finds it
 * again from its arguments alone. */
void link_host_name(const char *container_id, const char *ifname, char out[IF_NAMESIZE]);

/* A route socket bound to the network namespace at netns_path (NULL: the plugin's own).
 * A netlink socket stays in the namespace it was created in, so only its creation enters
 * the pod's namespace; every later call on it acts there. Code 3 (unknown container) when
 * the namespace cannot be opened. */
int link_open(const char *netns_path, struct nl_sock **out, struct cni_error *err);
void link_close(struct nl_sock *s);

struct link_peer {
  int pod_ifindex;             /* CNI_IFNAME inside the pod's namespace */
  int host_ifindex;            /* its veth peer in the plugin's namespace */
  char host_name[IF_NAMESIZE]; /* the peer's name there */
};

/* The host side of the pod's interface, by fact: CNI_IFNAME must be a veth inside netns whose
 * peer (IFLA_LINK) is a veth in the plugin's namespace pointing back at it. Anything else
 * (macvlan, ipvlan, host-device, a missing interface, a peer in a third namespace) gives
 * TSR_ERR_NO_HOST_VETH with the reason. */
int link_find_host_peer(struct nl_sock *pod, struct nl_sock *host, const char *ifname, struct link_peer *out,
                        struct cni_error *err);

/* Creates a veth pair, both ends down: host_name in the plugin's namespace, pod_name in the
 * namespace netns_fd refers to. mtu 0 keeps the kernel's default. */
int link_veth_create(struct nl_sock *host, const char *host_name, const char *pod_name, int netns_fd, int mtu,
                     struct cni_error *err);

/* ifindex and MAC ("aa:bb:..") of name; TSR_ERR_LINK when it does not exist. */
int tessera_link_lookup(struct nl_sock *s, const char *name, int *ifindex, char mac[18], struct cni_error *err);

/* Deletes name; 0 when it is already gone. */
int link_delete(struct nl_sock *s, const char *name, struct cni_error *err);

int link_set_up(struct nl_sock *s, int ifindex, const char *name, struct cni_error *err);
/* Sets the link down (no packet crosses it any more). */
int link_set_down(struct nl_sock *s, int ifindex, const char *name, struct cni_error *err);

/* Adds cidr ("10.0.0.5/24", "fd00::5/64") to ifindex. IPv6 addresses are added without
 * duplicate address detection, so they are usable the moment the link comes up. With
 * no_prefix_route the kernel adds no route to the address's subnet (the caller routes it). */
int link_addr_add(struct nl_sock *s, int ifindex, const char *cidr, int no_prefix_route, struct cni_error *err);

/* 1 when ifindex carries the address of cidr (prefix length ignored), 0 when not, <0 error. */
int link_addr_present(struct nl_sock *s, int ifindex, const char *cidr, struct cni_error *err);

/* Adds (or replaces) a route to dst ("0.0.0.0/0", "10.0.0.1/32") through ifindex, via gw
 * when gw is not NULL, with preferred source src when not NULL. link_scope: RT_SCOPE_LINK. */
int link_route_add(struct nl_sock *s, int ifindex, const char *dst, const char *gw, const char *src, int link_scope,
                   struct cni_error *err);

#endif
