/*
 * One endpoint's state: its stubs (loaded, pinned under endpoints/<id>/,
 * re-opened after a restart) and its entries in the global maps.
 */
#include "tessera_bpf_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

static int endpoint_path(const struct tessera_bpf *t, uint64_t id, const char *name, char *out,
			 size_t cap)
{
	int n = name ? snprintf(out, cap, "%s/%llu/%s", t->endpoints_dir, (unsigned long long)id,
				name)
		     : snprintf(out, cap, "%s/%llu", t->endpoints_dir, (unsigned long long)id);
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

void tessera_bpf_endpoint_fds_close(struct tessera_endpoint_fds *fds)
{
	int *all[] = {&fds->from_container, &fds->to_container};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (*all[i] >= 0)
			close(*all[i]);
		*all[i] = -1;
	}
}

/* Pins `prog` at `path`, replacing an older pin (bpffs has no rename; the
 * attached filters, not the pins, keep programs running meanwhile). */
static int pin_program(int fd, const char *path)
{
	if (unlink(path) < 0 && errno != ENOENT)
		return neg_errno();
	return bpf_obj_pin(fd, path);
}

int tessera_bpf_endpoint_load(struct tessera_bpf *t, uint64_t endpoint_id,
			      struct tessera_endpoint_fds *fds, uint64_t *load_ns)
{
	struct tessera_endpoint_fds got = {-1, -1};
	struct endpoint_metrics *zero = NULL;
	char ep_dir[PATH_MAX], path[PATH_MAX];
	int stubs[2] = {-1, -1};
	uint64_t start = now_ns();
	int ncpus, err;

	log_reset();
	if ((err = endpoint_path(t, endpoint_id, NULL, ep_dir, sizeof(ep_dir))))
		return err;
	if ((err = mkdir_p(ep_dir, 0700)))
		return err;

	/* Counters exist before the programs can run (kept if already there). */
	ncpus = libbpf_num_possible_cpus();
	if (ncpus <= 0)
		return ncpus < 0 ? ncpus : -EINVAL;
	zero = calloc((size_t)ncpus, sizeof(*zero));
	if (!zero)
		return -ENOMEM;
	err = map_update_retrying(t->metrics_fd, &endpoint_id, zero, BPF_NOEXIST);
	free(zero);
	if (err && err != -EEXIST) {
		log_append("tessera: cannot create the counters of endpoint %llu: %s\n",
			   (unsigned long long)endpoint_id, strerror(-err));
		return err;
	}

	if ((err = stub_load(t, endpoint_id, stubs)))
		goto cleanup;
	got.from_container = stubs[0];
	got.to_container = stubs[1];
	for (size_t i = 0; i < 2; i++) {
		if ((err = endpoint_path(t, endpoint_id, stub_programs[i], path, sizeof(path))))
			goto cleanup;
		if ((err = pin_program(stubs[i], path))) {
			log_append("tessera: cannot pin %s: %s\n", path, strerror(-err));
			goto cleanup;
		}
	}
	*fds = got;
	got = (struct tessera_endpoint_fds){-1, -1};
	if (load_ns)
		*load_ns = now_ns() - start;
cleanup:
	tessera_bpf_endpoint_fds_close(&got);
	return err;
}

int tessera_bpf_endpoint_open_pinned(struct tessera_bpf *t, uint64_t endpoint_id,
				     struct tessera_endpoint_fds *fds)
{
	int *slots[] = {&fds->from_container, &fds->to_container};
	char path[PATH_MAX];
	int found = 0, err;

	log_reset();
	for (size_t i = 0; i < 2; i++) {
		int fd;
		*slots[i] = -1;
		if ((err = endpoint_path(t, endpoint_id, stub_programs[i], path, sizeof(path)))) {
			tessera_bpf_endpoint_fds_close(fds);
			return err;
		}
		fd = bpf_obj_get(path);
		if (fd < 0 && fd != -ENOENT) {
			tessera_bpf_endpoint_fds_close(fds);
			return fd;
		}
		if (fd >= 0) {
			*slots[i] = fd;
			found++;
		}
	}
	return found ? 0 : -ENOENT;
}

