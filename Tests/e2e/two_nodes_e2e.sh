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
# a deleted pod leaves the other node's ipcache and its flows there end (released
# address), while a bare delete of its entry in etcd ends none; named ports across nodes: a
# pod's ipcache entry in etcd carries its named ports ("namedPorts"), and node A's
# egress NetworkPolicy `port: http` towards app=web resolves through the http port
# webb@B declares (clienta@A reaches webb@B:8080, and webb2@B:8080, the same
# identity, while webb exists; 9090 is dropped; the realised map's 8080 entry comes
# with webb and goes with its DEL while web's identity stays); an identity-store
# outage fails new label sets with CNI code 11 and recovers. Skips with a reason
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

# A pod's flows on other nodes end when it releases its address, not on a bare delete
# of its entry (what a node's store session ending does). frontend@A holds a
# connection to backend@B:8080, which node B tracks.
etcdctl3() { ETCDCTL_API=3 etcdctl --endpoints "$ETCD" "$@"; }
ct_with() { tessera datapath ct list -o json | jq --arg ip "$1" '[.entries[] | select(.source == $ip or .destination == $ip)] | length'; }
tracks() { [ "$(ct_with "$1")" -gt 0 ]; }
tracks_none() { [ "$(ct_with "$1")" = 0 ]; }
mkfifo "$tmp/feed"
ip netns exec tsr-2n-frontend nc "$backend_ip" 8080 <"$tmp/feed" >/dev/null 2>&1 &
bg_pids+=($!)
exec 7>"$tmp/feed"
echo hello >&7
on_node b
check "node B tracks frontend@A's open connection to backend@B" eventually 5 tracks "$frontend_ip"
entry_key="/tessera/ipcache/$frontend_ip/32"
entry_value=$(etcdctl3 get "$entry_key" --print-value-only)
# The lease ID as text: it does not fit a double, which jq would make of it.
entry_lease=$(printf '%x' "$(etcdctl3 get "$entry_key" -w json | grep -o '"lease":[0-9]*' | cut -d: -f2)")
etcdctl3 del "$entry_key" >/dev/null
check "a bare delete of frontend@A's entry in etcd leaves node B's ipcache" eventually 10 ipcache_lacks "$frontend_ip"
check "... and ends none of node B's flows with its address" tracks "$frontend_ip"
check "the entry is put back under node A's lease" etcdctl3 put --lease="$entry_lease" "$entry_key" "$entry_value"
check "node B learns the entry back" eventually 10 ipcache_has "$frontend_ip" "$frontend_id"

on_node a
chain_del frontend
on_node b
check "a pod deleted on node A leaves node B's ipcache" eventually 10 ipcache_lacks "$frontend_ip"
check "... and its release ends node B's flows with its address (its next holder inherits none)" \
  eventually 10 tracks_none "$frontend_ip"
check "etcd holds no entry for the released address" [ -z "$(etcdctl3 get "$entry_key" --print-value-only)" ]
exec 7>&-

# Named ports across nodes. Node A's egress rule `port: http` towards app=web resolves
# through the named ports of that identity's pods on node B, which node A learns from
# their ipcache entries in etcd. webb2 (app=web, no named ports) keeps web's identity
# alive throughout, so that what changes clienta's map is webb's http port alone; the
# regenerations are asynchronous, hence the polling.
http() { printf '[{"name":"http","containerPort":%s,"protocol":"TCP"}]' "$1"; }
# policy_has / policy_lacks ENDPOINT-ID JQ-CONDITION: some / no entry of the endpoint's
# realised map satisfies the condition (both fail when the map cannot be read).
policy_has() { tessera datapath policy get "$1" -o json | jq -e "any(.entries[]; $2)" >/dev/null; }
policy_lacks() { tessera datapath policy get "$1" -o json | jq -e "all(.entries[]; ($2) | not)" >/dev/null; }
# etcd_entry ADDRESS: the value of the address's key under the cluster ipcache prefix.
ipcache_prefix=/tessera/ipcache
etcd_entry() {
  ETCDCTL_API=3 etcdctl --endpoints "$ETCD" get --prefix "$ipcache_prefix/" |
    awk -v key="$ipcache_prefix/$1/32" 'found { print; exit } $0 == key { found = 1 }'
}
etcd_entry_is() { etcd_entry "$1" | jq -e "$2" >/dev/null; } # address jq-condition
cat >"$tmp/egress.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clienta-egress-http, namespace: default}
spec:
  podSelector: {matchLabels: {app: clienta}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: http}]
YAML
pods_a+=(clienta) pods_b+=(webb webb2)
on_node a
check "egress policy (NetworkPolicy, port: http towards app=web) imported on node A" tessera policy import "$tmp/egress.yaml"
check "clienta ADD on node A" chain_add clienta '["app=clienta"]'
clienta_ep=$(tessera endpoint get --container-id tsr-2n-a-clienta -o json | jq -r .id)
on_node b
check "webb2 ADD on node B (app=web, no named ports)" chain_add webb2 '["app=web"]'
webb2_ip=$(chain_ip webb2) web_id=$(identity_of webb2)
listen webb2 8080
check "etcd: webb2's ipcache entry has no namedPorts" eventually 5 etcd_entry_is "$webb2_ip" \
  ".identity == $web_id and has(\"namedPorts\") == false"
on_node a
check "node A's ipcache learns webb2@B" eventually 10 ipcache_has "$webb2_ip" "$web_id"
check "policy get clienta: no 8080 entry before webb exists" policy_lacks "$clienta_ep" '.port == 8080'
check "clienta@A -> webb2@B:8080 is dropped before webb exists (http names no port yet)" dropped clienta "$webb2_ip" 8080
on_node b
check "webb ADD on node B (app=web, http=8080/TCP)" chain_add webb '["app=web"]' "$(http 8080)"
webb_ip=$(chain_ip webb)
check "webb has webb2's identity" [ "$(identity_of webb)" = "$web_id" ]
listen webb 8080
listen webb 9090
check "etcd: webb's ipcache entry carries namedPorts http=8080/TCP" eventually 5 etcd_entry_is "$webb_ip" \
  ".identity == $web_id and .node == \"node-b\" and .namedPorts == [{name: \"http\", port: 8080, proto: 6}]"
etcd_entry "$webb_ip" | sed 's/^/  | /'
on_node a
check "node A's ipcache learns webb@B" eventually 10 ipcache_has "$webb_ip" "$web_id"
check "clienta@A -> webb@B:8080 connects (webb's http, learnt through etcd; within 5 s)" eventually 5 connects clienta "$webb_ip" 8080
check "policy get clienta: egress TCP 8080 towards web's identity" policy_has "$clienta_ep" \
  ".direction == \"egress\" and .peerIdentity == $web_id and (.protocol | ascii_upcase) == \"TCP\" and .port == 8080 and .verdict == \"allow\""
check "clienta@A -> webb@B:9090 is dropped" dropped clienta "$webb_ip" 9090
check "other@A (no policy) -> webb@B:9090 connects (the drop above is clienta's policy)" connects other "$webb_ip" 9090
check "clienta@A -> webb2@B:8080 connects (http resolves through every pod of web's identity)" connects clienta "$webb2_ip" 8080
on_node b
chain_del webb
on_node a
check "policy get clienta: 8080 gone after webb's DEL on node B (within 5 s)" eventually 5 policy_lacks "$clienta_ep" '.port == 8080'
check "... while web's identity stays (webb2@B still in node A's ipcache)" ipcache_has "$webb2_ip" "$web_id"
check "clienta@A -> webb2@B:8080 is dropped again" dropped clienta "$webb2_ip" 8080
on_node b

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
