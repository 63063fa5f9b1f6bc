/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Parses the L3/L4 headers of one packet into a `struct flow`.
 *
 * Headers in the linear part of the skb (where the stack puts them; always
 * for BPF_PROG_TEST_RUN) are read in place with direct packet access; a
 * header that is not (a non-linear skb) is copied with bpf_skb_load_bytes,
 * which reads any part of the packet. Both see the same bytes, so the result
 * never depends on the skb's layout; the helper call costs ~15 ns a header.
 */
#ifndef TESSERA_PACKET_H
#define TESSERA_PACKET_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps_types.h"

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
#define TESSERA_NEXTHDR_HOP 0
#define TESSERA_NEXTHDR_ROUTING 43
#define TESSERA_NEXTHDR_FRAGMENT 44
#define TESSERA_NEXTHDR_AUTH 51
#define TESSERA_NEXTHDR_DEST 60
#define TESSERA_IPV6_MAX_EXT_HEADERS 4

#define TESSERA_TCP_FIN 0x01
#define TESSERA_TCP_SYN 0x02
#define TESSERA_TCP_RST 0x04
#define TESSERA_TCP_ACK 0x10

#define TESSERA_ICMP_ECHO_REPLY 0
#define TESSERA_ICMP_ECHO_REQUEST 8
#define TESSERA_ICMP6_ECHO_REQUEST 128
#define TESSERA_ICMP6_ECHO_REPLY 129

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IP = 1, /* ARP and friends: not ours to judge */
	PARSE_INVALID = 2,
};

struct flow {
	__u8 family;
	__u8 proto;
	__u8 nonfirst_fragment; /* no L4 header in this packet */
	__u8 tcp_flags;
	__u8 icmp6_nd; /* neighbour discovery or MLD: always passes */
	__u8 pad[3];
	/* 8-byte aligned: conntrack reads them as 64-bit words. */
	__u8 saddr[16] __attribute__((aligned(8)));
	__u8 daddr[16] __attribute__((aligned(8)));
	__u16 sport; /* conntrack ports, host order */
	__u16 dport;
	__u16 policy_port; /* destination port for TCP/UDP/SCTP, 0 for portless protocols */
	__u16 pad2;
};

/* Points at `len` bytes at `off` in the packet: in place when they are in
 * the linear data, else copied into `buf`. NULL when the packet is shorter. */
static __always_inline const void *packet_bytes(struct __sk_buff *skb, __u32 off, void *buf, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	/* `off` is at most a few hundred bytes (IP header lengths are bounded),
	 * which the verifier needs to know to accept data + off. */
	if (off <= 0xffff && data + off + len <= data_end)
		return data + off;
	if (bpf_skb_load_bytes(skb, off, buf, len) < 0)
		return 0;
	return buf;
}

