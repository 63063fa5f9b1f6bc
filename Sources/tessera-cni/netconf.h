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

/* The endpoint service's label limits (TesseraCore Label / LabelSet). */
#define NETCONF_MAX_LABELS 512
#define NETCONF_MAX_LABEL_SOURCE 63
#define NETCONF_MAX_LABEL_KEY 317
#define NETCONF_MAX_LABEL_VALUE 253

/* Named ports (`args.cni.ports`): at most this many, each named by an IANA service name. */
#define NETCONF_MAX_PORTS 64
#define NETCONF_PORT_NAME_MAX 15

/* A named port's protocol: its IANA protocol number (the value of tessera.common.v1.Protocol). */
enum netconf_port_protocol { NETCONF_PORT_TCP = 6, NETCONF_PORT_UDP = 17, NETCONF_PORT_SCTP = 132 };

enum netconf_log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_INFO = 1, LOG_LEVEL_DEBUG = 2 };

struct netconf_label {
  char *source; /* "" when the label has no `source:` prefix (the service defaults it) */
  char *key;
  char *value;
};

struct netconf_port {
  const char *name; /* borrowed from netconf.root */
  enum netconf_port_protocol protocol;
  unsigned port; /* 1-65535 */
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

  /* netconf_parse_ports */
  struct netconf_port *ports;
  size_t n_ports;

  /* netconf_parse_prev_result */
  json_t *prev_result;             /* borrowed; NULL when absent */
  const char *container_interface; /* borrowed: the interfaces entry named CNI_IFNAME with a sandbox */
  char **ips;                      /* canonical addresses without prefix length */
  size_t n_ips;

  /* main-plugin mode: the `ipam` section (borrowed; NULL in chained mode) and `mtu` (0: default) */
  json_t *ipam;
  int mtu;

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

/* Decodes `prevResult` (required): its interfaces and the container IPs. Code 7 on error. */
int netconf_parse_prev_result(struct netconf *nc, struct cni_error *err);

/* The same for a result held elsewhere (the IPAM plugin's); res must outlive nc's use of it. */
int netconf_parse_result(struct netconf *nc, json_t *res, struct cni_error *err);

/* Finds the interfaces entry of the result for the container's interface: name ifname and a
 * non-empty sandbox (the result's position of an interface says nothing: bridge lists the
 * bridge first). Sets nc->container_interface. None: TSR_ERR_NO_HOST_VETH. */
int netconf_find_container_interface(struct netconf *nc, const char *ifname, struct cni_error *err);

/* Checks the labels against the endpoint service's limits (at most 512; source 63, key 317 and
 * value 253 bytes), so an oversized set is a configuration error, not a failed call. Code 7. */
int netconf_check_label_limits(const struct netconf *nc, struct cni_error *err);

/* Decodes `args.cni.labels` (optional): an object {"k":"v"}, or an array of
 * "source:key=value" / "key=value" strings or {"key","value"[,"source"]} objects. */
int netconf_parse_labels(struct netconf *nc, struct cni_error *err);

/* Decodes `args.cni.ports` (optional): the pod's named ports, in the shape of Kubernetes
 * container ports, [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]. `name` is an
 * IANA service name, unique in the list; `containerPort` 1-65535; `protocol` "TCP" (the
 * default), "UDP" or "SCTP"; no other keys; at most NETCONF_MAX_PORTS. Code 7 on error. */
int netconf_parse_ports(struct netconf *nc, struct cni_error *err);

/* 1 when s is an IANA service name as Kubernetes validates a port name (IsValidPortName):
 * 1-15 characters of a-z, 0-9 and '-', at least one letter, no leading or trailing '-', no "--". */
int netconf_port_name_valid(const char *s, size_t len);

/* Decodes `cni.dev/valid-attachments` (required for GC). */
int netconf_parse_valid_attachments(struct netconf *nc, struct cni_error *err);

/* Splits "source:key=value" (source only when `:` comes before `=`). Code 7 on error. */
int netconf_label_from_string(const char *s, struct netconf_label *out, struct cni_error *err);

/* Strips "/prefix", checks the address and prefix, writes the canonical text form. */
int netconf_canonical_ip(const char *cidr, char *out, size_t cap);

void netconf_free(struct netconf *nc);

#endif
