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
/* Extension headers outside the loop's list: a packet carrying one is
 * dropped (TESSERA_DROP_EXT_HEADERS), never judged by what follows it. */
#define TESSERA_NEXTHDR_MOBILITY 135
#define TESSERA_NEXTHDR_HIP 139
#define TESSERA_NEXTHDR_SHIM6 140
#define TESSERA_NEXTHDR_EXP1 253
#define TESSERA_NEXTHDR_EXP2 254
/* A chain longer than this is dropped (TESSERA_DROP_EXT_HEADERS). */
#define TESSERA_IPV6_MAX_EXT_HEADERS 8

#define TESSERA_TCP_FIN 0x01
#define TESSERA_TCP_SYN 0x02
#define TESSERA_TCP_RST 0x04
#define TESSERA_TCP_ACK 0x10

/* The chunk that opens an SCTP association, alone in its packet (RFC 9260, 6.10). */
#define TESSERA_SCTP_CHUNK_INIT 1

#define TESSERA_ICMP_ECHO_REPLY 0
#define TESSERA_ICMP_DEST_UNREACH 3
#define TESSERA_ICMP_ECHO_REQUEST 8
#define TESSERA_ICMP_TIME_EXCEEDED 11
#define TESSERA_ICMP_PARAMETER_PROBLEM 12
#define TESSERA_ICMP6_DEST_UNREACH 1
#define TESSERA_ICMP6_PACKET_TOO_BIG 2
#define TESSERA_ICMP6_TIME_EXCEEDED 3
#define TESSERA_ICMP6_PARAMETER_PROBLEM 4
#define TESSERA_ICMP6_ECHO_REQUEST 128
#define TESSERA_ICMP6_ECHO_REPLY 129

#define TESSERA_ARP_HRD_ETHER 1

enum parse_result {
	PARSE_OK = 0,
	PARSE_ARP = 1, /* the only non-IP ethertype that passes */
	PARSE_INVALID = 2,
	PARSE_UNKNOWN_L3 = 3,  /* any other ethertype, or VLAN-tagged */
	PARSE_EXT_HEADERS = 4, /* IPv6 extension headers not parsed to the end */
};

struct flow {
	__u8 family;
	__u8 proto;
	__u8 nonfirst_fragment; /* no L4 header in this packet */
	__u8 tcp_flags;
	__u8 icmp6_nd;	     /* neighbour discovery or MLD */
	__u8 first_fragment; /* offset 0 with more fragments to come */
	__u8 icmp_error;     /* ICMP error: the packet it is about follows at l4_off + 8 */
	__u8 frag_proto;     /* fragments: the header after IPv4's / the fragment header */
	/* 8-byte aligned: conntrack reads them as 64-bit words. */
	__u8 saddr[16] __attribute__((aligned(8)));
	__u8 daddr[16] __attribute__((aligned(8)));
	__u16 sport; /* conntrack ports, host order */
	__u16 dport;
	__u16 policy_port; /* destination port for TCP/UDP/SCTP, the type for ICMP(v6), else 0 */
	__u16 l4_off;	   /* offset of the L4 header in the frame */
	__u32 frag_id;	   /* fragments: the datagram's identification */
	__u8 untracked;	   /* judged by policy packet by packet: no conntrack entry */
	__u8 icmp_echo;	   /* TESSERA_ICMP_ECHO_* for an echo request or reply, else 0 */
	__u8 hop_limit;	   /* IPv6 */
	__u8 icmp_type;	   /* ICMP and ICMPv6: the message's type */
	__u8 sctp_chunk;   /* SCTP: the type of the packet's first chunk */
	__u32 l3_end; /* where the IP packet ends in the frame, as its header declares (parse only)
		       */
	__u32 l4_len; /* bytes of the IP packet from the L4 header on, as its header declares:
		       * what a message's body (an ICMP error's quote, an ND target) may use */
};

#define TESSERA_ICMP_ECHO_IS_REQUEST 1
#define TESSERA_ICMP_ECHO_IS_REPLY 2

/* Whether an IPv6 address is link-local unicast (fe80::/10). */
static __always_inline int ipv6_is_link_local(const __u8 *addr)
{
	return addr[0] == 0xfe && (addr[1] & 0xc0) == 0x80;
}

