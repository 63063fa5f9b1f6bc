/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking. An entry is created when a new flow is allowed by
 * policy, for the endpoint and the direction of the packet. Later packets of
 * the flow (same tuple, same direction) and its replies (reverse tuple,
 * opposite direction, same endpoint) pass without a policy lookup, so
 * established connections survive policy changes, as in Cilium. Both find
 * the entry with one lookup: the key holds the tuple in its canonical
 * orientation (maps_types.h). Two endpoints on one node each keep their own
 * entries: one endpoint's egress never admits another's ingress.
 */
#ifndef TESSERA_CONNTRACK_H
#define TESSERA_CONNTRACK_H

#include "maps.h"
#include "packet.h"
#include "policy_stats.h"

enum ct_status {
	CT_NEW = 0,
	CT_ESTABLISHED = 1, /* same direction as the packet that created the entry */
	CT_REPLY = 2,
};

/* Added to CT_ESTABLISHED or CT_REPLY: this packet (FIN or RST) began the
 * connection's close, a state change reported as an event. */
#define CT_CLOSING_NOW 4

/* The packet's key; returns whether its tuple is reversed in the key. */
static __always_inline int ct_fill_key(struct ct_key *key, const struct flow *f, __u64 endpoint_id,
				       __u8 dir)
{
	__u8 other = TESSERA_DIR_OPPOSITE(dir);
	__u64 s0, s1, d0, d1;
	int reversed;

	__builtin_memcpy(&s0, f->saddr, 8);
	__builtin_memcpy(&s1, f->saddr + 8, 8);
	__builtin_memcpy(&d0, f->daddr, 8);
	__builtin_memcpy(&d1, f->daddr + 8, 8);
	reversed = tessera_ct_tuple_reversed(s0, s1, d0, d1, f->sport, f->dport);
	if (reversed) {
		__builtin_memcpy(key->saddr, &d0, 8);
		__builtin_memcpy(key->saddr + 8, &d1, 8);
		__builtin_memcpy(key->daddr, &s0, 8);
		__builtin_memcpy(key->daddr + 8, &s1, 8);
		key->sport = f->dport;
		key->dport = f->sport;
		key->direction = other;
	} else {
		__builtin_memcpy(key->saddr, &s0, 8);
		__builtin_memcpy(key->saddr + 8, &s1, 8);
		__builtin_memcpy(key->daddr, &d0, 8);
		__builtin_memcpy(key->daddr + 8, &d1, 8);
		key->sport = f->sport;
		key->dport = f->dport;
		/* A tuple equal to its reverse: both directions share the key. */
		key->direction = (s0 == d0 && s1 == d1 && f->sport == f->dport) ? 0 : dir;
	}
	key->proto = f->proto;
	key->family = f->family;
	key->pad = 0;
	key->endpoint_id = endpoint_id;
	return reversed;
}

static __always_inline __u64 ct_lifetime(const struct flow *f, const struct ct_entry *e)
{
	if (e->flags & TESSERA_CT_F_CLOSING)
		return TESSERA_CT_LIFETIME_CLOSE_NS;
	if (f->proto != IPPROTO_TCP)
		return TESSERA_CT_LIFETIME_NONTCP_NS;
	return e->packets_rev ? TESSERA_CT_LIFETIME_TCP_NS : TESSERA_CT_LIFETIME_SYN_NS;
}

/* A packet of a tracked flow: counts it and keeps the entry alive. The
 * expiry is written when the lifetime class changes (first reply, FIN/RST)
 * and otherwise at most every TESSERA_CT_REFRESH_NS, so that the packets of
 * a busy flow do not all store the same times again (Cilium keeps a
 * "last report" time for the same reason); an idle flow thus expires up to
 * that interval before its last packet + lifetime. */
static __always_inline int ct_refresh(struct ct_entry *e, const struct flow *f, __u64 now,
				      int reply)
{
	int closing_now = 0;

	int update = now - e->last_seen_ns >= TESSERA_CT_REFRESH_NS;

	if (reply) {
		if (!e->packets_rev)
			update = 1; /* SYN lifetime -> established lifetime */
		__sync_fetch_and_add(&e->packets_rev, 1);
	} else {
		__sync_fetch_and_add(&e->packets_fwd, 1);
	}
	if (f->proto == IPPROTO_TCP && (f->tcp_flags & (TESSERA_TCP_FIN | TESSERA_TCP_RST)) &&
	    !(e->flags & TESSERA_CT_F_CLOSING)) {
		e->flags |= TESSERA_CT_F_CLOSING;
		update = 1;
		closing_now = CT_CLOSING_NOW;
	}
	if (update) {
		e->last_seen_ns = now;
		e->expires_ns = now + ct_lifetime(f, e);
	}
	return closing_now;
}

/* Whether the flow's protocol has an opening packet (a TCP SYN, an SCTP
 * INIT): its other packets answer or continue something, and one that finds
 * no entry is not taken for an opening (ct_opens_flow). */
static __always_inline int ct_has_openings(const struct flow *f)
{
	return f->proto == IPPROTO_TCP || f->proto == IPPROTO_SCTP;
}

/* Whether the packet opens a flow, and so may create an entry whose replies
 * pass without policy: a TCP SYN, an SCTP INIT, an echo request, any packet
 * of another protocol. A TCP segment without SYN (or a SYN-ACK), an SCTP
 * packet of other chunks and an echo reply answer something: one that found
 * no entry belongs to a connection that was never allowed here, such as one
 * a peer opened while the pod's policy was not yet in force (a chained
 * plugin's window), and tracking it would let the other side in as its
 * "replies". It is judged by policy; if allowed, it is tracked only when the
 * policy also allows the connection's other half (endpoint.bpf.c,
 * other_half_allowed), and otherwise passes untracked (netfilter with
 * nf_conntrack_tcp_loose=0). */
