/*
 * libbpf loader of the endpoint programs (see include/tessera_bpf.h).
 *
 * Flow of one endpoint load, after libbpf-bootstrap's minimal.c/bootstrap.c:
 * open the object from memory, set the endpoint id in .rodata, point the
 * per-endpoint maps at their pin paths and the global maps at the pin root,
 * load (libbpf re-uses pinned maps and pins new ones), pin the programs, and
 * hand out duplicated descriptors; one `cleanup:` path closes the object.
 */
#define _GNU_SOURCE
#include "tessera_bpf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/capability.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

#define TESSERA_OBJECT_NAME "tessera_endpoint"

struct tessera_bpf {
	char pin_dir[PATH_MAX];
	char globals_dir[PATH_MAX];
	char endpoints_dir[PATH_MAX];
	void *object;
	size_t object_len;
	uint64_t object_hash;
	int ipcache_fd;
	int endpoints_fd;
	int ct_fd;
	int policy_fd;
	int metrics_fd;
	int frags_fd;
	int handlers_fd;
	int loader_fd;
	int adopted; /* handlers re-used from a previous run */
};

static const char *const global_maps[] = {
	"tessera_ipcache", "tessera_endpoints", "tessera_ct", "tessera_policy",
	"tessera_metrics", "tessera_handlers", "tessera_loader", "tessera_frags",
};
#define NR_GLOBAL_MAPS (sizeof(global_maps) / sizeof(global_maps[0]))

static int *global_fd_slot(struct tessera_bpf *t, size_t i)
{
	int *slots[NR_GLOBAL_MAPS] = { &t->ipcache_fd, &t->endpoints_fd, &t->ct_fd, &t->policy_fd,
				       &t->metrics_fd, &t->handlers_fd, &t->loader_fd, &t->frags_fd };
	return slots[i];
}

static const char *const stub_programs[] = { "from_container", "to_container" };
static const char *const handler_programs[] = { "handle_from_container", "handle_to_container" };

/* ---- libbpf messages ------------------------------------------------------ */

#define LOG_CAP 16384
static _Thread_local char last_log[LOG_CAP];
static _Thread_local size_t last_log_len;
static pthread_once_t print_once = PTHREAD_ONCE_INIT;

static int print_to_log(enum libbpf_print_level level, const char *fmt, va_list args)
{
	int n;

	if (level == LIBBPF_DEBUG)
		return 0;
	if (last_log_len >= LOG_CAP - 1) {
		/* Keep the tail: the verifier's last lines say what failed. */
		memmove(last_log, last_log + LOG_CAP / 2, LOG_CAP / 2);
		last_log_len = LOG_CAP / 2 - 1;
	}
	n = vsnprintf(last_log + last_log_len, LOG_CAP - last_log_len, fmt, args);
	if (n > 0)
		last_log_len += (size_t)n < LOG_CAP - last_log_len ? (size_t)n : LOG_CAP - 1 - last_log_len;
	return 0;
}

static void install_print(void)
{
	libbpf_set_print(print_to_log);
}

static void log_reset(void)
{
	pthread_once(&print_once, install_print);
	last_log_len = 0;
	last_log[0] = '\0';
}

static void log_append(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	print_to_log(LIBBPF_WARN, fmt, args);
	va_end(args);
}

const char *tessera_bpf_last_log(void)
{
	return last_log;
}

/* ---- small helpers -------------------------------------------------------- */

static int neg_errno(void)
{
	return errno ? -errno : -EIO;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return neg_errno();
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return neg_errno();
	return 0;
}

static int dup_fd(int fd)
{
	int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return copy < 0 ? neg_errno() : copy;
}

