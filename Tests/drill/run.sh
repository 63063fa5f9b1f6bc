#!/usr/bin/env bash
# Failure drill: churn (creates and deletes through the real CLI and CNI
# plugin) while each daemon in turn is killed with SIGKILL and restarted with
# its own command line. Then, once converged, asserts:
#   - no duplicate identities (one ID per label set, one label set per ID);
#   - the node holds one reference per identity its live endpoints use, and
#     none for any other (the identity service counts nodes, not pods);
#   - every endpoint is ready, with its identity and policy in the datapath;
#   - endpoints that existed before endpointd was killed are restored with
#     the same IDs and identities;
#   - while endpointd is down the CNI plugin returns code 11 and nothing is
#     left behind.
# With root, eBPF and the CNI reference plugins (the suite's machines) the node
# runs the eBPF datapath and real pods take part: after every restart a new
# backend pod is added through tessera-cni (main plugin) while a denied pod hammers
# its address from before the ADD (it must never connect) and an allowed pod
# must connect right after; one allowed TCP connection, kept only by
# conntrack once its policy is deleted, is held open through every kill and
# must carry a line after each restart. Without them the drill
# runs on the memory datapath and says so.
# Bounded: ROUNDS (default 2) rounds of four kills.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/drill/run.sh
# DRILL_KEEP=1 keeps the temp dir (daemon logs, state).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
skip() { echo "drill: SKIP: $*"; exit 77; }
[ -n "${TESSERA_BIN:-}" ] && [ -x "$TESSERA_BIN/tessera" ] || skip "TESSERA_BIN is not set to the built binaries"
command -v jq >/dev/null || skip "jq missing"
cni=$repo/.build-cni/tessera-cni
[ -x "$cni" ] || skip "tessera-cni not built (make -C Sources/tessera-cni)"
rounds=${ROUNDS:-2}

tmp=$(mktemp -d /tmp/tsr-drill.XXXXXX)
RUN=$tmp/run
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }
churn_pid=
PIN=/sys/fs/bpf/tessera-drill-$$
kernel_pods=()
bg_pids=()
kernel=yes
if [ "$(id -u)" != 0 ]; then kernel="no (needs root)"
elif [ ! -x /usr/lib/cni/ptp ]; then kernel="no (/usr/lib/cni/ptp missing)"
elif ! command -v nc >/dev/null; then kernel="no (nc missing)"
fi
if [ "$kernel" = yes ]; then
  CHAIN_NAME=tsr-drill CHAIN_SUBNET=10.196.0.0/24 CHAIN_STATE=$tmp/cni CHAIN_NETNS_PREFIX=tsr-drill-
  CHAIN_SOCKET=$RUN/endpoint.sock CHAIN_CNI=$cni
  # tessera-cni as the main plugin: the mode that promises no window (the ptp
  # chain's documented window is measured by chains_e2e.sh, not asserted here).
  CHAIN_MODE=${CHAIN_MODE:-main}
  . "$repo/scripts/lib/cni-chain.sh"
fi
cleanup() {
  [ -n "$churn_pid" ] && kill "$churn_pid" 2>/dev/null && wait "$churn_pid" 2>/dev/null
  for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; done
  exec 7>&- 2>/dev/null
  for pod in "${kernel_pods[@]}"; do chain_del "$pod"; done
  "$TESSERA_BIN/tessera" node down --run-dir "$RUN" >/dev/null 2>&1
  ip netns del "$cni_down_netns" 2>/dev/null
  rm -rf "$PIN"
  if [ -n "${DRILL_KEEP:-}" ]; then echo "drill: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

violations=0 checks=0 kills=0 kernel_checks=0
violation() { echo "drill: VIOLATION: $*"; violations=$((violations + 1)); }
check() { checks=$((checks + 1)); "$@"; }

if [ "$kernel" = yes ]; then
  tessera node up --detach --no-supervise --state-dir "$tmp/state" --bpf-pin-dir "$PIN" >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; exit 1; }
  backend=$(tessera status -o json | jq -r '.services[] | select(.service=="datapath") | .backend')
  case $backend in bpf*) ;; *) kernel="no (the datapath runs '$backend', not eBPF)" ;; esac
