/*
 * Each endpoint's stubs from one template. The stubs are loaded once through
 * libbpf at startup; an endpoint's are the same relocated instructions, with
 * the template's .rodata map replaced by one holding the endpoint's id. A
 * libbpf load per endpoint parsed the whole object (the handlers' code and
 * BTF) and loaded its BTF into the kernel, most of a new endpoint's
 * realisation; this is one small map and two verifier passes of a few dozen
 * instructions.
 */
#include "tessera_bpf_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

/* endpoint.bpf.c's LICENSE: the stubs call GPL-compatible helpers only. */
static const char stub_license[] = "Dual BSD/GPL";

int stub_template_prepare(struct tessera_bpf *t)
{
	struct stub_template *s = &t->stubs;
	struct bpf_object *obj = NULL;
	struct bpf_map *rodata;
	uint32_t zero = 0;
	int err;

	if ((err = open_object(t, 0, 0, &obj)) || (err = bpf_object__load(obj)))
		goto fail;
	if ((err = rodata_variable(obj, "ENDPOINT_ID", &rodata, &s->endpoint_id_offset))) {
		log_append("tessera: the stubs' ENDPOINT_ID is not in .rodata\n");
		goto fail;
	}
	s->rodata_size = bpf_map__value_size(rodata);
	s->rodata_fd = bpf_map__fd(rodata);
	if (s->rodata_size > sizeof(s->rodata)) {
		err = -E2BIG;
		goto fail;
	}
	if ((err = bpf_map_lookup_elem(s->rodata_fd, &zero, s->rodata)))
		goto fail;
	for (size_t i = 0; i < 2; i++) {
		struct bpf_program *prog = bpf_object__find_program_by_name(obj, stub_programs[i]);
		s->insns[i] = bpf_program__insns(prog);
		s->insn_cnt[i] = bpf_program__insn_cnt(prog);
		if (!s->insns[i] || !s->insn_cnt[i]) {
			log_append("tessera: no instructions of %s after its load\n",
				   stub_programs[i]);
			err = -ENOENT;
			goto fail;
		}
	}
	s->object = obj;
	return 0;
fail:
	bpf_object__close(obj);
	return err;
}

void stub_template_close(struct tessera_bpf *t)
{
	bpf_object__close(t->stubs.object);
	t->stubs.object = NULL;
}

/* The endpoint's read-only data: frozen, so that the verifier reads the id
 * as a constant, as libbpf's .rodata. */
static int endpoint_rodata(const struct stub_template *s, uint64_t id)
{
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_RDONLY_PROG);
	char data[TESSERA_RODATA_MAX];
	uint32_t zero = 0;
	int fd, err;

	memcpy(data, s->rodata, s->rodata_size);
	memcpy(data + s->endpoint_id_offset, &id, sizeof(id));
	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "tessera.rodata", sizeof(zero), s->rodata_size, 1,
			    &opts);
	if (fd < 0)
		return fd;
	if ((err = bpf_map_update_elem(fd, &zero, data, BPF_ANY)) || (err = bpf_map_freeze(fd))) {
		close(fd);
		return err;
	}
	return fd;
}

static int load_stub(const struct stub_template *s, size_t i, int rodata_fd, struct bpf_insn *insns)
{
	LIBBPF_OPTS(bpf_prog_load_opts, opts);
	char *verifier_log;
	int fd;

	memcpy(insns, s->insns[i], s->insn_cnt[i] * sizeof(*insns));
	for (size_t k = 0; k + 1 < s->insn_cnt[i]; k++) {
		if (insns[k].code != (BPF_LD | BPF_IMM | BPF_DW))
			continue;
		if (insns[k].src_reg == BPF_PSEUDO_MAP_VALUE && insns[k].imm == s->rodata_fd)
			insns[k].imm = rodata_fd;
		k++; /* the second half of the 16-byte load */
	}
	fd = bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, stub_programs[i], stub_license, insns,
			   s->insn_cnt[i], &opts);
	if (fd >= 0)
		return fd;
	/* Again with the verifier's log, for the error. */
	verifier_log = calloc(1, 65536);
	if (verifier_log) {
		opts.log_buf = verifier_log;
		opts.log_size = 65536;
		opts.log_level = 1;
		int again = bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, stub_programs[i], stub_license,
					  insns, s->insn_cnt[i], &opts);
		if (again < 0)
			log_append("tessera: loading %s: %s\n%s", stub_programs[i], strerror(-fd),
				   verifier_log);
		free(verifier_log);
		if (again >= 0)
			return again;
	}
	return fd;
}

int stub_load(struct tessera_bpf *t, uint64_t id, int fds[2])
{
	const struct stub_template *s = &t->stubs;
	struct bpf_insn *insns;
	int rodata_fd, err = 0;

	fds[0] = fds[1] = -1;
	if (!s->object)
		return -ENOENT;
	insns = calloc(s->insn_cnt[0] > s->insn_cnt[1] ? s->insn_cnt[0] : s->insn_cnt[1],
		       sizeof(*insns));
	if (!insns)
		return -ENOMEM;
	rodata_fd = endpoint_rodata(s, id);
	if (rodata_fd < 0) {
		log_append("tessera: cannot create the .rodata of endpoint %llu: %s\n",
			   (unsigned long long)id, strerror(-rodata_fd));
		free(insns);
		return rodata_fd;
	}
	for (size_t i = 0; i < 2 && !err; i++) {
		fds[i] = load_stub(s, i, rodata_fd, insns);
		if (fds[i] < 0)
			err = fds[i];
	}
	close(rodata_fd); /* the programs hold it */
	free(insns);
	if (err) {
		for (size_t i = 0; i < 2; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		fds[0] = fds[1] = -1;
	}
	return err;
}
