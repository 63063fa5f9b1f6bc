/*
 * The reader of the events ring buffer (maps_types.h, events): datapathd
 * polls it from one thread and copies events out in batches.
 */
#include "tessera_bpf_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

struct tessera_events {
	struct ring_buffer *ring;
	/* The batch being filled by the callback during one read. */
	struct tessera_event *out;
	int cap;
	int count;
};

/* Returning a negative value stops the poll; the sample passed in is
 * consumed either way, so it is copied first. */
static int copy_event(void *ctx, void *data, size_t size)
{
	struct tessera_events *e = ctx;

	if (size < sizeof(struct tessera_event))
		return 0; /* not ours: skip it */
	memcpy(&e->out[e->count++], data, sizeof(struct tessera_event));
	return e->count == e->cap ? -E2BIG : 0;
}

int tessera_events_open(const struct tessera_bpf *t, struct tessera_events **out)
{
	struct tessera_events *e;

	log_reset();
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->ring = ring_buffer__new(t->events_fd, copy_event, e, NULL);
	if (!e->ring) {
		int err = neg_errno();
		log_append("tessera: cannot open the events ring buffer: %s\n", strerror(-err));
		free(e);
		return err;
	}
	*out = e;
	return 0;
}

void tessera_events_close(struct tessera_events *e)
{
	if (!e)
		return;
	ring_buffer__free(e->ring);
	free(e);
}

int tessera_events_read(struct tessera_events *e, struct tessera_event *out, int cap,
			int timeout_ms)
{
	int err;

	if (cap <= 0)
		return -EINVAL;
	e->out = out;
	e->cap = cap;
	e->count = 0;
	/* The programs wake readers only for a batch (endpoint.bpf.c, emit): what is
	 * pending is taken at once, and after the wait, woken or not. */
	err = ring_buffer__consume(e->ring);
	if (err >= 0 && e->count == 0) {
		err = ring_buffer__poll(e->ring, timeout_ms);
		if (err >= 0 && e->count < cap)
			err = ring_buffer__consume(e->ring);
	}
	e->out = NULL;
	if (err < 0 && err != -E2BIG && err != -EINTR)
		return err;
	return e->count;
}

uint64_t tessera_events_lost(const struct tessera_bpf *t)
{
	int cpus = libbpf_num_possible_cpus();
	uint64_t *values, total = 0;
	uint32_t key = 0;

	if (cpus <= 0)
		return 0;
	values = calloc((size_t)cpus, sizeof(*values));
	if (!values)
		return 0;
	if (bpf_map_lookup_elem(t->events_lost_fd, &key, values) == 0)
		for (int i = 0; i < cpus; i++)
			total += values[i];
	free(values);
	return total;
}
