/* The network configuration on stdin, including the chained plugin's prevResult. */
#ifndef TESSERA_NETCONF_H
#define TESSERA_NETCONF_H

#include <jansson.h>
#include <stddef.h>

#include "cni_error.h"

#define NETCONF_DEFAULT_SOCKET "/run/tessera/endpoint.sock"
#define NETCONF_DEFAULT_TIMEOUT_MS 10000
#define NETCONF_MAX_TIMEOUT_MS 3600000
#define NETCONF_SUN_PATH_MAX 107 /* sizeof(sun_path) - 1 */
#define NETCONF_MAX_INPUT (16u << 20)
#define NETCONF_IFNAME_MAX 15 /* IFNAMSIZ - 1 */

enum netconf_log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_INFO = 1, LOG_LEVEL_DEBUG = 2 };

struct netconf_label {
  char *source; /* "" when the label has no `source:` prefix (the service defaults it) */
  char *key;
  char *value;
};

struct netconf_attachment {
  const char *container_id; /* borrowed from netconf.root */
  const char *ifname;
};

struct netconf {
  json_t *root; /* owns every borrowed string below */
  const char *cni_version;
  const char *name;
  const char *type;
  char socket_path[NETCONF_SUN_PATH_MAX + 1];
  long timeout_ms;
  const char *log_file; /* NULL: no log */
  int log_level;

  /* netconf_parse_labels */
  struct netconf_label *labels;
  size_t n_labels;

  /* netconf_parse_prev_result */
  json_t *prev_result;        /* borrowed; NULL when absent */
  const char *host_interface; /* borrowed; NULL when no interface lacks a sandbox */
  char **ips;                 /* canonical addresses without prefix length */
  size_t n_ips;

  /* netconf_parse_valid_attachments */
  struct netconf_attachment *attachments;
  size_t n_attachments;
};

/* 1 when v is a spec version this plugin implements (0.4.0, 1.0.0, 1.1.0). */
int netconf_version_supported(const char *v);

/* Compares dotted versions; -2 when either is malformed. */
int netconf_version_cmp(const char *a, const char *b);

/* Decodes JSON and the common fields (cniVersion, name, type, socketPath, timeoutMs,
 * logFile, logLevel). Codes: 6 malformed JSON, 7 missing/invalid fields, 1 unsupported
 * version. Call netconf_free on success and on error; after an error nc->cni_version is
 * set only when the config's version is valid and supported (errors are reported in it). */
int netconf_parse(const char *data, size_t len, struct netconf *nc, struct cni_error *err);

/* Decodes `prevResult` (required): host veth, container IPs. Code 7 on error. */
int netconf_parse_prev_result(struct netconf *nc, struct cni_error *err);

/* Decodes `args.cni.labels` (optional): an object {"k":"v"}, or an array of
 * "source:key=value" / "key=value" strings or {"key","value"[,"source"]} objects. */
int netconf_parse_labels(struct netconf *nc, struct cni_error *err);

/* Decodes `cni.dev/valid-attachments` (required for GC). */
int netconf_parse_valid_attachments(struct netconf *nc, struct cni_error *err);

/* Splits "source:key=value" (source only when `:` comes before `=`). Code 7 on error. */
int netconf_label_from_string(const char *s, struct netconf_label *out, struct cni_error *err);

/* Strips "/prefix", checks the address and prefix, writes the canonical text form. */
int netconf_canonical_ip(const char *cidr, char *out, size_t cap);

void netconf_free(struct netconf *nc);

#endif
