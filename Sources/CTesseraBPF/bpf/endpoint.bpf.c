// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Tessera endpoint programs, attached with tc on the HOST side of an
 * endpoint's veth:
 *
 *   container --(veth)--> host veth tc ingress: from_container (egress policy)
 *   container <--(veth)-- host veth tc egress:  to_container   (ingress policy)
 *
 * from_container / to_container are per-endpoint stubs: loaded for each
 * endpoint with its id in read-only data (a verifier pass of a few
 * instructions), they put the id in skb->cb and tail-call the shared
 * handlers, which are verified once per daemon start and installed in
 * tessera_handlers. For each packet the handler does:
 *
 *   ethertype: ARP (from the container: its own sender address) passes,
 *              anything but IPv4/IPv6 is dropped
 *   parse (IPv6 extension headers parsed to the end, or dropped)
 *   -> from the container: source validation (source.h)
 *   -> ND/MLD: pass; later fragments: pass when their first did (fragments.h)
 *   -> ICMP error about a tracked flow: pass (conntrack.h)
 *   -> conntrack (established / reply: pass)
 *   -> ipcache (peer identity) -> policy (deny, allow, default)
 *   -> conntrack create -> pass
 *
 * Everything that changes at run time lives in maps keyed by endpoint id, so
 * regeneration is map writes only and never recompiles or reloads.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/maps.h"
#include "lib/packet.h"
#include "lib/ipcache.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/fragments.h"
#include "lib/source.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader before each endpoint's load. */
const volatile __u64 ENDPOINT_ID = 0;

/* Set by the loader before the handlers' load (clock.c, "the programs'
 * clock"): CLOCK_MONOTONIC within a tick is jiffies * NS_PER_JIFFY +
 * JIFFIES_BASE_NS. bpf_jiffies64() is inlined by the verifier; when the
 * loader could not measure the kernel's HZ (0), the coarse clock helper. */
const volatile __u64 NS_PER_JIFFY = 0;
const volatile __u64 JIFFIES_BASE_NS = 0;

static __always_inline __u64 now_ns(void)
{
	if (NS_PER_JIFFY)
		return bpf_jiffies64() * NS_PER_JIFFY + JIFFIES_BASE_NS;
	return bpf_ktime_get_coarse_ns();
}

static __always_inline void count(struct endpoint_metrics *metrics, struct __sk_buff *skb, __u8 dir,
				  enum tessera_reason reason)
{
	__u32 idx = (__u32)(dir - 1) * TESSERA_REASON_MAX + reason;

	if (!metrics || idx >= TESSERA_METRICS_ENTRIES)
		return;
	/* Per-CPU value: no other CPU writes it. */
	metrics->counters[idx].packets++;
	metrics->counters[idx].bytes += skb->len;
}

/* ---- per-endpoint stubs ---------------------------------------------------- */

static __always_inline int enter(struct __sk_buff *skb, __u32 handler, __u8 dir)
{
	skb->cb[TESSERA_CB_ENDPOINT_LO] = (__u32)ENDPOINT_ID;
	skb->cb[TESSERA_CB_ENDPOINT_HI] = (__u32)(ENDPOINT_ID >> 32);
	bpf_tail_call(skb, &tessera_handlers, handler);
	/* No handler installed: fail closed. */
	__u64 endpoint_id = ENDPOINT_ID;
	count(bpf_map_lookup_elem(&tessera_metrics, &endpoint_id), skb, dir,
	      TESSERA_DROP_MISSED_TAIL_CALL);
	return TC_ACT_SHOT;
}

/* Packets leaving the container: the endpoint's egress policy. */
SEC("tc")
int from_container(struct __sk_buff *skb)
{
	return enter(skb, TESSERA_HANDLER_FROM_CONTAINER, TESSERA_DIR_EGRESS);
}

/* Packets going into the container: the endpoint's ingress policy. */
SEC("tc")
int to_container(struct __sk_buff *skb)
{
	return enter(skb, TESSERA_HANDLER_TO_CONTAINER, TESSERA_DIR_INGRESS);
}

/* ---- shared handlers -------------------------------------------------------- */

static __always_inline int verdict_pass(struct endpoint_metrics *metrics, struct __sk_buff *skb,
					__u8 dir, enum tessera_reason reason)
{
	count(metrics, skb, dir, reason);
	return TC_ACT_OK;
}

static __always_inline int verdict_drop(struct endpoint_metrics *metrics, struct __sk_buff *skb,
					__u8 dir, enum tessera_reason reason)
{
	count(metrics, skb, dir, reason);
	return TC_ACT_SHOT;
}

/* A packet of a flow that passes: a first fragment lets its datagram's
 * later fragments pass too. */
