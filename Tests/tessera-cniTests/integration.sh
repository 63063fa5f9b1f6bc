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
# ADD and CHECK read the container's veth peer from its network namespace.
[ "$(id -u)" = 0 ] || { echo "integration: SKIP: needs root (ADD reads the pod's veth peer in a network namespace)"; exit 0; }
command -v ip >/dev/null || { echo "integration: SKIP: iproute2 missing"; exit 0; }
[ -x "$PLUGIN" ] || { echo "integration: $PLUGIN not built (make -C Sources/tessera-cni)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/tsr-cni-it.XXXXXX)
sock=$tmp/ep.sock
server_pid=
# A pod: a namespace with eth0, whose veth peer HOSTVETH is on this side.
NS=cni-it-$$
NETNS=/var/run/netns/$NS
HOSTVETH=citv$$
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  ip link del "$HOSTVETH" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  if [ -n "${MAIN_NS:-}" ]; then
    ip netns del "$MAIN_NS" 2>/dev/null
    ip netns del "$MAIN_NS-2" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$NS" && ip link add "$HOSTVETH" type veth peer name eth0 netns "$NS" || {
  echo "integration: cannot create a network namespace with a veth" >&2
  exit 1
}

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
  out=$(env -i PATH="$PATH" CNI_COMMAND="$cmd" CNI_CONTAINERID="${CID-ctr1}" CNI_NETNS="${NETNS_OVERRIDE-$NETNS}" \
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
not() { ! "$@"; }
code_is() { [ "$rc" != 0 ] && [ "$(jq -r .code <<<"$out")" = "$1" ]; }
silent_ok() { [ "$rc" = 0 ] && [ -z "$out" ]; }
last() { jq -r "$2" "$tmp/last_$1.json"; }

# Configurations.
prev='{"cniVersion":"1.0.0","interfaces":[{"name":"'$HOSTVETH'","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"11:22:33:44:55:66","sandbox":"'$NETNS'"}],"ips":[{"address":"10.199.0.5/24","gateway":"10.199.0.1","interface":1},{"address":"fd00:199::0005/64","gateway":"fd00:199::1","interface":1}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}'
conf() { # file version extra-json-members
  printf '{"cniVersion":"%s","name":"tsr-it","type":"tessera-cni","socketPath":"%s"%s}\n' "$2" "$sock" "$3" >"$tmp/$1"
}
ports='[{"name":"http","containerPort":8080},{"name":"dns","containerPort":53,"protocol":"UDP"}]'
conf add.json 1.0.0 ",\"timeoutMs\":3000,\"logFile\":\"$tmp/cni.log\",\"logLevel\":\"debug\",\"args\":{\"cni\":{\"labels\":[\"k8s:app=web\",\"tier=db\"],\"ports\":$ports}},\"prevResult\":$prev"
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
check "CreateEndpoint fields" [ "$(last CreateEndpoint '[.container_id,.interface_name,.host_interface,.netns,.namespace,.pod_name,.sync]|@json')" = '["ctr1","eth0","'$HOSTVETH'","'$NETNS'","default","pod-1",true]' ]
check "CreateEndpoint IPs without prefix" [ "$(last CreateEndpoint '.ips|@json')" = '["10.199.0.5","fd00:199::5"]' ]
check "CreateEndpoint labels" [ "$(last CreateEndpoint '.labels|@json')" = '[{"source":"k8s","key":"app","value":"web"},{"key":"tier","value":"db"}]' ]
check "CreateEndpoint named ports" [ "$(last CreateEndpoint '.named_ports|@json')" = '[{"name":"http","protocol":"PROTOCOL_TCP","port":8080},{"name":"dns","protocol":"PROTOCOL_UDP","port":53}]' ]
check "grpc-timeout from timeoutMs" [ "$(last CreateEndpoint '._time_remaining > 2 and ._time_remaining <= 3')" = true ]
check "log file has the ADD line" grep -q 'ADD container=ctr1 ifname=eth0 result=ok' "$tmp/cni.log"
check "debug log counts labels and named ports" grep -q 'ips=2 labels=2 named_ports=2' "$tmp/cni.log"
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
check "no ports: no named ports" [ "$(last CreateEndpoint '.named_ports // [] | length')" = 0 ]
plugin DEL "$tmp/noprev.json"

# Service errors.
plugin ADD "$tmp/add-reserved.json"
check "INVALID_ARGUMENT: 7 with the server's message" [ "$(jq -r '[.code,.msg]|@json' <<<"$out")" = '[7,"label reserved:host is reserved"]' ]
mode unavailable
plugin ADD "$tmp/add.json"
check "UNAVAILABLE: 11" code_is 11
plugin DEL "$tmp/noprev.json"
check "DEL while UNAVAILABLE: success, the deletion queued next to the socket" silent_ok
check "the queued deletion names the attachment" bash -c "cat '$tmp'/deletion-queue/*.json | jq -e '.containerId != \"\" and .interfaceName == \"eth0\"'"
rm -rf "$tmp/deletion-queue"
mode internal
plugin ADD "$tmp/add.json"
check "INTERNAL: 999" code_is 999
mode percent
plugin ADD "$tmp/add.json"
check "grpc-message is percent-decoded" [ "$(jq -r .msg <<<"$out")" = "100% broken: étiquette ✓" ]
check "FAILED_PRECONDITION: 105, not try again" code_is 105
mode nodevice
plugin ADD "$tmp/add.json"
check "CreateEndpoint NOT_FOUND (missing device): 105 with the service's message" \
  [ "$(jq -r '[.code,.msg]|@json' <<<"$out")" = '[105,"host interface '$HOSTVETH' not found"]' ]
mode exhausted
plugin ADD "$tmp/add.json"
check "RESOURCE_EXHAUSTED: 7 (request too large)" [ "$(jq -r '[.code,.msg]|@json' <<<"$out")" = '[7,"request too large for the endpoint service"]' ]
mode normal
# Label limits are checked before anything is sent.
$PY - "$tmp/add-513.json" "$sock" "$prev" <<'PY'
import json, sys
json.dump({"cniVersion": "1.0.0", "name": "tsr-it", "type": "tessera-cni", "socketPath": sys.argv[2],
           "args": {"cni": {"labels": {"k%d" % i: "v" for i in range(513)}}}, "prevResult": json.loads(sys.argv[3])},
          open(sys.argv[1], "w"))
PY
rm -f "$tmp/last_CreateEndpoint.json"
plugin ADD "$tmp/add-513.json"
check "513 labels: 7 before any call" [ "$(jq -r .code <<<"$out")" = 7 -a ! -e "$tmp/last_CreateEndpoint.json" ]
conf add-longval.json 1.0.0 ",\"args\":{\"cni\":{\"labels\":{\"app\":\"$(printf 'v%.0s' $(seq 254))\"}}},\"prevResult\":$prev"
plugin ADD "$tmp/add-longval.json"
check "a 254-byte label value: 7 before any call" [ "$(jq -r .code <<<"$out")" = 7 -a ! -e "$tmp/last_CreateEndpoint.json" ]
# So are the named ports.
conf add-badport.json 1.0.0 ",\"args\":{\"cni\":{\"ports\":[{\"name\":\"http\",\"containerPort\":80},{\"name\":\"HTTP\",\"containerPort\":81}]}},\"prevResult\":$prev"
plugin ADD "$tmp/add-badport.json"
check "an invalid port name: 7 before any call" [ "$(jq -r .code <<<"$out")" = 7 -a ! -e "$tmp/last_CreateEndpoint.json" ]
check "an invalid port name: the entry is named" grep -q 'args.cni.ports\[1\]: name \\"HTTP\\" must be an IANA service name' <<<"$out"
conf add-dupport.json 1.0.0 ",\"args\":{\"cni\":{\"ports\":[{\"name\":\"http\",\"containerPort\":80},{\"name\":\"http\",\"containerPort\":81,\"protocol\":\"UDP\"}]}},\"prevResult\":$prev"
plugin ADD "$tmp/add-dupport.json"
check "a duplicate port name: 7 before any call" [ "$(jq -r .code <<<"$out")" = 7 -a ! -e "$tmp/last_CreateEndpoint.json" ]
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

# Interface selection by fact: bridge lists [bridge, host veth, eth0]; the endpoint must get
# the container veth's peer, never the bridge in front.
bprev=$(jq -c '.interfaces=[{"name":"cni-br0","mac":"aa:aa:aa:aa:aa:aa"}]+.interfaces' <<<"$prev")
conf add-bridge.json 1.0.0 ",\"prevResult\":$bprev"
CID=br plugin ADD "$tmp/add-bridge.json"
check "bridge-shaped prevResult: ADD succeeds" [ "$rc" = 0 ]
check "bridge-shaped prevResult: host interface is the veth peer, not the bridge" \
  [ "$(last CreateEndpoint .host_interface)" = "$HOSTVETH" ]
CID=br plugin CHECK "$tmp/add-bridge.json"
check "CHECK finds the same peer" silent_ok
CID=br plugin DEL "$tmp/noprev.json"
# A prevResult listing only host interfaces: no container interface, no endpoint.
conf add-nosandbox.json 1.0.0 ",\"prevResult\":$(jq -c '.interfaces=[.interfaces[0]]' <<<"$prev")"
rm -f "$tmp/last_CreateEndpoint.json"
CID=ns plugin ADD "$tmp/add-nosandbox.json"
check "prevResult without a sandbox interface: 106, no call" [ "$(jq -r .code <<<"$out")" = 106 -a ! -e "$tmp/last_CreateEndpoint.json" ]
# macvlan (and anything else that is not a veth): no host peer to enforce on.
MV_NS=cni-itm-$$
if ip link add "citd$$" type veth peer name "citp$$" 2>/dev/null; then
  ip netns add "$MV_NS"
  ip link add "citm$$" link "citd$$" type macvlan mode bridge
  ip link set "citm$$" netns "$MV_NS"
  ip -n "$MV_NS" link set "citm$$" name eth0
  mvprev=$(jq -c --arg ns "/var/run/netns/$MV_NS" '.interfaces=[{"name":"eth0","sandbox":$ns}]' <<<"$prev")
  conf add-macvlan.json 1.0.0 ",\"prevResult\":$mvprev"
  NETNS_OVERRIDE=/var/run/netns/$MV_NS CID=mv plugin ADD "$tmp/add-macvlan.json"
  check "macvlan: 106 naming the interface kind, no call" \
    [ "$(jq -r .code <<<"$out")" = 106 -a ! -e "$tmp/last_CreateEndpoint.json" ]
  check "macvlan: the message says why" grep -q "is of kind macvlan" <<<"$(jq -r .details <<<"$out")"
  ip netns del "$MV_NS"
  ip link del "citd$$"
else
  echo "integration: note: no dummy links here, macvlan case not run"
fi

# Main-plugin mode with Debian's host-local: the plugin makes the veth, keeps both ends down
# until CreateEndpoint returns, and cleans up after itself.
if [ -x /usr/lib/cni/host-local ]; then
  MAIN_NS=cni-itp-$$
  ip netns add "$MAIN_NS"
  MNETNS=/var/run/netns/$MAIN_NS
  net=$((100 + $$ % 100))
  conf main.json 1.0.0 ",\"logFile\":\"$tmp/cni.log\",\"logLevel\":\"debug\",\"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$tmp/ipam\",\"ranges\":[[{\"subnet\":\"10.$net.7.0/24\"}],[{\"subnet\":\"fd00:$net:7::/64\"}]],\"routes\":[{\"dst\":\"0.0.0.0/0\"},{\"dst\":\"::/0\"}]},\"args\":{\"cni\":{\"ports\":[{\"name\":\"sctp-sig\",\"containerPort\":2905,\"protocol\":\"SCTP\"}]}}"
  main() { NETNS_OVERRIDE=$MNETNS CID=${CID:-mainpod} plugin "$@"; }
  main ADD "$tmp/main.json"
  check "main: ADD succeeds" [ "$rc" = 0 ]
  hv=$(jq -r '.interfaces[0].name' <<<"$out")
  check "main: result has the host veth (tsr + 12 hex)" grep -Eq '^tsr[0-9a-f]{12}$' <<<"$hv"
  check "main: result's pod interface has mac and sandbox" \
    [ "$(jq -r '.interfaces[1]|[.name,.sandbox,(.mac|length)]|@json' <<<"$out")" = '["eth0","'$MNETNS'",17]' ]
  check "main: ips from host-local on interface 1" \
    [ "$(jq -r '[.ips[]|[.address,.interface]]|@json' <<<"$out")" = '[["10.'$net'.7.2/24",1],["fd00:'$net':7::2/64",1]]' ]
  check "main: CreateEndpoint got the host veth and both addresses" \
    [ "$(last CreateEndpoint '[.host_interface,(.ips|join(","))]|@json')" = '["'$hv'","10.'$net'.7.2,fd00:'$net':7::2"]' ]
  check "main: CreateEndpoint got the named ports" \
    [ "$(last CreateEndpoint '.named_ports|@json')" = '[{"name":"sctp-sig","protocol":"PROTOCOL_SCTP","port":2905}]' ]
  was_down() { local f; f=$(jq -r ".$1" "$tmp/links_at_create.json"); [ -n "$f" ] && ! grep -q 'UP' <<<"$f"; }
  check "main: the host veth was down while the endpoint was created" was_down host
  check "main: the pod's eth0 was down while the endpoint was created" was_down pod
  check "main: both links are up after ADD" \
    [ "$(ip -o link show "$hv" | grep -c ',UP')" = 1 -a "$(ip -n "$MAIN_NS" -o link show eth0 | grep -c ',UP')" = 1 ]
  check "main: host route to the pod's /32 via its veth" grep -q "10.$net.7.2 dev $hv" <<<"$(ip route show 10.$net.7.2)"
  check "main: pod default route via the gateway" grep -q "default via 10.$net.7.1 dev eth0" <<<"$(ip -n "$MAIN_NS" route)"
  check "main: IPv6 address usable at once (no DAD pending)" \
    not grep -q "fd00:$net:7::2/64.*tentative" <<<"$(ip -n "$MAIN_NS" -o -6 addr show dev eth0)"
  $PY -c 'import socket,sys,time; s=socket.socket(); s.bind((sys.argv[1],7071)); s.listen(); s.settimeout(5); c,_=s.accept(); c.sendall(b"hi")' "10.$net.7.1" &
  lpid=$!
  sleep 0.3
  check "main: TCP from the pod to its gateway works" [ "$(ip netns exec "$MAIN_NS" $PY -c 'import socket,sys; s=socket.create_connection((sys.argv[1],7071),3); print(s.recv(2).decode())' "10.$net.7.1")" = hi ]
  wait $lpid
  $PY -c 'import socket,sys; s=socket.socket(socket.AF_INET6); s.bind((sys.argv[1],7071)); s.listen(); s.settimeout(5); c,_=s.accept(); c.sendall(b"hi")' "fd00:$net:7::1" &
  lpid=$!
  sleep 0.3
  check "main: TCP over IPv6 from the pod to its gateway works at once" [ "$(ip netns exec "$MAIN_NS" $PY -c 'import socket,sys; s=socket.create_connection((sys.argv[1],7071),3); print(s.recv(2).decode())' "fd00:$net:7::1")" = hi ]
  wait $lpid
  main CHECK "$(conf main-check.json 1.0.0 "$(jq -c '.' "$tmp/main.json" | sed 's/^{//;s/}$//' | sed 's/^/,/' | sed "s/^,\"cniVersion\":\"1.0.0\",\"name\":\"tsr-it\",\"type\":\"tessera-cni\",\"socketPath\":\"[^\"]*\"//"),\"prevResult\":$out"; echo "$tmp/main-check.json")"
  check "main: CHECK passes" silent_ok
  ip -n "$MAIN_NS" addr del "10.$net.7.2/24" dev eth0
  main CHECK "$tmp/main-check.json"
  check "main: CHECK sees a missing address: 104" code_is 104
  main DEL "$tmp/main.json"
  check "main: DEL succeeds" silent_ok
  check "main: DEL removed the veth" not ip link show "$hv" 2>/dev/null
  check "main: DEL released the addresses" [ -z "$(ls "$tmp/ipam/tsr-it" 2>/dev/null | grep -E '^(10|fd00)')" ]
  main DEL "$tmp/main.json"
  check "main: second DEL succeeds" silent_ok
  # Failures after IPAM undo everything.
  for m in internal nodevice unavailable; do
    mode $m
    main ADD "$tmp/main.json"
    code=$(jq -r .code <<<"$out")
    check "main: ADD with the service failing ($m) fails ($code)" [ "$rc" != 0 ]
    check "main: the $m failure came from CreateEndpoint (on $(last CreateEndpoint .host_interface))" \
      [ "$(last CreateEndpoint .container_id)" = mainpod ]
    check "main: after the $m failure no veth is left" not ip link show "$(last CreateEndpoint .host_interface)"
    check "main: after the $m failure the pod has no eth0" not ip -n "$MAIN_NS" link show eth0 2>/dev/null
    check "main: after the $m failure the addresses are released" [ -z "$(ls "$tmp/ipam/tsr-it" 2>/dev/null | grep -E '^(10|fd00)')" ]
  done
  mode normal
  check "main: endpoint table empty after the failures" [ "$(jq length "$tmp/endpoints.json")" = 0 ]
  # GC (1.1.0) in main mode: the veths of the attachments the runtime no longer has go too,
  # and nothing of the attachments it keeps (nor a veth another plugin made).
  CID=gc-keep main ADD "$tmp/main.json"
  keep_hv=$(jq -r '.interfaces[0].name' <<<"$out")
  ip netns add "$MAIN_NS-2"
  NETNS_OVERRIDE=/var/run/netns/$MAIN_NS-2 CID=gc-gone plugin ADD "$tmp/main.json"
  gone_hv=$(jq -r '.interfaces[0].name' <<<"$out")
  jq -c --arg sock "$sock" '.cniVersion="1.1.0" | .["cni.dev/valid-attachments"]=[{"containerID":"gc-keep","ifname":"eth0"}]' \
    "$tmp/main.json" >"$tmp/main-gc.json"
  main GC "$tmp/main-gc.json"
  check "main: GC succeeds" silent_ok
  check "main: GC deleted the forgotten attachment's veth" not ip link show "$gone_hv"
  check "main: GC kept the valid attachment's veth" ip link show "$keep_hv"
  CID=gc-keep main DEL "$tmp/main.json"
  NETNS_OVERRIDE=/var/run/netns/$MAIN_NS-2 CID=gc-gone plugin DEL "$tmp/main.json"
  ip netns del "$MAIN_NS-2"
  # An ADD for an attachment whose endpoint exists already (registered by a chained ADD): 101,
  # and the cleanup must not delete the endpoint that was there before.
  CID=dup plugin ADD "$tmp/add.json"
  CID=dup main ADD "$tmp/main.json"
  check "main: ADD over an existing endpoint: 101" code_is 101
  check "main: the existing endpoint survives the failed ADD" \
    [ "$(jq '[.[] | select(.container_id == "dup")] | length' "$tmp/endpoints.json")" = 1 ]
  check "main: the failed ADD left no veth" not ip link show "$(last CreateEndpoint .host_interface)"
  check "main: the failed ADD released its address" [ -z "$(ls "$tmp/ipam/tsr-it" 2>/dev/null | grep -E '^(10|fd00)')" ]
  CID=dup plugin DEL "$tmp/noprev.json"
  # Chained after something: refused, it must be first.
  conf main-prev.json 1.0.0 ",\"ipam\":{\"type\":\"host-local\",\"dataDir\":\"$tmp/ipam\",\"subnet\":\"10.$net.8.0/24\"},\"prevResult\":$prev"
  main ADD "$tmp/main-prev.json"
  check "main: with a prevResult: 7" code_is 7
  conf main-noipam.json 1.0.0 ",\"ipam\":{\"type\":\"no-such-ipam\"}"
  main ADD "$tmp/main-noipam.json"
  check "main: unknown IPAM plugin: 7" code_is 7
  ip netns del "$MAIN_NS"
  MAIN_NS=
else
  echo "integration: note: /usr/lib/cni/host-local missing, main-plugin cases not run"
fi

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
check "DEL with the service stopped: success" silent_ok
check "... and the deletion is queued" bash -c "ls $tmp/deletion-queue/*@eth0.json"
plugin STATUS "$tmp/v11.json"
check "STATUS with the service stopped: 50" code_is 50

if [ "${VALGRIND:-0}" = 1 ]; then
  if [ "$vg_failed" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: valgrind ($vg_failed runs)"; fi
fi
echo "integration: $passed passed, $failed failed"
[ "$failed" = 0 ]
