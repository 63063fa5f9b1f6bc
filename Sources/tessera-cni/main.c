/* tessera-cni: the command table. Everything else lives in skel.c and cmd_*.c. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "skel.h"

static const struct skel_command commands[] = {
    {"ADD", cmd_add, SKEL_ENV_CONTAINERID | SKEL_ENV_NETNS | SKEL_ENV_IFNAME | SKEL_ENV_PATH, 0},
    {"DEL", cmd_del, SKEL_ENV_CONTAINERID | SKEL_ENV_IFNAME | SKEL_ENV_PATH, 0},
    {"CHECK", cmd_check, SKEL_ENV_CONTAINERID | SKEL_ENV_NETNS | SKEL_ENV_IFNAME | SKEL_ENV_PATH, 0},
    {"STATUS", cmd_status, 0, SKEL_MIN_1_1_0},
    {"GC", cmd_gc, 0, SKEL_MIN_1_1_0},
    {"VERSION", cmd_version, 0, SKEL_NO_CONF},
};

static const char *process_getenv(void *ctx, const char *name) {
  (void)ctx;
  return getenv(name);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* a runtime that stops reading must not kill us mid-call */
  struct skel_io io = {.getenv = process_getenv, .ctx = NULL, .in = stdin, .enable_log = 1};
  struct skel_outcome o;
  int code = skel_run(commands, sizeof(commands) / sizeof(commands[0]), &io, &o);
  if (code == 0) {
    if (o.out.text) fputs(o.out.text, stdout);
  } else {
    char *json = cni_error_to_json(&o.err, o.cni_version);
    if (json)
      fputs(json, stdout);
    else
      printf("{\"code\": %d, \"msg\": \"internal error\"}\n", code);
    free(json);
  }
  skel_outcome_free(&o);
  if (fflush(stdout) != 0) return 1;
  return code == 0 ? 0 : 1;
}