static int endpoint_path(const struct tessera_bpf *t, uint64_t id, const char *name, char *out, size_t cap)
{
	int n = name ? snprintf(out, cap, "%s/%llu/%s", t->endpoints_dir, (unsigned long long)id, name)
		     : snprintf(out, cap, "%s/%llu", t->endpoints_dir, (unsigned long long)id);
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t tessera_bpf_ktime_ns(void)
{
	return now_ns();
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

/* ---- the programs' clock ----------------------------------------------------
 * The handlers read the time as bpf_jiffies64() * ns-per-jiffy + base, which
 * the verifier inlines as a load (bpf_ktime_get_coarse_ns is a helper call,
 * ~15 ns per packet more here). The kernel's HZ is not visible from user
 * space, so it is measured once per process, as Cilium does: the jiffies
 * count (read by a two-instruction program) over ~100 ms of CLOCK_MONOTONIC,
 * rounded to a CONFIG_HZ value. Jiffies advance by exactly TICK_NSEC of
 * CLOCK_MONOTONIC, so the base keeps the result within a tick of
 * CLOCK_MONOTONIC, like the coarse clock. Anything unexpected leaves
 * ns-per-jiffy 0, and the handlers then use bpf_ktime_get_coarse_ns(). */
static uint64_t clock_ns_per_jiffy, clock_base_ns;
static pthread_once_t clock_once = PTHREAD_ONCE_INIT;

static int jiffies_program(int shift)
{
	struct bpf_insn insns[] = {
		{ .code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_jiffies64 },
		{ .code = BPF_ALU64 | BPF_RSH | BPF_K, .dst_reg = BPF_REG_0, .imm = shift },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	return bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "tessera_jiffies", "GPL", insns, 3, NULL);
}

static int run_jiffies_program(int fd, uint32_t *out)
{
	unsigned char frame[64] = { 0 };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = sizeof(frame), .repeat = 1);
	int err = bpf_prog_test_run_opts(fd, &opts);

	*out = opts.retval;
	return err;
}

/* The jiffies count and the CLOCK_MONOTONIC time it was read at. */
static int read_jiffies(int lo_fd, int hi_fd, uint64_t *jiffies, uint64_t *at)
{
	for (int tries = 0; tries < 4; tries++) {
		uint32_t hi, lo, hi2;
		if (run_jiffies_program(hi_fd, &hi) || run_jiffies_program(lo_fd, &lo) ||
		    run_jiffies_program(hi_fd, &hi2))
			return -1;
		*at = now_ns();
		if (hi == hi2) {
			*jiffies = (uint64_t)hi << 32 | lo;
			return 0;
		}
	}
	return -1;
}

/* Waits for the next tick: the jiffies count right after it changed. */
static int next_tick(int lo_fd, int hi_fd, uint64_t *jiffies, uint64_t *at)
{
	uint64_t start, j, t;

	if (read_jiffies(lo_fd, hi_fd, &start, &t))
		return -1;
	for (int i = 0; i < 200000; i++) {
		if (read_jiffies(lo_fd, hi_fd, &j, &t))
			return -1;
		if (j != start) {
			*jiffies = j;
			*at = t;
			return 0;
		}
	}
	return -1;
}

static void detect_clock(void)
{
	static const uint64_t known_hz[] = { 100, 250, 300, 1000 };
	int lo_fd = jiffies_program(0), hi_fd = jiffies_program(32);
	uint64_t j0, t0, j1, t1, hz = 0;
	struct timespec pause = { .tv_nsec = 100 * 1000 * 1000 };

	if (lo_fd < 0 || hi_fd < 0 || next_tick(lo_fd, hi_fd, &j0, &t0))
		goto out;
	nanosleep(&pause, NULL);
	if (next_tick(lo_fd, hi_fd, &j1, &t1) || j1 <= j0 || t1 <= t0)
		goto out;
	double measured = (double)(j1 - j0) * 1e9 / (double)(t1 - t0);
	for (size_t i = 0; i < sizeof(known_hz) / sizeof(known_hz[0]); i++) {
		/* Ticks are read within microseconds of their edge: a few per cent
		 * is plenty of margin and still tells 250 from 300. */
		if (measured > 0.95 * (double)known_hz[i] && measured < 1.05 * (double)known_hz[i])
			hz = known_hz[i];
	}
	if (!hz)
		goto out;
	clock_ns_per_jiffy = (1000000000ULL + hz / 2) / hz; /* the kernel's TICK_NSEC */
	clock_base_ns = t1 - j1 * clock_ns_per_jiffy; /* modulo 2^64, as the programs compute */
out:
	if (lo_fd >= 0)
		close(lo_fd);
	if (hi_fd >= 0)
		close(hi_fd);
}

/* Writes `n` 64-bit variables of the object's .rodata, found through BTF;
 * the first `required` must be there. */
static int set_rodata(struct bpf_object *obj, const char *const *names, const uint64_t *values, int n, int required)
{
	struct bpf_map *map, *rodata = NULL;
	const struct btf_var_secinfo *vs;
	const struct btf_type *sec;
	struct btf *btf;
	const void *initial;
	char data[256];
	size_t size;
	int sec_id;

	bpf_object__for_each_map(map, obj) {
		const char *name = bpf_map__name(map);
		size_t len = strlen(name);
		if (bpf_map__is_internal(map) && len >= 7 && strcmp(name + len - 7, ".rodata") == 0)
			rodata = map;
	}
	btf = bpf_object__btf(obj);
	if (!rodata || !btf) {
		log_append("tessera: object has no .rodata or BTF\n");
		return -ENOENT;
	}
	sec_id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (sec_id < 0) {
		log_append("tessera: no .rodata section in the object's BTF\n");
		return -ENOENT;
	}
	sec = btf__type_by_id(btf, sec_id);
	initial = bpf_map__initial_value(rodata, &size);
	if (!initial || size > sizeof(data))
		return -EINVAL;
	memcpy(data, initial, size);
	for (int k = 0; k < n; k++) {
		int found = 0;

		vs = btf_var_secinfos(sec);
		for (int i = 0; i < btf_vlen(sec); i++, vs++) {
			const struct btf_type *var = btf__type_by_id(btf, vs->type);
			if (strcmp(btf__name_by_offset(btf, var->name_off), names[k]) != 0)
				continue;
			if (vs->size != sizeof(values[k]) || vs->offset + sizeof(values[k]) > size)
				return -EINVAL;
			memcpy(data + vs->offset, &values[k], sizeof(values[k]));
			found = 1;
			break;
		}
		if (!found && k < required) {
			log_append("tessera: %s not found in .rodata\n", names[k]);
			return -ENOENT;
		}
	}
	return bpf_map__set_initial_value(rodata, data, size);
}

/* The endpoint id of the stubs; the clock of the handlers. */
static int set_endpoint_id(struct bpf_object *obj, uint64_t id, int handlers)
{
	static const char *const names[] = { "ENDPOINT_ID", "NS_PER_JIFFY", "JIFFIES_BASE_NS" };
	uint64_t values[3] = { id, 0, 0 };

	if (handlers) {
		pthread_once(&clock_once, detect_clock);
		values[1] = clock_ns_per_jiffy;
		values[2] = clock_base_ns;
	}
	/* The clock is optional: an object without it uses the coarse clock helper. */
	return set_rodata(obj, names, values, 3, 1);
}

/*
 * Opens the object from memory with the endpoint id set and every map
 * pinned by name under globals/ (created there when absent, re-used when
 * present). `handlers` selects which programs load: the shared handlers (at
 * startup) or the endpoint's two stubs.
 */
static int open_object(struct tessera_bpf *t, uint64_t id, int handlers, struct bpf_object **out)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = TESSERA_OBJECT_NAME, .pin_root_path = t->globals_dir);
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
		struct bpf_program *handler = bpf_object__find_program_by_name(obj, handler_programs[i]);
		if (!stub || !handler) {
			log_append("tessera: program %s or %s missing from the object\n", stub_programs[i],
				   handler_programs[i]);
			err = -ENOENT;
			goto fail;
		}
		if ((err = bpf_program__set_autoload(stub, !handlers)) ||
		    (err = bpf_program__set_autoload(handler, handlers)))
			goto fail;
	}
	*out = obj;
	return 0;
