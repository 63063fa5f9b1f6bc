/* The endpoint's tc filters (clsact ingress and egress of its host-side device). */
#include "tessera_bpf_internal.h"

#include <errno.h>
#include <net/if.h>

static int tc_query_one(int ifindex, enum bpf_tc_attach_point point, uint32_t *prog_id)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = TESSERA_TC_HANDLE,
		    .priority = TESSERA_TC_PRIORITY);
	int err = bpf_tc_query(&hook, &opts);

	*prog_id = 0;
	if (err == -ENOENT || err == -EINVAL)
		return 0; /* no filter (EINVAL: no clsact qdisc) */
	if (err)
		return err;
	*prog_id = opts.prog_id;
	return 0;
}

int tessera_bpf_tc_query(int ifindex, uint32_t *from_container_id, uint32_t *to_container_id)
{
	int err;

	log_reset();
	if ((err = tc_query_one(ifindex, BPF_TC_INGRESS, from_container_id)))
		return err;
	return tc_query_one(ifindex, BPF_TC_EGRESS, to_container_id);
}

int tessera_bpf_tc_attach(int ifindex, int from_container_fd, int to_container_fd,
			  int *hook_created)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = TESSERA_TC_HANDLE, .priority = TESSERA_TC_PRIORITY,
		    .flags = BPF_TC_F_REPLACE);
	int err;

	log_reset();
	*hook_created = 0;
	err = bpf_tc_hook_create(&hook);
	if (err && err != -EEXIST)
		return err;
	*hook_created = err == 0;

	/* Ingress first: what leaves the container is judged before anything can
	 * reach it; both are in place before this returns. */
	opts.prog_fd = from_container_fd;
	if ((err = bpf_tc_attach(&hook, &opts)))
		return err;
	hook.attach_point = BPF_TC_EGRESS;
	opts.prog_fd = to_container_fd;
	opts.prog_id = 0;
	opts.flags = BPF_TC_F_REPLACE;
	return bpf_tc_attach(&hook, &opts);
}

static int tc_detach_one(int ifindex, enum bpf_tc_attach_point point, uint32_t expected)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = TESSERA_TC_HANDLE,
		    .priority = TESSERA_TC_PRIORITY);
	uint32_t id = 0;
	int err;

	if ((err = tc_query_one(ifindex, point, &id)))
		return err;
	if (id == 0 || (expected && id != expected))
		return 0; /* nothing there, or someone else's program */
	err = bpf_tc_detach(&hook, &opts);
	return err == -ENOENT ? 0 : err;
}

int tessera_bpf_tc_detach(int ifindex, uint32_t expected_from_id, uint32_t expected_to_id,
			  int destroy_hook)
{
	char name[IF_NAMESIZE];
	int err;

	log_reset();
	if (ifindex <= 0 || !if_indextoname((unsigned)ifindex, name))
		return 0; /* the device is gone, and its filters with it */
	if ((err = tc_detach_one(ifindex, BPF_TC_INGRESS, expected_from_id)))
		return err;
	if ((err = tc_detach_one(ifindex, BPF_TC_EGRESS, expected_to_id)))
		return err;
	if (destroy_hook) {
		LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
			    .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);
		err = bpf_tc_hook_destroy(&hook);
		if (err && err != -ENOENT && err != -EINVAL)
			return err;
	}
	return 0;
}
