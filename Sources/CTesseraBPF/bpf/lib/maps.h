/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the endpoint programs, in one place.
 *
 * All maps are pinned by name under the loader's pin root
 * (<pinDirectory>/globals/<name>) and shared by every endpoint's programs;
 * per-endpoint state (policy, metrics, configuration) is keyed by endpoint
 * id. Per-endpoint maps reached through map-in-map were measured and
 * rejected: every update or delete of an outer map waits for an RCU grace
 * period in the kernel (8-15 ms here), which alone breaks the create budget.
 */
#ifndef TESSERA_MAPS_H
#define TESSERA_MAPS_H

#include "maps_types.h"

#define TESSERA_IPCACHE_MAX 512000
#define TESSERA_POLICY_MAX 1048576
#define TESSERA_ENDPOINTS_MAX 65535
#define TESSERA_FRAGS_MAX 8192
#define TESSERA_EVENTS_BYTES (1 << 20)
/* Pending event bytes that wake the reader (about 800 events). */
#define TESSERA_EVENTS_WAKEUP_BYTES (TESSERA_EVENTS_BYTES / 16)
/* One event in the ring: the record and the ring's header, rounded to 8 bytes. */
#define TESSERA_EVENT_RECORD_BYTES ((sizeof(struct tessera_event) + BPF_RINGBUF_HDR_SZ + 7) / 8 * 8)

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
	__uint(max_entries, TESSERA_CT_DEFAULT_MAX); /* the loader's to set */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_ct SEC(".maps");

/* Global: datagrams whose first fragment passed (maps_types.h, fragments). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
	__uint(max_entries, TESSERA_FRAGS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_frags SEC(".maps");

/* Global: every endpoint's policy, keyed by endpoint id first. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, TESSERA_POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_policy SEC(".maps");

/* Global: packets and bytes per policy entry, by the entry's counter slot
 * (maps_types.h, policy counters). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct policy_stats);
	__uint(max_entries, TESSERA_POLICY_STATS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_policy_stats SEC(".maps");

/* Global: endpoint id -> forwarded/dropped packets by direction and reason.
 * The loader creates an endpoint's entry before its programs can run. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u64);
	__type(value, struct endpoint_metrics);
	__uint(max_entries, TESSERA_ENDPOINTS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_metrics SEC(".maps");

/* Global: the shared policy handlers the endpoint stubs tail-call
 * (TESSERA_HANDLER_*), installed by the loader at startup. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, TESSERA_HANDLER_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_handlers SEC(".maps");

/* Global: what the loader installed (object hash), to re-adopt after a restart. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct loader_state);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_loader SEC(".maps");

/* Global: verdict events for datapathd (maps_types.h, events). 1 MiB holds
 * ~11,000 events. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, TESSERA_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_events SEC(".maps");

/* Global: events lost because the ring was full, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tessera_events_lost SEC(".maps");

#endif /* TESSERA_MAPS_H */