/* Whether an IPv6 address is link-local (fe80::/10) or unspecified (::). */
static __always_inline int ipv6_is_local_only(const __u8 *addr)
{
	__u32 a[4];

	if (ipv6_is_link_local(addr))
		return 1;
	__builtin_memcpy(a, addr, 16);
	return !(a[0] | a[1] | a[2] | a[3]);
}

/* Whether two addresses as `struct flow` holds them are the same (16 bytes; an
 * IPv4 address's last 12 are zero). */
static __always_inline int ip_addr_equal(const __u8 *a, const __u8 *b)
{
	__u64 a0, a1, b0, b1;

	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, b + 8, 8);
	return a0 == b0 && a1 == b1;
}

/* Points at `len` bytes at `off` in the packet: in place when they are in
 * the linear data, else copied into `buf`. NULL when the packet is shorter. */
static __always_inline const void *packet_bytes(struct __sk_buff *skb, __u32 off, void *buf,
						__u32 len)
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

/* The end of an IP packet of `declared` bytes (its total length) at ETH_HLEN; 0
 * declared (a GSO packet above 64 KiB, BIG TCP) leaves the frame's end. */
static __always_inline __u32 ip_end(struct __sk_buff *skb, __u32 declared)
{
	if (!declared || ETH_HLEN + declared > skb->len)
		return skb->len;
	return ETH_HLEN + declared;
}

static __always_inline int parse_l4(struct __sk_buff *skb, struct flow *f, __u32 off)
{
	if (f->nonfirst_fragment)
		return PARSE_OK;
	f->l4_off = (__u16)off;

	switch (f->proto) {
	/* The whole fixed L4 header must be present: a first fragment that carries
	 * only part of it (RFC 1858's tiny fragment) leaves the rest, flags
	 * included, to a later fragment that policy never sees. */
	case IPPROTO_TCP: {
		__u8 buf[20];
		const __u8 *hdr = packet_bytes(skb, off, buf, sizeof(buf));
		if (!hdr)
			return PARSE_INVALID;
		f->sport = ((__u16)hdr[0] << 8) | hdr[1];
		f->dport = ((__u16)hdr[2] << 8) | hdr[3];
		f->tcp_flags = hdr[13];
		f->policy_port = f->dport;
		return PARSE_OK;
	}
	case IPPROTO_UDP: {
		__u8 buf[8];
		const __u8 *hdr = packet_bytes(skb, off, buf, sizeof(buf));
		if (!hdr)
			return PARSE_INVALID;
		f->sport = ((__u16)hdr[0] << 8) | hdr[1];
		f->dport = ((__u16)hdr[2] << 8) | hdr[3];
		f->policy_port = f->dport;
		return PARSE_OK;
	}
	case IPPROTO_SCTP: {
		/* The common header and the first chunk's header, whose type says
		 * whether the packet opens an association (conntrack.h). */
		__u8 buf[16];
		const __u8 *hdr = packet_bytes(skb, off, buf, sizeof(buf));
		if (!hdr)
			return PARSE_INVALID;
		f->sport = ((__u16)hdr[0] << 8) | hdr[1];
		f->dport = ((__u16)hdr[2] << 8) | hdr[3];
		f->sctp_chunk = hdr[12];
		f->policy_port = f->dport;
		return PARSE_OK;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 buf[8];
		const __u8 *hdr;
		__u16 id;
		__u8 type;
		/* ICMP is IPv4's and ICMPv6 IPv6's: the other pairing is no real
		 * packet, and judging it would match a rule of the other family. */
		if ((f->proto == IPPROTO_ICMP) != (f->family == TESSERA_FAMILY_V4))
			return PARSE_INVALID;
		hdr = packet_bytes(skb, off, buf, sizeof(buf));
		if (!hdr)
			return PARSE_INVALID;
		type = hdr[0];
		id = ((__u16)hdr[4] << 8) | hdr[5];
		/* Policy looks an ICMP packet up by its type (Cilium's icmps rules). */
		f->policy_port = type;
		f->icmp_type = type;
		/* Echo request and reply share the identifier: put it in the
		 * source port of a request and the destination port of a reply
		 * so that the reply is the request's reverse tuple. */
		if ((f->proto == IPPROTO_ICMP && type == TESSERA_ICMP_ECHO_REQUEST) ||
		    (f->proto == IPPROTO_ICMPV6 && type == TESSERA_ICMP6_ECHO_REQUEST)) {
			f->sport = id;
			f->icmp_echo = TESSERA_ICMP_ECHO_IS_REQUEST;
		} else if ((f->proto == IPPROTO_ICMP && type == TESSERA_ICMP_ECHO_REPLY) ||
			   (f->proto == IPPROTO_ICMPV6 && type == TESSERA_ICMP6_ECHO_REPLY)) {
			f->dport = id;
			f->icmp_echo = TESSERA_ICMP_ECHO_IS_REPLY;
		} else {
			/* Any other message has no identifier that pairs it with a
			 * reply: a conntrack entry (ports 0, 0) would let every other
			 * type between the two addresses pass as the same flow, so each
			 * is judged by policy (errors about a tracked flow pass before,
			 * as related). */
			f->untracked = 1;
		}
		/* 133-137: router/neighbour discovery, hop limit 255 (a forwarded
		 * message has less); 130-132 and 143: MLD, hop limit 1 from a
		 * link-local or unspecified source (a forwarded one can arrive with
		 * hop limit 1, never from such a source). RFC 4861, 2710, 3810. Any
		 * other is judged by policy like any ICMPv6 message. */
		if (f->proto == IPPROTO_ICMPV6 &&
		    ((type >= 133 && type <= 137 && f->hop_limit == 255) ||
		     (((type >= 130 && type <= 132) || type == 143) && f->hop_limit == 1 &&
		      ipv6_is_local_only(f->saddr))))
			f->icmp6_nd = 1;
		if (f->proto == IPPROTO_ICMP ? (type == TESSERA_ICMP_DEST_UNREACH ||
						type == TESSERA_ICMP_TIME_EXCEEDED ||
						type == TESSERA_ICMP_PARAMETER_PROBLEM)
					     : (type >= TESSERA_ICMP6_DEST_UNREACH &&
						type <= TESSERA_ICMP6_PARAMETER_PROBLEM))
			f->icmp_error = 1;
		return PARSE_OK;
	}
	default:
		return PARSE_OK; /* other protocols: no ports */
	}
}

