/*
 * The loader: the object's bytes, the pinned global maps, and the shared
 * handlers installed in tessera_handlers (or re-adopted after a restart).
 */
#include "tessera_bpf_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>

static const char *const global_maps[] = {
	"tessera_ipcache", "tessera_endpoints",	  "tessera_ct",		  "tessera_policy",
	"tessera_metrics", "tessera_handlers",	  "tessera_loader",	  "tessera_frags",
	"tessera_events",  "tessera_events_lost", "tessera_policy_stats",
};
#define NR_GLOBAL_MAPS (sizeof(global_maps) / sizeof(global_maps[0]))

static int *global_fd_slot(struct tessera_bpf *t, size_t i)
{
	int *slots[NR_GLOBAL_MAPS] = {&t->ipcache_fd,	  &t->endpoints_fd,   &t->ct_fd,
				      &t->policy_fd,	  &t->metrics_fd,     &t->handlers_fd,
				      &t->loader_fd,	  &t->frags_fd,	      &t->events_fd,
				      &t->events_lost_fd, &t->policy_stats_fd};
	return slots[i];
}

static int read_file(const char *path, void **out, size_t *out_len)
{
	struct stat st;
	void *buf = NULL;
	size_t done = 0;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return neg_errno();
	if (fstat(fd, &st) < 0) {
		err = neg_errno();
		goto cleanup;
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		err = -ENOMEM;
		goto cleanup;
	}
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, (char *)buf + done, (size_t)st.st_size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? neg_errno() : -EIO;
			goto cleanup;
		}
		done += (size_t)n;
	}
	*out = buf;
	*out_len = done;
	buf = NULL;
cleanup:
	free(buf);
	close(fd);
	return err;
}

