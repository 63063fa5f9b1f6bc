#include "endpoint_client.h"

#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "tessera/common/v1/common.pb-c.h"

/* protobuf-c wants char * for strings it never writes on pack. */
#define PB_STR(s) ((char *)((s) ? (s) : ""))

static int pack(const ProtobufCMessage *m, uint8_t **out, size_t *out_len) {
  size_t n = protobuf_c_message_get_packed_size(m);
  *out = malloc(n ? n : 1);
  if (!*out) return -1;
  *out_len = protobuf_c_message_pack(m, *out);
  return 0;
}

static Tessera__Common__V1__Protocol pb_protocol(enum netconf_port_protocol p) {
  switch (p) {
  case NETCONF_PORT_TCP: return TESSERA__COMMON__V1__PROTOCOL__PROTOCOL_TCP;
  case NETCONF_PORT_UDP: return TESSERA__COMMON__V1__PROTOCOL__PROTOCOL_UDP;
  case NETCONF_PORT_SCTP: return TESSERA__COMMON__V1__PROTOCOL__PROTOCOL_SCTP;
  }
  return TESSERA__COMMON__V1__PROTOCOL__PROTOCOL_TCP;
}

int endpoint_encode_create(const struct endpoint_create_params *p, uint8_t **out, size_t *out_len) {
  Tessera__Endpoint__V1__CreateEndpointRequest req = TESSERA__ENDPOINT__V1__CREATE_ENDPOINT_REQUEST__INIT;
  req.container_id = PB_STR(p->container_id);
  req.interface_name = PB_STR(p->interface_name);
  req.host_interface = PB_STR(p->host_interface);
  req.netns = PB_STR(p->netns);
  req.namespace_ = PB_STR(p->pod_namespace);
  req.pod_name = PB_STR(p->pod_name);
  if (p->network) req.network = PB_STR(p->network);
  req.n_ips = p->n_ips;
  req.ips = (char **)p->ips;
  req.sync = 1;

  Tessera__Common__V1__Label *labels = NULL, **label_ptrs = NULL;
  if (p->n_labels) {
    labels = calloc(p->n_labels, sizeof(*labels));
    label_ptrs = calloc(p->n_labels, sizeof(*label_ptrs));
    if (!labels || !label_ptrs) {
      free(labels);
      free(label_ptrs);
      return -1;
    }
    for (size_t i = 0; i < p->n_labels; i++) {
      Tessera__Common__V1__Label init = TESSERA__COMMON__V1__LABEL__INIT;
      labels[i] = init;
      labels[i].source = PB_STR(p->labels[i].source);
      labels[i].key = PB_STR(p->labels[i].key);
      labels[i].value = PB_STR(p->labels[i].value);
      label_ptrs[i] = &labels[i];
    }
  }
  req.n_labels = p->n_labels;
  req.labels = label_ptrs;

  Tessera__Common__V1__NamedPort *ports = NULL, **port_ptrs = NULL;
  int rc = -1;
  if (p->n_named_ports) {
    ports = calloc(p->n_named_ports, sizeof(*ports));
    port_ptrs = calloc(p->n_named_ports, sizeof(*port_ptrs));
    if (!ports || !port_ptrs) goto done;
    for (size_t i = 0; i < p->n_named_ports; i++) {
      Tessera__Common__V1__NamedPort init = TESSERA__COMMON__V1__NAMED_PORT__INIT;
      ports[i] = init;
      ports[i].name = PB_STR(p->named_ports[i].name);
      ports[i].protocol = pb_protocol(p->named_ports[i].protocol);
      ports[i].port = p->named_ports[i].port;
      port_ptrs[i] = &ports[i];
    }
  }
  req.n_named_ports = p->n_named_ports;
  req.named_ports = port_ptrs;
  rc = pack(&req.base, out, out_len);
done:
  free(ports);
  free(port_ptrs);
  free(labels);
  free(label_ptrs);
  return rc;
}

static const char *short_rpc(const char *rpc) {
  const char *slash = strrchr(rpc, '/');
  return slash ? slash + 1 : rpc;
}

