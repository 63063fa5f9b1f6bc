#include "netconf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *const supported_versions[] = {"0.4.0", "1.0.0", "1.1.0"};

/* Parses "X.Y.Z" (digits only, each part at most 9 digits). */
static int parse_version(const char *v, long parts[3]) {
  const char *p = v;
  for (int i = 0; i < 3; i++) {
    if (!isdigit((unsigned char)*p)) return -1;
    long n = 0;
    int digits = 0;
    while (isdigit((unsigned char)*p)) {
      if (++digits > 9) return -1;
      n = n * 10 + (*p - '0');
      p++;
    }
    parts[i] = n;
    if (i < 2) {
      if (*p != '.') return -1;
      p++;
    }
  }
  return *p == '\0' ? 0 : -1;
}

int netconf_version_cmp(const char *a, const char *b) {
  long x[3], y[3];
  if (!a || !b || parse_version(a, x) || parse_version(b, y)) return -2;
  for (int i = 0; i < 3; i++) {
    if (x[i] < y[i]) return -1;
    if (x[i] > y[i]) return 1;
  }
  return 0;
}

int netconf_version_supported(const char *v) {
  if (!v) return 0;
  for (size_t i = 0; i < sizeof(supported_versions) / sizeof(supported_versions[0]); i++)
    if (strcmp(v, supported_versions[i]) == 0) return 1;
  return 0;
}

static int invalid(struct cni_error *err, const char *fmt, const char *field) {
  return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid network configuration", fmt, field);
}

/* A required non-empty string field. */
static int required_string(json_t *root, const char *field, const char **out, struct cni_error *err) {
  json_t *v = json_object_get(root, field);
  if (!v) return invalid(err, "missing required field %s", field);
  if (!json_is_string(v)) return invalid(err, "field %s must be a string", field);
  if (json_string_length(v) == 0) return invalid(err, "field %s must not be empty", field);
  *out = json_string_value(v);
  return 0;
}

