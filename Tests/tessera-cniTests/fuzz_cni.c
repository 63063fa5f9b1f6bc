/* libFuzzer harness for everything tessera-cni parses from outside:
 *   mode 0: a whole invocation through skel_run (env vars + stdin), with commands that parse
 *           prevResult/labels/ports/attachments and encode the request, but never connect;
 *   mode 1: the network configuration and its parts directly;
 *   mode 2: CNI_ARGS;
 *   mode 3: what comes back from the service: gRPC framing, grpc-status/grpc-message, and
 *           protobuf decoding of every response message.
 * The first input byte selects the mode (mod 4). In mode 0 the rest is split at NUL bytes into
 * CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH, then stdin. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cni_args.h"
#include "endpoint_client.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc_h2.h"
#include "netconf.h"
#include "skel.h"

static int fuzz_add(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  struct netconf *nc = &inv->conf;
  int rc;
  if ((rc = netconf_parse_prev_result(nc, err))) return rc;
  if ((rc = netconf_parse_labels(nc, err))) return rc;
  if ((rc = netconf_check_label_limits(nc, err))) return rc;
  if ((rc = netconf_parse_ports(nc, err))) return rc;
  /* The real ADD reads the host veth from the kernel; here the container's entry stands in. */
  if ((rc = netconf_find_container_interface(nc, inv->env.ifname, err))) return rc;
  if ((rc = result_passthrough(nc, out, err))) return rc;
  struct endpoint_create_params p = {
      .container_id = inv->env.container_id,
      .interface_name = inv->env.ifname,
      .host_interface = nc->container_interface,
      .netns = inv->env.netns,
      .pod_namespace = inv->args.pod_namespace,
      .pod_name = inv->args.pod_name,
      .ips = nc->ips,
      .n_ips = nc->n_ips,
      .labels = nc->labels,
      .n_labels = nc->n_labels,
      .named_ports = nc->ports,
      .n_named_ports = nc->n_ports,
  };
  uint8_t *buf;
  size_t len;
  if (endpoint_encode_create(&p, &buf, &len) == 0) {
    /* What we send must decode again. */
    ProtobufCMessage *m =
        protobuf_c_message_unpack(&tessera__endpoint__v1__create_endpoint_request__descriptor, NULL, len, buf);
    if (!m) abort();
    protobuf_c_message_free_unpacked(m, NULL);
    free(buf);
  }
  return 0;
}

static int fuzz_check(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  (void)out;
  return netconf_parse_prev_result(&inv->conf, err);
}

static int fuzz_gc(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  (void)out;
  return netconf_parse_valid_attachments(&inv->conf, err);
}

static int fuzz_noop(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  (void)inv;
  (void)out;
  (void)err;
  return 0;
}

static const struct skel_command table[] = {
    {"ADD", fuzz_add, SKEL_ENV_CONTAINERID | SKEL_ENV_NETNS | SKEL_ENV_IFNAME | SKEL_ENV_PATH, 0},
    {"DEL", fuzz_noop, SKEL_ENV_CONTAINERID | SKEL_ENV_IFNAME | SKEL_ENV_PATH, 0},
    {"CHECK", fuzz_check, SKEL_ENV_CONTAINERID | SKEL_ENV_NETNS | SKEL_ENV_IFNAME | SKEL_ENV_PATH, 0},
    {"STATUS", fuzz_noop, 0, SKEL_MIN_1_1_0},
    {"GC", fuzz_gc, 0, SKEL_MIN_1_1_0},
    {"VERSION", cmd_version, 0, SKEL_NO_CONF},
};

static const char *const env_names[] = {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS",
                                        "CNI_IFNAME",  "CNI_ARGS",        "CNI_PATH"};
struct fuzz_env {
  char *values[6];
};

static const char *fuzz_getenv(void *ctx, const char *name) {
  struct fuzz_env *e = ctx;
  for (int i = 0; i < 6; i++)
    if (strcmp(env_names[i], name) == 0) return e->values[i];
  return NULL;
}

