#!/usr/bin/python3
"""Bad-input campaign against a running Tessera node, with an independent
client (Python grpcio; messages from protoc --python_out of proto/).

Every gRPC method of every daemon gets undecodable, truncated, oversized and
random protobuf; then label bombs, reserved-label spoofing, bad addresses and
adversarial policy manifests. Each must get a clear gRPC error (never a
dropped connection), and afterwards every daemon must still run with the same
pid and the canary state must be intact (checked by the caller).

usage: campaign.py RUN_DIR PYTHON_OUT_DIR DESCRIPTOR_SET
"""
import os
import random
import sys
import time

import grpc
from google.protobuf import descriptor_pb2

run_dir, python_out, descriptor_set = sys.argv[1:4]
sys.path.insert(0, python_out)
from tessera.common.v1 import common_pb2  # noqa: E402
from tessera.endpoint.v1 import endpoint_pb2  # noqa: E402
from tessera.identity.v1 import identity_pb2  # noqa: E402
from tessera.policy.v1 import policy_pb2  # noqa: E402

SOCKETS = {
    "tessera.endpoint.v1": ["endpoint"],
    "tessera.identity.v1": ["identity"],
    "tessera.policy.v1": ["policy"],
    "tessera.datapath.v1": ["datapath"],
    "tessera.runtime.v1": ["endpoint", "identity", "policy", "datapath"],
    "grpc.health.v1": ["endpoint", "identity", "policy", "datapath"],
}
# Methods whose well-formed requests legitimately delete state: random bytes
# that happen to decode (an empty GC list deletes every endpoint) are not a bug.
DESTRUCTIVE = {"GarbageCollectEndpoints", "DeleteEndpoint", "RemoveEndpoint", "DeleteIPCache", "DeletePolicy", "DeleteWorkload",
               "UpdateEndpointLabels", "ReleaseIdentity", "UpdateIdentities", "RealizeEndpointPolicy", "UpsertIPCache"}
# Inputs no protobuf decoder can accept.
UNDECODABLE = [
    b"\x0a\xff\xff\xff\xff\x0f",        # field 1, length 4 GiB
    b"\x0a\x05abc",                      # field 1, length 5, 3 bytes follow
    b"\x08\x80\x80\x80",                 # unterminated varint
    b"\x0f",                             # wire type 7
    b"\x00",                             # field number 0
    b"\x0b\x08\x01",                     # start group never ended
]
random.seed(1234)
channels = {}
tried = 0
errors = {}
crashes = []


def channel(service):
    if service not in channels:
        channels[service] = grpc.insecure_channel(f"unix://{run_dir}/{service}.sock",
                                                  options=[("grpc.max_send_message_length", 64 << 20)])
    return channels[service]


def call(service, path, payload, streaming, timeout=5.0):
    """Sends raw bytes; returns the status code name. UNAVAILABLE means the daemon dropped us."""
    global tried
    tried += 1
    identity = lambda b: b  # noqa: E731
    try:
        if streaming:
            stream = channel(service).unary_stream(path, request_serializer=identity, response_deserializer=identity)(
                payload, timeout=0.3)
            for _ in stream:
                pass
            code = "OK"
        else:
            channel(service).unary_unary(path, request_serializer=identity, response_deserializer=identity)(
                payload, timeout=timeout)
            code = "OK"
    except grpc.RpcError as error:
        code = error.code().name
        # UNAVAILABLE: the daemon dropped the connection (or died); UNKNOWN: a handler
        # failed with an error it did not explain. Neither is a clear answer to bad input.
        if code in ("UNAVAILABLE", "UNKNOWN"):
            crashes.append((service, path, payload[:32], code, (error.details() or "")[:200]))
    errors[code] = errors.get(code, 0) + 1
    return code


def expect(what, code, allowed):
    if code not in allowed:
        crashes.append((what, code, f"expected one of {sorted(allowed)}"))


descriptors = descriptor_pb2.FileDescriptorSet()
with open(descriptor_set, "rb") as f:
    descriptors.ParseFromString(f.read())
methods = []
for file in descriptors.file:
    for service in file.service:
        for method in service.method:
            for socket in SOCKETS.get(file.package, []):
                methods.append((socket, f"/{file.package}.{service.name}/{method.name}", method.name, method.server_streaming))