int netconf_parse(const char *data, size_t len, struct netconf *nc, struct cni_error *err) {
  memset(nc, 0, sizeof(*nc));
  util_strlcpy(nc->socket_path, NETCONF_DEFAULT_SOCKET, sizeof(nc->socket_path));
  nc->timeout_ms = NETCONF_DEFAULT_TIMEOUT_MS;
  nc->log_level = LOG_LEVEL_INFO;

  if (len == 0)
    return cni_error_set(err, CNI_ERR_DECODING, "cannot decode network configuration",
                         "stdin is empty; expected the network configuration JSON");
  if (len > NETCONF_MAX_INPUT)
    return cni_error_set(err, CNI_ERR_DECODING, "cannot decode network configuration",
                         "network configuration is larger than %u bytes", NETCONF_MAX_INPUT);
  json_error_t jerr;
  json_t *root = json_loadb(data, len, 0, &jerr);
  if (!root)
    return cni_error_set(err, CNI_ERR_DECODING, "cannot decode network configuration", "line %d column %d: %s",
                         jerr.line, jerr.column, jerr.text);
  if (!json_is_object(root)) {
    json_decref(root);
    return cni_error_set(err, CNI_ERR_DECODING, "cannot decode network configuration", "expected a JSON object");
  }
  nc->root = root;

  int rc;
  const char *version = NULL;
  if ((rc = required_string(root, "cniVersion", &version, err))) goto fail;
  nc->cni_version = version;
  long parts[3];
  if (parse_version(nc->cni_version, parts)) {
    rc = cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid network configuration",
                       "cniVersion %.64s is not a version of the form X.Y.Z", nc->cni_version);
    nc->cni_version = NULL;
    goto fail;
  }
  if (!netconf_version_supported(nc->cni_version)) {
    rc = cni_error_set(err, CNI_ERR_INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       "config is \"%.64s\", plugin supports [\"0.4.0\" \"1.0.0\" \"1.1.0\"]", nc->cni_version);
    nc->cni_version = NULL; /* errors are reported in a version the plugin knows */
    goto fail;
  }
  if ((rc = required_string(root, "name", &nc->name, err))) goto fail;
  if ((rc = required_string(root, "type", &nc->type, err))) goto fail;

  json_t *v;
  if ((v = json_object_get(root, "socketPath"))) {
    if (!json_is_string(v) || json_string_length(v) == 0) {
      rc = invalid(err, "field %s must be a non-empty string", "socketPath");
      goto fail;
    }
    const char *s = json_string_value(v);
    if (s[0] != '/') {
      rc = invalid(err, "field %s must be an absolute path", "socketPath");
      goto fail;
    }
    if (json_string_length(v) > NETCONF_SUN_PATH_MAX) {
      rc = cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid network configuration",
                         "socketPath is %zu bytes long; a Unix socket path has at most %d", json_string_length(v),
                         NETCONF_SUN_PATH_MAX);
      goto fail;
    }
    util_strlcpy(nc->socket_path, s, sizeof(nc->socket_path));
  }
  if ((v = json_object_get(root, "timeoutMs"))) {
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > NETCONF_MAX_TIMEOUT_MS) {
      rc = cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid network configuration",
                         "field timeoutMs must be an integer between 1 and %d", NETCONF_MAX_TIMEOUT_MS);
      goto fail;
    }
    nc->timeout_ms = (long)json_integer_value(v);
  }
  if ((v = json_object_get(root, "logFile"))) {
    if (!json_is_string(v)) {
      rc = invalid(err, "field %s must be a string", "logFile");
      goto fail;
    }
    nc->log_file = json_string_length(v) ? json_string_value(v) : NULL;
  }
  if ((v = json_object_get(root, "logLevel"))) {
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    if (strcmp(s, "error") == 0)
      nc->log_level = LOG_LEVEL_ERROR;
    else if (strcmp(s, "info") == 0)
      nc->log_level = LOG_LEVEL_INFO;
    else if (strcmp(s, "debug") == 0)
      nc->log_level = LOG_LEVEL_DEBUG;
    else {
      rc = invalid(err, "field %s must be one of \"error\", \"info\", \"debug\"", "logLevel");
      goto fail;
    }
  }
  if ((v = json_object_get(root, "ipam")) && !json_is_null(v)) {
    json_t *t = json_is_object(v) ? json_object_get(v, "type") : NULL;
    if (!json_is_object(v)) {
      rc = invalid(err, "field %s must be an object", "ipam");
      goto fail;
    }
    if (!json_is_string(t) || json_string_length(t) == 0 || strchr(json_string_value(t), '/') ||
        strcmp(json_string_value(t), ".") == 0 || strcmp(json_string_value(t), "..") == 0) {
      rc = invalid(err, "field %s must name an IPAM plugin in CNI_PATH (e.g. \"host-local\")", "ipam.type");
      goto fail;
    }
    nc->ipam = v;
  }
  if ((v = json_object_get(root, "mtu"))) {
    if (!json_is_integer(v) || json_integer_value(v) < 68 || json_integer_value(v) > 65535) {
      rc = invalid(err, "field %s must be an integer between 68 and 65535", "mtu");
      goto fail;
    }
    nc->mtu = (int)json_integer_value(v);
  }
  return 0;

fail:
  return rc;
}

int netconf_canonical_ip(const char *cidr, char *out, size_t cap) {
  char buf[INET6_ADDRSTRLEN + 8];
  size_t n = strlen(cidr);
  if (n == 0 || n >= sizeof(buf)) return -1;
  memcpy(buf, cidr, n + 1);
  char *slash = strchr(buf, '/');
  long max_prefix;
  unsigned char bin[16];
  int family;
  if (slash) *slash = '\0';
  if (inet_pton(AF_INET, buf, bin) == 1) {
    family = AF_INET;
    max_prefix = 32;
  } else if (inet_pton(AF_INET6, buf, bin) == 1) {
    family = AF_INET6;
    max_prefix = 128;
  } else {
    return -1;
  }
  if (slash) {
    const char *p = slash + 1;
    if (!*p || strlen(p) > 3) return -1;
    long prefix = 0;
    for (; *p; p++) {
      if (!isdigit((unsigned char)*p)) return -1;
      prefix = prefix * 10 + (*p - '0');
    }
    if (prefix > max_prefix) return -1;
  }
  return inet_ntop(family, bin, out, (socklen_t)cap) ? 0 : -1;
}

