#!/usr/bin/python3
"""A fake tessera endpoint service for testing tessera-cni without the Swift daemons.

grpcio (C-core) is an independent HTTP/2 + gRPC implementation, so this also checks the
plugin's hand-written gRPC client against a real server. Usage:

    fake_endpointd.py SOCKET STATE_DIR

STATE_DIR/mode selects the behaviour of the next calls (re-read on every call):
  normal | slow (sleep past the deadline) | unavailable | internal | notready |
  not_serving | bulk (GC returns 5000 removed endpoints) | percent (error with an
  escaped unicode message) | exhausted (RESOURCE_EXHAUSTED) | nodevice (CreateEndpoint:
  NOT_FOUND, as for a missing host interface)
After every call the request is written to STATE_DIR/last_<Method>.json with the
remaining deadline (seconds) the server saw, and the endpoint table to
STATE_DIR/endpoints.json.
"""
import json
import os
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sock, state_dir = sys.argv[1], sys.argv[2]
gen = os.path.join(state_dir, "pb")  # the caller removes STATE_DIR
os.makedirs(gen, exist_ok=True)
subprocess.check_call(
    ["protoc", "-I", os.path.join(REPO, "proto"), "--python_out", gen,
     "tessera/common/v1/common.proto", "tessera/endpoint/v1/endpoint.proto",
     "grpc/health/v1/health.proto"])
sys.path.insert(0, gen)
from google.protobuf import json_format  # noqa: E402
from tessera.endpoint.v1 import endpoint_pb2 as ep  # noqa: E402
# grpc/health/v1 would shadow the grpc package: load it by path.
import importlib.util  # noqa: E402
_spec = importlib.util.spec_from_file_location("tsr_health_pb2", os.path.join(gen, "grpc/health/v1/health_pb2.py"))
hp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hp)

lock = threading.Lock()
endpoints = {}  # (container_id, ifname) -> ep.Endpoint
next_id = [1]


def mode():
    try:
        with open(os.path.join(state_dir, "mode")) as f:
            return f.read().strip() or "normal"
    except FileNotFoundError:
        return "normal"


def record(name, req, ctx):
    d = json_format.MessageToDict(req, preserving_proto_field_name=True)
    d["_time_remaining"] = ctx.time_remaining()
    d["_metadata"] = {k: v for k, v in ctx.invocation_metadata()}
    with open(os.path.join(state_dir, "last_%s.json" % name), "w") as f:
        json.dump(d, f)


def dump_table():
    with open(os.path.join(state_dir, "endpoints.json"), "w") as f:
        json.dump([json_format.MessageToDict(e, preserving_proto_field_name=True)
                   for e in endpoints.values()], f)


def common_modes(ctx):
    m = mode()
    if m == "slow":
        time.sleep(max(0.0, (ctx.time_remaining() or 1.0)) + 0.5)
        ctx.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "too slow")
    if m == "unavailable":
        ctx.abort(grpc.StatusCode.UNAVAILABLE, "identity service unreachable")
    if m == "internal":
        ctx.abort(grpc.StatusCode.INTERNAL, "boom\nsecond line")
    if m == "percent":
        ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "100% broken: étiquette ✓")
    if m == "exhausted":
        ctx.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "request larger than 4194304 bytes")
    return m


def link_flags(netns, name):
    """The link's flags line as `ip` prints them when the call arrives ("" when absent):
    lets the tests see whether a link was still down while the endpoint was being created."""
    cmd = ["ip", "-o", "link", "show", "dev", name]
    if netns:
        cmd = ["nsenter", "--net=" + netns] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.stdout.split(">")[0] if r.returncode == 0 else ""


