/*
 * The programs' clock. The handlers read the time as bpf_jiffies64() * ns-per-jiffy + base, which
 * the verifier inlines as a load (bpf_ktime_get_coarse_ns is a helper call,
 * ~15 ns per packet more here). The kernel's HZ is not visible from user
 * space, so it is measured once per process, as Cilium does: the jiffies
 * count (read by a two-instruction program) over ~100 ms of CLOCK_MONOTONIC,
 * rounded to a CONFIG_HZ value. Jiffies advance by exactly TICK_NSEC of
 * CLOCK_MONOTONIC, so the base keeps the result within a tick of
 * CLOCK_MONOTONIC, like the coarse clock. Anything unexpected leaves
 * ns-per-jiffy 0, and the handlers then use bpf_ktime_get_coarse_ns(). */
#include "tessera_bpf_internal.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

static uint64_t clock_ns_per_jiffy, clock_base_ns;
static pthread_once_t clock_once = PTHREAD_ONCE_INIT;

static int jiffies_program(int shift)
{
	struct bpf_insn insns[] = {
		{.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_jiffies64},
		{.code = BPF_ALU64 | BPF_RSH | BPF_K, .dst_reg = BPF_REG_0, .imm = shift},
		{.code = BPF_JMP | BPF_EXIT},
	};
	return bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "tessera_jiffies", "GPL", insns, 3, NULL);
}

static int run_jiffies_program(int fd, uint32_t *out)
{
	unsigned char frame[64] = {0};
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = sizeof(frame),
		    .repeat = 1);
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
	static const uint64_t known_hz[] = {100, 250, 300, 1000};
	int lo_fd = jiffies_program(0), hi_fd = jiffies_program(32);
	uint64_t j0, t0, j1, t1, hz = 0;
	struct timespec pause = {.tv_nsec = 100 * 1000 * 1000};

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

void program_clock(uint64_t *ns_per_jiffy, uint64_t *base_ns)
{
	pthread_once(&clock_once, detect_clock);
	*ns_per_jiffy = clock_ns_per_jiffy;
	*base_ns = clock_base_ns;
}