int endpoint_status_to_cni(const char *rpc, const struct endpoint_target *t, const struct grpc_status *st,
                           struct cni_error *err) {
  const char *name = short_rpc(rpc);
  const char *sock = t->socket_path;
  switch (st->code) {
  case GRPC_OK: return 0;
  case GRPC_UNAVAILABLE:
    return cni_error_set(err, CNI_ERR_TRY_AGAIN_LATER, "endpoint service unavailable", "%s via %s: %s%s", name, sock,
                         st->local ? "" : "UNAVAILABLE: ", st->message);
  case GRPC_DEADLINE_EXCEEDED:
    return cni_error_set(err, CNI_ERR_TRY_AGAIN_LATER, "endpoint service did not answer in time",
                         "%s via %s: DEADLINE_EXCEEDED after timeoutMs=%ld%s%s", name, sock, t->timeout_ms,
                         st->message[0] ? ": " : "", st->message);
  case GRPC_ABORTED:
    /* A concurrent change won (gRPC: retry at a higher level): the runtime's retry can succeed. */
    return cni_error_set(err, CNI_ERR_TRY_AGAIN_LATER, "endpoint changed concurrently", "%s via %s: ABORTED%s%s", name,
                         sock, st->message[0] ? ": " : "", st->message);
  case GRPC_INVALID_ARGUMENT:
    if (st->local)
      return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "invalid network configuration", "%s", st->message);
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, st->message[0] ? st->message : "invalid argument",
                         "%s rejected by the endpoint service (INVALID_ARGUMENT)", name);
  case GRPC_ALREADY_EXISTS:
    return cni_error_set(err, TSR_ERR_ENDPOINT_EXISTS, "endpoint already exists",
                         "%s: %s (the container/interface or one of its IPs is registered already; "
                         "run DEL for the old attachment first)",
                         name, st->message[0] ? st->message : "ALREADY_EXISTS");
  case GRPC_NOT_FOUND:
    /* Get/Delete: the endpoint is unknown. Create: something the request names is missing
     * (e.g. the host interface): permanent, so never "try again". */
    if (strcmp(rpc, ENDPOINT_RPC_CREATE) != 0)
      return cni_error_set(err, TSR_ERR_ENDPOINT_NOT_FOUND, "endpoint not found", "%s: %s", name,
                           st->message[0] ? st->message : "NOT_FOUND");
    /* fall through */
  case GRPC_FAILED_PRECONDITION:
    return cni_error_set(err, TSR_ERR_SERVICE_REFUSED, st->message[0] ? st->message : "request refused",
                         "%s refused by the endpoint service (%s); retrying the same request cannot succeed", name,
                         grpc_code_name(st->code));
  case GRPC_RESOURCE_EXHAUSTED:
    return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "request too large for the endpoint service",
                         "%s: %zu-byte request refused (RESOURCE_EXHAUSTED%s%s); use fewer or shorter labels", name,
                         st->req_len, st->message[0] ? ": " : "", st->message);
  case GRPC_INTERNAL:
    if (st->local && st->reset && st->req_len >= GRPC_LARGE_REQUEST)
      return cni_error_set(err, CNI_ERR_INVALID_NETCONF, "request too large for the endpoint service",
                           "%s: the service reset the stream of a %zu-byte request (HTTP/2 error %u); use fewer "
                           "or shorter labels",
                           name, st->req_len, st->reset);
    /* fall through */
  default:
    return cni_error_set(err, CNI_ERR_INTERNAL, "endpoint service call failed", "%s: %s%s%s", name,
                         grpc_code_name(st->code), st->message[0] ? ": " : "", st->message);
  }
}

/* One call with a serialized request (freed here): send, map the status, unpack. */
static int call_packed(const struct endpoint_target *t, const char *rpc, uint8_t *buf, size_t len,
                       const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out, struct cni_error *err) {
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  struct grpc_status st;
  grpc_unary_call(t->socket_path, rpc, buf, len, t->deadline_ms, &resp, &resp_len, &st);
  free(buf);
  int rc = endpoint_status_to_cni(rpc, t, &st, err);
  if (rc) {
    free(resp);
    return rc;
  }
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, resp_len, resp);
  free(resp);
  if (!m)
    return cni_error_set(err, CNI_ERR_INTERNAL, "cannot decode the endpoint service's response",
                         "%s: %zu bytes are not a valid %s", short_rpc(rpc), resp_len, desc->name);
  *out = m;
  return 0;
}

static int call(const struct endpoint_target *t, const char *rpc, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out, struct cni_error *err) {
  uint8_t *buf;
  size_t len;
  if (pack(req, &buf, &len)) return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  return call_packed(t, rpc, buf, len, desc, out, err);
}

