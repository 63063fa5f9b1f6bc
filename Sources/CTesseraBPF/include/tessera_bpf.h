/*
 * The libbpf loader of Tessera's eBPF datapath, as seen from Swift
 * (DatapathService/LibBPF.swift is its only caller).
 *
 * Conventions: functions return 0 (or a non-negative value) on success and a
 * negative errno on failure. Messages libbpf printed while the last failing
 * call ran (verifier log included) are in tessera_bpf_last_log().
 *
 * Pin layout under the pin directory (default /sys/fs/bpf/tessera):
 *   globals/tessera_ipcache      LPM trie, IP prefix -> identity
 *   globals/tessera_endpoints    hash, endpoint id -> struct endpoint_info
 *   globals/tessera_ct           LRU hash, conntrack
 *   globals/tessera_frags        LRU hash, datagrams whose first fragment passed
 *   globals/tessera_policy       LPM trie, (endpoint, verdict, direction,
 *                                proto, peer, port) -> entry
 *   globals/tessera_policy_stats per-CPU array, counter slot -> packets and
 *                                bytes of one policy entry
 *   globals/tessera_metrics      per-CPU hash, endpoint id -> counters by
 *                                direction and reason
 *   globals/tessera_events       ring buffer, struct tessera_event
 *   globals/tessera_events_lost  per-CPU array, events the full ring lost
 *   globals/tessera_handlers     program array, the shared policy handlers
 *   globals/tessera_loader       array, what the loader installed (re-adoption)
 *   globals/handle_from_container, globals/handle_to_container: the handlers
 *   endpoints/<id>/from_container, endpoints/<id>/to_container: the stubs
 */
#ifndef TESSERA_BPF_H
#define TESSERA_BPF_H

#include <stddef.h>
#include <stdint.h>

#include "../bpf/lib/maps_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* tc filter identity of Tessera's programs on a device (clsact ingress/egress). */
#define TESSERA_TC_HANDLE 0x7e55
#define TESSERA_TC_PRIORITY 1

/* The loader: the object file's bytes and the pin directory. */
struct tessera_bpf;

/* Descriptors of one endpoint's programs; -1 when absent. */
struct tessera_endpoint_fds {
	int from_container;
	int to_container;
};

/* Reads the object and opens the pinned global maps under `pin_dir`. When
 * they were installed from the same object with the same conntrack capacity
 * (a daemon restart), they and the shared handlers are re-used as they are;
 * otherwise the shared handlers are loaded (one verifier pass, which also
 * proves this kernel accepts them), the global maps created or re-used, and
 * the handlers installed in tessera_handlers, replacing older ones
 * atomically. `conntrack_max` is the conntrack table's capacity in flows (0:
 * TESSERA_CT_DEFAULT_MAX); a table pinned with another is replaced by
 * one of this size, its entries copied over (into a smaller one until it is
 * full: which flows are left out is not chosen by age). When the new table
 * cannot be created, the old one stays pinned and the call fails. */
int tessera_bpf_open(const char *object_path, const char *pin_dir, uint32_t conntrack_max,
		     struct tessera_bpf **out);
void tessera_bpf_close(struct tessera_bpf *t);

/* 1 when tessera_bpf_open found the handlers of this same object installed
 * (a restart) and re-used them without loading anything. */
int tessera_bpf_adopted(const struct tessera_bpf *t);

int tessera_bpf_ipcache_fd(const struct tessera_bpf *t);
int tessera_bpf_endpoints_fd(const struct tessera_bpf *t);
int tessera_bpf_ct_fd(const struct tessera_bpf *t);
int tessera_bpf_policy_fd(const struct tessera_bpf *t);
int tessera_bpf_metrics_fd(const struct tessera_bpf *t);
int tessera_bpf_policy_stats_fd(const struct tessera_bpf *t);

/* A reader of the events ring buffer (one per process). */
struct tessera_events;

/* Opens a reader of the loader's tessera_events ring buffer. */
int tessera_events_open(const struct tessera_bpf *t, struct tessera_events **out);
void tessera_events_close(struct tessera_events *e);

/* Waits up to `timeout_ms` for events and copies at most `cap` of them into
 * `out`: the number copied (0 on timeout), or a negative errno. Events left
 * when `out` is full stay in the ring for the next call. */
int tessera_events_read(struct tessera_events *e, struct tessera_event *out, int cap,
			int timeout_ms);

/* Events lost so far because the ring was full (every CPU). */
uint64_t tessera_events_lost(const struct tessera_bpf *t);

/* Loads the stub programs of endpoint `endpoint_id` with the id in
 * read-only data (they tail-call the shared handlers; the instructions of
 * the template loaded at tessera_bpf_open, a verifier pass of a few dozen
 * instructions), creates the endpoint's counters (kept when they
 * exist) and pins the stubs under endpoints/<id>/ (replacing older pins).
 * `load_ns` receives the time spent, when not NULL. The caller closes the
 * descriptors with tessera_bpf_endpoint_fds_close. */
int tessera_bpf_endpoint_load(struct tessera_bpf *t, uint64_t endpoint_id,
			      struct tessera_endpoint_fds *fds, uint64_t *load_ns);

/* Opens the endpoint's pinned stubs; absent ones are -1. Returns -ENOENT
 * when neither is pinned. */
int tessera_bpf_endpoint_open_pinned(struct tessera_bpf *t, uint64_t endpoint_id,
				     struct tessera_endpoint_fds *fds);

/* An address as the programs store it in a flow: TESSERA_FAMILY_V4 with the
 * address in the first 4 bytes (the rest zero), or TESSERA_FAMILY_V6. */
struct tessera_flow_address {
	uint8_t family;
	uint8_t addr[16];
};