else
  tessera node up --detach --no-supervise --state-dir "$tmp/state" --datapath-backend memory >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; exit 1; }
fi
echo "drill: kernel pods and eBPF checks: $kernel"
cat >"$tmp/policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: drill, namespace: default}
spec:
  endpointSelector: {matchLabels: {tier: backend}}
  ingress: [{fromEndpoints: [{matchLabels: {tier: frontend}}], toPorts: [{ports: [{port: "8080", protocol: TCP}]}]}]
YAML
tessera policy import "$tmp/policy.yaml" >/dev/null || exit 1

# Kernel pods: a frontend, a denied peer and a first backend that holds one
# allowed connection open through every kill.
kcheck() { kernel_checks=$((kernel_checks + 1)); check "$@"; }
in_pod() { local pod=$1; shift; ip netns exec "tsr-drill-$pod" "$@"; }
connects() { in_pod "$1" nc -z -w 1 "$2" 8080 2>/dev/null; }
dropped() { ! connects "$@"; }
add_pod() { # pod tier
  kernel_pods+=("$1")
  chain_add "$1" "[\"tier=$2\"]" >/dev/null || { violation "CNI ADD of pod $1 failed"; return 1; }
}
next_ip() { # the address host-local hands out next
  local last
  last=$(cat "$CHAIN_STATE/ipam/$CHAIN_NAME/last_reserved_ip.0" 2>/dev/null || echo 10.196.0.1)
  echo "10.196.0.$((${last##*.} + 1))"
}
backends=0
# Adds backend pod bN while the denied pod hammers its address from before the
# ADD; the allowed pod must connect as soon as the workload listens.
add_backend_under_probe() {
  local pod=b$backends ip
  backends=$((backends + 1))
  ip=$(next_ip)
  ( while [ ! -e "$tmp/stop-probe" ]; do
      # Short attempts, so several start after the ADD returns.
      if in_pod deny timeout 0.3 nc -z -w 1 "$ip" 8080 2>/dev/null; then echo "$ip" >>"$tmp/probe-connected"; fi
    done ) &
  local prober=$!
  # The workload listens before the ADD (in the pod's namespace, on 0.0.0.0),
  # so a SYN let through at any moment would be answered.
  ip netns add "tsr-drill-$pod" 2>/dev/null
  in_pod "$pod" nc -lk -p 8080 >/dev/null 2>&1 &
  bg_pids+=($!)
  sleep 0.3
  add_pod "$pod" backend || { touch "$tmp/stop-probe"; wait "$prober"; rm -f "$tmp/stop-probe"; return; }
  kcheck [ "$(chain_ip "$pod")" = "$ip" ] || violation "pod $pod got $(chain_ip "$pod"), the probe aimed at $ip"
  local ok=no
  for _ in $(seq 20); do connects front "$ip" && { ok=yes; break; }; sleep 0.1; done
  kcheck [ $ok = yes ] || violation "frontend could not connect to new backend $pod ($ip) after its ADD"
  sleep 1
  touch "$tmp/stop-probe"; wait "$prober"; rm -f "$tmp/stop-probe"
  kcheck [ ! -s "$tmp/probe-connected" ] || violation "the denied pod connected to $(cat "$tmp/probe-connected") (a window without policy)"
  rm -f "$tmp/probe-connected"
}
held_lines=0
if [ "$kernel" = yes ]; then
  add_pod front frontend && add_pod deny other
  add_backend_under_probe
  in_pod b0 nc -lk -p 8081 >"$tmp/held-received" 2>/dev/null &
  bg_pids+=($!)
  cat >"$tmp/policy8081.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: drill-held, namespace: default}
spec:
  endpointSelector: {matchLabels: {tier: backend}}
  ingress: [{fromEndpoints: [{matchLabels: {tier: frontend}}], toPorts: [{ports: [{port: "8081", protocol: TCP}]}]}]
YAML
  tessera policy import "$tmp/policy8081.yaml" >/dev/null || violation "policy import failed"
  sleep 0.3
  mkfifo "$tmp/held-feed"
  in_pod front nc "$(chain_ip b0)" 8081 <"$tmp/held-feed" >/dev/null 2>&1 &
  bg_pids+=($!)
  exec 7>"$tmp/held-feed"
  echo "line-0" >&7
  sleep 0.3
  # From now on only conntrack keeps this connection: a restart that lost it would drop it.
  tessera policy delete default/drill-held >/dev/null || violation "policy delete failed"
