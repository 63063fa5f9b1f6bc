/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The policy verdict, reproducing EndpointPolicy.verdict (TesseraCore):
 * a matching deny entry wins, then a matching allow entry, then the
 * direction's default (deny when enforced, else allow).
 *
 * An entry matches when its peer is the packet's peer or 0 (any), its
 * protocol is the packet's or 0 (any), and its port prefix covers the
 * packet's destination port (an ICMP packet's type for ICMP entries, 0 for
 * entries of any protocol and for portless protocols). Deny and allow
 * entries are looked up separately, so the LPM's "longest match only" never
 * lets a more specific allow hide an overlapping deny. Lookups of kinds the
 * endpoint has no entry of are skipped (TESSERA_EP_POLICY_KINDS_SHIFT).
 */
#ifndef TESSERA_POLICY_H
#define TESSERA_POLICY_H

#include "maps.h"
#include "policy_stats.h"

enum policy_verdict {
	POLICY_ALLOW = 0,
	POLICY_DENY = 1,	 /* a deny entry matched */
	POLICY_DEFAULT_DENY = 2, /* nothing allowed it in an enforced direction */
};

static __always_inline const struct policy_value *
policy_find(__u64 endpoint_id, __u8 deny, __u8 dir, __u32 peer, __u8 proto, __u16 port)
{
	struct policy_key key = {
		.prefixlen = TESSERA_POLICY_FULL_PREFIX,
		.endpoint_id = endpoint_id,
		.deny = deny,
		.direction = dir,
		.proto = proto,
		.peer = peer,
		.dport = bpf_htons(port),
	};
	return bpf_map_lookup_elem(&tessera_policy, &key);
}

/* The lookup of entries of kind `kind` (TESSERA_POLICY_KIND_*) when the
 * endpoint has some (`kinds`: the direction's byte of the policy kinds). */
static __always_inline const struct policy_value *policy_find_kind(__u32 kinds, __u32 kind,
								   __u64 endpoint_id, __u8 deny,
								   __u8 dir, __u32 peer, __u8 proto,
								   __u16 port)
{
	if (!(kinds & (1U << kind)))
		return 0;
	/* An entry of any protocol sees ICMP as portless: an ICMP type is a port only to
	 * ICMP entries (PolicyEntry.matches). */
	if ((kind & TESSERA_POLICY_KIND_ANY_PROTO) &&
	    (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6))
		port = 0;
	return policy_find(endpoint_id, deny, dir, (kind & TESSERA_POLICY_KIND_ANY_PEER) ? 0 : peer,
			   (kind & TESSERA_POLICY_KIND_ANY_PROTO) ? 0 : proto, port);
}

/* The event's name of an entry kind's wildcards (TESSERA_MATCH_*). */
static __always_inline __u8 policy_match_of(__u32 wildcards)
{
	switch (wildcards) {
	case 0:
		return TESSERA_MATCH_L3_L4;
	case TESSERA_POLICY_KIND_ANY_PROTO:
		return TESSERA_MATCH_L3_ONLY;
	case TESSERA_POLICY_KIND_ANY_PEER:
		return TESSERA_MATCH_L4_ONLY;
	default:
		return TESSERA_MATCH_ALL;
	}
}

/* Which entry of this kind (deny or allow) matches, over the peer and
 * protocol wildcards, most specific first: TESSERA_MATCH_*, or
 * TESSERA_MATCH_NONE; `slot` gets the matching entry's counter slot. */
static __always_inline __u8 policy_matches(__u32 kinds, __u64 endpoint_id, __u8 deny, __u8 dir,
					   __u32 peer, __u8 proto, __u16 port, __u32 *slot)
{
	__u32 base = deny ? 0 : TESSERA_POLICY_KIND_ALLOW;
	const struct policy_value *v;
	__u32 wildcards = 0;

	v = policy_find_kind(kinds, base, endpoint_id, deny, dir, peer, proto, port);
	if (!v) {
		wildcards = TESSERA_POLICY_KIND_ANY_PROTO;
		v = policy_find_kind(kinds, base | wildcards, endpoint_id, deny, dir, peer, proto,
				     port);
	}
	if (!v) {
		wildcards = TESSERA_POLICY_KIND_ANY_PEER;
		v = policy_find_kind(kinds, base | wildcards, endpoint_id, deny, dir, peer, proto,
				     port);
	}
	if (!v) {
		wildcards = TESSERA_POLICY_KIND_ANY_PEER | TESSERA_POLICY_KIND_ANY_PROTO;
		v = policy_find_kind(kinds, base | wildcards, endpoint_id, deny, dir, peer, proto,
				     port);
	}
	if (!v)
		return TESSERA_MATCH_NONE;
	*slot = v->stats_slot;
	return policy_match_of(wildcards);
}

/* The direction's byte of the endpoint's policy kinds; every kind when the
 * loader does not maintain them. */
static __always_inline __u32 policy_kinds(__u32 ep_flags, __u8 dir)
{
	if (!(ep_flags & TESSERA_EP_F_POLICY_KINDS))
		return 0xff;
	return (ep_flags >> (TESSERA_EP_POLICY_KINDS_SHIFT + (dir - 1) * 8)) & 0xff;
}

/* Whether the endpoint's policy is enforced in direction `dir` (default deny). */
static __always_inline int policy_enforced(__u32 ep_flags, __u8 dir)
{
	return !!(ep_flags & (dir == TESSERA_DIR_INGRESS ? TESSERA_EP_F_INGRESS_ENFORCED
							 : TESSERA_EP_F_EGRESS_ENFORCED));
}

/* Whether the verdict depends on the peer's identity (some entry of the
 * direction names a peer): when not, the ipcache lookup is skipped. */
static __always_inline int policy_needs_peer(__u32 kinds)
{
	const __u32 named = (1U << 0) | (1U << TESSERA_POLICY_KIND_ANY_PROTO) |
			    (1U << TESSERA_POLICY_KIND_ALLOW) |
			    (1U << (TESSERA_POLICY_KIND_ALLOW | TESSERA_POLICY_KIND_ANY_PROTO));
	return !!(kinds & named);
}

/* The verdict, and in `match` the kind of entry that decided it
 * (TESSERA_MATCH_*; TESSERA_MATCH_DEFAULT when none did) and in `slot` its
 * counter slot (left as it is when none did). */
static __always_inline enum policy_verdict policy_verdict(__u32 kinds, __u64 endpoint_id, __u8 dir,
							  __u32 peer, __u8 proto, __u16 port,
							  int enforced, __u8 *match, __u32 *slot)
{
	*match = policy_matches(kinds, endpoint_id, 1, dir, peer, proto, port, slot);
	if (*match != TESSERA_MATCH_NONE)
		return POLICY_DENY;
	*match = policy_matches(kinds, endpoint_id, 0, dir, peer, proto, port, slot);
	if (*match != TESSERA_MATCH_NONE)
		return POLICY_ALLOW;
	*match = TESSERA_MATCH_DEFAULT;
	return enforced ? POLICY_DEFAULT_DENY : POLICY_ALLOW;
}

#endif /* TESSERA_POLICY_H */
