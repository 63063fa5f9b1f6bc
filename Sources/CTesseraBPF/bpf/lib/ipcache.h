/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Peer identity: longest-prefix match of an address in the ipcache. */
#ifndef TESSERA_IPCACHE_H
#define TESSERA_IPCACHE_H

#include "maps.h"

/* The identity of `addr`; `world-ipv4` or `world-ipv6` when no prefix covers it (as
 * Cilium's dual-stack datapath: `0.0.0.0/0` then selects no IPv6 address). */
static __always_inline __u32 ipcache_lookup_identity(__u8 family, const __u8 *addr)
{
	struct ipcache_key key = {};
	struct ipcache_value *value;

	key.family = family;
	if (family == TESSERA_FAMILY_V4) {
		key.prefixlen = TESSERA_IPCACHE_STATIC_PREFIX + 32;
		__builtin_memcpy(key.addr, addr, 4);
	} else {
		key.prefixlen = TESSERA_IPCACHE_STATIC_PREFIX + 128;
		__builtin_memcpy(key.addr, addr, 16);
	}
	value = bpf_map_lookup_elem(&tessera_ipcache, &key);
	if (value)
		return value->identity;
	return family == TESSERA_FAMILY_V4 ? TESSERA_ID_WORLD_IPV4 : TESSERA_ID_WORLD_IPV6;
}

#endif /* TESSERA_IPCACHE_H */
