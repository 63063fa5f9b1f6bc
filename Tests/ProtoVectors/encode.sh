#!/usr/bin/env bash
# Encodes every <name>.txtpb in this directory to <name>.bin with protoc, an implementation
# independent of both swift-protobuf and protobuf-c. The first line of each .txtpb names its
# message: `# message: tessera.endpoint.v1.CreateEndpointRequest`.
#
# Also writes create_endpoint_response_unknown_field.bin (see unknown_fields.md).
# Run from anywhere; commit the .bin files it writes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
command -v protoc >/dev/null || { echo "encode.sh: protoc missing (apt-get install protobuf-compiler)" >&2; exit 1; }

protos=(tessera/common/v1/common.proto tessera/endpoint/v1/endpoint.proto grpc/health/v1/health.proto)
n=0
for txt in "$here"/*.txtpb; do
  msg=$(head -n1 "$txt" | sed -n 's/^# message: *\([A-Za-z0-9_.]*\) *$/\1/p')
  [ -n "$msg" ] || { echo "encode.sh: $txt: first line must be '# message: <full name>'" >&2; exit 1; }
  protoc --encode="$msg" -I "$repo/proto" "${protos[@]}" <"$txt" >"${txt%.txtpb}.bin"
  n=$((n + 1))
done

# A newer peer's fields: field 99 (varint 42) and field 100 (bytes "hi") appended to
# create_endpoint_response_basic.bin.
{
  cat "$here/create_endpoint_response_basic.bin"
  printf '\x98\x06\x2a\xa2\x06\x02hi'
} >"$here/create_endpoint_response_unknown_field.bin"
echo "encode.sh: wrote $((n + 1)) vectors"