fail:
	bpf_object__close(obj);
	return err;
}

static int get_fd(struct bpf_object *obj, const char *map_name)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, map_name);
	if (!map) {
		log_append("tessera: map %s missing from the object\n", map_name);
		return -ENOENT;
	}
	return dup_fd(bpf_map__fd(map));
}

/* ---- the loader ----------------------------------------------------------- */

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
		if (snprintf(path, sizeof(path), "%s/%s", t->globals_dir, global_maps[i]) >= (int)sizeof(path))
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

/* Whether the pinned state was installed from this very object and its
 * handlers are still in the program array. */
static int can_adopt(struct tessera_bpf *t)
{
	struct loader_state state;
	uint32_t key = 0;

	if (bpf_map_lookup_elem(t->loader_fd, &key, &state) || state.object_hash != t->object_hash)
		return 0;
	for (uint32_t slot = 0; slot < TESSERA_HANDLER_MAX; slot++) {
		uint32_t id = 0;
		if (bpf_map_lookup_elem(t->handlers_fd, &slot, &id) || id != state.handler_ids[slot])
			return 0;
	}
	return 1;
}

/* The counters map of older programs, when its value size differs from
 * this object's (reasons were added): it is unpinned so that the load
 * creates the new one, and its descriptor returned in `old_fd` (-1 when the
 * pinned map is absent or compatible) for metrics_upgrade_copy. The old
 * handlers keep counting into it until the new ones are installed. */