fi
trap '' PIPE  # a held connection that died must show as a violation, not kill the drill

# Churn: endpoints drill-N with one of six label sets; about half are deleted again.
churn() {
  local n=0
  while true; do
    n=$((n + 1))
    tessera endpoint create --container-id "drill-$n" --ip "10.252.$((n / 250)).$((n % 250 + 1))" \
      --label "app=a$((n % 3))" --label "tier=$([ $((n % 2)) = 0 ] && echo frontend || echo backend)" \
      --timeout 5 -o json >>"$tmp/created.jsonl" 2>>"$tmp/churn-errors.log" && echo "drill-$n" >>"$tmp/created.ids"
    if [ $((n % 2)) = 0 ] && [ $n -gt 4 ]; then
      tessera endpoint delete --container-id "drill-$((n - 3))" --timeout 5 >/dev/null 2>>"$tmp/churn-errors.log"
    fi
  done
}
churn &
churn_pid=$!

wait_healthy() {
  for _ in $(seq 300); do tessera status >/dev/null 2>&1 && return 0; sleep 0.1; done
  violation "the node did not become healthy after a restart"; return 1
}

# ADD through tessera-cni as the main plugin (host-local IPAM) into a fresh netns: with
# endpointd down it must answer 11 after undoing what it made (veth, address).
cni_down_netns=tsr-drill-down-$$
cni_add_main() { # container
  ip netns add "$cni_down_netns" 2>/dev/null || true
  printf '{"cniVersion":"1.0.0","name":"drill","type":"tessera-cni","socketPath":"%s","ipam":{"type":"host-local","ranges":[[{"subnet":"10.253.0.0/24"}]],"dataDir":"%s/ipam-down"}}' "$RUN/endpoint.sock" "$tmp" |
    env -i PATH="$PATH" CNI_COMMAND=ADD CNI_CONTAINERID="$1" CNI_NETNS="/var/run/netns/$cni_down_netns" CNI_IFNAME=eth0 \
      CNI_PATH="/usr/lib/cni:$(dirname "$cni")" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$1" "$cni"
}
cni_add_with_endpointd_down() {
  if [ "$(id -u)" != 0 ] || [ ! -x /usr/lib/cni/host-local ]; then
    echo "drill: the ADD-while-endpointd-is-down check needs root and host-local; not run"
    return
  fi
  local veths out status
  veths=$(ip -o link show type veth | wc -l)
  out=$(cni_add_main drill-cni-down); status=$?
  check [ "$status" != 0 ] || violation "CNI ADD succeeded with endpointd down"
  check jq -e '.code == 11' <<<"$out" >/dev/null || violation "CNI ADD with endpointd down did not return code 11: $out"
  check [ "$(ip -o link show type veth | wc -l)" = "$veths" ] || violation "a failed ADD left a veth behind"
  check [ -z "$(ip -n "$cni_down_netns" -o link show type veth 2>/dev/null)" ] || violation "a failed ADD left the pod's interface behind"
  check [ -z "$(find "$tmp/ipam-down" -type f -name '10.253.*' 2>/dev/null)" ] || violation "a failed ADD kept its address in host-local"
  ip netns del "$cni_down_netns" 2>/dev/null || true
}