static int valid_ifname(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > NETCONF_IFNAME_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
  for (const char *p = s; *p; p++)
    if (*p == '/' || *p == ':' || isspace((unsigned char)*p)) return 0;
  return 1;
}

static int prev_invalid(struct cni_error *err, const char *fmt, size_t i) {
  return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid prevResult", fmt, i);
}

int netconf_parse_prev_result(struct netconf *nc, struct cni_error *err) {
  json_t *pr = json_object_get(nc->root, "prevResult");
  if (!pr)
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "missing prevResult",
                         "tessera-cni without an ipam section is a chained plugin: put it after an interface "
                         "plugin with IPAM (e.g. ptp + host-local) in a conflist, or give it an ipam section to "
                         "run it as the main plugin");
  if (!json_is_object(pr))
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid prevResult", "prevResult must be an object");
  return netconf_parse_result(nc, pr, err);
}

int netconf_parse_result(struct netconf *nc, json_t *pr, struct cni_error *err) {
  nc->prev_result = pr;
  json_t *ifs = json_object_get(pr, "interfaces");
  if (ifs && !json_is_array(ifs) && !json_is_null(ifs))
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid prevResult", "interfaces must be an array");
  size_t i;
  json_t *it;
  if (json_is_array(ifs)) {
    json_array_foreach(ifs, i, it) {
      if (!json_is_object(it)) return prev_invalid(err, "interfaces[%zu] must be an object", i);
      json_t *name = json_object_get(it, "name");
      json_t *sandbox = json_object_get(it, "sandbox");
      if (!json_is_string(name)) return prev_invalid(err, "interfaces[%zu].name must be a string", i);
      if (sandbox && !json_is_string(sandbox) && !json_is_null(sandbox))
        return prev_invalid(err, "interfaces[%zu].sandbox must be a string", i);
      if (!valid_ifname(json_string_value(name)))
        return prev_invalid(err, "interfaces[%zu].name is not a valid interface name", i);
    }
  }

  json_t *ips = json_object_get(pr, "ips");
  if (!json_is_array(ips) || json_array_size(ips) == 0)
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid prevResult",
                         "prevResult has no ips; tessera-cni must follow a plugin that assigns addresses");
  nc->ips = calloc(json_array_size(ips), sizeof(char *));
  if (!nc->ips) return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  json_array_foreach(ips, i, it) {
    json_t *addr = json_is_object(it) ? json_object_get(it, "address") : NULL;
    if (!json_is_string(addr)) return prev_invalid(err, "ips[%zu].address must be a string", i);
    char canon[INET6_ADDRSTRLEN];
    if (netconf_canonical_ip(json_string_value(addr), canon, sizeof(canon)))
      return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid prevResult",
                           "ips[%zu].address %.64s is not an IP address with prefix length", i,
                           json_string_value(addr));
    if (!(nc->ips[nc->n_ips] = strdup(canon))) return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
    nc->n_ips++;
  }
  return 0;
}

static int dup3(struct netconf_label *l, const char *src, size_t srclen, const char *key, size_t keylen,
                const char *val, size_t vallen, struct cni_error *err) {
  l->source = strndup(src, srclen);
  l->key = strndup(key, keylen);
  l->value = strndup(val, vallen);
  if (!l->source || !l->key || !l->value) {
    free(l->source);
    free(l->key);
    free(l->value);
    l->source = l->key = l->value = NULL;
    return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  }
  return 0;
}

/* Splits s (of length n) into source and key at a `:`; the whole of s is the key otherwise. */
static void split_source(const char *s, size_t n, size_t *srclen, const char **key, size_t *keylen) {
  const char *colon = memchr(s, ':', n);
  if (colon) {
    *srclen = (size_t)(colon - s);
    *key = colon + 1;
    *keylen = n - *srclen - 1;
  } else {
    *srclen = 0;
    *key = s;
    *keylen = n;
  }
}

