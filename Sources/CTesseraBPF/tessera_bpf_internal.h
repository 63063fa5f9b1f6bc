/*
 * libbpf loader of the endpoint programs (see include/tessera_bpf.h and
 * docs/architecture.md §5): what its files share.
 *
 * At startup the object is opened from memory and loaded twice through
 * libbpf: the shared handlers (global maps re-used from their pins or
 * created and pinned) and, once, the endpoint stubs as a template. Flow of
 * one endpoint load: a frozen .rodata map with the endpoint's id, the
 * template's instructions pointed at it, two program loads, the programs
 * pinned; no object is parsed and no BTF loaded per endpoint.
 *
 * Files: loader.c (open, adopt or install the handlers), object.c (one
 * object load), stubs.c (each endpoint's stubs from one template), clock.c (the programs' clock),
 * map_upgrade.c (pinned maps whose layout changed, across an upgrade), endpoint.c (an endpoint's
 * stubs and map entries), tc.c (attachment), maps.c (thin wrappers), probe.c, log.c, events.c (the
 * events ring buffer), host_addresses.c (the node's addresses, from rtnetlink), util.c.
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
/* The largest .rodata the loader copies (the object's is 24 bytes). */
#define TESSERA_RODATA_MAX 256

/* The endpoints' stubs, loaded once through libbpf (stubs.c): each
 * endpoint's are the same relocated instructions with its own .rodata. */
struct stub_template {
	struct bpf_object *object; /* owns the instructions and the maps they name */
	const struct bpf_insn *insns[2];
	size_t insn_cnt[2];
	int rodata_fd; /* the template's .rodata map, named in the instructions */
	uint32_t rodata_size;
	uint32_t endpoint_id_offset;
	char rodata[TESSERA_RODATA_MAX];
};

struct tessera_bpf {
	char pin_dir[PATH_MAX];
	char globals_dir[PATH_MAX];
	char endpoints_dir[PATH_MAX];
	void *object;
	size_t object_len;
	uint64_t object_hash;
	uint32_t ct_max; /* tessera_ct's capacity */
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
	struct stub_template stubs;
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
/* The object's .rodata map and the offset of its 64-bit variable `name`
 * (from BTF); -ENOENT when there is no such variable. */
int rodata_variable(struct bpf_object *obj, const char *name, struct bpf_map **rodata,
		    uint32_t *offset);

/* stubs.c */
int stub_template_prepare(struct tessera_bpf *t);
void stub_template_close(struct tessera_bpf *t);
/* Loads endpoint `id`'s two stubs (stub_programs order) into `fds`. */
int stub_load(struct tessera_bpf *t, uint64_t id, int fds[2]);

/* map_upgrade.c: a pinned map of older programs with another layout. */
struct map_upgrade {
	int old_fd; /* -1: nothing to upgrade */
	uint32_t old_key_size;
	uint32_t old_value_size;
	char path[PATH_MAX]; /* where the old map was pinned */
};
int map_upgrade_prepare(struct tessera_bpf *t, const char *name, uint32_t key_size,
			uint32_t value_size, uint32_t max_entries, struct map_upgrade *u);
void map_upgrade_close(struct map_upgrade *u);
void map_upgrade_abandon(struct map_upgrade *u);
void metrics_upgrade_copy(const struct map_upgrade *u, int new_fd);
int map_upgrade_copy_prefix(const struct map_upgrade *u, int new_fd, uint32_t key_size,
			    uint32_t value_size, uint64_t flags);

#pragma GCC visibility pop

#endif /* TESSERA_BPF_INTERNAL_H */
