/* Proto contract vectors (Tests/ProtoVectors, encoded by protoc): protobuf-c decodes each
 * with the expected field values and re-encodes it byte for byte. The plugin's own encoder
 * (endpoint_encode_create) must produce the same bytes as protoc. */
#include <stdlib.h>

#include "endpoint_client.h"
#include "grpc/health/v1/health.pb-c.h"
#include "test.h"
#include "tessera/common/v1/common.pb-c.h"
#include "tessera/endpoint/v1/endpoint.pb-c.h"

typedef Tessera__Endpoint__V1__Endpoint Endpoint;
typedef Tessera__Common__V1__Label Label;

static uint8_t *load(const char *name, size_t *len) {
  const char *dir = getenv("TESSERA_VECTOR_DIR");
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s", dir ? dir : "Tests/ProtoVectors", name);
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "  cannot open %s\n", path);
    return NULL;
  }
  uint8_t *buf = malloc(1 << 20);
  *len = buf ? fread(buf, 1, 1 << 20, f) : 0;
  fclose(f);
  return buf;
}

static int label_is(const Label *l, const char *source, const char *key, const char *value) {
  return strcmp(l->source, source) == 0 && strcmp(l->key, key) == 0 && strcmp(l->value, value) == 0;
}

#define CID "0f3c9a1e5b7d4c2a8e6f0b1d3c5a7e9f0f3c9a1e5b7d4c2a8e6f0b1d3c5a7e9f"

static void check_create_request_empty(const ProtobufCMessage *m) {
  const Tessera__Endpoint__V1__CreateEndpointRequest *r = (const void *)m;
  CHECK_STR(r->container_id, "");
  CHECK_INT(r->n_ips, 0);
  CHECK_INT(r->n_labels, 0);
  CHECK_INT(r->sync, 0);
}

static void check_create_request_basic(const ProtobufCMessage *m) {
  const Tessera__Endpoint__V1__CreateEndpointRequest *r = (const void *)m;
  CHECK_STR(r->container_id, CID);
  CHECK_STR(r->interface_name, "eth0");
  CHECK_STR(r->host_interface, "veth3a1b2c4d");
  CHECK_INT(r->n_ips, 1);
  CHECK_STR(r->ips[0], "10.199.0.5");
  CHECK_STR(r->namespace_, "default");
  CHECK_STR(r->pod_name, "pod-1");
  CHECK_INT(r->n_labels, 2);
  CHECK(r->n_labels == 2 && label_is(r->labels[0], "k8s", "app", "web") && label_is(r->labels[1], "", "tier", "db"));
  CHECK_INT(r->sync, 1);
  CHECK_STR(r->netns, "/var/run/netns/tsr-e2e-pod-1");
}