static int metrics_upgrade_prepare(struct tessera_bpf *t, int *old_fd, uint32_t *old_value_size)
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
	    (info.value_size == sizeof(struct endpoint_metrics) && info.key_size == sizeof(uint64_t))) {
		close(fd);
		return 0;
	}
	if (unlink(path) < 0) {
		int err = neg_errno();
		close(fd);
		return err;
	}
	log_append("tessera: counters map of older programs (%u-byte values) replaced\n", info.value_size);
	*old_fd = fd;
	*old_value_size = info.value_size;
	return 0;
}

/* Copies every endpoint's counters from the older map, reason by reason
 * (reasons keep their numbers; new ones start at 0). */
static void metrics_upgrade_copy(int old_fd, uint32_t old_value_size, int new_fd)
{
	const size_t slot = sizeof(struct metrics_value);
	size_t old_reasons = old_value_size / (2 * slot), old_stride = ((size_t)old_value_size + 7) / 8 * 8;
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
			const struct metrics_value *from = (const void *)(old_value + (size_t)cpu * old_stride);
			for (size_t dir = 0; dir < 2; dir++)
				for (size_t r = 0; r < old_reasons && r < TESSERA_REASON_MAX; r++)
					value[cpu].counters[dir * TESSERA_REASON_MAX + r] = from[dir * old_reasons + r];
		}
		bpf_map_update_elem(new_fd, &key, value, BPF_NOEXIST);
	}
	free(old_value);
	free(value);
}

/* Loads the shared handlers (one verifier pass per daemon start when the
 * object changed), creating or re-using the pinned global maps, and installs
 * them in the program array: every endpoint's stub uses them from then on. */
static int install_handlers(struct tessera_bpf *t)
{
	struct loader_state state = { .object_hash = t->object_hash, .installed_ns = now_ns() };
	char path[PATH_MAX];
	struct bpf_object *obj = NULL;
	uint32_t key = 0, old_metrics_size = 0;
	int err, old_metrics_fd = -1;

	if ((err = metrics_upgrade_prepare(t, &old_metrics_fd, &old_metrics_size)))
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
	if (old_metrics_fd >= 0)
		metrics_upgrade_copy(old_metrics_fd, old_metrics_size, t->metrics_fd);
	for (uint32_t slot = 0; slot < TESSERA_HANDLER_MAX; slot++) {
		struct bpf_program *prog = bpf_object__find_program_by_name(obj, handler_programs[slot]);
		int fd = bpf_program__fd(prog);
		if ((err = bpf_map_update_elem(t->handlers_fd, &slot, &fd, BPF_ANY))) {
			log_append("tessera: cannot install %s: %s\n", handler_programs[slot], strerror(-err));
			goto cleanup;
		}
		state.handler_ids[slot] = tessera_bpf_obj_id(fd);
		/* Pinned for inspection (bpftool prog show pinned ...). */
		if (snprintf(path, sizeof(path), "%s/%s", t->globals_dir, handler_programs[slot]) >= (int)sizeof(path)) {
			err = -ENAMETOOLONG;
			goto cleanup;
		}
		unlink(path);
		if ((err = bpf_program__pin(prog, path)))
			goto cleanup;
	}
	err = bpf_map_update_elem(t->loader_fd, &key, &state, BPF_ANY);
cleanup:
	if (err)
		close_globals(t);
	if (old_metrics_fd >= 0)
		close(old_metrics_fd);
	bpf_object__close(obj);
	return err;
}

int tessera_bpf_open(const char *object_path, const char *pin_dir, struct tessera_bpf **out)
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
	    snprintf(t->globals_dir, sizeof(t->globals_dir), "%s/globals", pin_dir) >= (int)sizeof(t->globals_dir) ||
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
	if ((err = mkdir_p(t->globals_dir, 0700)) || (err = mkdir_p(t->endpoints_dir, 0700))) {
		log_append("tessera: cannot create %s: %s\n", t->pin_dir, strerror(-err));
		goto fail;
	}

	/* A restart with the same object re-adopts everything as it is. */
	if (open_pinned_globals(t) == 0) {
		if (can_adopt(t)) {
			t->adopted = 1;
			*out = t;
			return 0;
		}
		close_globals(t);
	}
	if ((err = install_handlers(t)))
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

void tessera_bpf_endpoint_fds_close(struct tessera_endpoint_fds *fds)
{
	int *all[] = { &fds->from_container, &fds->to_container };

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (*all[i] >= 0)
			close(*all[i]);
		*all[i] = -1;
	}
}

