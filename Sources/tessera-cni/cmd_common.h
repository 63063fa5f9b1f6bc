/* Helpers shared by the cmd_*.c files. */
#ifndef TESSERA_CMD_COMMON_H
#define TESSERA_CMD_COMMON_H

#include "cmd.h"
#include "endpoint_client.h"

static inline struct endpoint_target cmd_target(const struct cni_invocation *inv) {
  struct endpoint_target t = {
      .socket_path = inv->conf.socket_path,
      .deadline_ms = inv->deadline_ms,
      .timeout_ms = inv->conf.timeout_ms,
  };
  return t;
}

#endif