static void check_create_request_ipv6_unicode(const ProtobufCMessage *m) {
  const Tessera__Endpoint__V1__CreateEndpointRequest *r = (const void *)m;
  CHECK_STR(r->container_id, "podman-42");
  CHECK_INT(r->n_ips, 3);
  if (r->n_ips == 3) {
    CHECK_STR(r->ips[0], "10.199.0.6");
    CHECK_STR(r->ips[1], "fd00:199::6");
    CHECK_STR(r->ips[2], "2001:db8::ff00:42:8329");
  }
  CHECK_STR(r->namespace_, "");
  CHECK_STR(r->pod_name, "café-ünïcødé-☃");
  CHECK_INT(r->n_labels, 3);
  if (r->n_labels == 3) {
    CHECK(label_is(r->labels[0], "k8s", "app.kubernetes.io/name", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e-\xe5\x80\xa4"));
    CHECK(label_is(r->labels[1], "container", "emoji", "\xf0\x9f\x9a\x80\xe2\x9c\x93"));
    CHECK(label_is(r->labels[2], "", "empty", ""));
  }
  CHECK_INT(r->sync, 1);
  CHECK_STR(r->netns, "/run/netns/ns-\xc3\xbc");
}

static void check_create_request_max_labels(const ProtobufCMessage *m) {
  const Tessera__Endpoint__V1__CreateEndpointRequest *r = (const void *)m;
  CHECK_STR(r->container_id, "max-labels");
  CHECK_INT(r->n_labels, 64);
  for (size_t i = 0; i < r->n_labels && i < 64; i++) {
    char key[64], value[254];
    snprintf(key, sizeof(key), "key-%02zu-", i);
    memset(key + 7, 'k', 56);
    key[63] = '\0';
    snprintf(value, sizeof(value), "value-%02zu-", i);
    memset(value + 9, 'v', 244);
    value[253] = '\0';
    CHECK(label_is(r->labels[i], "k8s", key, value));
  }
  CHECK_INT(r->sync, 1);
}

static void check_basic_endpoint(const Endpoint *e) {
  CHECK_INT(e->id, 7);
  CHECK_STR(e->container_id, CID);
  CHECK_STR(e->interface_name, "eth0");
  CHECK_STR(e->host_interface, "veth3a1b2c4d");
  CHECK(e->n_ips == 1 && strcmp(e->ips[0], "10.199.0.5") == 0);
  CHECK_STR(e->namespace_, "default");
  CHECK_STR(e->pod_name, "pod-1");
  CHECK(e->n_labels == 2 && label_is(e->labels[0], "k8s", "app", "web") &&
        label_is(e->labels[1], "k8s", "io.kubernetes.pod.namespace", "default"));
  CHECK_INT(e->identity, 1042);
  CHECK_INT(e->state, TESSERA__ENDPOINT__V1__ENDPOINT_STATE__ENDPOINT_STATE_READY);
  CHECK_INT(e->policy_revision, 3);
  CHECK_INT(e->identity_revision, 1);
  CHECK_STR(e->netns, "/var/run/netns/tsr-e2e-pod-1");
  CHECK_INT(e->created_at_unix_ms, 1735689600123LL);
}

static void check_create_response_basic(const ProtobufCMessage *m) {
  const Tessera__Endpoint__V1__CreateEndpointResponse *r = (const void *)m;
  CHECK(r->endpoint != NULL);
  if (r->endpoint) check_basic_endpoint(r->endpoint);
}

static void check_create_response_empty(const ProtobufCMessage *m) {
  CHECK(((const Tessera__Endpoint__V1__CreateEndpointResponse *)m)->endpoint == NULL);
}

static void check_selector(const Tessera__Endpoint__V1__EndpointSelector *s, uint64_t id, const char *cid,
                           const char *ifname) {
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(s->id, id);
  CHECK_STR(s->container_id, cid);
  CHECK_STR(s->interface_name, ifname);
}

static void check_delete_request_basic(const ProtobufCMessage *m) {
  check_selector(((const Tessera__Endpoint__V1__DeleteEndpointRequest *)m)->endpoint, 0, CID, "eth0");
}
static void check_delete_request_empty(const ProtobufCMessage *m) {
  CHECK(((const Tessera__Endpoint__V1__DeleteEndpointRequest *)m)->endpoint == NULL);
}
static void check_delete_request_by_id(const ProtobufCMessage *m) {
  const Tessera__Endpoint__V1__EndpointSelector *s =
      ((const Tessera__Endpoint__V1__DeleteEndpointRequest *)m)->endpoint;
  CHECK(s && s->id == UINT64_MAX);
  check_selector(s, UINT64_MAX, "", "");
}
static void check_delete_response_existed(const ProtobufCMessage *m) {
  const Tessera__Endpoint__V1__DeleteEndpointResponse *r = (const void *)m;
  CHECK_INT(r->existed, 1);
  CHECK_INT(r->deleted, 1);
}
static void check_delete_response_empty(const ProtobufCMessage *m) {
  const Tessera__Endpoint__V1__DeleteEndpointResponse *r = (const void *)m;
  CHECK_INT(r->existed, 0);
  CHECK_INT(r->deleted, 0);
}
static void check_get_request_basic(const ProtobufCMessage *m) {
  check_selector(((const Tessera__Endpoint__V1__GetEndpointRequest *)m)->endpoint, 0, CID, "eth0");
}
static void check_get_request_empty(const ProtobufCMessage *m) {
  CHECK(((const Tessera__Endpoint__V1__GetEndpointRequest *)m)->endpoint == NULL);
}

static void check_endpoint_full(const ProtobufCMessage *m) {
  const Endpoint *e = (const void *)m;
  CHECK(e->id == UINT64_MAX);
  CHECK_STR(e->container_id, "ctr-\xc3\xbcn\xc3\xaf");
  CHECK_STR(e->interface_name, "eth1");
  CHECK_STR(e->host_interface, "vethfull");
  CHECK(e->n_ips == 2 && strcmp(e->ips[0], "10.199.0.9") == 0 && strcmp(e->ips[1], "fd00:199::9") == 0);
  CHECK_STR(e->namespace_, "kube-system");
  CHECK_STR(e->pod_name, "coredns-\xc3\x9f");
  CHECK(e->n_labels == 2 && label_is(e->labels[0], "k8s", "k8s-app", "kube-dns") &&
        label_is(e->labels[1], "reserved", "init", ""));
  CHECK(e->identity == UINT32_MAX);
  CHECK_INT(e->state, TESSERA__ENDPOINT__V1__ENDPOINT_STATE__ENDPOINT_STATE_RESTORING);
  CHECK(e->policy_revision == 9007199254740993ULL);
  CHECK(e->identity_revision == 18446744073709551614ULL);
  CHECK_STR(e->netns, "/proc/1234/ns/net");
  CHECK_INT(e->created_at_unix_ms, -1);
}
static void check_endpoint_empty(const ProtobufCMessage *m) {
  const Endpoint *e = (const void *)m;
  CHECK_INT(e->id, 0);
  CHECK_STR(e->container_id, "");
  CHECK_INT(e->n_ips, 0);
  CHECK_INT(e->state, 0);
  CHECK_INT(e->created_at_unix_ms, 0);
}
static void check_endpoint_waiting(const ProtobufCMessage *m) {
  const Endpoint *e = (const void *)m;
  CHECK_INT(e->id, 12);
  CHECK_STR(e->container_id, "abc");
  CHECK(e->n_ips == 1 && strcmp(e->ips[0], "10.199.0.12") == 0);
  CHECK_INT(e->state, TESSERA__ENDPOINT__V1__ENDPOINT_STATE__ENDPOINT_STATE_WAITING_FOR_IDENTITY);
}

static void check_gc_request_basic(const ProtobufCMessage *m) {
  const Tessera__Endpoint__V1__GarbageCollectEndpointsRequest *r = (const void *)m;
  CHECK_INT(r->n_valid_attachments, 3);
  if (r->n_valid_attachments == 3) {
    CHECK_STR(r->valid_attachments[0]->container_id, "a1");
    CHECK_STR(r->valid_attachments[0]->interface_name, "eth0");
    CHECK_STR(r->valid_attachments[2]->container_id, "b2");
    CHECK_STR(r->valid_attachments[2]->interface_name, "net1");
  }
}
static void check_gc_request_empty(const ProtobufCMessage *m) {
  CHECK_INT(((const Tessera__Endpoint__V1__GarbageCollectEndpointsRequest *)m)->n_valid_attachments, 0);
}
static void check_gc_response_basic(const ProtobufCMessage *m) {
  const Tessera__Endpoint__V1__GarbageCollectEndpointsResponse *r = (const void *)m;
  CHECK_INT(r->n_removed, 2);
  if (r->n_removed == 2) {
    CHECK_INT(r->removed[0]->id, 3);
    CHECK_STR(r->removed[0]->container_id, "gone-1");
    CHECK_INT(r->removed[0]->state, TESSERA__ENDPOINT__V1__ENDPOINT_STATE__ENDPOINT_STATE_DISCONNECTED);
    CHECK_INT(r->removed[1]->id, 4);
    CHECK(r->removed[1]->n_ips == 1 && strcmp(r->removed[1]->ips[0], "fd00:199::4") == 0);
  }
}
static void check_gc_response_empty(const ProtobufCMessage *m) {
  CHECK_INT(((const Tessera__Endpoint__V1__GarbageCollectEndpointsResponse *)m)->n_removed, 0);
}
static void check_health_request_empty(const ProtobufCMessage *m) {
  CHECK_STR(((const Grpc__Health__V1__HealthCheckRequest *)m)->service, "");
}
static void check_health_request_service(const ProtobufCMessage *m) {
  CHECK_STR(((const Grpc__Health__V1__HealthCheckRequest *)m)->service, "tessera.endpoint.v1.EndpointService");
}
static void check_health_response_serving(const ProtobufCMessage *m) {
  CHECK_INT(((const Grpc__Health__V1__HealthCheckResponse *)m)->status,
            GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
}
static void check_health_response_not_serving(const ProtobufCMessage *m) {
  CHECK_INT(((const Grpc__Health__V1__HealthCheckResponse *)m)->status,
            GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
}
static void check_health_response_empty(const ProtobufCMessage *m) {
  CHECK_INT(((const Grpc__Health__V1__HealthCheckResponse *)m)->status, 0);
}

static const struct vector {
  const char *file;
  const ProtobufCMessageDescriptor *desc;
  void (*check)(const ProtobufCMessage *);
} vectors[] = {
    {"create_endpoint_request_empty.bin", &tessera__endpoint__v1__create_endpoint_request__descriptor,
     check_create_request_empty},
    {"create_endpoint_request_basic.bin", &tessera__endpoint__v1__create_endpoint_request__descriptor,
     check_create_request_basic},
    {"create_endpoint_request_ipv6_unicode.bin", &tessera__endpoint__v1__create_endpoint_request__descriptor,
     check_create_request_ipv6_unicode},
    {"create_endpoint_request_max_labels.bin", &tessera__endpoint__v1__create_endpoint_request__descriptor,
     check_create_request_max_labels},
    {"create_endpoint_response_basic.bin", &tessera__endpoint__v1__create_endpoint_response__descriptor,
     check_create_response_basic},
    {"create_endpoint_response_empty.bin", &tessera__endpoint__v1__create_endpoint_response__descriptor,
     check_create_response_empty},
    {"delete_endpoint_request_basic.bin", &tessera__endpoint__v1__delete_endpoint_request__descriptor,
     check_delete_request_basic},
    {"delete_endpoint_request_empty.bin", &tessera__endpoint__v1__delete_endpoint_request__descriptor,
     check_delete_request_empty},
    {"delete_endpoint_request_by_id.bin", &tessera__endpoint__v1__delete_endpoint_request__descriptor,
     check_delete_request_by_id},
    {"delete_endpoint_response_existed.bin", &tessera__endpoint__v1__delete_endpoint_response__descriptor,
     check_delete_response_existed},
    {"delete_endpoint_response_empty.bin", &tessera__endpoint__v1__delete_endpoint_response__descriptor,
     check_delete_response_empty},
    {"get_endpoint_request_basic.bin", &tessera__endpoint__v1__get_endpoint_request__descriptor,
     check_get_request_basic},
    {"get_endpoint_request_empty.bin", &tessera__endpoint__v1__get_endpoint_request__descriptor,
     check_get_request_empty},
    {"endpoint_full.bin", &tessera__endpoint__v1__endpoint__descriptor, check_endpoint_full},
    {"endpoint_empty.bin", &tessera__endpoint__v1__endpoint__descriptor, check_endpoint_empty},
    {"endpoint_waiting.bin", &tessera__endpoint__v1__endpoint__descriptor, check_endpoint_waiting},
    {"garbage_collect_endpoints_request_basic.bin",
     &tessera__endpoint__v1__garbage_collect_endpoints_request__descriptor, check_gc_request_basic},
    {"garbage_collect_endpoints_request_empty.bin",
     &tessera__endpoint__v1__garbage_collect_endpoints_request__descriptor, check_gc_request_empty},
    {"garbage_collect_endpoints_response_basic.bin",
     &tessera__endpoint__v1__garbage_collect_endpoints_response__descriptor, check_gc_response_basic},
    {"garbage_collect_endpoints_response_empty.bin",
     &tessera__endpoint__v1__garbage_collect_endpoints_response__descriptor, check_gc_response_empty},
    {"health_check_request_empty.bin", &grpc__health__v1__health_check_request__descriptor, check_health_request_empty},
    {"health_check_request_service.bin", &grpc__health__v1__health_check_request__descriptor,
     check_health_request_service},
    {"health_check_response_serving.bin", &grpc__health__v1__health_check_response__descriptor,
     check_health_response_serving},
    {"health_check_response_not_serving.bin", &grpc__health__v1__health_check_response__descriptor,
     check_health_response_not_serving},
    {"health_check_response_empty.bin", &grpc__health__v1__health_check_response__descriptor,
     check_health_response_empty},
};

/* Decodes, checks and re-encodes one vector; returns the number of failed checks. */
static void run_vector(const struct vector *v) {
  size_t len = 0;
  uint8_t *bin = load(v->file, &len);
  CHECK(bin != NULL);
  if (!bin) return;
  ProtobufCMessage *m = protobuf_c_message_unpack(v->desc, NULL, len, bin);
  CHECK(m != NULL);
  if (m) {
    int before = test_failures;
    v->check(m);
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *again = malloc(n + 1);
    size_t packed = protobuf_c_message_pack(m, again);
    CHECK_INT(packed, len);
    CHECK(packed == len && memcmp(again, bin, len) == 0);
    if (test_failures != before) fprintf(stderr, "  vector %s\n", v->file);
    free(again);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  free(bin);
}

static void test_vectors_decode_reencode(void) {
  for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) run_vector(&vectors[i]);
}

/* Fields 99 and 100 from a newer peer: decoding succeeds and the known fields are intact. */
static void test_vector_unknown_fields(void) {
  size_t len = 0;
  uint8_t *bin = load("create_endpoint_response_unknown_field.bin", &len);
  CHECK(bin != NULL);
  if (!bin) return;
  Tessera__Endpoint__V1__CreateEndpointResponse *r =
      tessera__endpoint__v1__create_endpoint_response__unpack(NULL, len, bin);
  CHECK(r != NULL);
  if (r) {
    check_create_response_basic(&r->base);
    CHECK_INT(r->base.n_unknown_fields, 2); /* protobuf-c keeps them */
    tessera__endpoint__v1__create_endpoint_response__free_unpacked(r, NULL);
  }
  free(bin);
}

/* The plugin's CreateEndpointRequest encoder against protoc's bytes. */
static void test_plugin_encoder_matches_protoc(void) {
  char *ips[] = {"10.199.0.5"};
  struct netconf_label labels[] = {{"k8s", "app", "web"}, {"", "tier", "db"}};
  struct endpoint_create_params p = {
      .container_id = CID,
      .interface_name = "eth0",
      .host_interface = "veth3a1b2c4d",
      .netns = "/var/run/netns/tsr-e2e-pod-1",
      .pod_namespace = "default",
      .pod_name = "pod-1",
      .ips = ips,
      .n_ips = 1,
      .labels = labels,
      .n_labels = 2,
  };
  uint8_t *out = NULL;
  size_t out_len = 0;
  CHECK_INT(endpoint_encode_create(&p, &out, &out_len), 0);
  size_t len = 0;
  uint8_t *bin = load("create_endpoint_request_basic.bin", &len);
  CHECK(bin && out_len == len && memcmp(out, bin, len) == 0);
  free(bin);
  free(out);

  /* podman: no namespace, no labels, NULL host interface -> the fields are omitted. */
  struct endpoint_create_params q = {.container_id = "podman-42", .interface_name = "eth0", .ips = ips, .n_ips = 1};
  CHECK_INT(endpoint_encode_create(&q, &out, &out_len), 0);
  Tessera__Endpoint__V1__CreateEndpointRequest *r =
      tessera__endpoint__v1__create_endpoint_request__unpack(NULL, out_len, out);
  CHECK(r != NULL);
  if (r) {
    CHECK_STR(r->namespace_, "");
    CHECK_STR(r->host_interface, "");
    CHECK_INT(r->n_labels, 0);
    CHECK_INT(r->sync, 1);
    tessera__endpoint__v1__create_endpoint_request__free_unpacked(r, NULL);
  }
  free(out);
}

/* Named ports (field 11) are encoded in order, with their protocol numbers. */
static void test_plugin_encoder_named_ports(void) {
  char *ips[] = {"10.199.0.5"};
  struct netconf_label labels[] = {{"k8s", "app", "web"}};
  struct netconf_port ports[] = {
      {"http", NETCONF_PORT_TCP, 8080}, {"dns", NETCONF_PORT_UDP, 53}, {"m3ua", NETCONF_PORT_SCTP, 2905}};
  struct endpoint_create_params p = {
      .container_id = CID,
      .interface_name = "eth0",
      .ips = ips,
      .n_ips = 1,
      .labels = labels,
      .n_labels = 1,
      .named_ports = ports,
      .n_named_ports = 3,
  };
  uint8_t *out = NULL;
  size_t out_len = 0;
  CHECK_INT(endpoint_encode_create(&p, &out, &out_len), 0);
  Tessera__Endpoint__V1__CreateEndpointRequest *r =
      tessera__endpoint__v1__create_endpoint_request__unpack(NULL, out_len, out);
  CHECK(r != NULL);
  if (r) {
    CHECK_INT(r->n_labels, 1);
    CHECK_INT(r->n_named_ports, 3);
    if (r->n_named_ports == 3) {
      CHECK_STR(r->named_ports[0]->name, "http");
      CHECK_INT(r->named_ports[0]->protocol, TESSERA__COMMON__V1__PROTOCOL__PROTOCOL_TCP);
      CHECK_INT(r->named_ports[0]->port, 8080);
      CHECK_STR(r->named_ports[1]->name, "dns");
      CHECK_INT(r->named_ports[1]->protocol, TESSERA__COMMON__V1__PROTOCOL__PROTOCOL_UDP);
      CHECK_INT(r->named_ports[1]->port, 53);
      CHECK_STR(r->named_ports[2]->name, "m3ua");
      CHECK_INT(r->named_ports[2]->protocol, TESSERA__COMMON__V1__PROTOCOL__PROTOCOL_SCTP);
      CHECK_INT(r->named_ports[2]->port, 2905);
    }
    CHECK_INT(r->base.n_unknown_fields, 0);
    tessera__endpoint__v1__create_endpoint_request__free_unpacked(r, NULL);
  }
  free(out);

  /* None: nothing is encoded (test_plugin_encoder_matches_protoc compares such bytes with protoc's). */
  p.n_named_ports = 0;
  p.named_ports = NULL;
  CHECK_INT(endpoint_encode_create(&p, &out, &out_len), 0);
  r = tessera__endpoint__v1__create_endpoint_request__unpack(NULL, out_len, out);
  CHECK(r != NULL);
  if (r) {
    CHECK_INT(r->n_named_ports, 0);
    tessera__endpoint__v1__create_endpoint_request__free_unpacked(r, NULL);
  }
  free(out);
}

/* Truncated or corrupted input never crashes the decoder. */
static void test_vectors_truncated(void) {
  size_t len = 0;
  uint8_t *bin = load("endpoint_full.bin", &len);
  CHECK(bin != NULL);
  if (!bin) return;
  int rejected = 0;
  for (size_t cut = 0; cut < len; cut++) {
    ProtobufCMessage *m = protobuf_c_message_unpack(&tessera__endpoint__v1__endpoint__descriptor, NULL, cut, bin);
    if (m)
      protobuf_c_message_free_unpacked(m, NULL);
    else
      rejected++;
  }
  CHECK(rejected > 0);
  free(bin);
}

const struct test_case vector_tests[] = {
    {"vectors_decode_reencode", test_vectors_decode_reencode},
    {"vector_unknown_fields", test_vector_unknown_fields},
    {"plugin_encoder_matches_protoc", test_plugin_encoder_matches_protoc},
    {"plugin_encoder_named_ports", test_plugin_encoder_named_ports},
    {"vectors_truncated", test_vectors_truncated},
};
const size_t vector_tests_count = sizeof(vector_tests) / sizeof(vector_tests[0]);