/* Deletes the endpoint's conntrack and fragment entries, counters and endpoint-map entry,
 * and with `scan_policy` every policy entry of the endpoint found by walking
 * the whole policy map (the caller normally deletes the keys it wrote, and
 * scans only when it does not know them). The conntrack and fragment entries
 * of every endpoint with one of `addresses` (the endpoint's own, n of them) at
 * either end go too: a pod that gets one of them next must not inherit its flows. */
int tessera_bpf_endpoint_purge(struct tessera_bpf *t, uint64_t endpoint_id, int scan_policy,
			       const struct tessera_flow_address *addresses, size_t n);

/* Deletes the conntrack and fragment entries of every endpoint with one of
 * `addresses` at either end (addresses an endpoint no longer holds). */
int tessera_bpf_forget_flows(struct tessera_bpf *t, const struct tessera_flow_address *addresses,
			     size_t n);

/* Unpins the endpoint's stubs and removes its directory. Missing pins are
 * not an error. */
int tessera_bpf_endpoint_unpin(struct tessera_bpf *t, uint64_t endpoint_id);

void tessera_bpf_endpoint_fds_close(struct tessera_endpoint_fds *fds);

/* Ids of the endpoints that have a pin directory; returns how many were
 * written (at most `cap`), or -errno. */
int tessera_bpf_pinned_endpoints(struct tessera_bpf *t, uint64_t *ids, int cap);

/* Attaches from_container at the device's tc ingress and to_container at its
 * tc egress (clsact; an existing qdisc is accepted, an existing Tessera filter
 * is replaced atomically). `hook_created` is set when the qdisc was created
 * here. */
int tessera_bpf_tc_attach(int ifindex, int from_container_fd, int to_container_fd,
			  int *hook_created);

/* Program ids of the Tessera filters on the device (0 when absent). */
int tessera_bpf_tc_query(int ifindex, uint32_t *from_container_id, uint32_t *to_container_id);

/* Removes Tessera's filters from the device, but only those running the
 * expected programs (an expected id of 0 accepts any program). Destroys the
 * clsact qdisc when `destroy_hook` (it was created by Tessera). Missing
 * device or filters are not an error. */
int tessera_bpf_tc_detach(int ifindex, uint32_t expected_from_id, uint32_t expected_to_id,
			  int destroy_hook);

/* The node's own addresses (host_addresses.c): one prefix of the local routing
 * table (local, broadcast, anycast, multicast) on one device, as a listing or
 * a change reports it. */
struct tessera_host_address {
	int ifindex;	/* the route's device; 0 when it has none */
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t prefix_length;
	uint8_t added;	   /* 1: present (listed, or RTM_NEWROUTE); 0: removed (RTM_DELROUTE) */
	uint8_t bytes[16]; /* IPv4: the first 4 */
};

typedef void (*tessera_host_address_fn)(const struct tessera_host_address *address, void *context);

/* Passes every local-table prefix of device `ifindex` (0: of every device) to `fn`. */
int tessera_host_addresses_list(int ifindex, tessera_host_address_fn fn, void *context);

/* A subscription to route changes (RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE); only the
 * local table's are passed on. */
struct tessera_host_address_watch;

int tessera_host_address_watch_open(struct tessera_host_address_watch **out);

/* Waits up to `timeout_ms` for changes and passes each to `fn`: 0, or -ENOBUFS
 * when the kernel dropped changes (the caller lists everything again), or
 * another negative errno. */
int tessera_host_address_watch_read(struct tessera_host_address_watch *w, int timeout_ms,
				    tessera_host_address_fn fn, void *context);

void tessera_host_address_watch_close(struct tessera_host_address_watch *w);

/* The kernel id of a program or map descriptor (0 on error). */
uint32_t tessera_bpf_obj_id(int fd);

/* Map access (thin wrappers returning -errno). */
int tessera_bpf_map_update(int fd, const void *key, const void *value, uint64_t flags);
/* The map's capacity; 0 when it cannot be read. */
uint32_t tessera_bpf_map_max_entries(int fd);
int tessera_bpf_map_lookup(int fd, const void *key, void *value);
int tessera_bpf_map_delete(int fd, const void *key);
int tessera_bpf_map_next_key(int fd, const void *key, void *next_key);
int tessera_bpf_obj_get(const char *path);
void tessera_bpf_close_fd(int fd);

/* Number of possible CPUs (per-CPU map values hold one slot per CPU,
 * each rounded up to 8 bytes). */
int tessera_bpf_num_possible_cpus(void);

/* Runs a tc program on `packet` (an Ethernet frame) `repeat` times with
 * BPF_PROG_TEST_RUN; `retval` gets the program's return code (TC_ACT_OK = 0,
 * TC_ACT_SHOT = 2) and `duration_ns` the mean time per run. */
int tessera_bpf_test_run(int prog_fd, const void *packet, uint32_t len, uint32_t repeat,
			 uint32_t *retval, uint32_t *duration_ns);

/* Monotonic clock (CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns). */
uint64_t tessera_bpf_ktime_ns(void);

/* What libbpf printed during the calling thread's last failing call. */
const char *tessera_bpf_last_log(void);

/* Empty string when eBPF is usable here, else why not (root/CAP_BPF, bpffs,
 * kernel). Does not load anything. */
const char *tessera_bpf_probe(void);

/* Whether `path` is on a bpf filesystem: 1 yes, 0 no, -errno. */
int tessera_bpf_is_bpffs(const char *path);

/* Mounts bpffs at `path` (usually /sys/fs/bpf). */
int tessera_bpf_mount_bpffs(const char *path);

#ifdef __cplusplus
}
#endif

#endif /* TESSERA_BPF_H */
