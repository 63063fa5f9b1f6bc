#!/usr/bin/env bash
# Bad-input campaign (Tests/badinput/campaign.py) against a real node with the
# memory datapath: afterwards every daemon must still run with the same pid,
# and the canary endpoint, its identity and the canary policy must be intact.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/badinput/run.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
skip() { echo "bad-input: SKIP: $*"; exit 77; }
[ -n "${TESSERA_BIN:-}" ] && [ -x "$TESSERA_BIN/tessera" ] || skip "TESSERA_BIN is not set to the built binaries"
/usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null || skip "python3-grpcio / python3-protobuf missing"
command -v protoc >/dev/null && command -v jq >/dev/null || skip "protoc or jq missing"

tmp=$(mktemp -d /tmp/tsr-bad.XXXXXX)
RUN=$tmp/run
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }
cleanup() { "$TESSERA_BIN/tessera" node down --run-dir "$RUN" >/dev/null 2>&1; rm -rf "$tmp"; }
trap cleanup EXIT

mkdir -p "$tmp/py"
(cd "$repo/proto" && protoc -I . --python_out="$tmp/py" $(find . -name '*.proto' | sed 's|^\./||')) || exit 1
tessera node up --detach --no-supervise --state-dir "$tmp/state" --datapath-backend memory >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; exit 1; }
pids_before=$(cat "$RUN"/*.pid | sort | tr '\n' ' ')
canary=$(tessera endpoint create --container-id canary --ip 10.251.0.1 --label app=canary -o json) || exit 1
canary_identity=$(jq -r .identity <<<"$canary")
cat >"$tmp/policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: canary, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: canary}}
  ingress: [{fromEndpoints: [{matchLabels: {app: friend}}]}]
YAML
tessera policy import "$tmp/policy.yaml" >/dev/null || exit 1

/usr/bin/python3 "$here/campaign.py" "$RUN" "$tmp/py" "$repo/proto/generated.binpb"
status=$?

failed=0
fail() { echo "bad-input: VIOLATION: $*"; failed=1; }
pids_after=$(cat "$RUN"/*.pid 2>/dev/null | sort | tr '\n' ' ')
[ "$pids_before" = "$pids_after" ] || fail "a daemon restarted or died (pids $pids_before -> $pids_after)"
for pid in $pids_before; do kill -0 "$pid" 2>/dev/null || fail "pid $pid is gone"; done
tessera status >/dev/null || fail "the node is not healthy"
[ "$(tessera endpoint get --container-id canary -o json | jq -r .identity)" = "$canary_identity" ] || fail "the canary endpoint changed or vanished"
[ "$(tessera endpoint get --container-id canary -o json | jq -r .state)" = ready ] || fail "the canary endpoint is not ready"
tessera policy get default/canary >/dev/null || fail "the canary policy vanished"
tessera identity get "$canary_identity" >/dev/null || fail "the canary identity vanished"
if [ "$status" = 0 ] && [ "$failed" = 0 ]; then echo "bad-input: daemons alive with the same pids, canary state intact"; fi
[ "$status" = 0 ] && [ "$failed" = 0 ]