/* Matching keys, collected before any is deleted (deleting while walking
 * would restart the walk). */
struct key_list {
	char *keys;
	size_t key_size, n, cap;
};

static int key_list_add(struct key_list *l, const void *key)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 256;
		char *grown = realloc(l->keys, cap * l->key_size);
		if (!grown)
			return -ENOMEM;
		l->keys = grown;
		l->cap = cap;
	}
	memcpy(l->keys + l->n * l->key_size, key, l->key_size);
	l->n++;
	return 0;
}

/* Batches of keys per bpf(2) call when walking a hash map: a node's
 * conntrack table holds tens of thousands of flows, and one call per key made
 * every endpoint deletion pay for all of them. */
#define WALK_BATCH 1024

/* The kernel's "operation not supported" (not in the uapi headers), which
 * bpf(2) returns for a map type without batch operations. */
#ifndef ENOTSUPP
#define ENOTSUPP 524
#endif

/* Collects the matching keys with batched lookups. Fails with -ENOTSUPP or
 * -EINVAL when the map type has no batch operations, -ENOSPC when one hash
 * bucket holds more than a batch: the caller then walks key by key. */
static int collect_batched(int fd, size_t value_size,
			   int (*match)(const void *key, const void *ctx), const void *ctx,
			   struct key_list *out)
{
	char *keys = malloc(WALK_BATCH * out->key_size), *values = malloc(WALK_BATCH * value_size);
	/* The position between calls: a bucket index for hash maps, a key for
	 * the generic walk, so sized for either. */
	uint64_t token_in[8] = {0}, token_out[8] = {0};
	void *in = NULL;
	int err = 0;

	if (!keys || !values) {
		err = -ENOMEM;
		goto done;
	}
	for (;;) {
		uint32_t count = WALK_BATCH;
		int rc = bpf_map_lookup_batch(fd, in, token_out, keys, values, &count, NULL);
		if (rc < 0 && rc != -ENOENT) {
			err = rc;
			break;
		}
		for (uint32_t i = 0; i < count && !err; i++)
			if (match(keys + i * out->key_size, ctx))
				err = key_list_add(out, keys + i * out->key_size);
		if (err || rc == -ENOENT)
			break;
		memcpy(token_in, token_out, sizeof(token_in));
		in = token_in;
	}
done:
	free(keys);
	free(values);
	return err;
}

/* One bpf(2) call per key: any map type. */
static int collect_walked(int fd, int (*match)(const void *key, const void *ctx), const void *ctx,
			  struct key_list *out)
{
	char next[64], prev[64];
	char *cur = NULL;
	int err;

	while ((err = bpf_map_get_next_key(fd, cur, next)) == 0) {
		if (match(next, ctx) && (err = key_list_add(out, next)))
			return err;
		memcpy(prev, next, out->key_size);
		cur = prev;
	}
	return err == -ENOENT ? 0 : err;
}

/* Deletes every key of `fd` for which `match` holds. */
static int delete_matching(int fd, size_t key_size, size_t value_size,
			   int (*match)(const void *key, const void *ctx), const void *ctx)
{
	struct key_list found = {.key_size = key_size};
	int err;

	if (key_size > 64)
		return -EINVAL;
	err = collect_batched(fd, value_size, match, ctx, &found);
	if (err == -ENOTSUPP || err == -EOPNOTSUPP || err == -EINVAL || err == -ENOSPC) {
		found.n = 0;
		err = collect_walked(fd, match, ctx, &found);
	}
	for (size_t i = 0; i < found.n && !err; i++) {
		int e = bpf_map_delete_elem(fd, found.keys + i * key_size);
		if (e && e != -ENOENT)
			err = e;
	}
	free(found.keys);
	return err;
}

static int policy_key_matches(const void *key, const void *id)
{
	return ((const struct policy_key *)key)->endpoint_id == *(const uint64_t *)id;
}

/* The conntrack and fragment entries to delete: an endpoint's own (when
 * `by_endpoint`), and every endpoint's with one of `addresses` at either end. */