static uint64_t fnv1a(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void close_globals(struct tessera_bpf *t)
{
	for (size_t i = 0; i < NR_GLOBAL_MAPS; i++) {
		int *fd = global_fd_slot(t, i);
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
	}
}

/* Opens every pinned global map; -ENOENT when one is missing. */
static int open_pinned_globals(struct tessera_bpf *t)
{
	char path[PATH_MAX];

	for (size_t i = 0; i < NR_GLOBAL_MAPS; i++) {
		int fd;
		if (snprintf(path, sizeof(path), "%s/%s", t->globals_dir, global_maps[i]) >=
		    (int)sizeof(path))
			return -ENAMETOOLONG;
		fd = bpf_obj_get(path);
		if (fd < 0) {
			close_globals(t);
			return fd;
		}
		*global_fd_slot(t, i) = fd;
	}
	return 0;
}

/* Whether the pinned state was installed from this very object, with the
 * conntrack capacity asked for, and its handlers are still in the program
 * array. */
static int can_adopt(struct tessera_bpf *t)
{
	struct loader_state state;
	uint32_t key = 0;

	if (bpf_map_lookup_elem(t->loader_fd, &key, &state) || state.object_hash != t->object_hash)
		return 0;
	if (tessera_bpf_map_max_entries(t->ct_fd) != t->ct_max)
		return 0;
	for (uint32_t slot = 0; slot < TESSERA_HANDLER_MAX; slot++) {
		uint32_t id = 0;
		if (bpf_map_lookup_elem(t->handlers_fd, &slot, &id) ||
		    id != state.handler_ids[slot])
			return 0;
	}
	return 1;
}

/* Unpins the maps of older programs whose layout changed (the load then
 * creates them anew): the counters (reasons added), conntrack and policy
 * (counter slots added). */
static int upgrade_prepare(struct tessera_bpf *t, struct map_upgrade *metrics,
			   struct map_upgrade *ct, struct map_upgrade *policy)
{
	int err;

	if ((err = map_upgrade_prepare(t, "tessera_metrics", sizeof(uint64_t),
				       sizeof(struct endpoint_metrics), 0, metrics)))
		return err;
	if ((err = map_upgrade_prepare(t, "tessera_ct", sizeof(struct ct_key),
				       sizeof(struct ct_entry), t->ct_max, ct)))
		return err;
	return map_upgrade_prepare(t, "tessera_policy", sizeof(struct policy_key),
				   sizeof(struct policy_value), 0, policy);
}

/* Loads the shared handlers (one verifier pass per daemon start when the
 * object changed), creating or re-using the pinned global maps, and installs
 * them in the program array: every endpoint's stub uses them from then on. */
static int install_handlers(struct tessera_bpf *t)
{
	struct loader_state state = {.object_hash = t->object_hash, .installed_ns = now_ns()};
	struct map_upgrade metrics = {.old_fd = -1}, ct = {.old_fd = -1}, policy = {.old_fd = -1};
	char path[PATH_MAX];
	struct bpf_object *obj = NULL;
	uint32_t key = 0;
	int err;

	if ((err = upgrade_prepare(t, &metrics, &ct, &policy)))
		goto cleanup;
	if ((err = open_object(t, 0, 1, &obj)))
		goto cleanup;
	if ((err = bpf_object__load(obj)))
		goto cleanup;
	for (size_t i = 0; i < NR_GLOBAL_MAPS; i++) {
		int fd = get_fd(obj, global_maps[i]);
		if (fd < 0) {
			err = fd;
			goto cleanup;
		}
		*global_fd_slot(t, i) = fd;
	}
	metrics_upgrade_copy(&metrics, t->metrics_fd);
	/* Policy entries come over without counter slots (the backend hands
	 * them out at startup), connections without the slot of the entry that
	 * allowed them: they pass as before and are not counted. */
	map_upgrade_copy_prefix(&policy, t->policy_fd, sizeof(struct policy_key),
				sizeof(struct policy_value), BPF_ANY);
	map_upgrade_copy_prefix(&ct, t->ct_fd, sizeof(struct ct_key), sizeof(struct ct_entry),
				BPF_NOEXIST);
	for (uint32_t slot = 0; slot < TESSERA_HANDLER_MAX; slot++) {
		struct bpf_program *prog =
			bpf_object__find_program_by_name(obj, handler_programs[slot]);
		int fd = bpf_program__fd(prog);
		if ((err = bpf_map_update_elem(t->handlers_fd, &slot, &fd, BPF_ANY))) {
			log_append("tessera: cannot install %s: %s\n", handler_programs[slot],
				   strerror(-err));
			goto cleanup;
		}
		state.handler_ids[slot] = tessera_bpf_obj_id(fd);
		/* Pinned for inspection (bpftool prog show pinned ...). */
		if (snprintf(path, sizeof(path), "%s/%s", t->globals_dir, handler_programs[slot]) >=
		    (int)sizeof(path)) {
			err = -ENAMETOOLONG;
			goto cleanup;
		}
		unlink(path);
		if ((err = bpf_program__pin(prog, path)))
			goto cleanup;
	}
	/* Connections the old handlers created while the copy above ran. */
	map_upgrade_copy_prefix(&ct, t->ct_fd, sizeof(struct ct_key), sizeof(struct ct_entry),
				BPF_NOEXIST);
	err = bpf_map_update_elem(t->loader_fd, &key, &state, BPF_ANY);
cleanup:
	if (err) {
		close_globals(t);
		map_upgrade_abandon(&metrics);
		map_upgrade_abandon(&ct);
		map_upgrade_abandon(&policy);
	}
	map_upgrade_close(&metrics);
	map_upgrade_close(&ct);
	map_upgrade_close(&policy);
	bpf_object__close(obj);
	return err;
}

int tessera_bpf_open(const char *object_path, const char *pin_dir, uint32_t conntrack_max,
		     struct tessera_bpf **out)
{
	struct tessera_bpf *t;
	int err;

	log_reset();
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < NR_GLOBAL_MAPS; i++)
		*global_fd_slot(t, i) = -1;
	if (snprintf(t->pin_dir, sizeof(t->pin_dir), "%s", pin_dir) >= (int)sizeof(t->pin_dir) ||
	    snprintf(t->globals_dir, sizeof(t->globals_dir), "%s/globals", pin_dir) >=
		    (int)sizeof(t->globals_dir) ||
	    snprintf(t->endpoints_dir, sizeof(t->endpoints_dir), "%s/endpoints", pin_dir) >=
		    (int)sizeof(t->endpoints_dir)) {
		err = -ENAMETOOLONG;
		goto fail;
	}
	err = read_file(object_path, &t->object, &t->object_len);
	if (err) {
		log_append("tessera: cannot read %s: %s\n", object_path, strerror(-err));
		goto fail;
	}
	t->object_hash = fnv1a(t->object, t->object_len);
	t->ct_max = conntrack_max ? conntrack_max : TESSERA_CT_DEFAULT_MAX;
	if ((err = mkdir_p(t->globals_dir, 0700)) || (err = mkdir_p(t->endpoints_dir, 0700))) {
		log_append("tessera: cannot create %s: %s\n", t->pin_dir, strerror(-err));
		goto fail;
	}

	/* A restart with the same object re-adopts everything as it is. */
	if (open_pinned_globals(t) == 0) {
		if (can_adopt(t))
			t->adopted = 1;
		else
			close_globals(t);
	}
	if (!t->adopted && (err = install_handlers(t)))
		goto fail;
	if ((err = stub_template_prepare(t)))
		goto fail;
	*out = t;
	return 0;
fail:
	tessera_bpf_close(t);
	return err;
}

void tessera_bpf_close(struct tessera_bpf *t)
{
	if (!t)
		return;
	stub_template_close(t);
	close_globals(t);
	free(t->object);
	free(t);
}

int tessera_bpf_adopted(const struct tessera_bpf *t)
{
	return t->adopted;
}

int tessera_bpf_ipcache_fd(const struct tessera_bpf *t)
{
	return t->ipcache_fd;
}

int tessera_bpf_endpoints_fd(const struct tessera_bpf *t)
{
	return t->endpoints_fd;
}

int tessera_bpf_ct_fd(const struct tessera_bpf *t)
{
	return t->ct_fd;
}

int tessera_bpf_policy_fd(const struct tessera_bpf *t)
{
	return t->policy_fd;
}

int tessera_bpf_metrics_fd(const struct tessera_bpf *t)
{
	return t->metrics_fd;
}

int tessera_bpf_policy_stats_fd(const struct tessera_bpf *t)
{
	return t->policy_stats_fd;
}
