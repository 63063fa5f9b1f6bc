/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The policy verdict, reproducing EndpointPolicy.verdict (TesseraCore):
 * a matching deny entry wins, then a matching allow entry, then the
 * direction's default (deny when enforced, else allow).
 *
 * An entry matches when its peer is the packet's peer or 0 (any), its
 * protocol is the packet's or 0 (any), and its port prefix covers the
 * packet's destination port (0 for portless protocols). Deny and allow
 * entries are looked up separately, so the LPM's "longest match only" never
 * lets a more specific allow hide an overlapping deny.
 */
#ifndef TESSERA_POLICY_H
#define TESSERA_POLICY_H

#include "maps.h"


enum policy_verdict {
	POLICY_ALLOW = 0,
	POLICY_DENY = 1, /* a deny entry matched */
	POLICY_DEFAULT_DENY = 2, /* nothing allowed it in an enforced direction */
};

static __always_inline int policy_has(__u64 endpoint_id, __u8 deny, __u8 dir, __u32 peer, __u8 proto, __u16 port)
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
	return bpf_map_lookup_elem(&tessera_policy, &key) != 0;
}

/* Whether an entry of this kind (deny or allow) matches, over the peer and
 * protocol wildcards. */
static __always_inline int policy_matches(__u64 endpoint_id, __u8 deny, __u8 dir, __u32 peer, __u8 proto, __u16 port)
{
	if (policy_has(endpoint_id, deny, dir, peer, proto, port))
		return 1;
	if (policy_has(endpoint_id, deny, dir, peer, 0, port))
		return 1;
	if (policy_has(endpoint_id, deny, dir, 0, proto, port))
		return 1;
	return policy_has(endpoint_id, deny, dir, 0, 0, port);
}

static __always_inline enum policy_verdict policy_verdict(__u64 endpoint_id, __u8 dir, __u32 peer, __u8 proto, __u16 port,
							  int enforced)
{
	if (policy_matches(endpoint_id, 1, dir, peer, proto, port))
		return POLICY_DENY;
	if (policy_matches(endpoint_id, 0, dir, peer, proto, port))
		return POLICY_ALLOW;
	return enforced ? POLICY_DEFAULT_DENY : POLICY_ALLOW;
}

#endif /* TESSERA_POLICY_H */
