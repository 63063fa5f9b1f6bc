/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking. An entry is created when a new flow is allowed by
 * policy, keyed by the tuple as seen, the endpoint and the direction. Later
 * packets of the flow (same key) and its replies (reverse tuple, opposite
 * direction, same endpoint) pass without a policy lookup, so established
 * connections survive policy changes, as in Cilium. Two endpoints on one node
 * each keep their own entries: one endpoint's egress never admits another's
 * ingress.
 */
#ifndef TESSERA_CONNTRACK_H
#define TESSERA_CONNTRACK_H

#include "maps.h"
#include "packet.h"

enum ct_status {
	CT_NEW = 0,
	CT_ESTABLISHED = 1, /* same direction as the packet that created the entry */
	CT_REPLY = 2,
};

static __always_inline void ct_fill_key(struct ct_key *key, const struct flow *f, __u64 endpoint_id,
					__u8 dir, int reverse)
{
	if (reverse) {
		__builtin_memcpy(key->saddr, f->daddr, 16);
		__builtin_memcpy(key->daddr, f->saddr, 16);
		key->sport = f->dport;
		key->dport = f->sport;
	} else {
		__builtin_memcpy(key->saddr, f->saddr, 16);
		__builtin_memcpy(key->daddr, f->daddr, 16);
		key->sport = f->sport;
		key->dport = f->dport;
	}
	key->proto = f->proto;
	key->family = f->family;
	key->direction = dir;
	key->endpoint_id = endpoint_id;
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
static __always_inline void ct_refresh(struct ct_entry *e, const struct flow *f, __u64 now, int reply)
{
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
	}
	if (update) {
		e->last_seen_ns = now;
		e->expires_ns = now + ct_lifetime(f, e);
	}
}

/* Looks the packet up as an established flow or as a reply. */
static __always_inline enum ct_status ct_lookup(const struct flow *f, __u64 endpoint_id, __u8 dir, __u64 now)
{
	struct ct_key key = {};
	struct ct_entry *e;
	__u8 other = dir == TESSERA_DIR_INGRESS ? TESSERA_DIR_EGRESS : TESSERA_DIR_INGRESS;

	ct_fill_key(&key, f, endpoint_id, dir, 0);
	e = bpf_map_lookup_elem(&tessera_ct, &key);
	if (e) {
		if (e->expires_ns > now) {
			ct_refresh(e, f, now, 0);
			return CT_ESTABLISHED;
		}
		bpf_map_delete_elem(&tessera_ct, &key);
	}

	ct_fill_key(&key, f, endpoint_id, other, 1);
	e = bpf_map_lookup_elem(&tessera_ct, &key);
	if (e) {
		if (e->expires_ns > now) {
			ct_refresh(e, f, now, 1);
			return CT_REPLY;
		}
		bpf_map_delete_elem(&tessera_ct, &key);
	}
	return CT_NEW;
}

/* Records a new flow that policy allowed. */
static __always_inline int ct_create(const struct flow *f, __u64 endpoint_id, __u8 dir, __u64 now)
{
	struct ct_key key = {};
	struct ct_entry e = {};

	ct_fill_key(&key, f, endpoint_id, dir, 0);
	e.created_ns = now;
	e.last_seen_ns = now;
	e.packets_fwd = 1;
	if (f->proto == IPPROTO_TCP && (f->tcp_flags & (TESSERA_TCP_FIN | TESSERA_TCP_RST)))
		e.flags |= TESSERA_CT_F_CLOSING;
	e.expires_ns = now + ct_lifetime(f, &e);
	return bpf_map_update_elem(&tessera_ct, &key, &e, BPF_ANY);
}

#endif /* TESSERA_CONNTRACK_H */
