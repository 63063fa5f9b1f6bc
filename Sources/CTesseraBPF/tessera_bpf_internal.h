/*
 * libbpf loader of the endpoint programs (see include/tessera_bpf.h and
 * docs/architecture.md §5): what its files share.
 *
 * Flow of one endpoint load: open the object from memory, set the endpoint
 * id in .rodata, point the per-endpoint maps at their pin paths and the
 * global maps at the pin root, load (libbpf re-uses pinned maps and pins new
 * ones), pin the programs, and hand out duplicated descriptors; one
 * `cleanup:` path closes the object.
 *
 * Files: loader.c (open, adopt or install the handlers), object.c (one
 * object load), clock.c (the programs' clock), map_upgrade.c (pinned
 * maps whose layout changed, across an upgrade), endpoint.c (an endpoint's stubs and map
 * entries), tc.c (attachment), maps.c (thin wrappers), probe.c, log.c,
 * events.c (the events ring buffer), host_addresses.c (the node's addresses, from
 * rtnetlink), util.c.
 */
#ifndef TESSERA_BPF_INTERNAL_H
#define TESSERA_BPF_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "tessera_bpf.h"

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <bpf/libbpf.h>

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

#define TESSERA_OBJECT_NAME "tessera_endpoint"

struct tessera_bpf {
	char pin_dir[PATH_MAX];
	char globals_dir[PATH_MAX];
	char endpoints_dir[PATH_MAX];
	void *object;
	size_t object_len;
	uint64_t object_hash;
	int ipcache_fd;
	int endpoints_fd;
	int ct_fd;
	int policy_fd;
	int policy_stats_fd;
	int metrics_fd;
	int frags_fd;
	int handlers_fd;
	int loader_fd;
	int events_fd;
	int events_lost_fd;
	int adopted; /* handlers re-used from a previous run */
};

/* Shared by the loader's files only: not part of the library's interface. */
#pragma GCC visibility push(hidden)

extern const char *const stub_programs[2];
extern const char *const handler_programs[TESSERA_HANDLER_MAX];

/* log.c */
void log_reset(void);
void log_append(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* util.c */
int neg_errno(void);
/* bpf_map_update_elem, retried briefly on ENOMEM (maps.c). */
int map_update_retrying(int fd, const void *key, const void *value, uint64_t flags);
int mkdir_p(const char *path, mode_t mode);
int dup_fd(int fd);
uint64_t now_ns(void);

/* clock.c: ns-per-jiffy (0 when unknown) and base of the handlers' clock,
 * measured once per process. */
void program_clock(uint64_t *ns_per_jiffy, uint64_t *base_ns);

/* object.c */
int open_object(struct tessera_bpf *t, uint64_t id, int handlers, struct bpf_object **out);
int get_fd(struct bpf_object *obj, const char *map_name);

/* map_upgrade.c: a pinned map of older programs with another layout. */
struct map_upgrade {
	int old_fd; /* -1: nothing to upgrade */
	uint32_t old_key_size;
	uint32_t old_value_size;
};
int map_upgrade_prepare(struct tessera_bpf *t, const char *name, uint32_t key_size,
			uint32_t value_size, struct map_upgrade *u);
void map_upgrade_close(struct map_upgrade *u);
void metrics_upgrade_copy(const struct map_upgrade *u, int new_fd);
int map_upgrade_copy_prefix(const struct map_upgrade *u, int new_fd, uint32_t key_size,
			    uint32_t value_size, uint64_t flags);

#pragma GCC visibility pop

#endif /* TESSERA_BPF_INTERNAL_H */