int netconf_find_container_interface(struct netconf *nc, const char *ifname, struct cni_error *err) {
  json_t *ifs = nc->prev_result ? json_object_get(nc->prev_result, "interfaces") : NULL;
  size_t i;
  json_t *it;
  nc->container_interface = NULL;
  if (json_is_array(ifs)) {
    json_array_foreach(ifs, i, it) {
      json_t *name = json_object_get(it, "name"), *sandbox = json_object_get(it, "sandbox");
      if (json_is_string(name) && strcmp(json_string_value(name), ifname) == 0 && json_is_string(sandbox) &&
          json_string_length(sandbox) > 0) {
        nc->container_interface = json_string_value(name);
        return 0;
      }
    }
  }
  return cni_error_set(err, TSR_ERR_NO_HOST_VETH, "prevResult has no container interface",
                       "no interfaces entry named %s with a sandbox: the previous plugin did not create the "
                       "container's interface, so there is no host-side veth to enforce policy on",
                       ifname);
}

int netconf_check_label_limits(const struct netconf *nc, struct cni_error *err) {
  if (nc->n_labels > NETCONF_MAX_LABELS)
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "too many labels",
                         "args.cni.labels has %zu labels; the endpoint service accepts at most %d", nc->n_labels,
                         NETCONF_MAX_LABELS);
  for (size_t i = 0; i < nc->n_labels; i++) {
    const struct netconf_label *l = &nc->labels[i];
    const char *part = NULL;
    size_t len = 0;
    int max = 0;
    if (strlen(l->source) > NETCONF_MAX_LABEL_SOURCE)
      part = "source", len = strlen(l->source), max = NETCONF_MAX_LABEL_SOURCE;
    else if (strlen(l->key) > NETCONF_MAX_LABEL_KEY)
      part = "key", len = strlen(l->key), max = NETCONF_MAX_LABEL_KEY;
    else if (strlen(l->value) > NETCONF_MAX_LABEL_VALUE)
      part = "value", len = strlen(l->value), max = NETCONF_MAX_LABEL_VALUE;
    if (part)
      return cni_error_set(
          err, CNI_ERR_INVALID_NETCONF, "label too long",
          "label %zu (key \"%.40s\"...) has a %s of %zu bytes; the endpoint service accepts at most %d", i, l->key,
          part, len, max);
  }
  return 0;
}

int netconf_label_from_string(const char *s, struct netconf_label *out, struct cni_error *err) {
  memset(out, 0, sizeof(*out));
  size_t n = strlen(s);
  const char *eq = strchr(s, '=');
  size_t head = eq ? (size_t)(eq - s) : n;
  size_t srclen, keylen;
  const char *key;
  split_source(s, head, &srclen, &key, &keylen);
  if (keylen == 0)
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid label",
                         "label \"%.300s\" has an empty key; expected [source:]key[=value]", s);
  const char *val = eq ? eq + 1 : "";
  return dup3(out, s, srclen, key, keylen, val, strlen(val), err);
}

/* The `args.cni` object: *out is NULL when `args` or `args.cni` is absent or null. */
static int args_cni(const struct netconf *nc, json_t **out, struct cni_error *err) {
  *out = NULL;
  json_t *args = json_object_get(nc->root, "args");
  if (!args || json_is_null(args)) return 0;
  if (!json_is_object(args)) return invalid(err, "field %s must be an object", "args");
  json_t *cni = json_object_get(args, "cni");
  if (!cni || json_is_null(cni)) return 0;
  if (!json_is_object(cni)) return invalid(err, "field %s must be an object", "args.cni");
  *out = cni;
  return 0;
}