# 1. Undecodable and oversized requests: a clear error, never a dropped connection.
for socket, path, name, streaming in methods:
    for payload in UNDECODABLE:
        expect(f"{path} undecodable {payload!r}", call(socket, path, payload, streaming), {"INVALID_ARGUMENT", "INTERNAL"})
    # grpc-swift resets the stream of a request over the 8 MiB limit (CANCELLED) rather
    # than answering RESOURCE_EXHAUSTED; either way the request is refused and the daemon lives.
    expect(f"{path} 9 MiB", call(socket, path, b"\x0a" + b"\x80\x80\x80\x04" + b"x" * (8 << 20), streaming),
           {"RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "INTERNAL", "CANCELLED"})

# 2. Random bytes (those that decode are well-formed requests with odd fields).
for socket, path, name, streaming in methods:
    if name in DESTRUCTIVE:
        continue
    for _ in range(40):
        payload = bytes(random.getrandbits(8) for _ in range(random.randint(1, 512)))
        call(socket, path, payload, streaming)


def label(key, value="", source="k8s"):
    return common_pb2.Label(source=source, key=key, value=value)


def create(container, ip, labels, **kwargs):
    return endpoint_pb2.CreateEndpointRequest(container_id=container, ips=[ip], labels=labels, sync=True,
                                              namespace="default", **kwargs).SerializeToString()


CREATE = "/tessera.endpoint.v1.EndpointService/CreateEndpoint"
ALLOCATE = "/tessera.identity.v1.IdentityService/AllocateIdentity"
IMPORT = "/tessera.policy.v1.PolicyService/ImportPolicy"
bad_request = {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE", "ALREADY_EXISTS", "RESOURCE_EXHAUSTED"}

# 3. Label bombs and spoofing.
bomb = [label(f"k{i}", "v") for i in range(10_000)]
expect("10,000 labels (create)", call("endpoint", CREATE, create("bomb-1", "10.250.0.1", bomb), False), bad_request)
expect("10,000 labels (allocate)", call("identity", ALLOCATE, identity_pb2.AllocateIdentityRequest(labels=bomb).SerializeToString(), False), bad_request)
huge = [label("app", "x" * (1 << 20))]
expect("1 MiB label value (create)", call("endpoint", CREATE, create("bomb-2", "10.250.0.2", huge), False), bad_request)
expect("1 MiB label value (allocate)", call("identity", ALLOCATE, identity_pb2.AllocateIdentityRequest(labels=huge).SerializeToString(), False), bad_request)
for spoof in [[label("host", source="reserved")], [label("app", "x"), label("world", source="reserved")],
              [label("health", source="reserved")]]:
    expect(f"reserved spoof {spoof[0].key}", call("endpoint", CREATE, create("spoof", "10.250.0.3", spoof), False), bad_request)
for bad_label in [label("", "x"), label("a=b", "c"), label("app", "v", source="no such source;"), label("k" * 400, "v"),
                  label("app", "bad\nvalue"), label("app", "\x00")]:
    expect(f"bad label {bad_label.key[:10]!r}", call("endpoint", CREATE, create("badlabel", "10.250.0.4", [bad_label]), False), bad_request)
for bad_ip in ["", "10.0.0", "300.1.1.1", "10.0.0.1/40", "::g", "a" * 5000, "10.0.0.1 ", "0.0.0.0"]:
    expect(f"bad ip {bad_ip[:12]!r}", call("endpoint", CREATE, create("badip", bad_ip, [label("app", "x")]), False), bad_request)
for container in ["", "x" * 100_000, "a/../../etc/passwd", "bad\x00id"]:
    expect(f"bad container id {container[:12]!r}", call("endpoint", CREATE, create(container, "10.250.0.5", [label("app", "x")]), False), bad_request)

# 4. Adversarial policy manifests.
billion_laughs = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
    for i in range(8))
manifests = [
    "", "\x00\x01\x02", "{", "[" * 100_000, "{\"a\":" * 50_000, billion_laughs,
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {endpointSelector: {matchLabels: {app: [1,2]}}}",
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: \"../x\", namespace: default}\nspec: {endpointSelector: {}}",
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: default}\nspec:\n  endpointSelector: {matchLabels: {app: a}}\n  ingress: [{toPorts: [{ports: [{port: \"70000\"}]}]}]",
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: default}\nspec:\n  endpointSelector: {matchLabels: {\"reserved:host\": \"\"}}\n  ingress: [{fromEntities: [nonsense]}]",
    "kind: List\nitems: " + "[" * 10_000,
    "x" * (7 << 20),
]
for index, manifest in enumerate(manifests):
    request = policy_pb2.ImportPolicyRequest(source_name=f"bad-{index}.yaml", content=manifest.encode("utf-8", "surrogatepass"))
    expect(f"manifest {index}", call("policy", IMPORT, request.SerializeToString(), False, timeout=30), bad_request)

for channel_ in channels.values():
    channel_.close()
print(f"bad-input: {tried} inputs tried over {len(methods)} method endpoints; status codes {dict(sorted(errors.items()))}")
for crash in crashes:
    print("bad-input: VIOLATION", crash)
print(f"bad-input: violations {len(crashes)}")
sys.exit(1 if crashes else 0)