/* Fragment offsets, in 8-byte units. A TCP fragment at offset 1 overlaps
 * the TCP header's flags and could rewrite what policy saw in the first
 * fragment (RFC 1858): invalid. */
static __always_inline int fragment_offset_valid(const struct flow *f, __u32 units)
{
	return !(units == 1 && f->proto == IPPROTO_TCP);
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct flow *f)
{
	struct iphdr buf;
	const struct iphdr *ip = packet_bytes(skb, ETH_HLEN, &buf, sizeof(buf));
	__u32 hlen;
	__u16 frag;

	if (!ip)
		return PARSE_INVALID;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_INVALID;
	hlen = ip->ihl * 4;
	f->l3_end = ip_end(skb, bpf_ntohs(ip->tot_len));
	f->family = TESSERA_FAMILY_V4;
	f->proto = ip->protocol;
	__builtin_memcpy(f->saddr, &ip->saddr, 4);
	__builtin_memcpy(f->daddr, &ip->daddr, 4);
	frag = bpf_ntohs(ip->frag_off);
	if (frag & 0x1fff) {
		f->nonfirst_fragment = 1;
		if (!fragment_offset_valid(f, frag & 0x1fff))
			return PARSE_INVALID;
	} else if (frag & 0x2000) {
		f->first_fragment = 1;
	}
	f->frag_id = bpf_ntohs(ip->id);
	f->frag_proto = ip->protocol;
	return parse_l4(skb, f, ETH_HLEN + hlen);
}

static __always_inline int ipv6_ext_known(__u8 nexthdr)
{
	return nexthdr == TESSERA_NEXTHDR_HOP || nexthdr == TESSERA_NEXTHDR_ROUTING ||
	       nexthdr == TESSERA_NEXTHDR_FRAGMENT || nexthdr == TESSERA_NEXTHDR_AUTH ||
	       nexthdr == TESSERA_NEXTHDR_DEST;
}