static __always_inline int verdict_pass_flow(struct endpoint_metrics *metrics,
					     struct __sk_buff *skb, __u8 dir,
					     enum tessera_reason reason, const struct flow *f,
					     __u64 endpoint_id, __u64 now)
{
	frag_note(f, endpoint_id, dir, now);
	return verdict_pass(metrics, skb, dir, reason);
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	const __u64 endpoint_id = (__u64)skb->cb[TESSERA_CB_ENDPOINT_LO] |
				  ((__u64)skb->cb[TESSERA_CB_ENDPOINT_HI] << 32);
	struct endpoint_info *ep = 0;
	struct endpoint_metrics *metrics;
	struct flow f = {};
	enum ct_status ct;
	enum policy_verdict verdict;
	__u64 now;
	__u32 peer, kinds, sender;
	int enforced;

	metrics = bpf_map_lookup_elem(&tessera_metrics, &endpoint_id);

	switch (parse_flow(skb, &f)) {
	case PARSE_ARP:
		if (dir == TESSERA_DIR_INGRESS)
			return verdict_pass(metrics, skb, dir, TESSERA_FWD_NON_IP);
		if (parse_arp_sender(skb, &sender))
			return verdict_drop(metrics, skb, dir, TESSERA_DROP_INVALID_PACKET);
		ep = bpf_map_lookup_elem(&tessera_endpoints, &endpoint_id);
		if (!ep)
			return verdict_drop(metrics, skb, dir, TESSERA_DROP_NO_ENDPOINT);
		if (!source_arp_valid(ep, sender))
			return verdict_drop(metrics, skb, dir, TESSERA_DROP_INVALID_SOURCE);
		return verdict_pass(metrics, skb, dir, TESSERA_FWD_NON_IP);
	case PARSE_UNKNOWN_L3:
		return verdict_drop(metrics, skb, dir, TESSERA_DROP_UNKNOWN_L3);
	case PARSE_EXT_HEADERS:
		return verdict_drop(metrics, skb, dir, TESSERA_DROP_EXT_HEADERS);
	case PARSE_INVALID:
		return verdict_drop(metrics, skb, dir, TESSERA_DROP_INVALID_PACKET);
	default:
		break;
	}
	/* Before any flow state: nothing is reachable with a forged source. */
	if (dir == TESSERA_DIR_EGRESS) {
		ep = bpf_map_lookup_elem(&tessera_endpoints, &endpoint_id);
		if (!ep)
			return verdict_drop(metrics, skb, dir, TESSERA_DROP_NO_ENDPOINT);
		if (!source_valid(ep, &f) || !source_nd_valid(skb, ep, &f))
			return verdict_drop(metrics, skb, dir, TESSERA_DROP_INVALID_SOURCE);
	}
	if (f.icmp6_nd)
		return verdict_pass(metrics, skb, dir, TESSERA_FWD_ICMP6_ND);

	/* The clock of the timers, read without the TSC (~45 ns less per packet
	 * here than bpf_ktime_get_ns): CLOCK_MONOTONIC within a tick, fine for
	 * lifetimes of seconds. */
	now = now_ns();
	if (f.nonfirst_fragment) {
		if (frag_allowed(&f, endpoint_id, dir, now))
			return verdict_pass(metrics, skb, dir, TESSERA_FWD_FRAGMENT);
		return verdict_drop(metrics, skb, dir, TESSERA_DROP_FRAG_NOT_SUPPORTED);
	}
	/* An ICMP error about a tracked flow (PMTU discovery) passes; any other
	 * is judged by policy like any ICMP packet. */
	if (f.icmp_error && ct_icmp_error_related(skb, &f, endpoint_id, dir, now))
		return verdict_pass(metrics, skb, dir, TESSERA_FWD_CT_RELATED);

	ct = ct_lookup(&f, endpoint_id, dir, now);
	if (ct == CT_ESTABLISHED)
		return verdict_pass_flow(metrics, skb, dir, TESSERA_FWD_CT_ESTABLISHED, &f,
					 endpoint_id, now);
	if (ct == CT_REPLY)
		return verdict_pass_flow(metrics, skb, dir, TESSERA_FWD_CT_REPLY, &f, endpoint_id,
					 now);

	if (!ep)
		ep = bpf_map_lookup_elem(&tessera_endpoints, &endpoint_id);
	if (!ep)
		return verdict_drop(metrics, skb, dir, TESSERA_DROP_NO_ENDPOINT);
	enforced = dir == TESSERA_DIR_INGRESS ? !!(ep->flags & TESSERA_EP_F_INGRESS_ENFORCED)
					      : !!(ep->flags & TESSERA_EP_F_EGRESS_ENFORCED);

	kinds = policy_kinds(ep->flags, dir);

	/* The peer is the source of what comes in and the destination of what goes out. */
	peer = policy_needs_peer(kinds)
		       ? ipcache_lookup_identity(f.family,
						 dir == TESSERA_DIR_INGRESS ? f.saddr : f.daddr)
		       : TESSERA_ID_UNKNOWN;

	verdict = policy_verdict(kinds, endpoint_id, dir, peer, f.proto, f.policy_port, enforced);
	if (verdict == POLICY_DENY)
		return verdict_drop(metrics, skb, dir, TESSERA_DROP_POLICY_DENY);
	if (verdict == POLICY_DEFAULT_DENY)
		return verdict_drop(metrics, skb, dir, TESSERA_DROP_POLICY_DEFAULT);

	if (ct_create(&f, endpoint_id, dir, now) < 0)
		return verdict_drop(metrics, skb, dir, TESSERA_DROP_CT_CREATE_FAILED);
	return verdict_pass_flow(metrics, skb, dir, TESSERA_FWD_POLICY, &f, endpoint_id, now);
}

SEC("tc")
int handle_from_container(struct __sk_buff *skb)
{
	return handle(skb, TESSERA_DIR_EGRESS);
}

SEC("tc")
int handle_to_container(struct __sk_buff *skb)
{
	return handle(skb, TESSERA_DIR_INGRESS);
}
