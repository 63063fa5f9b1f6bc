#!/usr/bin/env bash
# tessera-cni against a fake endpoint service (fake_endpointd.py, Python grpcio): every
# command, every error path the service can produce, deadlines, large messages, the log file.
# Runs in about two seconds; with VALGRIND=1 every plugin execution runs under valgrind and
# any memory error or leak fails the test. Skips when python3-grpcio is missing.
#
#   BUILD_DIR=.build-cni [VALGRIND=1] bash Tests/tessera-cniTests/integration.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$repo/.build-cni}
PLUGIN=$BUILD_DIR/tessera-cni
PY=/usr/bin/python3

if ! $PY -c 'import grpc, google.protobuf' 2>/dev/null; then
  echo "integration: SKIP: /usr/bin/python3 has no grpcio (apt-get install python3-grpcio)"
  exit 0
fi
command -v jq >/dev/null || { echo "integration: SKIP: jq missing"; exit 0; }
[ -x "$PLUGIN" ] || { echo "integration: $PLUGIN not built (make -C Sources/tessera-cni)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/tsr-cni-it.XXXXXX)
sock=$tmp/ep.sock
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

start_server() {
  rm -f "$sock"
  $PY "$here/fake_endpointd.py" "$sock" "$tmp" >"$tmp/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && return 0; sleep 0.05; done
  echo "integration: fake endpoint service did not start:" >&2
  cat "$tmp/server.log" >&2
  exit 1
}
stop_server() {
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
  server_pid=
}
mode() { echo "$1" >"$tmp/mode"; }

passed=0
failed=0
vg_failed=0
check() { # name condition...
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: $name (rc=$rc)"
    echo "  output: $out" | head -c 2000
    echo
  fi
}

VG=()
if [ "${VALGRIND:-0}" = 1 ]; then
  VG=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=99
    --log-file="$tmp/valgrind.%p.log")
fi

# plugin COMMAND CONF_FILE [VAR=value...]: sets out and rc.
plugin() {
  local cmd=$1 conf=$2
  shift 2
  out=$(env -i PATH="$PATH" CNI_COMMAND="$cmd" CNI_CONTAINERID="${CID-ctr1}" CNI_NETNS=/var/run/netns/tsr-it \
    CNI_IFNAME="${IFNAME:-eth0}" CNI_PATH=/usr/lib/cni \
    CNI_ARGS="${ARGS:-IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-1}" "$@" \
    "${VG[@]}" "$PLUGIN" <"$conf")
  rc=$?
  if [ "$rc" = 99 ]; then
    vg_failed=$((vg_failed + 1))
    echo "VALGRIND: $cmd $(basename "$conf") reported errors:"
    cat "$tmp"/valgrind.*.log
  fi
  rm -f "$tmp"/valgrind.*.log
}
code_is() { [ "$rc" != 0 ] && [ "$(jq -r .code <<<"$out")" = "$1" ]; }
silent_ok() { [ "$rc" = 0 ] && [ -z "$out" ]; }
last() { jq -r "$2" "$tmp/last_$1.json"; }