int netconf_parse_labels(struct netconf *nc, struct cni_error *err) {
  json_t *cni;
  int arc = args_cni(nc, &cni, err);
  if (arc || !cni) return arc;
  json_t *labels = json_object_get(cni, "labels");
  if (!labels || json_is_null(labels)) return 0;

  size_t count;
  if (json_is_object(labels))
    count = json_object_size(labels);
  else if (json_is_array(labels))
    count = json_array_size(labels);
  else
    return invalid(err, "field %s must be an object or an array", "args.cni.labels");
  if (count == 0) return 0;
  nc->labels = calloc(count, sizeof(*nc->labels));
  if (!nc->labels) return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);

  if (json_is_object(labels)) {
    const char *k;
    json_t *v;
    json_object_foreach(labels, k, v) {
      if (!json_is_string(v))
        return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid label",
                             "args.cni.labels[\"%.200s\"] must be a string", k);
      size_t srclen, keylen;
      const char *key;
      split_source(k, strlen(k), &srclen, &key, &keylen);
      if (keylen == 0)
        return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid label", "label \"%.200s\" has an empty key", k);
      struct netconf_label *l = &nc->labels[nc->n_labels++];
      int rc = dup3(l, k, srclen, key, keylen, json_string_value(v), json_string_length(v), err);
      if (rc) return rc;
    }
    return 0;
  }

  size_t i;
  json_t *v;
  json_array_foreach(labels, i, v) {
    struct netconf_label *l = &nc->labels[nc->n_labels];
    int rc;
    if (json_is_string(v)) {
      rc = netconf_label_from_string(json_string_value(v), l, err);
    } else if (json_is_object(v)) {
      json_t *src = json_object_get(v, "source"), *key = json_object_get(v, "key"), *val = json_object_get(v, "value");
      if (!json_is_string(key) || json_string_length(key) == 0 || (val && !json_is_string(val)) ||
          (src && !json_is_string(src)))
        return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid label",
                             "args.cni.labels[%zu] must be {\"key\": string, \"value\": string}", i);
      const char *s = src ? json_string_value(src) : "", *vs = val ? json_string_value(val) : "";
      rc = dup3(l, s, strlen(s), json_string_value(key), json_string_length(key), vs, strlen(vs), err);
    } else {
      return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid label",
                           "args.cni.labels[%zu] must be a string or an object", i);
    }
    nc->n_labels++; /* counted even on failure so netconf_free releases partial copies */
    if (rc) return rc;
  }
  return 0;
}

int netconf_port_name_valid(const char *s, size_t len) {
  if (len < 1 || len > NETCONF_PORT_NAME_MAX || s[0] == '-' || s[len - 1] == '-') return 0;
  int letter = 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (c >= 'a' && c <= 'z')
      letter = 1;
    else if (!(c >= '0' && c <= '9') && c != '-')
      return 0;
    else if (c == '-' && s[i + 1] == '-')
      return 0;
  }
  return letter;
}

/* One `args.cni.ports` entry, Kubernetes' ContainerPort shape. Its host fields are the port
 * mapping's business (the portmap plugin), not policy's: a runtime that copies the pod's ports
 * verbatim may send them, and they are ignored. */
static int parse_port(size_t i, json_t *v, struct netconf_port *out, struct cni_error *err) {
  if (!json_is_object(v))
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid named port",
                         "args.cni.ports[%zu] must be an object {\"name\": string, \"containerPort\": integer, "
                         "\"protocol\": string}",
                         i);
  const char *k;
  json_t *f;
  json_object_foreach(v, k, f) {
    if (strcmp(k, "name") != 0 && strcmp(k, "containerPort") != 0 && strcmp(k, "protocol") != 0 &&
        strcmp(k, "hostPort") != 0 && strcmp(k, "hostIP") != 0)
      return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid named port",
                           "args.cni.ports[%zu]: unknown field \"%.64s\"; expected name, containerPort and protocol "
                           "(hostPort and hostIP are ignored)",
                           i, k);
  }

  json_t *name = json_object_get(v, "name");
  if (!name)
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid named port",
                         "args.cni.ports[%zu]: missing required field name", i);
  if (!json_is_string(name))
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid named port",
                         "args.cni.ports[%zu]: name must be a string", i);
  if (!netconf_port_name_valid(json_string_value(name), json_string_length(name)))
    return cni_error_set(
        err, CNI_ERR_INVALID_NETCONF, "invalid named port",
        "args.cni.ports[%zu]: name \"%.64s\" must be an IANA service name: 1-15 characters of a-z, 0-9 "
        "and '-', with at least one letter, not beginning or ending with '-' and without \"--\"",
        i, json_string_value(name));

  json_t *port = json_object_get(v, "containerPort");
  if (!port)
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid named port",
                         "args.cni.ports[%zu] (%s): missing required field containerPort", i, json_string_value(name));
  if (!json_is_integer(port) || json_integer_value(port) < 1 || json_integer_value(port) > 65535)
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid named port",
                         "args.cni.ports[%zu] (%s): containerPort must be an integer between 1 and 65535", i,
                         json_string_value(name));

  enum netconf_port_protocol proto = NETCONF_PORT_TCP;
  json_t *p = json_object_get(v, "protocol");
  if (p) {
    const char *ps = json_is_string(p) ? json_string_value(p) : NULL;
    if (ps && strcmp(ps, "TCP") == 0)
      proto = NETCONF_PORT_TCP;
    else if (ps && strcmp(ps, "UDP") == 0)
      proto = NETCONF_PORT_UDP;
    else if (ps && strcmp(ps, "SCTP") == 0)
      proto = NETCONF_PORT_SCTP;
    else
      return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid named port",
                           "args.cni.ports[%zu] (%s): protocol must be \"TCP\", \"UDP\" or \"SCTP\"", i,
                           json_string_value(name));
  }
  out->name = json_string_value(name);
  out->protocol = proto;
  out->port = (unsigned)json_integer_value(port);
  return 0;
}