/* Pins `prog` at `path`, replacing an older pin (bpffs has no rename; the
 * attached filters, not the pins, keep programs running meanwhile). */
static int pin_program(struct bpf_program *prog, const char *path)
{
	if (unlink(path) < 0 && errno != ENOENT)
		return neg_errno();
	return bpf_obj_pin(bpf_program__fd(prog), path);
}

int tessera_bpf_endpoint_load(struct tessera_bpf *t, uint64_t endpoint_id, struct tessera_endpoint_fds *fds,
			      uint64_t *load_ns)
{
	struct tessera_endpoint_fds got = { -1, -1 };
	struct endpoint_metrics *zero = NULL;
	char ep_dir[PATH_MAX], path[PATH_MAX];
	struct bpf_object *obj = NULL;
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
	err = bpf_map_update_elem(t->metrics_fd, &endpoint_id, zero, BPF_NOEXIST);
	free(zero);
	if (err && err != -EEXIST) {
		log_append("tessera: cannot create the counters of endpoint %llu: %s\n",
			   (unsigned long long)endpoint_id, strerror(-err));
		return err;
	}

	if ((err = open_object(t, endpoint_id, 0, &obj)))
		goto cleanup;
	if ((err = bpf_object__load(obj)))
		goto cleanup;
	for (size_t i = 0; i < 2; i++) {
		struct bpf_program *prog = bpf_object__find_program_by_name(obj, stub_programs[i]);
		int fd;
		if ((err = endpoint_path(t, endpoint_id, stub_programs[i], path, sizeof(path))))
			goto cleanup;
		if ((err = pin_program(prog, path))) {
			log_append("tessera: cannot pin %s: %s\n", path, strerror(-err));
			goto cleanup;
		}
		if ((fd = dup_fd(bpf_program__fd(prog))) < 0) {
			err = fd;
			goto cleanup;
		}
		if (i == 0)
			got.from_container = fd;
		else
			got.to_container = fd;
	}
	*fds = got;
	got = (struct tessera_endpoint_fds){ -1, -1 };
	if (load_ns)
		*load_ns = now_ns() - start;
cleanup:
	tessera_bpf_endpoint_fds_close(&got);
	bpf_object__close(obj);
	return err;
}

int tessera_bpf_endpoint_open_pinned(struct tessera_bpf *t, uint64_t endpoint_id, struct tessera_endpoint_fds *fds)
{
	int *slots[] = { &fds->from_container, &fds->to_container };
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

/* Deletes every key of `fd` for which `match` holds (keys collected first:
 * deleting while walking would restart the walk). */
static int delete_matching(int fd, size_t key_size, int (*match)(const void *key, uint64_t id), uint64_t id)
{
	size_t cap = 256, n = 0;
	char *keys, *cur = NULL, next[64], prev[64];
	int err = 0;

	if (key_size > sizeof(next))
		return -EINVAL;
	keys = malloc(cap * key_size);
	if (!keys)
		return -ENOMEM;
	while ((err = bpf_map_get_next_key(fd, cur, next)) == 0) {
		if (match(next, id)) {
			if (n == cap) {
				char *grown = realloc(keys, 2 * cap * key_size);
				if (!grown) {
					free(keys);
					return -ENOMEM;
				}
				keys = grown;
				cap *= 2;
			}
			memcpy(keys + n * key_size, next, key_size);
			n++;
		}
		memcpy(prev, next, key_size);
		cur = prev;
	}
	if (err != -ENOENT) {
		free(keys);
		return err;
	}
	err = 0;
	for (size_t i = 0; i < n; i++) {
		int e = bpf_map_delete_elem(fd, keys + i * key_size);
		if (e && e != -ENOENT && !err)
			err = e;
	}
	free(keys);
	return err;
}

static int policy_key_matches(const void *key, uint64_t id)
{
	return ((const struct policy_key *)key)->endpoint_id == id;
}

static int ct_key_matches(const void *key, uint64_t id)
{
	return ((const struct ct_key *)key)->endpoint_id == id;
}

static int frag_key_matches(const void *key, uint64_t id)
{
	return ((const struct frag_key *)key)->endpoint_id == id;
}

int tessera_bpf_endpoint_purge(struct tessera_bpf *t, uint64_t endpoint_id, int scan_policy)
{
	int err, first = 0;

	log_reset();
	if (scan_policy && (err = delete_matching(t->policy_fd, sizeof(struct policy_key), policy_key_matches,
						  endpoint_id)))
		first = first ? first : err;
	if ((err = delete_matching(t->ct_fd, sizeof(struct ct_key), ct_key_matches, endpoint_id)))
		first = first ? first : err;
	if ((err = delete_matching(t->frags_fd, sizeof(struct frag_key), frag_key_matches, endpoint_id)))
		first = first ? first : err;
	err = bpf_map_delete_elem(t->metrics_fd, &endpoint_id);
	if (err && err != -ENOENT)
		first = first ? first : err;
	err = bpf_map_delete_elem(t->endpoints_fd, &endpoint_id);
	if (err && err != -ENOENT)
		first = first ? first : err;
	return first;
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

/* ---- tc ------------------------------------------------------------------- */

static int tc_query_one(int ifindex, enum bpf_tc_attach_point point, uint32_t *prog_id)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = TESSERA_TC_HANDLE, .priority = TESSERA_TC_PRIORITY);
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

int tessera_bpf_tc_attach(int ifindex, int from_container_fd, int to_container_fd, int *hook_created)
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
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = TESSERA_TC_HANDLE, .priority = TESSERA_TC_PRIORITY);
	uint32_t id = 0;
	int err;

	if ((err = tc_query_one(ifindex, point, &id)))
		return err;
	if (id == 0 || (expected && id != expected))
		return 0; /* nothing there, or someone else's program */
	err = bpf_tc_detach(&hook, &opts);
	return err == -ENOENT ? 0 : err;
}