def create(req, ctx):
    record("CreateEndpoint", req, ctx)
    with open(os.path.join(state_dir, "links_at_create.json"), "w") as f:
        json.dump({"host": link_flags(None, req.host_interface) if req.host_interface else "",
                   "pod": link_flags(req.netns, req.interface_name) if req.netns.startswith("/") else ""}, f)
    if common_modes(ctx) == "nodevice":
        ctx.abort(grpc.StatusCode.NOT_FOUND, "host interface %s not found" % req.host_interface)
    if not req.container_id:
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "container_id is required")
    for l in req.labels:
        if l.source == "reserved":
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "label %s:%s is reserved" % (l.source, l.key))
    with lock:
        key = (req.container_id, req.interface_name)
        if key in endpoints:
            ctx.abort(grpc.StatusCode.ALREADY_EXISTS, "container %s interface %s exists" % key)
        e = ep.Endpoint(id=next_id[0], container_id=req.container_id, interface_name=req.interface_name,
                        host_interface=req.host_interface, ips=req.ips, namespace=req.namespace or "default",
                        pod_name=req.pod_name, labels=req.labels, identity=1000 + next_id[0],
                        state=ep.ENDPOINT_STATE_READY, policy_revision=1, netns=req.netns)
        next_id[0] += 1
        endpoints[key] = e
        dump_table()
    return ep.CreateEndpointResponse(endpoint=e)


def find(sel):
    return [k for k in endpoints
            if k[0] == sel.container_id and (not sel.interface_name or k[1] == sel.interface_name)]


def delete(req, ctx):
    record("DeleteEndpoint", req, ctx)
    common_modes(ctx)
    if not req.endpoint.container_id and not req.endpoint.id:
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty selector")
    with lock:
        keys = find(req.endpoint)
        for k in keys:
            del endpoints[k]
        dump_table()
    return ep.DeleteEndpointResponse(existed=bool(keys), deleted=len(keys))


def get(req, ctx):
    record("GetEndpoint", req, ctx)
    m = common_modes(ctx)
    with lock:
        keys = find(req.endpoint)
        if not keys:
            ctx.abort(grpc.StatusCode.NOT_FOUND, "no endpoint for container %s" % req.endpoint.container_id)
        e = ep.Endpoint()
        e.CopyFrom(endpoints[keys[0]])
    if m == "notready":
        e.state = ep.ENDPOINT_STATE_WAITING_FOR_IDENTITY
    return e


def gc(req, ctx):
    record("GarbageCollectEndpoints", req, ctx)
    m = common_modes(ctx)
    valid = {(a.container_id, a.interface_name) for a in req.valid_attachments}
    with lock:
        removed = [endpoints.pop(k) for k in list(endpoints) if k not in valid]
        dump_table()
    if m == "bulk":
        removed += [ep.Endpoint(id=i, container_id="bulk-%05d" % i, interface_name="eth0",
                                ips=["10.1.%d.%d" % (i // 250, i % 250)], namespace="default",
                                pod_name="pod-%d" % i, state=ep.ENDPOINT_STATE_READY) for i in range(5000)]
    return ep.GarbageCollectEndpointsResponse(removed=removed)


def health(req, ctx):
    record("Check", req, ctx)
    m = mode()
    if m == "unavailable":
        ctx.abort(grpc.StatusCode.UNAVAILABLE, "starting")
    status = hp.HealthCheckResponse.NOT_SERVING if m == "not_serving" else hp.HealthCheckResponse.SERVING
    return hp.HealthCheckResponse(status=status)


def unary(fn, req_type, resp_type):
    return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=req_type.FromString,
                                               response_serializer=resp_type.SerializeToString)


server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((
    grpc.method_handlers_generic_handler("tessera.endpoint.v1.EndpointService", {
        "CreateEndpoint": unary(create, ep.CreateEndpointRequest, ep.CreateEndpointResponse),
        "DeleteEndpoint": unary(delete, ep.DeleteEndpointRequest, ep.DeleteEndpointResponse),
        "GetEndpoint": unary(get, ep.GetEndpointRequest, ep.Endpoint),
        "GarbageCollectEndpoints": unary(gc, ep.GarbageCollectEndpointsRequest,
                                         ep.GarbageCollectEndpointsResponse),
    }),
    grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": unary(health, hp.HealthCheckRequest, hp.HealthCheckResponse),
    }),
))
if os.path.exists(sock):
    os.unlink(sock)
server.add_insecure_port("unix:" + sock)
server.start()
print("fake_endpointd: serving on", sock, flush=True)
try:
    server.wait_for_termination()
except KeyboardInterrupt:
    pass
