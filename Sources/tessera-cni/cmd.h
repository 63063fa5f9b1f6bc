/* The CNI commands. Each fills out (ADD, VERSION) or returns a CNI code with err set. */
#ifndef TESSERA_CMD_H
#define TESSERA_CMD_H

#include <stddef.h>
#include <stdint.h>

#include "cni_args.h"
#include "cni_error.h"
#include "netconf.h"
#include "result.h"

/* The CNI_* environment of one invocation; NULL when unset or empty. */
struct cni_env {
  const char *command;
  const char *container_id;
  const char *netns;
  const char *ifname;
  const char *args;
  const char *path;
};

struct cni_invocation {
  struct cni_env env;
  struct netconf conf;  /* parsed for every command but VERSION */
  struct cni_args args; /* CNI_ARGS */
  const char *stdin_data;
  size_t stdin_len;
  int64_t deadline_ms; /* start + timeoutMs, util_now_ms() clock */
};

typedef int (*cni_cmd_fn)(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err);

int cmd_add(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err);
int cmd_del(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err);
int cmd_check(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err);
int cmd_status(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err);
int cmd_gc(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err);
/* Main-plugin mode (cmd_main.c): the config has an `ipam` section. */
int cmd_add_main(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err);
int cmd_del_main(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err);
/* DeleteEndpoint, or with the endpoint service down its queued deletion (success). */
int cmd_del_endpoint(struct cni_invocation *inv, int *existed, struct cni_error *err);

int cmd_version(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err);

#endif
