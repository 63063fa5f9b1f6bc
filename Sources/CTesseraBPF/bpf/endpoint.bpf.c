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
 *   -> from the container: source validation (source.h); a router
 *      advertisement or redirect from it is dropped
 *   -> ND/MLD on the link: pass; later fragments: pass when their first
 *      did (fragments.h)
 *   -> ICMP error about a tracked flow: pass (conntrack.h), one coming in
 *      only from the flow's path (the quoted peer, or no workload)
 *   -> conntrack (established / reply: pass, counted on the allowing entry;
 *      ICMP other than echo is never tracked: judged packet by packet)
 *   -> into the container, a new flow: addressed to it (source.h), else dropped
 *   -> ipcache (peer identity) -> policy (deny, allow, default; the
 *      deciding entry's counters)
 *   -> conntrack create (a TCP segment without SYN, an SCTP packet without
 *      INIT: only when the policy also allows the connection's other half)
 *   -> pass
 *
 * Drops, connections allowed by policy and connections beginning to close
 * are reported in the tessera_events ring buffer (maps_types.h, events);
 * the other packets of established flows cost no event.
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

/* What one packet's verdict is about: counted always, reported as an event
 * when it is a drop or a connection allowed by policy. */
struct verdict_ctx {
	struct __sk_buff *skb;
	struct endpoint_metrics *metrics;
	const struct flow *f;
	const struct endpoint_info *ep; /* NULL until looked up */
	__u64 endpoint_id;
	__u32 peer; /* identity of the other side, 0 until looked up */
	__u8 dir;
	__u8 match; /* TESSERA_MATCH_* */
	__u8 deny;
};

/* Wake the reader once per batch: when this event takes the pending bytes over a
 * multiple of TESSERA_EVENTS_WAKEUP_BYTES, and not for the events in between. A
 * wakeup per event costs every new connection a context switch of the reader, and
 * a forced wakeup is an interrupt (an IPI under a hypervisor, ~5 us): waking for
 * every event while the reader was behind made each denied packet of a flood 20
 * times dearer. Another CPU reserving between this event's reserve and its query
 * can hide the crossing from both; the next multiple wakes the reader then, and
 * it also polls on a short timer (FlowEventPump), so an event waits at most that
 * long. Called right after the reserve, so the pending bytes include this event. */
static __always_inline __u64 events_wakeup_flag(void)
{
	__u64 pending = bpf_ringbuf_query(&tessera_events, BPF_RB_AVAIL_DATA);

	return pending / TESSERA_EVENTS_WAKEUP_BYTES !=
			       (pending - TESSERA_EVENT_RECORD_BYTES) / TESSERA_EVENTS_WAKEUP_BYTES
		       ? BPF_RB_FORCE_WAKEUP
		       : BPF_RB_NO_WAKEUP;
}

static __always_inline void emit(const struct verdict_ctx *v, enum tessera_reason reason,
				 __u8 state)
{
	struct tessera_event *e;
	__u32 key = 0, local;
	__u64 *lost, wakeup;

	e = bpf_ringbuf_reserve(&tessera_events, sizeof(*e), 0);
	if (!e) {
		lost = bpf_map_lookup_elem(&tessera_events_lost, &key);
		if (lost)
			(*lost)++;
		return;
	}
	wakeup = events_wakeup_flag();
	local = v->ep ? v->ep->identity : TESSERA_ID_UNKNOWN;
	e->time_ns = bpf_ktime_get_ns();
	e->endpoint_id = v->endpoint_id;
	e->src_identity = v->dir == TESSERA_DIR_EGRESS ? local : v->peer;
	e->dst_identity = v->dir == TESSERA_DIR_EGRESS ? v->peer : local;
	__builtin_memcpy(e->saddr, v->f->saddr, sizeof(e->saddr));
	__builtin_memcpy(e->daddr, v->f->daddr, sizeof(e->daddr));
	e->sport = v->f->sport;
	e->dport = v->f->dport;
	e->family = v->f->family;
	e->proto = v->f->proto;
	e->direction = v->dir;
	e->reason = reason;
	e->match = v->match;
	e->deny = v->deny;
	e->state = state;
	e->icmp_type = v->f->icmp_type;
	e->length = v->skb->len;
	bpf_ringbuf_submit(e, wakeup);
}

static __always_inline int verdict_pass(const struct verdict_ctx *v, enum tessera_reason reason)
{
	count(v->metrics, v->skb, v->dir, reason);
	return TC_ACT_OK;
}

static __always_inline int verdict_drop(const struct verdict_ctx *v, enum tessera_reason reason)
{
	count(v->metrics, v->skb, v->dir, reason);
	emit(v, reason, TESSERA_EVENT_STATE_NONE);
	return TC_ACT_SHOT;
}

/* A packet of a flow that passes: a first fragment lets its datagram's
 * later fragments pass too. */
static __always_inline int verdict_pass_flow(const struct verdict_ctx *v,
					     enum tessera_reason reason, __u64 now)
{
	frag_note(v->f, v->endpoint_id, v->dir, now);
	return verdict_pass(v, reason);
}

/* Whether an ND message leaving the container stays on the link: to a
 * link-scope address (fe80::/10, ff02::/16, which are never forwarded) or to
 * the node itself (the ipcache's host identity). To any other address the
 * node would forward it (ptp, main plugin): it is judged by policy, so an
 * egress policy holds for ND-typed messages too. On a bridge, pods resolving
 * each other's global addresses need an egress ICMPv6 rule for it (README). */
static __always_inline int nd_destination_on_link(const struct flow *f)
{
	if (ipv6_is_link_local(f->daddr) || (f->daddr[0] == 0xff && f->daddr[1] == 0x02))
		return 1;
	return ipcache_lookup_identity(f->family, f->daddr) == TESSERA_ID_HOST;
}

/* Whether an ICMP error coming in about one of the endpoint's flows was sent
 * from that flow's path: by the peer it quotes (a port unreachable), or by
 * something that is no workload: the node, another node, an address outside
 * the cluster (a router), a CIDR. Another pod is on no path of the endpoint's
 * flows: its "fragmentation needed" or "unreachable" about a flow it guessed
 * would lower the flow's MTU or end it from a peer policy denies, so its
 * errors are judged by policy like its other packets. */
static __always_inline int icmp_error_sender_on_path(const struct flow *f,
						     const struct flow *quoted)
{
	__u32 sender;

	if (ip_addr_equal(f->saddr, quoted->daddr))
		return 1;
	sender = ipcache_lookup_identity(f->family, f->saddr);
	return sender == TESSERA_ID_HOST || sender == TESSERA_ID_REMOTE_NODE ||
	       sender == TESSERA_ID_WORLD || sender == TESSERA_ID_WORLD_IPV4 ||
	       sender == TESSERA_ID_WORLD_IPV6 || sender >= TESSERA_ID_LOCAL_SCOPE;
}

/* The identity of the flow's other end: the source of what comes in, the
 * destination of what goes out. */
static __always_inline __u32 peer_identity(const struct flow *f, __u8 dir)
{
	return ipcache_lookup_identity(f->family, dir == TESSERA_DIR_INGRESS ? f->saddr : f->daddr);
}

/* Whether the endpoint's policy, as it stands, also allows the other half of
 * the TCP connection (SCTP association) of `f` (seen in direction `dir`;
 * `peer` is the identity of its remote end): the segments going the opposite
 * way between the same two ends, to `f`'s source port. A segment that found no entry (it expired,
 * was evicted, or was never made because the connection began before the
 * endpoint's policy was in force) is tracked from the middle only then: the
 * entry lets through, at this endpoint, only what its policy allows anyway.
 * When the other half is denied the segment passes untracked, so neither a
 * peer denied in gets in as the "replies" of the pod's answer, nor a pod
 * denied out answers as the "replies" of the peer's segment. */
static __always_inline int other_half_allowed(const struct endpoint_info *ep, __u64 endpoint_id,
					      __u8 dir, __u32 peer, const struct flow *f)
{
	__u8 other = TESSERA_DIR_OPPOSITE(dir);
	__u32 slot = TESSERA_POLICY_STATS_NONE;
	__u8 match;

	return policy_verdict(policy_kinds(ep->flags, other), endpoint_id, other, peer, f->proto,
			      f->sport, policy_enforced(ep->flags, other), &match,
			      &slot) == POLICY_ALLOW;
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	const __u64 endpoint_id = (__u64)skb->cb[TESSERA_CB_ENDPOINT_LO] |
				  ((__u64)skb->cb[TESSERA_CB_ENDPOINT_HI] << 32);
	struct flow f = {};
	struct verdict_ctx v = {.skb = skb, .f = &f, .endpoint_id = endpoint_id, .dir = dir};
	int ct;
	enum policy_verdict verdict;
	__u64 now;
	__u32 kinds, sender, slot = TESSERA_POLICY_STATS_NONE;
	struct policy_stats *stats;
	int enforced, opens;

	v.metrics = bpf_map_lookup_elem(&tessera_metrics, &endpoint_id);

	switch (parse_flow(skb, &f)) {
	case PARSE_ARP:
		if (dir == TESSERA_DIR_INGRESS)
			return verdict_pass(&v, TESSERA_FWD_NON_IP);
		if (parse_arp_sender(skb, &sender))
			return verdict_drop(&v, TESSERA_DROP_INVALID_PACKET);
		v.ep = bpf_map_lookup_elem(&tessera_endpoints, &endpoint_id);
		if (!v.ep)
			return verdict_drop(&v, TESSERA_DROP_NO_ENDPOINT);
		if (!source_arp_valid(v.ep, sender)) {
			/* The event shows the forged sender as an IPv4 source, protocol 0. */
			f.family = TESSERA_FAMILY_V4;
			__builtin_memcpy(f.saddr, &sender, sizeof(sender));
			return verdict_drop(&v, TESSERA_DROP_INVALID_SOURCE);
		}
		return verdict_pass(&v, TESSERA_FWD_NON_IP);
	case PARSE_UNKNOWN_L3:
		return verdict_drop(&v, TESSERA_DROP_UNKNOWN_L3);
	case PARSE_EXT_HEADERS:
		return verdict_drop(&v, TESSERA_DROP_EXT_HEADERS);
	case PARSE_INVALID:
		return verdict_drop(&v, TESSERA_DROP_INVALID_PACKET);
	default:
		break;
	}
	/* Before any flow state: nothing is reachable with a forged source. */
	if (dir == TESSERA_DIR_EGRESS) {
		v.ep = bpf_map_lookup_elem(&tessera_endpoints, &endpoint_id);
		if (!v.ep)
			return verdict_drop(&v, TESSERA_DROP_NO_ENDPOINT);
		if (!source_valid(v.ep, &f) || !source_nd_valid(skb, v.ep, &f))
			return verdict_drop(&v, TESSERA_DROP_INVALID_SOURCE);
	}
	/* Neighbour discovery and MLD stay on the link: what comes in had the hop
	 * limit (and for MLD the source) only an on-link sender gives (parse);
	 * what goes out is not forwarded: MLD's hop limit 1 cannot be, ND must be
	 * for a link-scope address or the node. Any other is judged by policy. */
	if (f.icmp6_nd &&
	    (dir == TESSERA_DIR_INGRESS || f.hop_limit == 1 || nd_destination_on_link(&f)))
		return verdict_pass(&v, TESSERA_FWD_ICMP6_ND);

	/* The clock of the timers, read without the TSC (~45 ns less per packet
	 * here than bpf_ktime_get_ns): CLOCK_MONOTONIC within a tick, fine for
	 * lifetimes of seconds. */
	now = now_ns();
	if (f.nonfirst_fragment) {
		if (frag_allowed(&f, endpoint_id, dir, now))
			return verdict_pass(&v, TESSERA_FWD_FRAGMENT);
		return verdict_drop(&v, TESSERA_DROP_FRAG_NOT_SUPPORTED);
	}
	/* An ICMP error about a tracked flow (PMTU discovery) passes when it comes
	 * from the flow's path; any other is judged by policy like any ICMP packet. */
	if (f.icmp_error) {
		struct flow quoted = {};

		if (ct_icmp_error_related(skb, &f, endpoint_id, dir, now, &quoted) &&
		    (dir == TESSERA_DIR_EGRESS || icmp_error_sender_on_path(&f, &quoted)))
			return verdict_pass(&v, TESSERA_FWD_CT_RELATED);
	}

	ct = f.untracked ? CT_NEW : ct_lookup(&f, endpoint_id, dir, now, skb->len);
	if (ct != CT_NEW) {
		enum tessera_reason reason = (ct & ~CT_CLOSING_NOW) == CT_ESTABLISHED
						     ? TESSERA_FWD_CT_ESTABLISHED
						     : TESSERA_FWD_CT_REPLY;
		/* A state change of the connection: its first FIN or RST (rare
		 * enough to look both identities up for the event). */
		if (ct & CT_CLOSING_NOW) {
			if (!v.ep)
				v.ep = bpf_map_lookup_elem(&tessera_endpoints, &endpoint_id);
			v.peer = peer_identity(&f, dir);
			emit(&v, reason, TESSERA_EVENT_STATE_CLOSE);
		}
		return verdict_pass_flow(&v, reason, now);
	}

	if (!v.ep)
		v.ep = bpf_map_lookup_elem(&tessera_endpoints, &endpoint_id);
	if (!v.ep)
		return verdict_drop(&v, TESSERA_DROP_NO_ENDPOINT);
	/* Checked where a flow begins: an established flow's first packet was. */
	if (dir == TESSERA_DIR_INGRESS && !destination_is_own(v.ep, &f))
		return verdict_drop(&v, TESSERA_DROP_INVALID_PACKET);
	enforced = policy_enforced(v.ep->flags, dir);

	kinds = policy_kinds(v.ep->flags, dir);

	/* The peer is the source of what comes in and the destination of what
	 * goes out; looked up when the verdict depends on it, and for a drop's
	 * event. */
	if (policy_needs_peer(kinds))
		v.peer = peer_identity(&f, dir);

	verdict = policy_verdict(kinds, endpoint_id, dir, v.peer, f.proto, f.policy_port, enforced,
				 &v.match, &slot);
	stats = policy_stats_of(slot);
	if (verdict != POLICY_ALLOW && !policy_needs_peer(kinds))
		v.peer = peer_identity(&f, dir);
	if (verdict == POLICY_DENY) {
		v.deny = 1;
		if (stats)
			policy_stats_add(stats, skb->len);
		return verdict_drop(&v, TESSERA_DROP_POLICY_DENY);
	}
	if (verdict == POLICY_DEFAULT_DENY)
		return verdict_drop(&v, TESSERA_DROP_POLICY_DEFAULT);

	opens = ct_opens_flow(&f);
	/* A reset ends what it belongs to: never the start of tracking (netfilter
	 * finds a reset without a connection invalid). */
	if (!opens && ct_has_openings(&f) &&
	    !(f.proto == IPPROTO_TCP && (f.tcp_flags & TESSERA_TCP_RST))) {
		if (!policy_needs_peer(kinds))
			v.peer = peer_identity(&f, dir);
		opens = other_half_allowed(v.ep, endpoint_id, dir, v.peer, &f);
	}
	if (!f.untracked && opens &&
	    ct_create(&f, endpoint_id, dir, now, stats ? slot : TESSERA_POLICY_STATS_NONE,
		      stats ? stats->generation : 0) < 0)
		return verdict_drop(&v, TESSERA_DROP_CT_CREATE_FAILED);
	if (stats)
		policy_stats_add(stats, skb->len);
	/* A TCP segment (SCTP packet) that opened nothing is no new connection:
	 * counted, not reported (each of them would be, on a connection whose
	 * entry is gone). One that picked a connection up is reported once, as
	 * its opening. */
	if (opens || !ct_has_openings(&f))
		emit(&v, TESSERA_FWD_POLICY, TESSERA_EVENT_STATE_NEW);
	return verdict_pass_flow(&v, TESSERA_FWD_POLICY, now);
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
