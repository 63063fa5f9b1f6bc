#!/usr/bin/env bash
# Two nodes sharing one real etcd, each with its own four daemons, run
# directory and eBPF datapath; pods attached through ptp + host-local +
# tessera-cni on each node; real TCP from pods on node A to a pod on node B.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/e2e/two_nodes_e2e.sh
#
# Checks: equal labels get one identity on both nodes; node B learns node A's
# pod addresses and identities through etcd (its ipcache), so its policy
# (backend accepts frontend on TCP 8080) allows frontend@A and drops other@A;
# a deleted pod leaves the other node's ipcache; an identity-store outage
# fails new label sets with CNI code 11 and recovers. Skips with a reason
# without root, etcd, CNI plugins or eBPF.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
E2E_NAME=two-nodes-e2e
. "$repo/Tests/lib/e2e.sh"
require_node
require_cni_plugins ptp host-local
require_commands etcd etcdctl jq nc

tmp=$(mktemp -d /tmp/tsr-2n.XXXXXX)
etcd_pid=
bg_pids=()
pods_a=(frontend other)
pods_b=(backend frontendb)
client_port=$(free_port) peer_port=$(free_port)
ETCD=http://127.0.0.1:$client_port
start_etcd() {
  etcd --name e2e --data-dir "$tmp/etcd" --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$peer_port" >>"$tmp/etcd.log" 2>&1 &
  etcd_pid=$!
  for _ in $(seq 100); do ETCDCTL_API=3 etcdctl --endpoints "$ETCD" endpoint health >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "etcd did not start:"; tail -20 "$tmp/etcd.log"; return 1
}

# on_node a|b: points the tessera CLI and the CNI chain at that node.
on_node() {
  NODE=$1
  RUN=$tmp/$1/run
  CHAIN_NAME=tsr-2n-$1 CHAIN_STATE=$tmp/$1/cni CHAIN_NETNS_PREFIX=tsr-2n-
  CHAIN_SOCKET=$RUN/endpoint.sock CHAIN_CNI=$repo/.build-cni/tessera-cni
  CHAIN_ROUTES='[{"dst":"10.195.0.0/16"}]'
  if [ "$1" = a ]; then CHAIN_SUBNET=10.195.1.0/24; else CHAIN_SUBNET=10.195.2.0/24; fi
}
. "$repo/scripts/lib/cni-chain.sh"
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }

