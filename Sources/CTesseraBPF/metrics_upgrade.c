/* The counters map across a daemon upgrade that added reasons. */
#include "tessera_bpf_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

/* The counters map of older programs, when its value size differs from
 * this object's (reasons were added): it is unpinned so that the load
 * creates the new one, and its descriptor returned in `old_fd` (-1 when the
 * pinned map is absent or compatible) for metrics_upgrade_copy. The old
 * handlers keep counting into it until the new ones are installed. */
int metrics_upgrade_prepare(struct tessera_bpf *t, int *old_fd, uint32_t *old_value_size)
{
	struct bpf_map_info info;
	uint32_t len = sizeof(info);
	char path[PATH_MAX];
	int fd;

	*old_fd = -1;
	if (snprintf(path, sizeof(path), "%s/tessera_metrics", t->globals_dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = bpf_obj_get(path);
	if (fd < 0)
		return 0;
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) ||
	    (info.value_size == sizeof(struct endpoint_metrics) &&
	     info.key_size == sizeof(uint64_t))) {
		close(fd);
		return 0;
	}
	if (unlink(path) < 0) {
		int err = neg_errno();
		close(fd);
		return err;
	}
	log_append("tessera: counters map of older programs (%u-byte values) replaced\n",
		   info.value_size);
	*old_fd = fd;
	*old_value_size = info.value_size;
	return 0;
}

/* Copies every endpoint's counters from the older map, reason by reason
 * (reasons keep their numbers; new ones start at 0). */
void metrics_upgrade_copy(int old_fd, uint32_t old_value_size, int new_fd)
{
	const size_t slot = sizeof(struct metrics_value);
	size_t old_reasons = old_value_size / (2 * slot),
	       old_stride = ((size_t)old_value_size + 7) / 8 * 8;
	int ncpus = libbpf_num_possible_cpus();
	uint64_t key, next;
	int have = 0;
	char *old_value;
	struct endpoint_metrics *value;

	if (ncpus <= 0 || old_reasons == 0)
		return;
	old_value = calloc((size_t)ncpus, old_stride);
	value = calloc((size_t)ncpus, sizeof(*value));
	while (old_value && value && bpf_map_get_next_key(old_fd, have ? &key : NULL, &next) == 0) {
		key = next;
		have = 1;
		if (bpf_map_lookup_elem(old_fd, &key, old_value))
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
		bpf_map_update_elem(new_fd, &key, value, BPF_NOEXIST);
	}
	free(old_value);
	free(value);
}
