#!/usr/bin/env bash
# Regenerates every piece of code derived from proto/ and records what it was
# generated from. The one command to run after editing a .proto file:
#
#   scripts/generate-proto.sh                   # Swift + protobuf-c code, proto/generated.binpb
#   scripts/generate-proto.sh --update-baseline # also accept the wire format as the new baseline
#
# The protoc plugins are built from this package's own dependencies (once).
# CI never runs this: it checks the committed output is current (TesseraProtoTests).
set -euo pipefail
cd "$(dirname "$0")/.."

update_baseline=false
[ "${1:-}" = "--update-baseline" ] && update_baseline=true

command -v protoc >/dev/null || { echo "protoc missing: run scripts/install-deps.sh" >&2; exit 1; }
command -v protoc-c >/dev/null || { echo "protoc-c missing: run scripts/install-deps.sh" >&2; exit 1; }

bin=$(swift build --show-bin-path)
for plugin in protoc-gen-swift protoc-gen-grpc-swift-2; do
  [ -x "$bin/$plugin" ] || swift build --product "$plugin"
done

mapfile -t protos < <(cd proto && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)

swift_out=Sources/TesseraProto
rm -f "$swift_out"/*.pb.swift "$swift_out"/*.grpc.swift
protoc -I proto \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$swift_out" --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
  --grpc-swift-2_out="$swift_out" \
  --grpc-swift-2_opt=Visibility=Public,FileNaming=PathToUnderscores,Client=true,Server=true \
  "${protos[@]}"

# etcd's own API (third_party/etcd, imported by scripts/import-etcd-protos.sh):
# a client only, in its own target.
etcd_out=Sources/EtcdProto
mkdir -p "$etcd_out"
rm -f "$etcd_out"/*.pb.swift "$etcd_out"/*.grpc.swift
mapfile -t etcd_protos < <(cd third_party/etcd && find etcd -name '*.proto' | LC_ALL=C sort)
protoc -I third_party/etcd \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$etcd_out" --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
  --grpc-swift-2_out="$etcd_out" \
  --grpc-swift-2_opt=Visibility=Public,FileNaming=PathToUnderscores,Client=true,Server=false \
  "${etcd_protos[@]}"

# The CNI plugin speaks only to the endpoint service.
c_out=Sources/tessera-cni/proto
mkdir -p "$c_out"
rm -rf "$c_out"/tessera "$c_out"/grpc
protoc-c -I proto --c_out="$c_out" tessera/common/v1/common.proto tessera/endpoint/v1/endpoint.proto grpc/health/v1/health.proto

protoc -I proto --include_imports --include_source_info --descriptor_set_out=proto/generated.binpb "${protos[@]}"
if $update_baseline || [ ! -f proto/baseline.binpb ]; then
  cp proto/generated.binpb proto/baseline.binpb
  echo "generate-proto: wire baseline updated (proto/baseline.binpb)"
fi
echo "generate-proto: ok (${#protos[@]} files)"
