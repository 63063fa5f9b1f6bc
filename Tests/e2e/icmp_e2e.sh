#!/usr/bin/env bash
# End-to-end ICMP rules (Cilium `icmps`) in the kernel: a real node (eBPF datapath),
# pods made by tessera-cni as the main plugin, real ping and raw ICMP messages.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/e2e/icmp_e2e.sh
#
# Policy: server accepts ICMP echo requests (by name) and TCP 8080 from client, nothing
# else. Checks: client pings server, other cannot; the ICMP rule opens no TCP port and no
# other ICMP type (a timestamp request and a redirect sent with raw sockets never arrive,
# not even right after an allowed echo); an ICMP deny over the allow stops the ping;
# `policy trace` and `datapath policy get` speak ICMP types; `observe` names the dropped
# messages; bad `icmps` are refused. Skips with a reason without root, CNI plugins or eBPF.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
E2E_NAME=icmp-e2e
. "$repo/Tests/lib/e2e.sh"
require_node
require_cni_plugins host-local
require_commands jq nc ping python3

tmp=$(mktemp -d /tmp/tsr-ie2e.XXXXXX)
RUN=$tmp/run
PIN=/sys/fs/bpf/tessera-ie2e-$$
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }
CHAIN_NAME=tsr-ie2e CHAIN_SUBNET=10.196.0.0/24 CHAIN_STATE=$tmp/cni CHAIN_NETNS_PREFIX=tsr-ie2e-
CHAIN_SOCKET=$RUN/endpoint.sock CHAIN_CNI=$repo/.build-cni/tessera-cni CHAIN_MODE=main
. "$repo/scripts/lib/cni-chain.sh"
SUBNET6=fd00:196::/64
# Dual-stack pods: ICMPv6 echo, and neighbour discovery with the node, for real.
chain_main_config() { # labels-json-array
  printf '{"cniVersion":"1.0.0","name":"%s","type":"tessera-cni","socketPath":"%s","ipam":{"type":"host-local","ranges":[[{"subnet":"%s"}],[{"subnet":"%s"}]],"dataDir":"%s/ipam"},"args":{"cni":{"labels":%s}}}' \
    "$CHAIN_NAME" "$CHAIN_SOCKET" "$CHAIN_SUBNET" "$SUBNET6" "$CHAIN_STATE" "$1"
}
pods=(client other server)
bg_pids=()

trap e2e_teardown EXIT