/* Extension headers the parser does not walk: what follows them is unknown. */
static __always_inline int ipv6_ext_unsupported(__u8 nexthdr)
{
	return nexthdr == TESSERA_NEXTHDR_MOBILITY || nexthdr == TESSERA_NEXTHDR_HIP ||
	       nexthdr == TESSERA_NEXTHDR_SHIM6 || nexthdr == TESSERA_NEXTHDR_EXP1 ||
	       nexthdr == TESSERA_NEXTHDR_EXP2;
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, struct flow *f)
{
	struct ipv6hdr buf;
	const struct ipv6hdr *ip6 = packet_bytes(skb, ETH_HLEN, &buf, sizeof(buf));
	__u32 off = ETH_HLEN + sizeof(struct ipv6hdr);
	__u8 nexthdr, fragments = 0;
	int i;

	if (!ip6)
		return PARSE_INVALID;
	if (ip6->version != 6)
		return PARSE_INVALID;
	f->l3_end = ip_end(skb, bpf_ntohs(ip6->payload_len)
					? sizeof(struct ipv6hdr) + bpf_ntohs(ip6->payload_len)
					: 0);
	f->family = TESSERA_FAMILY_V6;
	f->hop_limit = ip6->hop_limit;
	__builtin_memcpy(f->saddr, &ip6->saddr, 16);
	__builtin_memcpy(f->daddr, &ip6->daddr, 16);
	nexthdr = ip6->nexthdr;

	/* The common case, no extension header, leaves the loop at once. */
#pragma unroll
	for (i = 0; i < TESSERA_IPV6_MAX_EXT_HEADERS; i++) {
		__u8 extbuf[8];
		const __u8 *ext;

		if (!ipv6_ext_known(nexthdr))
			break;
		/* Every extension header is at least 8 bytes. */
		ext = packet_bytes(skb, off, extbuf, sizeof(extbuf));
		if (!ext)
			return PARSE_INVALID;
		if (nexthdr == TESSERA_NEXTHDR_FRAGMENT) {
			__u16 frag = ((__u16)ext[2] << 8) | ext[3];
			if (fragments++)
				return PARSE_EXT_HEADERS; /* a second fragment header */
			f->frag_id = ((__u32)ext[4] << 24) | ((__u32)ext[5] << 16) |
				     ((__u32)ext[6] << 8) | ext[7];
			f->frag_proto = ext[0];
			if (frag >> 3) {
				/* What follows is the middle of the datagram. */
				f->nonfirst_fragment = 1;
				f->proto = ext[0];
				return fragment_offset_valid(f, frag >> 3) ? PARSE_OK
									   : PARSE_INVALID;
			} else if (frag & 1) {
				f->first_fragment = 1;
			}
			off += 8;
		} else if (nexthdr == TESSERA_NEXTHDR_AUTH) {
			off += ((__u32)ext[1] + 2) * 4;
		} else if (nexthdr == TESSERA_NEXTHDR_ROUTING && ext[3]) {
			/* Segments left: the destination address is a waypoint, not where the
			 * packet ends up, so no verdict on it would hold (RFC 8200 §4.4;
			 * Linux drops these unless segment routing is enabled). */
			return PARSE_EXT_HEADERS;
		} else {
			off += ((__u32)ext[1] + 1) * 8;
		}
		nexthdr = ext[0];
	}
	/* Not parsed to the end (a longer chain), or a header not walked:
	 * judging what follows as the protocol would use the wrong ports. */
	if (ipv6_ext_known(nexthdr) || ipv6_ext_unsupported(nexthdr))
		return PARSE_EXT_HEADERS;
	f->proto = nexthdr;
	return parse_l4(skb, f, off);
}

/* The fixed L4 header parse_l4 read: it must lie within the IP packet. */
static __always_inline __u32 l4_header_len(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return 20;
	case IPPROTO_SCTP:
		return 16;
	case IPPROTO_UDP:
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		return 8;
	default:
		return 0;
	}
}

/* A parsed IP packet whose headers all lie within the length its header
 * declares: what lies past it (trailing bytes of the frame) is no part of the
 * packet, and a first fragment whose ports are only there would be judged by
 * ports its datagram does not have (RFC 7112). One check at the end, as the L4
 * header comes after every other; l3_end is read nowhere else, so that the
 * verifier need not tell states apart by it in the rest of the program (bodies
 * are bounded by l4_len, which is only compared, never an offset). */
static __always_inline int ip_parsed(struct flow *f, int result)
{
	if (result != PARSE_OK || f->nonfirst_fragment)
		return result;
	if ((__u32)f->l4_off + l4_header_len(f->proto) > f->l3_end)
		return PARSE_INVALID;
	f->l4_len = f->l3_end - f->l4_off;
	return PARSE_OK;
}

/* Fills `f` from the packet in `skb` (an Ethernet frame). Only IPv4, IPv6
 * and ARP are ever passed; a VLAN tag (which the stack moves out of the
 * frame before tc sees it) is refused whatever it carries. */
