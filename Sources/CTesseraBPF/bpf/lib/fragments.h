/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Fragments (maps_types.h): a datagram's later fragments carry no ports, so
 * they pass only when its first fragment, which does, passed for the same
 * endpoint and direction. Fragments that arrive before their first one, or
 * whose first one was dropped, are dropped.
 */
#ifndef TESSERA_FRAGMENTS_H
#define TESSERA_FRAGMENTS_H

#include "maps.h"
#include "packet.h"

static __always_inline void frag_fill_key(struct frag_key *key, const struct flow *f,
					  __u64 endpoint_id, __u8 dir)
{
	__builtin_memcpy(key->saddr, f->saddr, 16);
	__builtin_memcpy(key->daddr, f->daddr, 16);
	key->endpoint_id = endpoint_id;
	key->id = f->frag_id;
	key->proto = f->frag_proto;
	key->family = f->family;
	key->direction = dir;
	key->pad = 0;
}

/* The first fragment of `f` passed: its datagram's later fragments may. */
static __always_inline void frag_note(const struct flow *f, __u64 endpoint_id, __u8 dir, __u64 now)
{
	struct frag_key key;
	struct frag_value value = {
		.expires_ns = now + TESSERA_FRAG_LIFETIME_NS,
		.sport = f->sport,
		.dport = f->dport,
	};

	if (!f->first_fragment)
		return;
	frag_fill_key(&key, f, endpoint_id, dir);
	/* A failed update leaves the later fragments dropped: fails closed. */
	bpf_map_update_elem(&tessera_frags, &key, &value, BPF_ANY);
}

/* Whether the first fragment of this non-first fragment's datagram passed. */
static __always_inline int frag_allowed(const struct flow *f, __u64 endpoint_id, __u8 dir,
					__u64 now)
{
	struct frag_key key;
	struct frag_value *value;

	frag_fill_key(&key, f, endpoint_id, dir);
	value = bpf_map_lookup_elem(&tessera_frags, &key);
	return value && value->expires_ns > now;
}

#endif /* TESSERA_FRAGMENTS_H */
