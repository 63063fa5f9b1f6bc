/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Source validation of what leaves the container: an IP packet must carry
 * one of the endpoint's own addresses (endpoint_info.ips) as its source, an
 * ARP packet one of its IPv4 addresses (or 0.0.0.0, an RFC 5227 probe) as
 * its sender. Checked before conntrack, so that no flow state, neither
 * established nor reply, is ever reachable with a forged source. IPv6
 * link-local and unspecified sources are accepted for neighbour discovery
 * and MLD only, which use them before (or without) a global address; a
 * neighbour advertisement, like ARP, may announce only the endpoint's own or
 * a link-local address.
 */
#ifndef TESSERA_SOURCE_H
#define TESSERA_SOURCE_H

#include "maps.h"
#include "packet.h"

/* Whether `addr` (IPv4: its first 4 bytes) is one of the endpoint's addresses. */
static __always_inline int source_is_own(const struct endpoint_info *ep, __u8 family,
					 const __u8 *addr)
{
	__u32 a[4];
	int i;

	__builtin_memcpy(a, addr, 16);
#pragma unroll
	for (i = 0; i < TESSERA_EP_MAX_IPS; i++) {
		const struct endpoint_ip *ip = &ep->ips[i];
		__u32 b[4];

		if ((__u32)i >= ep->nr_ips)
			break;
		if (ip->family != family)
			continue;
		__builtin_memcpy(b, ip->addr, 16);
		if (a[0] != b[0])
			continue;
		if (family == TESSERA_FAMILY_V4 || (a[1] == b[1] && a[2] == b[2] && a[3] == b[3]))
			return 1;
	}
	return 0;
}

/* Whether the IP packet `f` leaving the container has a source it may use. */
static __always_inline int source_valid(const struct endpoint_info *ep, const struct flow *f)
{
	if (!ep->nr_ips)
		return 0;
	if (source_is_own(ep, f->family, f->saddr))
		return 1;
	return f->family == TESSERA_FAMILY_V6 && f->icmp6_nd && ipv6_is_local_only(f->saddr);
}

#define TESSERA_ICMP6_ROUTER_ADVERT 134
#define TESSERA_ICMP6_NEIGHBOUR_ADVERT 136
#define TESSERA_ICMP6_REDIRECT 137

/* Whether neighbour discovery leaving the container announces only what it
 * may: a neighbour advertisement's target (RFC 4861 §4.4) is, like an ARP
 * sender, one of the endpoint's addresses or a link-local one. Other ND and
 * MLD messages announce nothing beyond their (validated) source. */
static __always_inline int source_nd_valid(struct __sk_buff *skb, const struct endpoint_info *ep,
					   const struct flow *f)
{
	__u8 buf[16];
	__u8 target[16] __attribute__((aligned(8)));
	const __u8 *hdr;

	if (!f->icmp6_nd)
		return 1;
	hdr = packet_bytes(skb, f->l4_off, buf, 1);
	if (!hdr)
		return 0;
	/* A pod is a host, not a router: its router advertisements and redirects
	 * would make its neighbours on a bridge route through it (RFC 4861 §6, §8). */
	if (hdr[0] == TESSERA_ICMP6_ROUTER_ADVERT || hdr[0] == TESSERA_ICMP6_REDIRECT)
		return 0;
	if (hdr[0] != TESSERA_ICMP6_NEIGHBOUR_ADVERT)
		return 1;
	/* The target must lie within the declared length: past it, trailing bytes
	 * of the frame would be checked while the stack reads a truncated message. */
	hdr = f->l4_len >= 8 + sizeof(buf) ? packet_bytes(skb, f->l4_off + 8, buf, sizeof(buf)) : 0;
	if (!hdr)
		return 0; /* truncated: no target to check */
	__builtin_memcpy(target, hdr, 16);
	return source_is_own(ep, TESSERA_FAMILY_V6, target) || ipv6_is_link_local(target);
}

/* Whether a new flow coming in is addressed to the endpoint: one of its own
 * addresses, a link-local IPv6 address (its own, not in the endpoint map), or a
 * multicast or broadcast group. On a bridge, a neighbour that claims another
 * pod's MAC address makes the bridge deliver that pod's traffic here; judging
 * it by this endpoint's ingress policy would hand it over. */
static __always_inline int destination_is_own(const struct endpoint_info *ep, const struct flow *f)
{
	if (f->family == TESSERA_FAMILY_V6) {
		if (ipv6_is_link_local(f->daddr) || f->daddr[0] == 0xff)
			return 1;
	} else {
		if ((f->daddr[0] & 0xf0) == 0xe0 || /* 224.0.0.0/4 */
		    (f->daddr[0] == 0xff && f->daddr[1] == 0xff && f->daddr[2] == 0xff &&
		     f->daddr[3] == 0xff))
			return 1;
	}
	return source_is_own(ep, f->family, f->daddr);
}

/* Whether an ARP packet leaving the container may announce `sender` (its
 * sender protocol address, network order). */
static __always_inline int source_arp_valid(const struct endpoint_info *ep, __u32 sender)
{
	__u8 spa[16] __attribute__((aligned(4))) = {};

	if (sender == 0)
		return 1; /* an RFC 5227 probe: announces nothing */
	__builtin_memcpy(spa, &sender, 4);
	return source_is_own(ep, TESSERA_FAMILY_V4, spa);
}

#endif /* TESSERA_SOURCE_H */