static __always_inline int parse_flow(struct __sk_buff *skb, struct flow *f)
{
	if (skb->vlan_present)
		return PARSE_UNKNOWN_L3;
	switch (skb->protocol) {
	case bpf_htons(ETH_P_IP):
		return ip_parsed(f, parse_ipv4(skb, f));
	case bpf_htons(ETH_P_IPV6):
		return ip_parsed(f, parse_ipv6(skb, f));
	case bpf_htons(ETH_P_ARP):
		return PARSE_ARP;
	default:
		return PARSE_UNKNOWN_L3;
	}
}

/* The IPv4 sender address of an Ethernet/IPv4 ARP packet, in `spa` (network
 * order); -1 for any other ARP. */
static __always_inline int parse_arp_sender(struct __sk_buff *skb, __u32 *spa)
{
	__u8 buf[18];
	const __u8 *arp = packet_bytes(skb, ETH_HLEN, buf, sizeof(buf));

	if (!arp)
		return -1;
	/* htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4; sender at 14. */
	if (arp[0] != 0 || arp[1] != TESSERA_ARP_HRD_ETHER || arp[2] != 0x08 || arp[3] != 0x00 ||
	    arp[4] != 6 || arp[5] != 4)
		return -1;
	__builtin_memcpy(spa, arp + 14, 4);
	return 0;
}

/* The packet an ICMP error is about (`f` has icmp_error set): its addresses,
 * protocol and ports in `in`, as conntrack keys them. -1 when it is not
 * something conntrack could know (truncated, a fragment, an IPv6 packet
 * with extension headers, ICMP other than echo). The quote must lie within
 * the error's declared length: trailing bytes of the frame are no quote. */
static __always_inline int parse_icmp_inner(struct __sk_buff *skb, const struct flow *f,
					    struct flow *in)
{
	__u32 off = (__u32)f->l4_off + 8, l4;
	__u8 buf[8];
	const __u8 *hdr;

	in->family = f->family;
	if (f->family == TESSERA_FAMILY_V4) {
		struct iphdr ipbuf;
		const struct iphdr *ip = packet_bytes(skb, off, &ipbuf, sizeof(ipbuf));
		if (!ip || ip->version != 4 || ip->ihl < 5 || (bpf_ntohs(ip->frag_off) & 0x1fff))
			return -1;
		if (8 + ip->ihl * 4 + 8 > f->l4_len)
			return -1;
		in->proto = ip->protocol;
		__builtin_memcpy(in->saddr, &ip->saddr, 4);
		__builtin_memcpy(in->daddr, &ip->daddr, 4);
		l4 = off + ip->ihl * 4;
	} else {
		struct ipv6hdr ip6buf;
		const struct ipv6hdr *ip6 = packet_bytes(skb, off, &ip6buf, sizeof(ip6buf));
		if (!ip6 || ip6->version != 6 || 8 + sizeof(struct ipv6hdr) + 8 > f->l4_len)
			return -1;
		in->proto = ip6->nexthdr;
		__builtin_memcpy(in->saddr, &ip6->saddr, 16);
		__builtin_memcpy(in->daddr, &ip6->daddr, 16);
		l4 = off + sizeof(struct ipv6hdr);
	}
	/* An ICMP error quotes at least 8 bytes of the L4 header: the ports. */
	hdr = packet_bytes(skb, l4, buf, sizeof(buf));
	if (!hdr)
		return -1;
	switch (in->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		in->sport = ((__u16)hdr[0] << 8) | hdr[1];
		in->dport = ((__u16)hdr[2] << 8) | hdr[3];
		return 0;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u16 id = ((__u16)hdr[4] << 8) | hdr[5];
		__u8 request = in->proto == IPPROTO_ICMP ? TESSERA_ICMP_ECHO_REQUEST
							 : TESSERA_ICMP6_ECHO_REQUEST;
		__u8 reply = in->proto == IPPROTO_ICMP ? TESSERA_ICMP_ECHO_REPLY
						       : TESSERA_ICMP6_ECHO_REPLY;
		if ((in->proto == IPPROTO_ICMP) != (f->family == TESSERA_FAMILY_V4))
			return -1;
		if (hdr[0] == request)
			in->sport = id;
		else if (hdr[0] == reply)
			in->dport = id;
		else
			return -1;
		return 0;
	}
	default:
		return -1;
	}
}

#endif /* TESSERA_PACKET_H */
