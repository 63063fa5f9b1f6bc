/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the endpoint programs, in one place (STYLE §7).
 *
 * Global maps are pinned by name under the loader's pin root
 * (<pinDirectory>/globals/<name>) and shared by all endpoints. Per-endpoint
 * maps carry no pinning attribute: the loader gives each one its own path
 * (<pinDirectory>/endpoints/<id>/<name>) before load, so one object file
 * serves every endpoint.
 */
#ifndef TESSERA_MAPS_H
#define TESSERA_MAPS_H

#include "maps_types.h"

#define TESSERA_IPCACHE_MAX 512000
#define TESSERA_POLICY_MAX 16384
#define TESSERA_CT_MAX 65536
#define TESSERA_ENDPOINTS_MAX 65535

/* Global: IP prefix -> security identity. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, TESSERA_IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_ipcache SEC(".maps");

/* Global: endpoint id -> configuration that changes without reload. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, struct endpoint_info);
	__uint(max_entries, TESSERA_ENDPOINTS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_endpoints SEC(".maps");

/* Global: connection tracking, one entry per flow and endpoint. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, TESSERA_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_ct SEC(".maps");

/* Per endpoint: the policy (pinned at endpoints/<id>/policy by the loader). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, TESSERA_POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} policy SEC(".maps");

/* Per endpoint: forwarded/dropped packets by direction and reason
 * (pinned at endpoints/<id>/metrics by the loader). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, TESSERA_METRICS_ENTRIES);
} metrics SEC(".maps");

#endif /* TESSERA_MAPS_H */