int endpoint_create(const struct endpoint_target *t, const struct endpoint_create_params *p, uint64_t *id,
                    uint32_t *identity, struct cni_error *err) {
  uint8_t *buf;
  size_t len;
  if (endpoint_encode_create(p, &buf, &len)) return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
  ProtobufCMessage *m = NULL;
  int rc = call_packed(t, ENDPOINT_RPC_CREATE, buf, len, &tessera__endpoint__v1__create_endpoint_response__descriptor,
                       &m, err);
  if (rc || !m) return rc ? rc : CNI_ERR_INTERNAL;
  Tessera__Endpoint__V1__CreateEndpointResponse *r = (Tessera__Endpoint__V1__CreateEndpointResponse *)m;
  *id = r->endpoint ? r->endpoint->id : 0;
  *identity = r->endpoint ? r->endpoint->identity : 0;
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

int endpoint_delete(const struct endpoint_target *t, const char *container_id, const char *ifname, int *existed,
                    struct cni_error *err) {
  Tessera__Endpoint__V1__EndpointSelector sel = TESSERA__ENDPOINT__V1__ENDPOINT_SELECTOR__INIT;
  sel.container_id = PB_STR(container_id);
  sel.interface_name = PB_STR(ifname);
  Tessera__Endpoint__V1__DeleteEndpointRequest req = TESSERA__ENDPOINT__V1__DELETE_ENDPOINT_REQUEST__INIT;
  req.endpoint = &sel;
  ProtobufCMessage *m = NULL;
  int rc =
      call(t, ENDPOINT_RPC_DELETE, &req.base, &tessera__endpoint__v1__delete_endpoint_response__descriptor, &m, err);
  if (rc || !m) return rc ? rc : CNI_ERR_INTERNAL;
  *existed = ((Tessera__Endpoint__V1__DeleteEndpointResponse *)m)->existed ? 1 : 0;
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

int endpoint_get(const struct endpoint_target *t, const char *container_id, const char *ifname,
                 Tessera__Endpoint__V1__Endpoint **out, struct cni_error *err) {
  Tessera__Endpoint__V1__EndpointSelector sel = TESSERA__ENDPOINT__V1__ENDPOINT_SELECTOR__INIT;
  sel.container_id = PB_STR(container_id);
  sel.interface_name = PB_STR(ifname);
  Tessera__Endpoint__V1__GetEndpointRequest req = TESSERA__ENDPOINT__V1__GET_ENDPOINT_REQUEST__INIT;
  req.endpoint = &sel;
  ProtobufCMessage *m = NULL;
  int rc = call(t, ENDPOINT_RPC_GET, &req.base, &tessera__endpoint__v1__endpoint__descriptor, &m, err);
  if (rc || !m) return rc ? rc : CNI_ERR_INTERNAL;
  *out = (Tessera__Endpoint__V1__Endpoint *)m;
  return 0;
}

int endpoint_gc(const struct endpoint_target *t, const char *network, const struct netconf_attachment *a, size_t n,
                size_t *removed, endpoint_removed_fn on_removed, void *ctx, struct cni_error *err) {
  Tessera__Endpoint__V1__Attachment *atts = NULL, **ptrs = NULL;
  if (n) {
    atts = calloc(n, sizeof(*atts));
    ptrs = calloc(n, sizeof(*ptrs));
    if (!atts || !ptrs) {
      free(atts);
      free(ptrs);
      return cni_error_set(err, CNI_ERR_INTERNAL, "out of memory", NULL);
    }
  }
  for (size_t i = 0; i < n; i++) {
    Tessera__Endpoint__V1__Attachment init = TESSERA__ENDPOINT__V1__ATTACHMENT__INIT;
    atts[i] = init;
    atts[i].container_id = PB_STR(a[i].container_id);
    atts[i].interface_name = PB_STR(a[i].ifname);
    ptrs[i] = &atts[i];
  }
  Tessera__Endpoint__V1__GarbageCollectEndpointsRequest req =
      TESSERA__ENDPOINT__V1__GARBAGE_COLLECT_ENDPOINTS_REQUEST__INIT;
  req.n_valid_attachments = n;
  req.valid_attachments = ptrs;
  req.network = PB_STR(network);
  ProtobufCMessage *m = NULL;
  int rc = call(t, ENDPOINT_RPC_GC, &req.base, &tessera__endpoint__v1__garbage_collect_endpoints_response__descriptor,
                &m, err);
  free(atts);
  free(ptrs);
  if (rc || !m) return rc ? rc : CNI_ERR_INTERNAL;
  Tessera__Endpoint__V1__GarbageCollectEndpointsResponse *r =
      (Tessera__Endpoint__V1__GarbageCollectEndpointsResponse *)m;
  *removed = r->n_removed;
  for (size_t i = 0; on_removed && i < r->n_removed; i++) on_removed(ctx, r->removed[i]);
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

int endpoint_health(const struct endpoint_target *t, int *status, struct cni_error *err) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  int rc = call(t, HEALTH_RPC_CHECK, &req.base, &grpc__health__v1__health_check_response__descriptor, &m, err);
  if (rc || !m) return rc ? rc : CNI_ERR_INTERNAL;
  *status = (int)((Grpc__Health__V1__HealthCheckResponse *)m)->status;
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}
