/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packets and bytes per policy entry (maps_types.h, policy counters): one
 * per-CPU array lookup per packet, which the verifier inlines.
 */
#ifndef TESSERA_POLICY_STATS_H
#define TESSERA_POLICY_STATS_H

#include "maps.h"

/* The counters of `slot`, or NULL for TESSERA_POLICY_STATS_NONE. */
static __always_inline struct policy_stats *policy_stats_of(__u32 slot)
{
	if (slot == TESSERA_POLICY_STATS_NONE)
		return 0;
	return bpf_map_lookup_elem(&tessera_policy_stats, &slot);
}

static __always_inline void policy_stats_add(struct policy_stats *s, __u32 len)
{
	/* Per-CPU value: no other CPU writes it. */
	s->packets++;
	s->bytes += len;
}

/* A packet of a tracked connection: counted on the entry that allowed it,
 * unless the entry was deleted and its slot handed out again since. */
static __always_inline void policy_stats_count(__u32 slot, __u32 generation, __u32 len)
{
	struct policy_stats *s = policy_stats_of(slot);

	if (s && s->generation == generation)
		policy_stats_add(s, len);
}

#endif /* TESSERA_POLICY_STATS_H */