static void check_json_output(const struct skel_outcome *o) {
  /* Whatever happens, stdout must be valid JSON (or nothing). */
  char *text = o->code ? cni_error_to_json(&o->err, o->cni_version) : o->out.text;
  if (text) {
    json_t *j = json_loads(text, 0, NULL);
    if (!j) abort();
    json_decref(j);
  }
  if (o->code) free(text);
}

static void fuzz_invocation(const uint8_t *data, size_t size) {
  struct fuzz_env env = {{NULL}};
  size_t pos = 0;
  for (int i = 0; i < 6 && pos <= size; i++) {
    const uint8_t *nul = memchr(data + pos, 0, size - pos);
    size_t n = nul ? (size_t)(nul - (data + pos)) : size - pos;
    env.values[i] = strndup((const char *)data + pos, n);
    pos += n + 1;
  }
  const char *in = pos < size ? (const char *)data + pos : "";
  size_t in_len = pos < size ? size - pos : 0;
  FILE *f = fmemopen((void *)(in_len ? in : " "), in_len ? in_len : 1, "r");
  if (!in_len) fgetc(f);
  struct skel_io io = {.getenv = fuzz_getenv, .ctx = &env, .in = f, .enable_log = 0};
  struct skel_outcome o;
  skel_run(table, sizeof(table) / sizeof(table[0]), &io, &o);
  check_json_output(&o);
  skel_outcome_free(&o);
  fclose(f);
  for (int i = 0; i < 6; i++) free(env.values[i]);
}

static void fuzz_netconf(const uint8_t *data, size_t size) {
  struct netconf nc;
  struct cni_error err;
  if (netconf_parse((const char *)data, size, &nc, &err) == 0) {
    struct cni_output out = {0};
    if (netconf_parse_prev_result(&nc, &err) == 0 && result_passthrough(&nc, &out, &err) == 0) cni_output_free(&out);
    netconf_parse_labels(&nc, &err);
    netconf_parse_ports(&nc, &err);
    netconf_parse_valid_attachments(&nc, &err);
  }
  netconf_free(&nc);
}

static void fuzz_cni_args(const uint8_t *data, size_t size) {
  char *s = strndup((const char *)data, size);
  struct cni_args a;
  struct cni_error err;
  if (cni_args_parse(s, &a, &err) == 0) cni_args_free(&a);
  struct netconf_label l;
  if (netconf_label_from_string(s, &l, &err) == 0) {
    free(l.source);
    free(l.key);
    free(l.value);
  }
  netconf_port_name_valid(s, strlen(s));
  char ip[64];
  netconf_canonical_ip(s, ip, sizeof(ip));
  free(s);
}

static void fuzz_response(const uint8_t *data, size_t size) {
  char msg[512];
  grpc_percent_decode((const char *)data, size, msg, sizeof(msg));
  grpc_parse_status((const char *)data, size > 4 ? 4 : size);
  const uint8_t *m;
  size_t n;
  const char *why;
  if (grpc_unframe(data, size, &m, &n, &why) != 0) {
    m = data;
    n = size;
  }
  static const ProtobufCMessageDescriptor *const descs[] = {
      &tessera__endpoint__v1__create_endpoint_response__descriptor,
      &tessera__endpoint__v1__delete_endpoint_response__descriptor,
      &tessera__endpoint__v1__endpoint__descriptor,
      &tessera__endpoint__v1__garbage_collect_endpoints_response__descriptor,
      &grpc__health__v1__health_check_response__descriptor,
  };
  for (size_t i = 0; i < sizeof(descs) / sizeof(descs[0]); i++) {
    ProtobufCMessage *p = protobuf_c_message_unpack(descs[i], NULL, n, m);
    if (p) {
      /* Re-encoding what was decoded must work too (unknown fields included). */
      size_t sz = protobuf_c_message_get_packed_size(p);
      uint8_t *buf = malloc(sz + 1);
      if (protobuf_c_message_pack(p, buf) != sz) abort();
      free(buf);
      protobuf_c_message_free_unpacked(p, NULL);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  switch (data[0] % 4) {
  case 0: fuzz_invocation(data + 1, size - 1); break;
  case 1: fuzz_netconf(data + 1, size - 1); break;
  case 2: fuzz_cni_args(data + 1, size - 1); break;
  case 3: fuzz_response(data + 1, size - 1); break;
  }
  return 0;
}