int tessera_bpf_tc_detach(int ifindex, uint32_t expected_from_id, uint32_t expected_to_id, int destroy_hook)
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
		LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);
		err = bpf_tc_hook_destroy(&hook);
		if (err && err != -ENOENT && err != -EINVAL)
			return err;
	}
	return 0;
}

/* ---- maps and misc -------------------------------------------------------- */

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

int tessera_bpf_map_update(int fd, const void *key, const void *value, uint64_t flags)
{
	return bpf_map_update_elem(fd, key, value, flags);
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

int tessera_bpf_test_run(int prog_fd, const void *packet, uint32_t len, uint32_t repeat, uint32_t *retval,
			 uint32_t *duration_ns)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = packet, .data_size_in = len, .repeat = repeat);
	int err;

	log_reset();
	err = bpf_prog_test_run_opts(prog_fd, &opts);
	if (err)
		return err;
	*retval = opts.retval;
	*duration_ns = opts.duration;
	return 0;
}

int tessera_bpf_is_bpffs(const char *path)
{
	struct statfs st;

	if (statfs(path, &st) < 0)
		return neg_errno();
	return st.f_type == BPF_FS_MAGIC;
}

int tessera_bpf_mount_bpffs(const char *path)
{
	int err = mkdir_p(path, 0700);

	if (err)
		return err;
	if (mount("bpf", path, "bpf", 0, "mode=0700") < 0)
		return neg_errno();
	return 0;
}

static int has_capability(int cap)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];

	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0)
		return 0;
	return (data[cap / 32].effective >> (cap % 32)) & 1;
}

const char *tessera_bpf_probe(void)
{
	static _Thread_local char reason[256];

	log_reset();
	if (!(has_capability(CAP_BPF) || has_capability(CAP_SYS_ADMIN)) || !has_capability(CAP_NET_ADMIN))
		return "eBPF needs root (CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN for tc)";
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SCHED_CLS, NULL) != 1)
		return "the kernel does not support tc (SCHED_CLS) BPF programs";
	static const struct {
		enum bpf_map_type type;
		const char *name;
	} maps[] = {
		{ BPF_MAP_TYPE_LPM_TRIE, "LPM trie" },
		{ BPF_MAP_TYPE_LRU_HASH, "LRU hash" },
		{ BPF_MAP_TYPE_PERCPU_ARRAY, "per-CPU array" },
	};
	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		if (libbpf_probe_bpf_map_type(maps[i].type, NULL) != 1) {
			snprintf(reason, sizeof(reason), "the kernel does not support BPF %s maps", maps[i].name);
			return reason;
		}
	}
	/* The programs' clock (Linux 5.11). */
	if (libbpf_probe_bpf_helper(BPF_PROG_TYPE_SCHED_CLS, BPF_FUNC_ktime_get_coarse_ns, NULL) != 1)
		return "the kernel lacks the bpf_ktime_get_coarse_ns helper (Linux 5.11 or later is needed)";
	return "";
}