int netconf_parse_ports(struct netconf *nc, struct cni_error *err) {
  json_t *cni;
  int rc = args_cni(nc, &cni, err);
  if (rc || !cni) return rc;
  json_t *ports = json_object_get(cni, "ports");
  if (!ports || json_is_null(ports)) return 0;
  if (!json_is_array(ports)) return invalid(err, "field %s must be an array", "args.cni.ports");
  size_t count = json_array_size(ports);
  if (count == 0) return 0;
  if (count > NETCONF_MAX_PORTS)
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "too many named ports",
                         "args.cni.ports has %zu entries; at most %d are accepted", count, NETCONF_MAX_PORTS);
  nc->ports = calloc(count, sizeof(*nc->ports));
  if (!nc->ports) return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);

  size_t i;
  json_t *v;
  json_array_foreach(ports, i, v) {
    struct netconf_port *p = &nc->ports[nc->n_ports];
    if ((rc = parse_port(i, v, p, err))) return rc;
    for (size_t j = 0; j < nc->n_ports; j++)
      if (strcmp(nc->ports[j].name, p->name) == 0)
        return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid named port",
                             "args.cni.ports[%zu]: name \"%s\" is already used by args.cni.ports[%zu]", i, p->name, j);
    nc->n_ports++;
  }
  return 0;
}

int netconf_parse_valid_attachments(struct netconf *nc, struct cni_error *err) {
  json_t *va = json_object_get(nc->root, "cni.dev/valid-attachments");
  if (!va)
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid network configuration",
                         "GC requires cni.dev/valid-attachments (refusing to remove every endpoint)");
  if (!json_is_array(va)) return invalid(err, "field %s must be an array", "cni.dev/valid-attachments");
  size_t n = json_array_size(va);
  if (n == 0) return 0;
  nc->attachments = calloc(n, sizeof(*nc->attachments));
  if (!nc->attachments) return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  size_t i;
  json_t *it;
  json_array_foreach(va, i, it) {
    json_t *cid = json_is_object(it) ? json_object_get(it, "containerID") : NULL;
    json_t *ifn = json_is_object(it) ? json_object_get(it, "ifname") : NULL;
    if (!json_is_string(cid) || !json_is_string(ifn))
      return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid network configuration",
                           "cni.dev/valid-attachments[%zu] must be {\"containerID\": string, \"ifname\": string}", i);
    nc->attachments[nc->n_attachments].container_id = json_string_value(cid);
    nc->attachments[nc->n_attachments].ifname = json_string_value(ifn);
    nc->n_attachments++;
  }
  return 0;
}

void netconf_free(struct netconf *nc) {
  for (size_t i = 0; i < nc->n_labels; i++) {
    free(nc->labels[i].source);
    free(nc->labels[i].key);
    free(nc->labels[i].value);
  }
  free(nc->labels);
  free(nc->ports); /* the names belong to nc->root */
  for (size_t i = 0; i < nc->n_ips; i++) free(nc->ips[i]);
  free(nc->ips);
  free(nc->attachments);
  if (nc->root) json_decref(nc->root);
  memset(nc, 0, sizeof(*nc));
}
