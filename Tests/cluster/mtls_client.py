#!/usr/bin/env python3
"""A tiny independent gRPC client for Tests/cluster/cluster_e2e.sh.

Calls one identity- or policy-service replica over TCP, presenting a client
certificate (or none), and prints one JSON line: the status code name and the
answer's fields. It never retries: each call is what a single client would see.

    mtls_client.py PYDIR HOST:PORT SERVER-NAME CA-PEM CERT-PEM|- KEY-PEM|- CALL [ARGS...]

CALL is one of
    release ID [NODE]       IdentityService.ReleaseIdentity
    sync NODE               IdentityService.SyncNodeReferences (an empty held set)
    identities              IdentityService.ListIdentities
    policies                PolicyService.ListPolicies
    plaintext-identities    ListIdentities without TLS at all (CA and cert ignored)
"""
import json
import sys

import grpc

sys.path.insert(0, sys.argv[1])
from tessera.identity.v1 import identity_pb2  # noqa: E402
from tessera.policy.v1 import policy_pb2  # noqa: E402


def main():
    _, _, address, server_name, ca, cert, key, call, *args = sys.argv
    if call == "plaintext-identities":
        channel = grpc.insecure_channel(address)
    else:
        with open(ca, "rb") as f:
            roots = f.read()
        chain = private = None
        if cert != "-":
            with open(cert, "rb") as f:
                chain = f.read()
            with open(key, "rb") as f:
                private = f.read()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=private, certificate_chain=chain)
        channel = grpc.secure_channel(address, credentials,
                                      options=[("grpc.ssl_target_name_override", server_name)])

    def unary(method, request, response_type):
        stub = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=response_type.FromString)
        return stub(request, timeout=5)

    identity = "/tessera.identity.v1.IdentityService/"
    result = {}
    try:
        if call == "release":
            request = identity_pb2.ReleaseIdentityRequest(id=int(args[0]))
            if len(args) > 1:
                request.node = args[1]
            answer = unary(identity + "ReleaseIdentity", request, identity_pb2.ReleaseIdentityResponse)
            result = {"released": answer.released}
        elif call == "sync":
            answer = unary(identity + "SyncNodeReferences",
                           identity_pb2.SyncNodeReferencesRequest(node=args[0]),
                           identity_pb2.SyncNodeReferencesResponse)
            result = {"dropped": answer.dropped, "added": answer.added}
        elif call in ("identities", "plaintext-identities"):
            answer = unary(identity + "ListIdentities", identity_pb2.ListIdentitiesRequest(),
                           identity_pb2.ListIdentitiesResponse)
            result = {"identities": len(answer.identities)}
        elif call == "policies":
            answer = unary("/tessera.policy.v1.PolicyService/ListPolicies",
                           policy_pb2.ListPoliciesRequest(), policy_pb2.ListPoliciesResponse)
            result = {"policies": len(answer.policies)}
        else:
            raise SystemExit(f"unknown call {call}")
        result["code"] = "OK"
    except grpc.RpcError as error:
        result = {"code": error.code().name, "details": error.details()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
