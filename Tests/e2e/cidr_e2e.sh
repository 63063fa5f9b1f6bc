#!/usr/bin/env bash
# CIDR peers in the kernel: a real node (tessera node up, eBPF datapath), pods attached
# by tessera-cni as the main plugin, and an "outside" network namespace behind the host
# holding addresses on both sides of a policy's `except` (TEST-NET-3, 203.0.113.0/24):
#
#   outside: 203.0.113.1 (in 203.0.113.0/25) and 203.0.113.200 (in 203.0.113.128/25), TCP 80
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/e2e/cidr_e2e.sh
#
# Checks with real TCP: a NetworkPolicy egress ipBlock with except (the excepted half is
# dropped, the rest connects, pods are not in the block); a CiliumNetworkPolicy fromCIDR
# ingress (the outside source in the CIDR connects, the one outside it is dropped); an
# egressDeny toCIDR beats a world allow, also for a pod created after the policy, from its
# first packet; the ipcache maps exactly the named prefixes; a policy deleted while
# endpointd is down is unmapped before it serves again; deleting the policies unmaps
# them and restores what they restricted. Skips with a reason without root, CNI
# plugins or eBPF; removes every namespace, veth, pin and daemon it made.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
E2E_NAME=cidr-e2e
. "$repo/Tests/lib/e2e.sh"
require_node
require_cni_plugins host-local
require_commands jq nc

tmp=$(mktemp -d /tmp/tsr-cidr.XXXXXX)
RUN=$tmp/run
PIN=/sys/fs/bpf/tessera-cidr-$$
OUT=tsr-cidr-out
HOST_VETH=tsrcidr$$
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }
CHAIN_NAME=tsr-cidr CHAIN_SUBNET=10.194.0.0/24 CHAIN_STATE=$tmp/cni CHAIN_NETNS_PREFIX=tsr-cidr-
CHAIN_SOCKET=$RUN/endpoint.sock CHAIN_CNI=$repo/.build-cni/tessera-cni CHAIN_MODE=main
CHAIN_ROUTES='[{"dst":"0.0.0.0/0"}]'
. "$repo/scripts/lib/cni-chain.sh"
pods=(egress web late control)
bg_pids=()
forwarding=$(cat /proc/sys/net/ipv4/ip_forward)

cleanup() {
  e2e_teardown
  ip netns del "$OUT" 2>/dev/null
  ip link del "$HOST_VETH" 2>/dev/null
  echo "$forwarding" >/proc/sys/net/ipv4/ip_forward
}
trap cleanup EXIT

connects() { # from-pod ip port
  ip netns exec "tsr-cidr-$1" nc -z -w 1 "$2" "$3" 2>/dev/null
}
connects_from_outside() { # source-address pod-ip port
  ip netns exec "$OUT" nc -z -w 1 -s "$1" "$2" "$3" 2>/dev/null
}
prefixes_mapped() { # the CIDR-scope prefixes in the ipcache, sorted, one line
  tessera datapath ipcache list -o json |
    jq -r '[.entries[] | select(.identity >= 16777216) | .prefix] | sort | join(" ")'
}

# The outside: a namespace behind the host on 203.0.113.0/24.
ip netns add "$OUT"
ip link add "$HOST_VETH" type veth peer name eth0 netns "$OUT"
ip addr add 203.0.113.254/24 dev "$HOST_VETH"
ip link set "$HOST_VETH" up
ip -n "$OUT" link set lo up
ip -n "$OUT" link set eth0 up
ip -n "$OUT" addr add 203.0.113.1/24 dev eth0
ip -n "$OUT" addr add 203.0.113.200/24 dev eth0
ip -n "$OUT" route add default via 203.0.113.254
# Traffic to the outside must reach this namespace only, never the machine's own network.
[ "$(ip -o route get 203.0.113.1 | awk '{print $3}')" = "$HOST_VETH" ] ||
  skip "203.0.113.0/24 is routed elsewhere on this machine"
echo 1 >/proc/sys/net/ipv4/ip_forward
for port in 80 81; do
  ip netns exec "$OUT" nc -lk -p "$port" >/dev/null 2>&1 &
  bg_pids+=($!)
done

start_node

check "egress ADD" chain_add egress '["app=egress"]'
check "web ADD" chain_add web '["app=web"]'
check "control ADD (no policy)" chain_add control '["app=control"]'
web_ip=$(chain_ip web)
control_ip=$(chain_ip control)
for pod in web control; do
  ip netns exec "tsr-cidr-$pod" nc -lk -p 8080 >/dev/null 2>&1 &
  bg_pids+=($!)
done
sleep 0.2
check "before any policy: egress -> 203.0.113.200:80 connects" connects egress 203.0.113.200 80
check "before any policy: egress -> 203.0.113.1:81 connects" connects egress 203.0.113.1 81
check "before any policy: 203.0.113.200 -> web:8080 connects" connects_from_outside 203.0.113.200 "$web_ip" 8080