pings() { ip netns exec "tsr-ie2e-$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1; }
pings6() { ip netns exec "tsr-ie2e-$1" ping -6 -c 1 -W 1 "$2" >/dev/null 2>&1; }
no_ping() { ! pings "$@"; }
connects() { ip netns exec "tsr-ie2e-$1" nc -z -w 1 "$2" "$3" 2>/dev/null; }
dropped() { ! connects "$@"; }

# send_icmp POD DST TYPE: one ICMP message of TYPE (code 0, identifier 0x1234) from a raw socket.
send_icmp() {
  ip netns exec "tsr-ie2e-$1" python3 - "$2" "$3" <<'PY'
import socket, struct, sys
dst, kind = sys.argv[1], int(sys.argv[2])
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
body = struct.pack("!HH", 0x1234, 1) + bytes(12)
message = struct.pack("!BBH", kind, 0, checksum(struct.pack("!BBH", kind, 0, 0) + body)) + body
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.sendto(message, (dst, 0))
PY
}

# record_icmp POD FILE: every ICMP message POD receives, "source type" per line, until killed.
record_icmp() {
  ip netns exec "tsr-ie2e-$1" python3 -u - >"$2" 2>/dev/null <<'PY' &
import socket
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
while True:
    packet, (source, _) = sock.recvfrom(65535)
    print(source, packet[(packet[0] & 0x0F) * 4])
PY
  bg_pids+=($!)
}
received() { grep -qx "$2 $3" "$1"; } # file source type

start_node --metrics-base-port "$(free_port_block 4)"

cat >"$tmp/policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server-icmp, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    icmps:
    - fields: [{type: EchoRequest, family: IPv4}, {type: EchoRequest, family: IPv6}]
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
YAML
check "ICMP policy imported" tessera policy import "$tmp/policy.yaml" -o json

check "client ADD" chain_add client '["app=client"]'
check "other ADD" chain_add other '["app=other"]'
check "server ADD" chain_add server '["app=server"]'
server_ip=$(jq -r '.ips[0].address' "$CHAIN_STATE/server.json" | cut -d/ -f1)
server_ip6=$(jq -r '[.ips[].address | select(contains(":"))][0] // empty' "$CHAIN_STATE/server.json" | cut -d/ -f1)
client_ip=$(jq -r '.ips[0].address' "$CHAIN_STATE/client.json" | cut -d/ -f1)
other_ip=$(jq -r '.ips[0].address' "$CHAIN_STATE/other.json" | cut -d/ -f1)
ip netns exec tsr-ie2e-server nc -lk -p 8080 >/dev/null 2>&1 &
bg_pids+=($!)
ip netns exec tsr-ie2e-server nc -lk -p 9090 >/dev/null 2>&1 &
bg_pids+=($!)
record_icmp server "$tmp/seen"
sleep 0.3

check "client pings server (echo request allowed, the reply passes as its flow)" pings client "$server_ip"
check "other cannot ping server" no_ping other "$server_ip"
check "server got an IPv6 address" [ -n "$server_ip6" ]
# The first ping resolves the node's address with neighbour discovery (before policy,
# on the link); the echo request is the ICMPv6 rule's.
check "client pings server over IPv6 (ICMPv6 echo request allowed, ND with the node works)" \
  eventually 5 pings6 client "$server_ip6"
check "other cannot ping server over IPv6" bash -c "! ip netns exec tsr-ie2e-other ping -6 -c 2 -W 1 $server_ip6"

check "client -> server:8080 connects (the TCP rule)" connects client "$server_ip" 8080
check "client -> server:9090 is dropped: the ICMP rule opens no TCP port" dropped client "$server_ip" 9090
# Right after an allowed echo, other ICMP types from the same client must not ride on it.
pings client "$server_ip"
send_icmp client "$server_ip" 13
send_icmp client "$server_ip" 5
send_icmp client "$server_ip" 8
sleep 0.5
check "a raw echo request from client arrives" received "$tmp/seen" "$client_ip" 8
check "a timestamp request (type 13) from client never arrives" bash -c "! grep -qx '$client_ip 13' $tmp/seen"
check "a redirect (type 5) from client never arrives" bash -c "! grep -qx '$client_ip 5' $tmp/seen"
check "no echo request from other ever arrived" bash -c "! grep -qx '$other_ip 8' $tmp/seen"

server_id=$(tessera endpoint get --container-id tsr-ie2e-server -o json | jq -r .id)
tessera datapath policy get "$server_id" -o json >"$tmp/policy-get.json"
check "datapath policy get: an ICMP type-8 entry and an ICMPv6 type-128 entry, counting the pings" jq -e \
  '(.entries | map(select(.protocol == "ICMP" and .port == 8 and .verdict == "allow")) | length == 1 and .[0].packets > 0) and (.entries | map(select(.protocol == "ICMPv6" and .port == 128)) | length == 1)' "$tmp/policy-get.json"
check "datapath policy get (table) shows the type" bash -c \
  "$TESSERA_BIN/tessera datapath policy get $server_id --run-dir $RUN | grep -q 'ICMP .*type 8'"
tessera policy trace --from-label app=client --to-label app=server --protocol icmp --port 8 -o json >"$tmp/trace8.json"
check "trace: client -> server ICMP type 8 allowed by server-icmp" jq -e \
  '.allowed and .protocol == "ICMP" and .ingress.matches[0].name == "server-icmp"' "$tmp/trace8.json"
tessera policy trace --from-label app=client --to-label app=server --protocol icmp --port 13 -o json >"$tmp/trace13.json"
check "trace: client -> server ICMP type 13 denied by the ingress default" jq -e \
  '(.allowed | not) and .ingress.decision == "default-deny"' "$tmp/trace13.json"
check "trace: an ICMP type above 255 is refused" bash -c \
  "! $TESSERA_BIN/tessera policy trace --from-label app=client --to-label app=server --protocol icmp --port 300 --run-dir $RUN 2>/dev/null"
check "trace: ICMP without a type is refused (it would trace type 0)" bash -c \
  "! $TESSERA_BIN/tessera policy trace --from-label app=client --to-label app=server --protocol icmp --run-dir $RUN >$tmp/trace.err 2>&1 && grep -q 'needs the ICMP type' $tmp/trace.err"
tessera observe --last 1000 -o json >"$tmp/events.json"
check "observe: other's echo request dropped by the ingress default, protocol ICMP, type 8" bash -c \
  "jq -se 'map(select(.verdict == \"dropped\" and .protocol == \"ICMP\" and .icmpType == 8 and .source.ip == \"$other_ip\" and .endpoint == $server_id)) | length > 0' $tmp/events.json"
check "observe: client's raw timestamp request dropped, type 13" bash -c \
  "jq -se 'map(select(.verdict == \"dropped\" and .icmpType == 13 and .source.ip == \"$client_ip\")) | length > 0' $tmp/events.json"
check "observe (table) names the ICMP type" bash -c \
  "$TESSERA_BIN/tessera observe --last 1000 --run-dir $RUN | grep -q 'ICMP type 13 '"

# A deny of echo requests from client, over the allow.
cat >"$tmp/deny.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server-no-ping, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: client}}]
    icmps: [{fields: [{type: 8}]}]
YAML
check "ICMP deny imported" tessera policy import "$tmp/deny.yaml"
sleep 0.3
check "with the deny, client cannot ping server" no_ping client "$server_ip"
check "the deny names ICMP only: client -> server:8080 still connects" connects client "$server_ip" 8080
check "deny deleted" tessera policy delete default/server-no-ping
sleep 0.3
check "without the deny, client pings server again" pings client "$server_ip"

# Bad input: a clear error naming the field, exit 1, nothing imported.
cat >"$tmp/bad.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad, namespace: default}
spec:
  endpointSelector: {}
  ingress:
  - icmps: [{fields: [{type: Echo, family: IPv6}]}]
YAML
check "an IPv4-only type name with family IPv6 is refused, naming the field" bash -c \
  "! $TESSERA_BIN/tessera policy import $tmp/bad.yaml --run-dir $RUN 2>$tmp/bad.err && grep -q 'icmps\[0\].fields\[0\].type: unknown IPv6 ICMP type \"Echo\"' $tmp/bad.err"
sed -i 's/- icmps: \[{fields: \[{type: Echo, family: IPv6}\]}\]/- icmps: [{fields: [{type: 8}]}]\n    toPorts: [{ports: [{port: "80"}]}]/' "$tmp/bad.yaml"
check "icmps with toPorts in one rule is refused (as in Cilium), also as JSON" bash -c \
  "! $TESSERA_BIN/tessera policy import $tmp/bad.yaml --run-dir $RUN -o json 2>$tmp/bad.json && jq -e '.exitCode == 1 and (.error | test(\"ICMPs block may only be present without ToPorts\"))' $tmp/bad.json"
check "nothing named bad was stored" bash -c \
  "! $TESSERA_BIN/tessera policy list --run-dir $RUN -o json | grep -q '\"bad\"'"

for pod in server other client; do chain_del "$pod"; done
check "endpoints gone after DEL" [ "$(tessera endpoint list -o json | jq '.endpoints | length')" = 0 ]
e2e_result
