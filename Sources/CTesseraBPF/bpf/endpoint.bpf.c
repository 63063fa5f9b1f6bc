// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Tessera endpoint programs, attached with tc on the HOST side of an
 * endpoint's veth:
 *
 *   container --(veth)--> host veth: tc ingress  = from_container (egress policy)
 *   container <--(veth)-- host veth: tc egress   = to_container   (ingress policy)
 *
 * For each IP packet:  parse -> conntrack (established / reply: pass)
 *                      -> ipcache (peer identity) -> policy -> conntrack create.
 *
 * One object serves every endpoint: the endpoint id is read-only data set by
 * the loader before load, the endpoint's policy and metrics maps are bound by
 * the loader, everything else lives in global pinned maps. Regeneration is
 * map writes only.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/maps.h"
#include "lib/packet.h"
#include "lib/ipcache.h"
#include "lib/conntrack.h"
#include "lib/policy.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader (bpf_map__set_initial_value on .rodata) before load. */
const volatile __u64 ENDPOINT_ID = 0;

static __always_inline void count(struct __sk_buff *skb, __u8 dir, enum tessera_reason reason)
{
	__u32 idx = (__u32)(dir - 1) * TESSERA_REASON_MAX + reason;
	struct metrics_value *m = bpf_map_lookup_elem(&metrics, &idx);

	if (m) {
		m->packets++;
		m->bytes += skb->len;
	}
}

static __always_inline int pass(struct __sk_buff *skb, __u8 dir, enum tessera_reason reason)
{
	count(skb, dir, reason);
	return TC_ACT_OK;
}

static __always_inline int drop(struct __sk_buff *skb, __u8 dir, enum tessera_reason reason)
{
	count(skb, dir, reason);
	return TC_ACT_SHOT;
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	const __u64 endpoint_id = ENDPOINT_ID;
	struct flow f = {};
	struct endpoint_info *ep;
	enum ct_status ct;
	enum policy_verdict verdict;
	__u64 now;
	__u32 peer;
	int enforced;

	switch (parse_flow(skb, &f)) {
	case PARSE_NOT_IP:
		return pass(skb, dir, TESSERA_FWD_NON_IP);
	case PARSE_INVALID:
		return drop(skb, dir, TESSERA_DROP_INVALID_PACKET);
	default:
		break;
	}
	if (f.icmp6_nd)
		return pass(skb, dir, TESSERA_FWD_ICMP6_ND);

	now = bpf_ktime_get_ns();
	if (!f.nonfirst_fragment) {
		ct = ct_lookup(&f, endpoint_id, dir, now);
		if (ct == CT_ESTABLISHED)
			return pass(skb, dir, TESSERA_FWD_CT_ESTABLISHED);
		if (ct == CT_REPLY)
			return pass(skb, dir, TESSERA_FWD_CT_REPLY);
	} else {
		return drop(skb, dir, TESSERA_DROP_FRAG_NOT_SUPPORTED);
	}

	ep = bpf_map_lookup_elem(&tessera_endpoints, &endpoint_id);
	if (!ep)
		return drop(skb, dir, TESSERA_DROP_NO_ENDPOINT);
	enforced = dir == TESSERA_DIR_INGRESS ? !!(ep->flags & TESSERA_EP_F_INGRESS_ENFORCED)
					      : !!(ep->flags & TESSERA_EP_F_EGRESS_ENFORCED);

	/* The peer is the source of what comes in and the destination of what goes out. */
	peer = ipcache_lookup_identity(f.family, dir == TESSERA_DIR_INGRESS ? f.saddr : f.daddr);

	verdict = policy_verdict(dir, peer, f.proto, f.policy_port, enforced);
	if (verdict == POLICY_DENY)
		return drop(skb, dir, TESSERA_DROP_POLICY_DENY);
	if (verdict == POLICY_DEFAULT_DENY)
		return drop(skb, dir, TESSERA_DROP_POLICY_DEFAULT);

	if (ct_create(&f, endpoint_id, dir, now) < 0)
		return drop(skb, dir, TESSERA_DROP_CT_CREATE_FAILED);
	return pass(skb, dir, TESSERA_FWD_POLICY);
}

/* Packets leaving the container: the endpoint's egress policy. */
SEC("tc")
int from_container(struct __sk_buff *skb)
{
	return handle(skb, TESSERA_DIR_EGRESS);
}

/* Packets going into the container: the endpoint's ingress policy. */
SEC("tc")
int to_container(struct __sk_buff *skb)
{
	return handle(skb, TESSERA_DIR_INGRESS);
}