static __always_inline int ct_opens_flow(const struct flow *f)
{
	if (f->proto == IPPROTO_TCP)
		return (f->tcp_flags & (TESSERA_TCP_SYN | TESSERA_TCP_ACK)) == TESSERA_TCP_SYN;
	if (f->proto == IPPROTO_SCTP)
		return f->sctp_chunk == TESSERA_SCTP_CHUNK_INIT;
	return f->icmp_echo != TESSERA_ICMP_ECHO_IS_REPLY;
}

/* Looks the packet up as an established flow or as a reply (one lookup);
 * CT_CLOSING_NOW is added when the packet begins the connection's close.
 * A packet of a tracked flow (`len` bytes) is counted on the policy entry
 * that allowed the flow. */
static __always_inline int ct_lookup(const struct flow *f, __u64 endpoint_id, __u8 dir, __u64 now,
				     __u32 len)
{
	struct ct_key key;
	struct ct_entry *e;

	ct_fill_key(&key, f, endpoint_id, dir);
	e = bpf_map_lookup_elem(&tessera_ct, &key);
	if (!e)
		return CT_NEW;
	if (e->expires_ns <= now) {
		bpf_map_delete_elem(&tessera_ct, &key);
		return CT_NEW;
	}
	/* An echo request is the flow itself and a reply only its answer (only
	 * requests create entries): a request in the reply's place or a reply in
	 * the request's is no part of the flow. Identifier 0 gives both the same
	 * tuple. */
	if (f->icmp_echo && (f->icmp_echo == TESSERA_ICMP_ECHO_IS_REQUEST) != (e->direction == dir))
		return CT_NEW;
	/* Same key: the packet has the creator's direction and orientation
	 * (the flow itself) or the opposite of both (a reply). */
	if (e->direction == dir) {
		/* A SYN (an SCTP INIT) opens a connection: one reusing the tuple of
		 * a tracked flow (a closing one within its linger time, or a
		 * retransmitted SYN) is judged by policy again, as netfilter does,
		 * so a client that picks its own source port cannot reopen a flow
		 * that policy now denies. If policy allows it, ct_create replaces
		 * the entry. */
		if (ct_has_openings(f) && ct_opens_flow(f))
			return CT_NEW;
		policy_stats_count(e->stats_slot, e->stats_generation, len);
		return CT_ESTABLISHED | ct_refresh(e, f, now, 0);
	}
	policy_stats_count(e->stats_slot, e->stats_generation, len);
	return CT_REPLY | ct_refresh(e, f, now, 1);
}

/* Whether the flow of `f`, seen in direction `dir`, is tracked for the
 * endpoint (either orientation). Read only: an ICMP error about a flow
 * neither refreshes nor closes it. */
static __always_inline int ct_tracked(const struct flow *f, __u64 endpoint_id, __u8 dir, __u64 now)
{
	struct ct_key key;
	struct ct_entry *e;

	ct_fill_key(&key, f, endpoint_id, dir);
	e = bpf_map_lookup_elem(&tessera_ct, &key);
	return e && e->expires_ns > now;
}

/* An ICMP error (`f`, seen in direction `dir`) about a flow the endpoint
 * tracks: the quoted packet travelled the other way (its tuple is read into
 * `in`, which the caller zeroes, and left there for the caller). It
 * must be addressed to that packet's sender (the error goes back where the
 * packet came from), and one the container sends must be about a packet it
 * received, so a forged error can neither reach a third party nor name
 * another flow. Who sent one that comes in is the caller's to check. */
static __always_inline int ct_icmp_error_related(struct __sk_buff *skb, const struct flow *f,
						 __u64 endpoint_id, __u8 dir, __u64 now,
						 struct flow *in)
{
	if (parse_icmp_inner(skb, f, in))
		return 0;
	if (!ip_addr_equal(in->saddr, f->daddr))
		return 0;
	if (dir == TESSERA_DIR_EGRESS && !ip_addr_equal(in->daddr, f->saddr))
		return 0;
	return ct_tracked(in, endpoint_id, TESSERA_DIR_OPPOSITE(dir), now);
}

/* Records a new flow that policy allowed; its later packets count on the
 * counter slot (and generation) of the entry that allowed it. */
static __always_inline int ct_create(const struct flow *f, __u64 endpoint_id, __u8 dir, __u64 now,
				     __u32 stats_slot, __u32 stats_generation)
{
	struct ct_key key;
	struct ct_entry e = {};

	e.reversed = ct_fill_key(&key, f, endpoint_id, dir);
	e.direction = dir;
	e.created_ns = now;
	e.last_seen_ns = now;
	e.packets_fwd = 1;
	e.stats_slot = stats_slot;
	e.stats_generation = stats_generation;
	e.flags = TESSERA_CT_F_CANONICAL;
	if (f->proto == IPPROTO_TCP && (f->tcp_flags & (TESSERA_TCP_FIN | TESSERA_TCP_RST)))
		e.flags |= TESSERA_CT_F_CLOSING;
	e.expires_ns = now + ct_lifetime(f, &e);
	return bpf_map_update_elem(&tessera_ct, &key, &e, BPF_ANY);
}

#endif /* TESSERA_CONNTRACK_H */
