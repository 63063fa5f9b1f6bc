/* Whether eBPF can run here: privileges, bpffs, kernel features. */
#include "tessera_bpf_internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/capability.h>

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
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
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
	if (!(has_capability(CAP_BPF) || has_capability(CAP_SYS_ADMIN)) ||
	    !has_capability(CAP_NET_ADMIN))
		return "eBPF needs root (CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN for tc)";
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SCHED_CLS, NULL) != 1)
		return "the kernel does not support tc (SCHED_CLS) BPF programs";
	static const struct {
		enum bpf_map_type type;
		const char *name;
	} maps[] = {
		{BPF_MAP_TYPE_LPM_TRIE, "LPM trie"},
		{BPF_MAP_TYPE_LRU_HASH, "LRU hash"},
		{BPF_MAP_TYPE_PERCPU_ARRAY, "per-CPU array"},
	};
	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		if (libbpf_probe_bpf_map_type(maps[i].type, NULL) != 1) {
			snprintf(reason, sizeof(reason), "the kernel does not support BPF %s maps",
				 maps[i].name);
			return reason;
		}
	}
	/* The programs' clock (Linux 5.11). */
	if (libbpf_probe_bpf_helper(BPF_PROG_TYPE_SCHED_CLS, BPF_FUNC_ktime_get_coarse_ns, NULL) !=
	    1)
		return "the kernel lacks the bpf_ktime_get_coarse_ns helper (Linux 5.11 or later "
		       "is needed)";
	return "";
}