cleanup() {
  for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; done
  on_node a; for pod in "${pods_a[@]}"; do chain_del "$pod"; done
  on_node b; for pod in "${pods_b[@]}"; do chain_del "$pod"; done
  for n in a b; do "$TESSERA_BIN/tessera" node down --run-dir "$tmp/$n/run" >/dev/null 2>&1; rm -rf "/sys/fs/bpf/tessera-2n-$n-$$"; done
  [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

connects() { ip netns exec "tsr-2n-$1" nc -z -w 1 "$2" "$3" 2>/dev/null; }
dropped() { ! connects "$@"; }
ipcache_has() { tessera datapath ipcache list -o json | jq -e --arg p "$1/32" --argjson id "$2" '.entries | map(select(.prefix == $p and .identity == $id)) | length == 1'; }
ipcache_lacks() { tessera datapath ipcache list -o json | jq -e --arg p "$1/32" '.entries | map(select(.prefix == $p)) | length == 0'; }
identity_of() { tessera endpoint get --container-id "tsr-2n-$NODE-$1" -o json | jq -r .identity; }

start_etcd || exit 1
for n in a b; do
  on_node $n
  tessera node up --detach --no-supervise --state-dir "$tmp/$n/state" --node-name "node-$n" --bpf-pin-dir "/sys/fs/bpf/tessera-2n-$n-$$" \
    --identity-store "etcd:$ETCD" >"$tmp/$n-up.log" 2>&1 || { cat "$tmp/$n-up.log" "$RUN"/*.log; exit 1; }
done
require_bpf_datapath
check "node B's identity service uses etcd" bash -c "$TESSERA_BIN/tessera status --run-dir $RUN -o json | jq -e '.services[] | select(.service==\"identity\") | .backend | startswith(\"etcd:\")'"

cat >"$tmp/policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-allow-frontend, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
YAML
on_node b
check "policy imported on node B" tessera policy import "$tmp/policy.yaml"

on_node a
check "frontend ADD on node A" chain_add frontend '["app=frontend"]'
check "other ADD on node A" chain_add other '["app=other"]'
frontend_ip=$(chain_ip frontend) other_ip=$(chain_ip other)
frontend_id=$(identity_of frontend) other_id=$(identity_of other)

on_node b
check "backend ADD on node B" chain_add backend '["app=backend"]'
check "frontendb ADD on node B" chain_add frontendb '["app=frontend"]'
backend_ip=$(chain_ip backend)
backend_id=$(identity_of backend)
check "equal labels on both nodes get one identity" [ "$(identity_of frontendb)" = "$frontend_id" ]
check "the identity lists both nodes" bash -c "$TESSERA_BIN/tessera identity get $frontend_id --run-dir $RUN -o json | jq -e '.nodes | keys == [\"node-a\", \"node-b\"]'"
listen() { ip netns exec "tsr-2n-$1" nc -lk -p "$2" >/dev/null 2>&1 & bg_pids+=($!); }
listen backend 8080
listen backend 9090

check "node B's ipcache learns frontend@A's identity through etcd" eventually 10 ipcache_has "$frontend_ip" "$frontend_id"
check "node B's ipcache learns other@A's identity through etcd" eventually 10 ipcache_has "$other_ip" "$other_id"
on_node a
check "node A's ipcache learns backend@B" eventually 10 ipcache_has "$backend_ip" "$backend_id"
check "frontend@A -> backend@B:8080 connects across nodes" connects frontend "$backend_ip" 8080
if [ "${TWO_NODES_DEBUG:-}" = 1 ]; then
  on_node b
  tessera datapath ipcache list; tessera datapath policy get "$(tessera endpoint get --container-id tsr-2n-b-backend -o json | jq -r .id)"
  tessera datapath counters "$(tessera endpoint get --container-id tsr-2n-b-backend -o json | jq -r .id)"; tessera datapath ct list
  on_node a
  tessera datapath ct list; tessera endpoint list; ip route; ip netns exec tsr-2n-frontend ip route
fi
check "other@A -> backend@B:8080 is dropped by node B" dropped other "$backend_ip" 8080
check "frontend@A -> backend@B:9090 is dropped by node B" dropped frontend "$backend_ip" 9090

# Relabelled on node A: node B follows through etcd.
check "relabel other@A to frontend" tessera endpoint labels --container-id tsr-2n-a-other --label app=frontend
on_node b
check "node B sees other@A's new identity" eventually 10 ipcache_has "$other_ip" "$frontend_id"
on_node a
check "relabelled other@A -> backend@B:8080 connects" connects other "$backend_ip" 8080

chain_del frontend
on_node b
check "a pod deleted on node A leaves node B's ipcache" eventually 10 ipcache_lacks "$frontend_ip"

# etcd down: a known label set still gets its identity, a new one fails with CNI code 11.
kill "$etcd_pid"; wait "$etcd_pid" 2>/dev/null; etcd_pid=
pods_b+=(newcomer known)
check "with etcd down, a pod with known labels is still added" chain_add known '["app=backend"]'
out=$(chain_add newcomer '["app=never-seen"]'); status=$?
check "with etcd down, a brand-new label set fails (ADD exits non-zero)" [ "$status" != 0 ]
cni_code_is() { jq -e --argjson code "$2" '.code == $code' <<<"$1"; }
check "... with CNI code 11 (try again later)" cni_code_is "$out" 11
start_etcd || exit 1
chain_del newcomer
check "once etcd is back, the new label set is added" eventually 20 chain_add newcomer '["app=never-seen"]'

for pod in "${pods_b[@]}"; do chain_del "$pod"; done
on_node a; for pod in "${pods_a[@]}"; do chain_del "$pod"; done
e2e_result
