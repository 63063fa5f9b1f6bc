/*
 * The object: opened from memory once per load, with its read-only data set
 * and its maps pointed at their pins.
 */
#include "tessera_bpf_internal.h"

#include <errno.h>
#include <string.h>

#include <bpf/btf.h>

const char *const stub_programs[2] = {"from_container", "to_container"};
const char *const handler_programs[TESSERA_HANDLER_MAX] = {"handle_from_container",
							   "handle_to_container"};

int rodata_variable(struct bpf_object *obj, const char *name, struct bpf_map **rodata_out,
		    uint32_t *offset)
{
	struct bpf_map *map, *rodata = NULL;
	const struct btf_var_secinfo *vs;
	const struct btf_type *sec;
	struct btf *btf;
	int sec_id;

	bpf_object__for_each_map(map, obj)
	{
		const char *map_name = bpf_map__name(map);
		size_t len = strlen(map_name);
		if (bpf_map__is_internal(map) && len >= 7 &&
		    strcmp(map_name + len - 7, ".rodata") == 0)
			rodata = map;
	}
	btf = bpf_object__btf(obj);
	if (!rodata || !btf) {
		log_append("tessera: object has no .rodata or BTF\n");
		return -EINVAL;
	}
	sec_id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (sec_id < 0) {
		log_append("tessera: no .rodata section in the object's BTF\n");
		return -EINVAL;
	}
	sec = btf__type_by_id(btf, sec_id);
	vs = btf_var_secinfos(sec);
	for (int i = 0; i < btf_vlen(sec); i++, vs++) {
		const struct btf_type *var = btf__type_by_id(btf, vs->type);
		if (strcmp(btf__name_by_offset(btf, var->name_off), name) != 0)
			continue;
		if (vs->size != sizeof(uint64_t) ||
		    vs->offset + sizeof(uint64_t) > bpf_map__value_size(rodata))
			return -EINVAL;
		*rodata_out = rodata;
		*offset = vs->offset;
		return 0;
	}
	return -ENOENT;
}

/* Writes `n` 64-bit variables of the object's .rodata; the first `required`
 * must be there. */
static int set_rodata(struct bpf_object *obj, const char *const *names, const uint64_t *values,
		      int n, int required)
{
	struct bpf_map *rodata = NULL;
	const void *initial = NULL;
	char data[TESSERA_RODATA_MAX];
	size_t size = 0;

	for (int k = 0; k < n; k++) {
		uint32_t offset;
		int err = rodata_variable(obj, names[k], &rodata, &offset);

		if (err == -ENOENT && k >= required)
			continue;
		if (err) {
			if (err == -ENOENT)
				log_append("tessera: %s not found in .rodata\n", names[k]);
			return err;
		}
		if (!initial) {
			initial = bpf_map__initial_value(rodata, &size);
			if (!initial || size > sizeof(data))
				return -EINVAL;
			memcpy(data, initial, size);
		}
		memcpy(data + offset, &values[k], sizeof(values[k]));
	}
	return rodata ? bpf_map__set_initial_value(rodata, data, size) : -ENOENT;
}

/* The endpoint id of the stubs; the clock of the handlers. */
static int set_endpoint_id(struct bpf_object *obj, uint64_t id, int handlers)
{
	static const char *const names[] = {"ENDPOINT_ID", "NS_PER_JIFFY", "JIFFIES_BASE_NS"};
	uint64_t values[3] = {id, 0, 0};

	if (handlers)
		program_clock(&values[1], &values[2]);
	/* The clock is optional: an object without it uses the coarse clock helper. */
	return set_rodata(obj, names, values, 3, 1);
}

/* The stubs use the handlers' program array, the counters (a missed tail
 * call) and their read-only data: every other map is left out of their load,
 * which otherwise opens and checks each pin (most of a load's syscalls). */
static int leave_out_maps_stubs_do_not_use(struct bpf_object *obj)
{
	struct bpf_map *map;

	bpf_object__for_each_map(map, obj)
	{
		const char *name = bpf_map__name(map);
		int err;

		if (bpf_map__is_internal(map) || strcmp(name, "tessera_handlers") == 0 ||
		    strcmp(name, "tessera_metrics") == 0)
			continue;
		if ((err = bpf_map__set_autocreate(map, false)))
			return err;
	}
	return 0;
}

/*
 * Opens the object from memory with the endpoint id set and every map
 * pinned by name under globals/ (created there when absent, re-used when
 * present). `handlers` selects which programs load: the shared handlers (at
 * startup) or the endpoint's two stubs.
 */
int open_object(struct tessera_bpf *t, uint64_t id, int handlers, struct bpf_object **out)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = TESSERA_OBJECT_NAME,
		    .pin_root_path = t->globals_dir);
	struct bpf_object *obj;
	int err;

	obj = bpf_object__open_mem(t->object, t->object_len, &opts);
	if (!obj)
		return neg_errno();
	err = set_endpoint_id(obj, id, handlers);
	if (err)
		goto fail;
	for (size_t i = 0; i < 2; i++) {
		struct bpf_program *stub = bpf_object__find_program_by_name(obj, stub_programs[i]);
		struct bpf_program *handler =
			bpf_object__find_program_by_name(obj, handler_programs[i]);
		if (!stub || !handler) {
			log_append("tessera: program %s or %s missing from the object\n",
				   stub_programs[i], handler_programs[i]);
			err = -ENOENT;
			goto fail;
		}
		if ((err = bpf_program__set_autoload(stub, !handlers)) ||
		    (err = bpf_program__set_autoload(handler, handlers)))
			goto fail;
	}
	if (!handlers && (err = leave_out_maps_stubs_do_not_use(obj)))
		goto fail;
	if (handlers && (err = bpf_map__set_max_entries(
				 bpf_object__find_map_by_name(obj, "tessera_ct"), t->ct_max)))
		goto fail;
	*out = obj;
	return 0;
fail:
	bpf_object__close(obj);
	return err;
}

int get_fd(struct bpf_object *obj, const char *map_name)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, map_name);
	if (!map) {
		log_append("tessera: map %s missing from the object\n", map_name);
		return -ENOENT;
	}
	return dup_fd(bpf_map__fd(map));
}