for round in $(seq "$rounds"); do
  for service in identity policy datapath endpoint; do
    sleep 1.5
    pid=$(cat "$RUN/$service.pid" 2>/dev/null) || { violation "no pid file for $service"; continue; }
    mapfile -d '' cmdline <"/proc/$pid/cmdline"
    before=""
    [ "$service" = endpoint ] && before=$(tessera endpoint list -o json | jq -c '[.endpoints[] | select(.state == "ready") | {id, containerId, identity}] | sort_by(.id)')
    kill -KILL "$pid"
    while [ -e "/proc/$pid" ] && ! grep -q ') Z' "/proc/$pid/stat" 2>/dev/null; do sleep 0.02; done
    kills=$((kills + 1))
    rm -f "$RUN/$service.pid"
    if [ "$service" = endpoint ]; then
      cni_add_with_endpointd_down
    fi
    "${cmdline[@]}" >>"$RUN/$service.log" 2>&1 &
    disown
    wait_healthy
    if [ "$kernel" = yes ]; then
      held_lines=$((held_lines + 1))
      echo "line-$held_lines" >&7 || violation "the connection held open is gone after restarting $service"
      add_backend_under_probe
    fi
    if [ "$service" = endpoint ]; then
      after=$(tessera endpoint list -o json | jq -c --argjson before "$before" '[.endpoints[] | select(.id as $id | $before | map(.id) | index($id)) | {id, containerId, identity}] | sort_by(.id)')
      # Endpoints deleted by the churn since are gone legitimately; every one still listed must be unchanged.
      check jq -e --argjson before "$before" --argjson after "$after" -n '$after | all(. as $a | $before | index($a))' >/dev/null ||
        violation "endpoints changed ID or identity across the endpointd restart: before $before after $after"
      check [ "$(tessera endpoint get --container-id drill-cni-down -o json 2>/dev/null | jq -r .id 2>/dev/null)" = "" ] ||
        violation "the ADD that failed with endpointd down left an endpoint behind"
    fi
  done
done
kill "$churn_pid"; wait "$churn_pid" 2>/dev/null; churn_pid=
sleep 2  # let regenerations triggered by the last restart finish

endpoints=$(tessera endpoint list -o json)
identities=$(tessera identity list -o json)
created=$(wc -l <"$tmp/created.ids" 2>/dev/null || echo 0)
live=$(jq '.endpoints | length' <<<"$endpoints")

# No duplicate identities, both ways.
check jq -e '[.identities[] | .id] | length == (unique | length)' <<<"$identities" >/dev/null || violation "an identity ID appears twice"
check jq -e '[.identities[] | .labels | sort | join(",")] | length == (unique | length)' <<<"$identities" >/dev/null ||
  violation "a label set has two identities: $(jq -c '[.identities[] | {id, labels}]' <<<"$identities")"
# One reference of the node per identity its live endpoints use.
while read -r id count; do
  refs=$(jq --argjson id "$id" '[.identities[] | select(.id == $id) | .references] | first // 0' <<<"$identities")
  check [ "$refs" = 1 ] || violation "identity $id: $refs references of the node for its $count live endpoints (want 1)"
done < <(jq -r '[.endpoints[] | .identity] | group_by(.) | map("\(.[0]) \(length)") | .[]' <<<"$endpoints")
while read -r id refs; do
  count=$(jq --argjson id "$id" '[.endpoints[] | select(.identity == $id)] | length' <<<"$endpoints")
  check [ "$count" -gt 0 ] || violation "identity $id holds $refs references but no endpoint uses it (leak)"
done < <(jq -r '.identities[] | select(.id >= 256 and .references > 0) | "\(.id) \(.references)"' <<<"$identities")
# Every endpoint ready and realised with its identity.
while read -r id identity state; do
  check [ "$state" = ready ] || violation "endpoint $id is $state"
  realised=$(tessera datapath policy get "$id" -o json 2>/dev/null | jq -r '"\(.identity) \(.realizedRevision)"')
  check [ "${realised% *}" = "$identity" ] && [ "${realised#* }" -ge 1 ] || violation "endpoint $id: datapath has '$realised', want identity $identity realised"
done < <(jq -r '.endpoints[] | "\(.id) \(.identity) \(.state)"' <<<"$endpoints")

if [ "$kernel" = yes ]; then
  sleep 0.5
  for n in $(seq 0 "$held_lines"); do
    kcheck grep -qx "line-$n" "$tmp/held-received" || violation "the connection held open lost line-$n (sent after restart $n)"
  done
  kcheck connects front "$(chain_ip b0)" || violation "after the drill frontend cannot reach b0"
  kcheck dropped deny "$(chain_ip b0)" || violation "after the drill the denied pod reaches b0"
fi

echo "drill: $rounds rounds, $kills kills, $created creates returned success, $live live endpoints, $backends kernel pods added under probe, $checks invariant checks ($kernel_checks in the kernel), $violations violations"
[ "$violations" = 0 ]
