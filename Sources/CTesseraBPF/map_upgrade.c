/*
 * Pinned maps across a daemon upgrade that changed their layout: the
 * counters map (reasons added) and the maps whose structs gained fields at
 * their end (conntrack and policy entries, for the policy counters).
 */
#include "tessera_bpf_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

/* The pinned map `name` of older programs, when its key or value size
 * differs from this object's, or its capacity from `max_entries` (0: any):
 * it is unpinned so that the load creates the new one, and its descriptor
 * kept in `u` (old_fd -1 when the pinned map is absent or compatible) for
 * the copy. The old handlers keep using it until the new ones are
 * installed. */
int map_upgrade_prepare(struct tessera_bpf *t, const char *name, uint32_t key_size,
			uint32_t value_size, uint32_t max_entries, struct map_upgrade *u)
{
	struct bpf_map_info info;
	uint32_t len = sizeof(info);
	char path[PATH_MAX];
	int fd;

	u->old_fd = -1;
	u->old_key_size = 0;
	u->old_value_size = 0;
	if (snprintf(path, sizeof(path), "%s/%s", t->globals_dir, name) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = bpf_obj_get(path);
	if (fd < 0)
		return 0;
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) ||
	    (info.value_size == value_size && info.key_size == key_size &&
	     (!max_entries || info.max_entries == max_entries))) {
		close(fd);
		return 0;
	}
	if (unlink(path) < 0) {
		int err = neg_errno();
		close(fd);
		return err;
	}
	log_append("tessera: %s of older programs (%u-byte values, %u entries) replaced\n", name,
		   info.value_size, info.max_entries);
	u->old_fd = fd;
	u->old_key_size = info.key_size;
	u->old_value_size = info.value_size;
	memcpy(u->path, path, sizeof(u->path));
	return 0;
}

/* An upgrade that failed (the new map could not be created, say a conntrack
 * table too large for the memory there is): the old map is pinned again
 * where it was, unless the load already pinned its successor there, so that
 * nothing it holds is lost and the next start finds it. */
void map_upgrade_abandon(struct map_upgrade *u)
{
	if (u->old_fd < 0 || access(u->path, F_OK) == 0)
		return;
	if (bpf_obj_pin(u->old_fd, u->path))
		log_append("tessera: cannot pin %s again: %s\n", u->path, strerror(errno));
}

void map_upgrade_close(struct map_upgrade *u)
{
	if (u->old_fd >= 0)
		close(u->old_fd);
	u->old_fd = -1;
}

/* Copies every endpoint's counters from the older map, reason by reason
 * (reasons keep their numbers; new ones start at 0). */
void metrics_upgrade_copy(const struct map_upgrade *u, int new_fd)
{
	const size_t slot = sizeof(struct metrics_value);
	size_t old_reasons = u->old_value_size / (2 * slot),
	       old_stride = ((size_t)u->old_value_size + 7) / 8 * 8;
	int ncpus = libbpf_num_possible_cpus();
	uint64_t key, next;
	int have = 0;
	char *old_value;
	struct endpoint_metrics *value;

	if (u->old_fd < 0 || u->old_key_size != sizeof(uint64_t) || ncpus <= 0 || old_reasons == 0)
		return;
	old_value = calloc((size_t)ncpus, old_stride);
	value = calloc((size_t)ncpus, sizeof(*value));
	while (old_value && value &&
	       bpf_map_get_next_key(u->old_fd, have ? &key : NULL, &next) == 0) {
		key = next;
		have = 1;
		if (bpf_map_lookup_elem(u->old_fd, &key, old_value))
			continue;
		memset(value, 0, (size_t)ncpus * sizeof(*value));
		for (int cpu = 0; cpu < ncpus; cpu++) {
			const struct metrics_value *from =
				(const void *)(old_value + (size_t)cpu * old_stride);
			for (size_t dir = 0; dir < 2; dir++)
				for (size_t r = 0; r < old_reasons && r < TESSERA_REASON_MAX; r++)
					value[cpu].counters[dir * TESSERA_REASON_MAX + r] =
						from[dir * old_reasons + r];
		}
		map_update_retrying(new_fd, &key, value, BPF_NOEXIST);
	}
	free(old_value);
	free(value);
}

/* Copies every entry of the older map into the new one (`flags`:
 * BPF_NOEXIST keeps what the new map already holds), each old value as the
 * first bytes of the new value and the fields added after it zero: the
 * structs of these maps only ever gain fields at their end. Returns how
 * many entries were copied. */
int map_upgrade_copy_prefix(const struct map_upgrade *u, int new_fd, uint32_t key_size,
			    uint32_t value_size, uint64_t flags)
{
	size_t common = u->old_value_size < value_size ? u->old_value_size : value_size;
	char *key = NULL, *next = NULL, *old_value = NULL, *value = NULL;
	int have = 0, copied = 0;

	if (u->old_fd < 0 || u->old_key_size != key_size)
		return 0;
	key = calloc(1, key_size);
	next = calloc(1, key_size);
	old_value = calloc(1, u->old_value_size);
	value = calloc(1, value_size);
	while (key && next && old_value && value &&
	       bpf_map_get_next_key(u->old_fd, have ? key : NULL, next) == 0) {
		memcpy(key, next, key_size);
		have = 1;
		if (bpf_map_lookup_elem(u->old_fd, key, old_value))
			continue;
		memset(value, 0, value_size);
		memcpy(value, old_value, common);
		if (map_update_retrying(new_fd, key, value, flags) == 0)
			copied++;
	}
	free(key);
	free(next);
	free(old_value);
	free(value);
	return copied;
}