# Configurations.
prev='{"cniVersion":"1.0.0","interfaces":[{"name":"veth9f2a","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"11:22:33:44:55:66","sandbox":"/var/run/netns/tsr-it"}],"ips":[{"address":"10.199.0.5/24","gateway":"10.199.0.1","interface":1},{"address":"fd00:199::0005/64","gateway":"fd00:199::1","interface":1}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}'
conf() { # file version extra-json-members
  printf '{"cniVersion":"%s","name":"tsr-it","type":"tessera-cni","socketPath":"%s"%s}\n' "$2" "$sock" "$3" >"$tmp/$1"
}
conf add.json 1.0.0 ",\"timeoutMs\":3000,\"logFile\":\"$tmp/cni.log\",\"logLevel\":\"debug\",\"args\":{\"cni\":{\"labels\":[\"k8s:app=web\",\"tier=db\"]}},\"prevResult\":$prev"
conf add-obj.json 1.0.0 ",\"args\":{\"cni\":{\"labels\":{\"app\":\"api\",\"k8s:team\":\"net\"}}},\"prevResult\":$prev"
conf add-reserved.json 1.0.0 ",\"args\":{\"cni\":{\"labels\":[\"reserved:host\"]}},\"prevResult\":$prev"
conf add-short.json 1.0.0 ",\"timeoutMs\":300,\"prevResult\":$prev"
conf noprev.json 1.0.0 ""
conf check-other-ip.json 1.0.0 ",\"prevResult\":$(jq -c '.ips[0].address="10.199.0.99/24"' <<<"$prev")"
conf v11.json 1.1.0 ""
conf gc.json 1.1.0 ',"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]'
conf gc-nolist.json 1.1.0 ""
$PY - "$tmp/gc-big.json" "$sock" <<'PY'
import json, sys
json.dump({"cniVersion": "1.1.0", "name": "tsr-it", "type": "tessera-cni", "socketPath": sys.argv[2],
           "cni.dev/valid-attachments": [{"containerID": "c%05d" % i, "ifname": "eth0"} for i in range(3000)]},
          open(sys.argv[1], "w"))
PY

start_server

# VERSION
plugin VERSION "$tmp/v11.json"
check "VERSION lists the versions" [ "$rc" = 0 -a "$(jq -c .supportedVersions <<<"$out")" = '["0.4.0","1.0.0","1.1.0"]' ]

# ADD: the request carries everything; the result is prevResult.
plugin ADD "$tmp/add.json"
check "ADD succeeds" [ "$rc" = 0 ]
check "ADD passes prevResult through" [ "$(jq -S 'del(.cniVersion)' <<<"$out")" = "$(jq -S 'del(.cniVersion)' <<<"$prev")" ]
check "ADD result has the config's cniVersion" [ "$(jq -r .cniVersion <<<"$out")" = 1.0.0 ]
check "CreateEndpoint fields" [ "$(last CreateEndpoint '[.container_id,.interface_name,.host_interface,.netns,.namespace,.pod_name,.sync]|@json')" = '["ctr1","eth0","veth9f2a","/var/run/netns/tsr-it","default","pod-1",true]' ]
check "CreateEndpoint IPs without prefix" [ "$(last CreateEndpoint '.ips|@json')" = '["10.199.0.5","fd00:199::5"]' ]
check "CreateEndpoint labels" [ "$(last CreateEndpoint '.labels|@json')" = '[{"source":"k8s","key":"app","value":"web"},{"key":"tier","value":"db"}]' ]
check "grpc-timeout from timeoutMs" [ "$(last CreateEndpoint '._time_remaining > 2 and ._time_remaining <= 3')" = true ]
check "log file has the ADD line" grep -q 'ADD container=ctr1 ifname=eth0 result=ok' "$tmp/cni.log"
check "debug log has the RPC" grep -q 'debug grpc /tessera.endpoint.v1.EndpointService/CreateEndpoint' "$tmp/cni.log"

plugin ADD "$tmp/add.json"
check "second ADD: already exists (101)" code_is 101
check "error is logged" grep -q 'ADD container=ctr1 ifname=eth0 result=error code=101' "$tmp/cni.log"

# CHECK
plugin CHECK "$tmp/add.json"
check "CHECK passes" silent_ok
plugin CHECK "$tmp/check-other-ip.json"
check "CHECK with other IPs: 104" code_is 104
mode notready
plugin CHECK "$tmp/add.json"
check "CHECK of a not-ready endpoint: 103" code_is 103
mode normal
plugin CHECK "$tmp/noprev.json"
check "CHECK without prevResult: 7" code_is 7

# DEL (no prevResult needed), twice.
plugin DEL "$tmp/noprev.json" CNI_NETNS=
check "DEL succeeds" silent_ok
check "DeleteEndpoint selector" [ "$(last DeleteEndpoint '.endpoint|[.container_id,.interface_name]|@json')" = '["ctr1","eth0"]' ]
plugin DEL "$tmp/noprev.json"
check "second DEL succeeds" silent_ok
plugin CHECK "$tmp/add.json"
check "CHECK after DEL: 102" code_is 102

