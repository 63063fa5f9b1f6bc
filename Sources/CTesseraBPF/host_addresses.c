/*
 * The node's own addresses, read and watched through rtnetlink with libnl
 * (docs/architecture.md §5, "the node's addresses"): the prefixes of the local
 * routing table, which is where the kernel decides that a packet is for the
 * node itself. A listing asks the kernel for one device's routes only (a
 * strictly checked dump), so its cost does not grow with the node's devices:
 * a node with a thousand pods has a thousand host-side veths, and getifaddrs(3)
 * over all of them (links included) took milliseconds per pod.
 */
#include "tessera_bpf_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/rtnetlink.h>
#include <netlink/attr.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>

#ifndef NETLINK_GET_STRICT_CHK
#define NETLINK_GET_STRICT_CHK 12
#endif

/* Room for a burst of changes (a thousand veths and their routes coming up) before the kernel drops
 * notifications; a drop is noticed (ENOBUFS) and answered with a full listing. */
#define WATCH_BUFFER_BYTES (4 << 20)

struct tessera_host_address_watch {
	struct nl_sock *sock;
};

struct delivery {
	tessera_host_address_fn fn;
	void *context;
	int ifindex; /* 0: every device */
};

static int negative_errno(int nl_error)
{
	switch (-nl_error) {
	case NLE_NOMEM:
		return -ENOBUFS; /* libnl reports a dropped notification as NOMEM */
	case NLE_AGAIN:
		return -EAGAIN;
	case NLE_PERM:
		return -EPERM;
	case NLE_INVAL:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/* One route of the local table that makes the kernel deliver to the node itself:
 * its addresses (local), broadcast addresses, IPv6 subnet-router anycast and
 * multicast. A broadcast or anycast destination reaches the node's sockets as
 * surely as its own address, so policy must see it as the node, not as world. */
static int deliver(struct nl_msg *msg, void *arg)
{
	const struct delivery *d = arg;
	struct nlmsghdr *hdr = nlmsg_hdr(msg);
	struct nlattr *tb[RTA_MAX + 1];
	struct tessera_host_address address = {0};
	const struct rtmsg *rtm;
	uint32_t table;
	size_t size;

	if (hdr->nlmsg_type != RTM_NEWROUTE && hdr->nlmsg_type != RTM_DELROUTE)
		return NL_OK;
	if (nlmsg_parse(hdr, sizeof(*rtm), tb, RTA_MAX, NULL) < 0)
		return NL_OK;
	rtm = nlmsg_data(hdr);
	table = tb[RTA_TABLE] ? nla_get_u32(tb[RTA_TABLE]) : rtm->rtm_table;
	if (table != RT_TABLE_LOCAL)
		return NL_OK;
	switch (rtm->rtm_type) {
	case RTN_LOCAL:
	case RTN_BROADCAST:
	case RTN_ANYCAST:
	case RTN_MULTICAST:
		break;
	default:
		return NL_OK;
	}
	if (rtm->rtm_family == AF_INET)
		size = 4;
	else if (rtm->rtm_family == AF_INET6)
		size = 16;
	else
		return NL_OK;
	/* A local default route (TPROXY setups put one in a table of their own) would
	 * make every address the node's: never taken from the local table. */
	if (rtm->rtm_dst_len == 0 || rtm->rtm_dst_len > size * 8 ||
	    (tb[RTA_DST] && (size_t)nla_len(tb[RTA_DST]) != size))
		return NL_OK;
	address.ifindex = tb[RTA_OIF] ? (int)nla_get_u32(tb[RTA_OIF]) : 0;
	if (d->ifindex && address.ifindex != d->ifindex)
		return NL_OK; /* a kernel that ignored the dump's filter */
	address.family = rtm->rtm_family;
	address.prefix_length = rtm->rtm_dst_len;
	address.added = hdr->nlmsg_type == RTM_NEWROUTE;
	if (tb[RTA_DST])
		memcpy(address.bytes, nla_data(tb[RTA_DST]), size);
	d->fn(&address, d->context);
	return NL_OK;
}

int tessera_host_addresses_list(int ifindex, tessera_host_address_fn fn, void *context)
{
	struct delivery d = {.fn = fn, .context = context, .ifindex = ifindex};
	struct rtmsg request = {.rtm_family = AF_UNSPEC, .rtm_table = RT_TABLE_LOCAL};
	struct nl_sock *sock = nl_socket_alloc();
	struct nl_msg *msg = NULL;
	int one = 1, err;

	if (!sock)
		return -ENOMEM;
	if ((err = nl_connect(sock, NETLINK_ROUTE)) < 0)
		goto out;
	/* The kernel filters a strictly checked dump by table and device; without
	 * the option (an old kernel) it sends every route and deliver() filters. */
	(void)setsockopt(nl_socket_get_fd(sock), SOL_NETLINK, NETLINK_GET_STRICT_CHK, &one,
			 sizeof(one));
	nl_socket_modify_cb(sock, NL_CB_VALID, NL_CB_CUSTOM, deliver, &d);
	if (!(msg = nlmsg_alloc_simple(RTM_GETROUTE, NLM_F_DUMP))) {
		err = -NLE_NOMEM;
		goto out;
	}
	if ((err = nlmsg_append(msg, &request, sizeof(request), NLMSG_ALIGNTO)) < 0 ||
	    (ifindex && (err = nla_put_u32(msg, RTA_OIF, (uint32_t)ifindex)) < 0))
		goto out;
	if ((err = nl_send_auto(sock, msg)) < 0)
		goto out;
	err = nl_recvmsgs_default(sock);
out:
	nlmsg_free(msg);
	nl_socket_free(sock);
	return err < 0 ? negative_errno(err) : 0;
}

int tessera_host_address_watch_open(struct tessera_host_address_watch **out)
{
	struct tessera_host_address_watch *w = calloc(1, sizeof(*w));
	int err;

	*out = NULL;
	if (!w || !(w->sock = nl_socket_alloc())) {
		free(w);
		return -ENOMEM;
	}
	nl_socket_disable_seq_check(w->sock);
	if ((err = nl_connect(w->sock, NETLINK_ROUTE)) < 0 ||
	    (err = nl_socket_add_memberships(w->sock, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, 0)) <
		    0 ||
	    (err = nl_socket_set_nonblocking(w->sock)) < 0) {
		tessera_host_address_watch_close(w);
		return negative_errno(err);
	}
	(void)nl_socket_set_buffer_size(w->sock, WATCH_BUFFER_BYTES, 0);
	*out = w;
	return 0;
}

int tessera_host_address_watch_read(struct tessera_host_address_watch *w, int timeout_ms,
				    tessera_host_address_fn fn, void *context)
{
	struct delivery d = {.fn = fn, .context = context};
	struct pollfd p = {.fd = nl_socket_get_fd(w->sock), .events = POLLIN};
	int ready = poll(&p, 1, timeout_ms), err;

	if (ready < 0)
		return errno == EINTR ? 0 : -errno;
	if (ready == 0)
		return 0;
	nl_socket_modify_cb(w->sock, NL_CB_VALID, NL_CB_CUSTOM, deliver, &d);
	for (;;) {
		err = nl_recvmsgs_default(w->sock);
		if (err == -NLE_AGAIN)
			return 0;
		if (err < 0)
			return negative_errno(err);
	}
}

void tessera_host_address_watch_close(struct tessera_host_address_watch *w)
{
	if (!w)
		return;
	nl_socket_free(w->sock);
	free(w);
}