struct flow_match {
	int by_endpoint;
	uint64_t endpoint_id;
	const struct tessera_flow_address *addresses;
	size_t n;
};

static int address_listed(const struct flow_match *m, uint8_t family, const uint8_t *addr)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->addresses[i].family == family && !memcmp(m->addresses[i].addr, addr, 16))
			return 1;
	return 0;
}

static int flow_matches(const struct flow_match *m, uint64_t endpoint_id, uint8_t family,
			const uint8_t *saddr, const uint8_t *daddr)
{
	if (m->by_endpoint && endpoint_id == m->endpoint_id)
		return 1;
	return address_listed(m, family, saddr) || address_listed(m, family, daddr);
}

static int ct_key_matches(const void *key, const void *ctx)
{
	const struct ct_key *k = key;

	return flow_matches(ctx, k->endpoint_id, k->family, k->saddr, k->daddr);
}

static int frag_key_matches(const void *key, const void *ctx)
{
	const struct frag_key *k = key;

	return flow_matches(ctx, k->endpoint_id, k->family, k->saddr, k->daddr);
}

/* One walk of each table: conntrack holds tens of thousands of flows. */
static int delete_flows(struct tessera_bpf *t, const struct flow_match *m)
{
	int err, first = 0;

	if ((err = delete_matching(t->ct_fd, sizeof(struct ct_key), sizeof(struct ct_entry),
				   ct_key_matches, m)))
		first = err;
	if ((err = delete_matching(t->frags_fd, sizeof(struct frag_key), sizeof(struct frag_value),
				   frag_key_matches, m)))
		first = first ? first : err;
	return first;
}

int tessera_bpf_endpoint_purge(struct tessera_bpf *t, uint64_t endpoint_id, int scan_policy,
			       const struct tessera_flow_address *addresses, size_t n)
{
	struct flow_match flows = {
		.by_endpoint = 1, .endpoint_id = endpoint_id, .addresses = addresses, .n = n};
	int err, first = 0;

	log_reset();
	if (scan_policy &&
	    (err = delete_matching(t->policy_fd, sizeof(struct policy_key),
				   sizeof(struct policy_value), policy_key_matches, &endpoint_id)))
		first = first ? first : err;
	if ((err = delete_flows(t, &flows)))
		first = first ? first : err;
	err = bpf_map_delete_elem(t->metrics_fd, &endpoint_id);
	if (err && err != -ENOENT)
		first = first ? first : err;
	err = bpf_map_delete_elem(t->endpoints_fd, &endpoint_id);
	if (err && err != -ENOENT)
		first = first ? first : err;
	return first;
}

int tessera_bpf_forget_flows(struct tessera_bpf *t, const struct tessera_flow_address *addresses,
			     size_t n)
{
	struct flow_match flows = {.addresses = addresses, .n = n};

	log_reset();
	return n ? delete_flows(t, &flows) : 0;
}

int tessera_bpf_endpoint_unpin(struct tessera_bpf *t, uint64_t endpoint_id)
{
	char dir[PATH_MAX], path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int err;

	log_reset();
	if ((err = endpoint_path(t, endpoint_id, NULL, dir, sizeof(dir))))
		return err;
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : neg_errno();
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path))
			continue;
		if (unlink(path) < 0 && errno != ENOENT) {
			err = neg_errno();
			closedir(d);
			return err;
		}
	}
	closedir(d);
	if (rmdir(dir) < 0 && errno != ENOENT)
		return neg_errno();
	return 0;
}

int tessera_bpf_pinned_endpoints(struct tessera_bpf *t, uint64_t *ids, int cap)
{
	struct dirent *de;
	int n = 0;
	DIR *d;

	log_reset();
	d = opendir(t->endpoints_dir);
	if (!d)
		return errno == ENOENT ? 0 : neg_errno();
	while ((de = readdir(d)) && n < cap) {
		char *end;
		unsigned long long id;
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		errno = 0;
		id = strtoull(de->d_name, &end, 10);
		if (*end || errno)
			continue;
		ids[n++] = id;
	}
	closedir(d);
	return n;
}