# Labels as an object; podman's CNI_ARGS (no namespace).
ARGS="K8S_POD_NAME=web-1" plugin ADD "$tmp/add-obj.json"
check "ADD with object labels, podman args" [ "$rc" = 0 ]
check "podman: namespace empty, pod name set" [ "$(last CreateEndpoint '[.namespace // "", .pod_name]|@json')" = '["","web-1"]' ]
check "object labels" [ "$(last CreateEndpoint '.labels|@json')" = '[{"key":"app","value":"api"},{"source":"k8s","key":"team","value":"net"}]' ]
plugin DEL "$tmp/noprev.json"

# Service errors.
plugin ADD "$tmp/add-reserved.json"
check "INVALID_ARGUMENT: 7 with the server's message" [ "$(jq -r '[.code,.msg]|@json' <<<"$out")" = '[7,"label reserved:host is reserved"]' ]
mode unavailable
plugin ADD "$tmp/add.json"
check "UNAVAILABLE: 11" code_is 11
plugin DEL "$tmp/noprev.json"
check "DEL while UNAVAILABLE: 11" code_is 11
mode internal
plugin ADD "$tmp/add.json"
check "INTERNAL: 999" code_is 999
mode percent
plugin ADD "$tmp/add.json"
check "grpc-message is percent-decoded" [ "$(jq -r .details <<<"$out")" = "CreateEndpoint: FAILED_PRECONDITION: 100% broken: étiquette ✓" ]
mode slow
start=$(date +%s%N)
plugin ADD "$tmp/add-short.json"
took=$((($(date +%s%N) - start) / 1000000))
check "deadline (timeoutMs=300): 11" code_is 11
check "deadline honoured (${took} ms)" [ "$took" -lt 2500 ]
mode normal

# STATUS (1.1.0)
plugin STATUS "$tmp/v11.json"
check "STATUS SERVING: no output" silent_ok
mode not_serving
plugin STATUS "$tmp/v11.json"
check "STATUS NOT_SERVING: 50" code_is 50
mode normal
plugin STATUS "$tmp/noprev.json"
check "STATUS with a 1.0.0 config: 1" code_is 1

# GC (1.1.0)
CID=keep plugin ADD "$tmp/add.json"
CID=gone plugin ADD "$(conf add2.json 1.0.0 ",\"prevResult\":$(jq -c '.ips=[{"address":"10.199.0.7/24"}]' <<<"$prev")"; echo "$tmp/add2.json")"
plugin GC "$tmp/gc.json"
check "GC succeeds" silent_ok
check "GC keeps valid attachments only" [ "$(jq -c '[.[].container_id]' "$tmp/endpoints.json")" = '["keep"]' ]
plugin GC "$tmp/gc-nolist.json"
check "GC without valid-attachments: 7" code_is 7
mode bulk
plugin GC "$tmp/gc-big.json"
check "GC with 3000 attachments and a 5000-endpoint response" silent_ok
check "GC request carried 3000 attachments" [ "$(last GarbageCollectEndpoints '.valid_attachments|length')" = 3000 ]
mode normal

# Input errors.
CID= plugin ADD "$tmp/add.json"
check "missing CNI_CONTAINERID: 4" code_is 4
plugin ADD <(echo '{"cniVersion":') 
check "malformed JSON: 6" code_is 6
plugin ADD "$tmp/noprev.json"
check "ADD without prevResult: 7" code_is 7
plugin ADD <(echo '{"cniVersion":"0.3.1","name":"n","type":"tessera-cni"}')
check "unsupported version: 1" code_is 1

# The service is gone.
stop_server
plugin ADD "$tmp/add.json"
check "ADD with the service stopped: 11" code_is 11
plugin DEL "$tmp/noprev.json"
check "DEL with the service stopped: 11" code_is 11
plugin STATUS "$tmp/v11.json"
check "STATUS with the service stopped: 50" code_is 50

if [ "${VALGRIND:-0}" = 1 ]; then
  if [ "$vg_failed" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: valgrind ($vg_failed runs)"; fi
fi
echo "integration: $passed passed, $failed failed"
[ "$failed" = 0 ]