static __always_inline int parse_l4(struct __sk_buff *skb, struct flow *f, __u32 off)
{
	if (f->nonfirst_fragment)
		return PARSE_OK;

	switch (f->proto) {
	case IPPROTO_TCP: {
		__u8 buf[14];
		const __u8 *hdr = packet_bytes(skb, off, buf, sizeof(buf));
		if (!hdr)
			return PARSE_INVALID;
		f->sport = ((__u16)hdr[0] << 8) | hdr[1];
		f->dport = ((__u16)hdr[2] << 8) | hdr[3];
		f->tcp_flags = hdr[13];
		f->policy_port = f->dport;
		return PARSE_OK;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__u8 buf[4];
		const __u8 *hdr = packet_bytes(skb, off, buf, sizeof(buf));
		if (!hdr)
			return PARSE_INVALID;
		f->sport = ((__u16)hdr[0] << 8) | hdr[1];
		f->dport = ((__u16)hdr[2] << 8) | hdr[3];
		f->policy_port = f->dport;
		return PARSE_OK;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 buf[8];
		const __u8 *hdr = packet_bytes(skb, off, buf, sizeof(buf));
		__u16 id;
		__u8 type;
		if (!hdr)
			return PARSE_INVALID;
		type = hdr[0];
		id = ((__u16)hdr[4] << 8) | hdr[5];
		/* Echo request and reply share the identifier: put it in the
		 * source port of a request and the destination port of a reply
		 * so that the reply is the request's reverse tuple. */
		if ((f->proto == IPPROTO_ICMP && type == TESSERA_ICMP_ECHO_REQUEST) ||
		    (f->proto == IPPROTO_ICMPV6 && type == TESSERA_ICMP6_ECHO_REQUEST))
			f->sport = id;
		else if ((f->proto == IPPROTO_ICMP && type == TESSERA_ICMP_ECHO_REPLY) ||
			 (f->proto == IPPROTO_ICMPV6 && type == TESSERA_ICMP6_ECHO_REPLY))
			f->dport = id;
		/* 130-132 and 143: MLD; 133-137: router/neighbour discovery. */
		if (f->proto == IPPROTO_ICMPV6 &&
		    ((type >= 130 && type <= 137) || type == 143))
			f->icmp6_nd = 1;
		return PARSE_OK;
	}
	default:
		return PARSE_OK; /* other protocols: no ports */
	}
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct flow *f)
{
	struct iphdr buf;
	const struct iphdr *ip = packet_bytes(skb, ETH_HLEN, &buf, sizeof(buf));
	__u32 hlen;

	if (!ip)
		return PARSE_INVALID;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_INVALID;
	hlen = ip->ihl * 4;
	f->family = TESSERA_FAMILY_V4;
	f->proto = ip->protocol;
	__builtin_memcpy(f->saddr, &ip->saddr, 4);
	__builtin_memcpy(f->daddr, &ip->daddr, 4);
	if (bpf_ntohs(ip->frag_off) & 0x1fff)
		f->nonfirst_fragment = 1;
	return parse_l4(skb, f, ETH_HLEN + hlen);
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, struct flow *f)
{
	struct ipv6hdr buf;
	const struct ipv6hdr *ip6 = packet_bytes(skb, ETH_HLEN, &buf, sizeof(buf));
	__u32 off = ETH_HLEN + sizeof(struct ipv6hdr);
	__u8 nexthdr;
	int i;

	if (!ip6)
		return PARSE_INVALID;
	if (ip6->version != 6)
		return PARSE_INVALID;
	f->family = TESSERA_FAMILY_V6;
	__builtin_memcpy(f->saddr, &ip6->saddr, 16);
	__builtin_memcpy(f->daddr, &ip6->daddr, 16);
	nexthdr = ip6->nexthdr;

	/* The common case, no extension header, skips the loop entirely. */
#pragma unroll
	for (i = 0; i < TESSERA_IPV6_MAX_EXT_HEADERS; i++) {
		__u8 extbuf[4];
		const __u8 *ext;

		if (nexthdr != TESSERA_NEXTHDR_HOP && nexthdr != TESSERA_NEXTHDR_ROUTING &&
		    nexthdr != TESSERA_NEXTHDR_FRAGMENT && nexthdr != TESSERA_NEXTHDR_AUTH &&
		    nexthdr != TESSERA_NEXTHDR_DEST)
			break;
		ext = packet_bytes(skb, off, extbuf, sizeof(extbuf));
		if (!ext)
			return PARSE_INVALID;
		if (nexthdr == TESSERA_NEXTHDR_FRAGMENT) {
			if ((((__u16)ext[2] << 8) | ext[3]) & 0xfff8)
				f->nonfirst_fragment = 1;
			off += 8;
		} else if (nexthdr == TESSERA_NEXTHDR_AUTH) {
			off += ((__u32)ext[1] + 2) * 4;
		} else {
			off += ((__u32)ext[1] + 1) * 8;
		}
		nexthdr = ext[0];
	}
	f->proto = nexthdr;
	return parse_l4(skb, f, off);
}

/* Fills `f` from the packet in `skb` (an Ethernet frame). */
static __always_inline int parse_flow(struct __sk_buff *skb, struct flow *f)
{
	switch (skb->protocol) {
	case bpf_htons(ETH_P_IP):
		return parse_ipv4(skb, f);
	case bpf_htons(ETH_P_IPV6):
		return parse_ipv6(skb, f);
	default:
		return PARSE_NOT_IP;
	}
}

#endif /* TESSERA_PACKET_H */