cat >"$tmp/policies.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-to-net, namespace: default}
spec:
  podSelector: {matchLabels: {app: egress}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}
    ports: [{protocol: TCP, port: 80}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-net, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDR: [203.0.113.0/25]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
YAML
check "policies with an ipBlock (except) and a fromCIDR imported" tessera policy import "$tmp/policies.yaml"
check "the ipcache maps exactly the named prefixes" \
  eventually 10 eval '[ "$(prefixes_mapped)" = "203.0.113.0/24 203.0.113.0/25 203.0.113.128/25" ]'
check "ipBlock: egress -> 203.0.113.1:80 (inside the block) connects" connects egress 203.0.113.1 80
check "ipBlock except: egress -> 203.0.113.200:80 is dropped" eval '! connects egress 203.0.113.200 80'
check "ipBlock: egress -> a pod (web:8080) is dropped" eval '! connects egress '"$web_ip"' 8080'
check "ipBlock: egress -> 203.0.113.1:81 (another port) is dropped" eval '! connects egress 203.0.113.1 81'
check "fromCIDR: 203.0.113.1 -> web:8080 connects" connects_from_outside 203.0.113.1 "$web_ip" 8080
check "fromCIDR: 203.0.113.200 (outside the CIDR) -> web:8080 is dropped" \
  eval '! connects_from_outside 203.0.113.200 '"$web_ip"' 8080'
check "fromCIDR: a pod (control) -> web:8080 is dropped" eval '! connects control '"$web_ip"' 8080'
check "the drop names the excepted prefix's identity and its cidr: label" eval 'tessera observe --last 1000 -o json | jq -se \
  "map(select(.verdict == \"dropped\" and .destination.ip == \"203.0.113.200\" and .destination.identity >= 16777216 and (.destination.labels | index(\"cidr:203.0.113.128/25\")) != null)) | length > 0"'

# A deny for part of the world, and a pod created after it: dropped from its first packet.
# It also names control's address as a /32: a CIDR never takes a pod's address from it.
cat >"$tmp/deny.yaml" <<YAML
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: late-deny, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: late}}
  egress:
  - toEntities: [world]
  - toEndpoints: [{matchLabels: {app: control}}]
  egressDeny:
  - toCIDR: [203.0.113.192/26, $control_ip/32]
YAML
check "egressDeny toCIDR imported" tessera policy import "$tmp/deny.yaml"
check "the denied /26 is mapped" eventually 10 eval 'prefixes_mapped | grep -q 203.0.113.192/26'
check "late ADD (after the deny exists)" chain_add late '["app=late"]'
check "late's first connection to 203.0.113.200 (denied /26) is dropped" eval '! connects late 203.0.113.200 80'
check "late -> 203.0.113.1 (world) connects" connects late 203.0.113.1 80
check "a deny naming control's address as a CIDR does not select control: late -> control:8080 connects" \
  connects late "$control_ip" 8080
check "control's address keeps control's identity in the ipcache" eval \
  'tessera datapath ipcache list -o json | jq -e "[.entries[] | select(.prefix == \"'"$control_ip"'/32\")] | length == 1 and .[0].identity < 16777216"'

# A pod that takes an address inside an allowed CIDR as its own source is dropped at its
# own veth (the source must be the endpoint's): no way in through the CIDR rule.
ip -n tsr-cidr-control addr add 203.0.113.5/32 dev eth0
check "control with a forged source in 203.0.113.0/25 -> web:8080 is dropped" \
  eval '! ip netns exec tsr-cidr-control nc -z -w 1 -s 203.0.113.5 '"$web_ip"' 8080'
check "the forged packet is counted as a source drop at control's veth" eval \
  'tessera observe --last 1000 -o json | jq -se "map(select(.verdict == \"dropped\" and .source.ip == \"203.0.113.5\" and (.reason | test(\"source\")))) | length > 0"'
ip -n tsr-cidr-control addr del 203.0.113.5/32 dev eth0

# endpointd killed, a policy deleted while it is down, endpointd started again: it serves
# only once the ipcache matches what the policy service holds, and the prefix only that
# policy named goes once its identity is collected (an event of its own, within a second).
pid=$(cat "$RUN/endpoint.pid")
mapfile -d '' cmdline <"/proc/$pid/cmdline"
kill -KILL "$pid"
while [ -e "/proc/$pid" ] && ! grep -q ') Z' "/proc/$pid/stat" 2>/dev/null; do sleep 0.02; done
rm -f "$RUN/endpoint.pid"
check "web-from-net deleted while endpointd is down" tessera policy delete web-from-net -n default
"${cmdline[@]}" >>"$RUN/endpoint.log" 2>&1 &
disown
check "endpointd serves again" eventually 30 eval 'tessera status --service endpoint'
check "the prefix only the deleted policy named is unmapped (its identity collected), the others stay" \
  eventually 10 eval '[ "$(prefixes_mapped)" = "203.0.113.0/24 203.0.113.128/25 203.0.113.192/26" ]'
check "after the restart: ipBlock except still drops egress -> 203.0.113.200:80" \
  eval '! connects egress 203.0.113.200 80'
check "after the restart: egress -> 203.0.113.1:80 still connects" connects egress 203.0.113.1 80

# Deleting the policies unmaps the prefixes and lifts what they restricted.
check "policies deleted" tessera policy delete --all
check "the ipcache no longer maps any CIDR" eventually 10 eval '[ -z "$(prefixes_mapped)" ]'
check "after the delete: egress -> 203.0.113.200:80 connects" eventually 5 connects egress 203.0.113.200 80
check "after the delete: 203.0.113.200 -> web:8080 connects" eventually 5 connects_from_outside 203.0.113.200 "$web_ip" 8080
check "the pods' own ipcache entries are untouched" eval \
  'tessera datapath ipcache list -o json | jq -e "[.entries[] | select(.prefix == \"'"$web_ip"'/32\" and .identity < 16777216)] | length == 1"'

e2e_result
