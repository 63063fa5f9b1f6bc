/* Thin wrappers over libbpf for Swift: maps, descriptors, test runs. */
#include "tessera_bpf_internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

uint32_t tessera_bpf_obj_id(int fd)
{
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);

	/* bpf_prog_info and bpf_map_info both start with type, id. */
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return 0;
	return info.id;
}

uint32_t tessera_bpf_map_max_entries(int fd)
{
	struct bpf_map_info info;
	uint32_t len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return 0;
	return info.max_entries;
}

/* Maps without preallocation (BPF_F_NO_PREALLOC) take elements, and per-CPU
 * values, from the kernel's BPF memory caches, which are refilled
 * asynchronously; after a burst of inserts, or while a burst of deletions is
 * still being freed, an insert can fail with ENOMEM although memory is there
 * (20,000 inserts in a row into a per-CPU hash fail about 3 % of the time on
 * the 2-core test VM). Retrying after a short pause, up to ~50 ms in all, gets
 * through; a real shortage still fails. */
int map_update_retrying(int fd, const void *key, const void *value, uint64_t flags)
{
	for (int attempt = 0;; attempt++) {
		int err = bpf_map_update_elem(fd, key, value, flags);
		if (err != -ENOMEM || attempt >= 10)
			return err;
		long pause_us = attempt < 7 ? 100L << attempt : 10000;
		struct timespec pause = {.tv_sec = 0, .tv_nsec = pause_us * 1000};
		nanosleep(&pause, NULL);
	}
}

int tessera_bpf_map_update(int fd, const void *key, const void *value, uint64_t flags)
{
	return map_update_retrying(fd, key, value, flags);
}

int tessera_bpf_map_lookup(int fd, const void *key, void *value)
{
	return bpf_map_lookup_elem(fd, key, value);
}

int tessera_bpf_map_delete(int fd, const void *key)
{
	return bpf_map_delete_elem(fd, key);
}

int tessera_bpf_map_next_key(int fd, const void *key, void *next_key)
{
	return bpf_map_get_next_key(fd, key, next_key);
}

int tessera_bpf_obj_get(const char *path)
{
	return bpf_obj_get(path);
}

void tessera_bpf_close_fd(int fd)
{
	if (fd >= 0)
		close(fd);
}

int tessera_bpf_num_possible_cpus(void)
{
	return libbpf_num_possible_cpus();
}

int tessera_bpf_test_run(int prog_fd, const void *packet, uint32_t len, uint32_t repeat,
			 uint32_t *retval, uint32_t *duration_ns)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = packet, .data_size_in = len,
		    .repeat = repeat);
	int err;

	log_reset();
	err = bpf_prog_test_run_opts(prog_fd, &opts);
	if (err)
		return err;
	*retval = opts.retval;
	*duration_ns = opts.duration;
	return 0;
}
