/* The endpoint service's RPCs the plugin makes, and their mapping to CNI error codes. */
#ifndef TESSERA_ENDPOINT_CLIENT_H
#define TESSERA_ENDPOINT_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "cni_error.h"
#include "grpc_h2.h"
#include "netconf.h"
#include "tessera/endpoint/v1/endpoint.pb-c.h"

#define ENDPOINT_RPC_CREATE "/tessera.endpoint.v1.EndpointService/CreateEndpoint"
#define ENDPOINT_RPC_DELETE "/tessera.endpoint.v1.EndpointService/DeleteEndpoint"
#define ENDPOINT_RPC_GET "/tessera.endpoint.v1.EndpointService/GetEndpoint"
#define ENDPOINT_RPC_GC "/tessera.endpoint.v1.EndpointService/GarbageCollectEndpoints"
#define HEALTH_RPC_CHECK "/grpc.health.v1.Health/Check"

struct endpoint_target {
  const char *socket_path;
  int64_t deadline_ms; /* absolute, util_now_ms() clock */
  long timeout_ms;     /* for messages only */
};

struct endpoint_create_params {
  const char *container_id;
  const char *interface_name;
  const char *host_interface; /* may be NULL */
  const char *netns;
  const char *pod_namespace; /* may be NULL: the service defaults it */
  const char *pod_name;      /* may be NULL */
  char *const *ips;
  size_t n_ips;
  const struct netconf_label *labels;
  size_t n_labels;
  const struct netconf_port *named_ports;
  size_t n_named_ports;
  const char *network; /* the configuration's name; may be NULL */
};

/* Serializes the CreateEndpointRequest (sync = true). Returns 0 and a malloc'd buffer. */
int endpoint_encode_create(const struct endpoint_create_params *p, uint8_t **out, size_t *out_len);

/* gRPC status of a call -> CNI error (0 for OK). Only what may heal by itself is 11
 * (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, unreachable). INVALID_ARGUMENT 7, RESOURCE_EXHAUSTED and a
 * reset of a request of GRPC_LARGE_REQUEST bytes or more 7, ALREADY_EXISTS 101, NOT_FOUND 102
 * (105 for CreateEndpoint), FAILED_PRECONDITION 105, anything else 999. */
int endpoint_status_to_cni(const char *rpc, const struct endpoint_target *t, const struct grpc_status *st,
                           struct cni_error *err);

/* CreateEndpoint(sync): returns when the endpoint's policy is in force. */
int endpoint_create(const struct endpoint_target *t, const struct endpoint_create_params *p, uint64_t *id,
                    uint32_t *identity, struct cni_error *err);

/* DeleteEndpoint by container id and interface; *existed is 0 when it was already gone. */
int endpoint_delete(const struct endpoint_target *t, const char *container_id, const char *ifname, int *existed,
                    struct cni_error *err);

/* GetEndpoint; the caller frees *out with tessera__endpoint__v1__endpoint__free_unpacked. */
int endpoint_get(const struct endpoint_target *t, const char *container_id, const char *ifname,
                 Tessera__Endpoint__V1__Endpoint **out, struct cni_error *err);

/* Called for every endpoint GC removed. */
typedef void (*endpoint_removed_fn)(void *ctx, const Tessera__Endpoint__V1__Endpoint *removed);

/* GarbageCollectEndpoints: removes the network's endpoints not in the list; on_removed may be NULL. */
int endpoint_gc(const struct endpoint_target *t, const char *network, const struct netconf_attachment *a, size_t n,
                size_t *removed, endpoint_removed_fn on_removed, void *ctx, struct cni_error *err);

/* grpc.health.v1.Health/Check for the whole server (service ""); *status is the ServingStatus. */
int endpoint_health(const struct endpoint_target *t, int *status, struct cni_error *err);

#endif
