/* The CNI skeleton (after containernetworking/cni/pkg/skel): env table, stdin, version
 * check, dispatch. The environment and stdin are injected so tests and the fuzzer can
 * drive it; it never prints, main does. */
#ifndef TESSERA_SKEL_H
#define TESSERA_SKEL_H

#include <stddef.h>
#include <stdio.h>

#include "cmd.h"

enum skel_env_flag {
  SKEL_ENV_CONTAINERID = 1 << 0,
  SKEL_ENV_NETNS = 1 << 1,
  SKEL_ENV_IFNAME = 1 << 2,
  SKEL_ENV_PATH = 1 << 3,
};

enum skel_flag {
  SKEL_NO_CONF = 1 << 0,   /* VERSION: stdin is optional and never an error */
  SKEL_MIN_1_1_0 = 1 << 1, /* STATUS, GC: the config must be cniVersion >= 1.1.0 */
};

struct skel_command {
  const char *name;
  cni_cmd_fn fn;
  unsigned required_env; /* enum skel_env_flag; CNI_COMMAND is always required */
  unsigned flags;        /* enum skel_flag */
};

struct skel_io {
  const char *(*getenv)(void *ctx, const char *name);
  void *ctx;
  FILE *in;       /* the network configuration */
  int enable_log; /* honour logFile (off in the fuzzer) */
};

struct skel_outcome {
  int code; /* 0 or the CNI error code in err */
  struct cni_output out;
  struct cni_error err;
  char cni_version[16]; /* the version errors are reported in */
};

/* Runs one invocation. Returns outcome->code. Free with skel_outcome_free. */
int skel_run(const struct skel_command *table, size_t n, const struct skel_io *io, struct skel_outcome *o);

void skel_outcome_free(struct skel_outcome *o);

/* Reads all of f, up to max bytes (more is an error). Returns 0 and a NUL-terminated buffer. */
int skel_read_all(FILE *f, size_t max, char **out, size_t *len);

/* The checks skel applies to CNI_CONTAINERID and CNI_IFNAME (code 4 on failure). */
int skel_validate_container_id(const char *id, struct cni_error *err);
int skel_validate_ifname(const char *ifname, struct cni_error *err);

#endif
