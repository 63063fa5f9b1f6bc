#include "skel.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

void skel_outcome_free(struct skel_outcome *o) {
  cni_output_free(&o->out);
}

int skel_read_all(FILE *f, size_t max, char **out, size_t *len) {
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  if (!buf) return -1;
  for (;;) {
    if (n + 1 >= cap) {
      if (cap > max + 1) break;
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        return -1;
      }
      buf = nb;
      cap *= 2;
    }
    size_t r = fread(buf + n, 1, cap - 1 - n, f);
    n += r;
    if (r == 0) break;
  }
  if (ferror(f) || n > max) {
    free(buf);
    return -1;
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

int skel_validate_container_id(const char *id, struct cni_error *err) {
  /* libcni's rule: ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$ */
  int ok = isalnum((unsigned char)id[0]);
  for (const char *p = id; ok && *p; p++) ok = isalnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '-';
  if (!ok || strlen(id) > 1024)
    return cni_error_set(err, CNI_ERR_INVALID_ENV, "invalid characters in containerID", "%.200s", id);
  return 0;
}

int skel_validate_ifname(const char *ifname, struct cni_error *err) {
  size_t n = strlen(ifname);
  if (n > NETCONF_IFNAME_MAX)
    return cni_error_set(err, CNI_ERR_INVALID_ENV, "interface name is too long",
                         "interface name should be less than %d characters", NETCONF_IFNAME_MAX + 1);
  if (strcmp(ifname, ".") == 0 || strcmp(ifname, "..") == 0)
    return cni_error_set(err, CNI_ERR_INVALID_ENV, "interface name is . or ..", NULL);
  for (const char *p = ifname; *p; p++)
    if (*p == '/' || *p == ':' || isspace((unsigned char)*p) || (unsigned char)*p < 0x20)
      return cni_error_set(err, CNI_ERR_INVALID_ENV, "interface name contains / or : or whitespace characters", NULL);
  return 0;
}

static const char *env(const struct skel_io *io, const char *name) {
  const char *v = io->getenv(io->ctx, name);
  return v && v[0] ? v : NULL;
}

static int dispatch(const struct skel_command *table, size_t n, const struct skel_io *io, struct skel_outcome *o,
                    struct cni_invocation *inv, char **stdin_buf, const struct skel_command **cmd_out) {
  struct cni_error *err = &o->err;
  struct cni_env *e = &inv->env;
  e->command = env(io, "CNI_COMMAND");
  e->container_id = env(io, "CNI_CONTAINERID");
  e->netns = env(io, "CNI_NETNS");
  e->ifname = env(io, "CNI_IFNAME");
  e->args = env(io, "CNI_ARGS");
  e->path = env(io, "CNI_PATH");

  if (!e->command)
    return cni_error_set(err, CNI_ERR_INVALID_ENV, "required env variables [CNI_COMMAND] missing",
                         "tessera-cni is a CNI plugin: a container runtime runs it with CNI_COMMAND=ADD|DEL|"
                         "CHECK|STATUS|GC|VERSION and the network configuration on stdin");
  const struct skel_command *cmd = NULL;
  for (size_t i = 0; i < n; i++)
    if (strcmp(table[i].name, e->command) == 0) cmd = &table[i];
  if (!cmd) return cni_error_set(err, CNI_ERR_INVALID_ENV, "unknown CNI_COMMAND", "%.64s", e->command);
  *cmd_out = cmd;

  static const struct {
    unsigned flag;
    const char *name;
  } vars[] = {{SKEL_ENV_CONTAINERID, "CNI_CONTAINERID"},
              {SKEL_ENV_NETNS, "CNI_NETNS"},
              {SKEL_ENV_IFNAME, "CNI_IFNAME"},
              {SKEL_ENV_PATH, "CNI_PATH"}};
  const char *values[] = {e->container_id, e->netns, e->ifname, e->path};
  char missing[128] = "";
  for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
    if ((cmd->required_env & vars[i].flag) && !values[i]) {
      if (missing[0]) strncat(missing, " ", sizeof(missing) - strlen(missing) - 1);
      strncat(missing, vars[i].name, sizeof(missing) - strlen(missing) - 1);
    }
  }
  if (missing[0])
    return cni_error_set(err, CNI_ERR_INVALID_ENV, "required env variables missing", "[%s] for %s", missing, cmd->name);
  int rc;
  if ((cmd->required_env & SKEL_ENV_CONTAINERID) && (rc = skel_validate_container_id(e->container_id, err))) return rc;
  if ((cmd->required_env & SKEL_ENV_IFNAME) && (rc = skel_validate_ifname(e->ifname, err))) return rc;
  if (e->netns && !util_utf8_valid(e->netns, strlen(e->netns)))
    return cni_error_set(err, CNI_ERR_INVALID_ENV, "CNI_NETNS is not valid UTF-8", NULL);

  if (cmd->flags & SKEL_NO_CONF) {
    /* VERSION: runtimes send {"cniVersion": ...}; never block on a terminal or fail on input. */
    size_t len = 0;
    if (io->in && !isatty(fileno(io->in)) && skel_read_all(io->in, NETCONF_MAX_INPUT, stdin_buf, &len) == 0) {
      inv->stdin_data = *stdin_buf;
      inv->stdin_len = len;
    }
    return cmd->fn(inv, &o->out, err);
  }

  size_t len = 0;
  if (!io->in || skel_read_all(io->in, NETCONF_MAX_INPUT, stdin_buf, &len) != 0)
    return cni_error_set(err, CNI_ERR_IO, "cannot read the network configuration from stdin",
                         "read failed or input larger than %u bytes", NETCONF_MAX_INPUT);
  inv->stdin_data = *stdin_buf;
  inv->stdin_len = len;
  rc = netconf_parse(*stdin_buf, len, &inv->conf, err);
  if (inv->conf.cni_version) util_strlcpy(o->cni_version, inv->conf.cni_version, sizeof(o->cni_version));
  if (rc) return rc;
  if ((cmd->flags & SKEL_MIN_1_1_0) && netconf_version_cmp(inv->conf.cni_version, "1.1.0") < 0)
    return cni_error_set(err, CNI_ERR_INCOMPATIBLE_VERSION, "config version does not allow this command",
                         "%s requires cniVersion 1.1.0 or later, config is %s", cmd->name, inv->conf.cni_version);
  if ((rc = cni_args_parse(e->args, &inv->args, err))) return rc;

  if (io->enable_log) log_open(inv->conf.log_file, inv->conf.log_level);
  inv->deadline_ms = util_now_ms() + inv->conf.timeout_ms;
  return cmd->fn(inv, &o->out, err);
}

int skel_run(const struct skel_command *table, size_t n, const struct skel_io *io, struct skel_outcome *o) {
  memset(o, 0, sizeof(*o));
  util_strlcpy(o->cni_version, "1.1.0", sizeof(o->cni_version));
  int64_t t0 = util_now_us();
  struct cni_invocation inv;
  memset(&inv, 0, sizeof(inv));
  char *stdin_buf = NULL;
  const struct skel_command *cmd = NULL;

  o->code = dispatch(table, n, io, o, &inv, &stdin_buf, &cmd);
  if (o->code == 0)
    cni_error_clear(&o->err);
  else
    cni_output_free(&o->out);

  if (cmd && !(cmd->flags & SKEL_NO_CONF)) {
    char msg[CNI_ERROR_MSG_MAX + CNI_ERROR_DETAILS_MAX + 4];
    snprintf(msg, sizeof(msg), "%s%s%s", o->err.msg, o->err.details[0] ? ": " : "", o->err.details);
    log_call(cmd->name, inv.env.container_id, inv.env.ifname, o->code, o->code ? msg : NULL, util_now_us() - t0);
  }
  log_close();
  netconf_free(&inv.conf);
  cni_args_free(&inv.args);
  free(stdin_buf);
  return o->code;
}
