#!/usr/bin/env bash
# End-to-end policy enforcement in the kernel: a real node (tessera node up, eBPF
# datapath), pods attached by the real ptp + host-local plugins chained with
# tessera-cni, and real TCP between them.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/e2e/policy_e2e.sh
#
# Policy: backend accepts frontend on TCP 8080 only. Checks, right after ADD:
# frontend -> backend:8080 connects; other -> backend:8080 and frontend ->
# backend:9090 are dropped; a prober that hammers the backend from `other`
# since before the backend's ADD never connects (no window). Then: relabelling
# `other` to frontend allows it without recreating anything; deleting the
# policy restores default allow; restarting tessera-datapathd keeps an open,
# allowed connection working, and one whose conntrack entries were deleted is
# picked up again mid-stream (both halves allowed). Skips with a reason without root, CNI plugins or eBPF.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
E2E_NAME=policy-e2e
. "$repo/Tests/lib/e2e.sh"
require_node
require_cni_plugins ptp host-local
require_commands jq nc curl

tmp=$(mktemp -d /tmp/tsr-pe2e.XXXXXX)
RUN=$tmp/run
PIN=/sys/fs/bpf/tessera-e2e-$$
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }
CHAIN_NAME=tsr-pe2e CHAIN_SUBNET=10.197.0.0/24 CHAIN_STATE=$tmp/cni CHAIN_NETNS_PREFIX=tsr-pe2e-
CHAIN_SOCKET=$RUN/endpoint.sock CHAIN_CNI=$repo/.build-cni/tessera-cni
. "$repo/scripts/lib/cni-chain.sh"
pods=(frontend other backend)
bg_pids=()

trap e2e_teardown EXIT

connects() { # from-pod ip port
  ip netns exec "tsr-pe2e-$1" nc -z -w 1 "$2" "$3" 2>/dev/null
}
dropped() { ! connects "$@"; }
listen() { # pod port: a workload that accepts connections until the test ends
  ip netns exec "tsr-pe2e-$1" nc -lk -p "$2" >/dev/null 2>&1 &
  bg_pids+=($!)
}

# The daemons' metrics ports follow one base port (identity, policy, datapath, endpoint).
mport=$(free_port_block 4)
start_node --metrics-base-port "$mport"

cat >"$tmp/policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-allow-frontend, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}, {port: "7070", protocol: TCP}]}]
YAML
check "policy imported" tessera policy import "$tmp/policy.yaml" -o json

check "frontend ADD" chain_add frontend '["app=frontend"]'
check "other ADD" chain_add other '["app=other"]'
# host-local hands out addresses in order: the backend, added third, gets .4.
backend_ip=10.197.0.4

# The prober starts before the backend exists and hammers it from a denied peer.
( end=$((SECONDS + 8)); while [ $SECONDS -lt $end ]; do
    if ip netns exec tsr-pe2e-other nc -z -w 1 "$backend_ip" 8080 2>/dev/null; then echo connected >>"$tmp/prober"; fi
  done ) &
prober=$!
sleep 0.5
check "backend ADD (while being probed)" chain_add backend '["app=backend"]'
check "backend got the expected address" [ "$(chain_ip backend)" = "$backend_ip" ]
# The workload starts only once ADD has returned, as a runtime would start it.
listen backend 8080
listen backend 9090
sleep 0.2
check "frontend -> backend:8080 connects (reply traffic flows)" connects frontend "$backend_ip" 8080
check "other -> backend:8080 is dropped" dropped other "$backend_ip" 8080
check "frontend -> backend:9090 is dropped" dropped frontend "$backend_ip" 9090
check "the node -> backend:9090 connects though no rule allows it (kubelet's probes; --allow-localhost always)" \
  nc -z -w 1 "$backend_ip" 9090
wait "$prober"
check "the prober from a denied peer never connected" [ ! -s "$tmp/prober" ]
backend_id=$(tessera endpoint get --container-id tsr-pe2e-backend -o json | jq -r .id)
check "drops are counted" [ "$(tessera datapath counters "$backend_id" -o json | jq .ingressDropped)" -gt 0 ]
check "conntrack shows the allowed connection" bash -c "$TESSERA_BIN/tessera datapath ct list --run-dir $RUN -o json | jq -e '.entries | map(select(.destinationPort == 8080)) | length > 0' >/dev/null"


# Events: every drop above and every allowed connection was reported, with
# identities, ports, the reason and the kind of entry that decided.
frontend_identity=$(tessera endpoint get --container-id tsr-pe2e-frontend -o json | jq -r .identity)
other_identity=$(tessera endpoint get --container-id tsr-pe2e-other -o json | jq -r .identity)
backend_identity=$(tessera endpoint get --container-id tsr-pe2e-backend -o json | jq -r .identity)

# Per-entry counters: the entry that allowed the real TCP connection counted
# its packets (both directions); the entry nothing used (7070) counted none.
tessera datapath policy get "$backend_id" -o json >"$tmp/policy-get.json"
check "policy get: the entry that allowed frontend -> backend:8080 counted packets and bytes, peer named by its labels" jq -e \
  "(.entries | map(select(.direction == \"ingress\" and .port == 8080 and .peerIdentity == $frontend_identity and .verdict == \"allow\")) | length == 1 and (.[0] | .packets > 0 and .bytes > .packets and (.peerLabels | any(test(\"app=frontend\")))))" "$tmp/policy-get.json"
check "policy get: the unused entry (port 7070) counted nothing" jq -e \
  '.entries | map(select(.port == 7070)) | length == 1 and .[0].packets == 0 and .[0].bytes == 0' "$tmp/policy-get.json"
check "policy get: the table has PACKETS and BYTES columns and labelled peers" bash -c \
  "$TESSERA_BIN/tessera datapath policy get $backend_id --run-dir $RUN | grep -q 'PACKETS *BYTES' && $TESSERA_BIN/tessera datapath policy get $backend_id --run-dir $RUN | grep -q 'app=frontend'"
tessera observe --last 1000 -o json >"$tmp/events.json"
has_event() { # jq condition over one event
  jq -se "map(select($1)) | length > 0" "$tmp/events.json" >/dev/null
}
check "observe: other -> backend:8080 dropped by the ingress default, with both identities" has_event \
  ".verdict == \"dropped\" and .reason == \"policy-default\" and .match == \"default\" and .direction == \"ingress\" and .endpoint == $backend_id and .destination.port == 8080 and .source.identity == $other_identity and .destination.identity == $backend_identity"
count_events() { # jq condition over one event
  jq -s "map(select($1)) | length" "$tmp/events.json"
}
check "observe: frontend -> backend:8080 allowed by an l3-l4 entry, one event for its one connection" [ "$(count_events \
  ".verdict == \"forwarded\" and .reason == \"policy\" and .match == \"l3-l4\" and .endpoint == $backend_id and .destination.port == 8080 and .source.identity == $frontend_identity")" = 1 ]
check "observe: peers are named by their labels" has_event \
  ".source.identity == $other_identity and (.source.labels | index(\"k8s:app=other\") != null)"
check "observe --type drop shows drops only" bash -c \
  "$TESSERA_BIN/tessera observe --type drop -o json --run-dir $RUN | jq -se 'length > 0 and all(.verdict == \"dropped\")' >/dev/null"
check "observe --from-label app=other --port 9090 shows nothing (other never tried 9090)" bash -c \
  "[ -z \"\$($TESSERA_BIN/tessera observe --from-label app=other --port 9090 -o json --run-dir $RUN)\" ]"
check "observe --from-label app=frontend shows only frontend's events" bash -c \
  "$TESSERA_BIN/tessera observe --from-label app=frontend -o json --run-dir $RUN | jq -se 'length > 0 and all(.source.identity == $frontend_identity)' >/dev/null"
check "observe with a bad label selector is refused" bash -c "! $TESSERA_BIN/tessera observe --from-label nolabel --run-dir $RUN 2>/dev/null"
# monitor follows live: a drop made after it started shows up.
"$TESSERA_BIN/tessera" monitor --type drop --endpoint "$backend_id" --port 9090 -o json --run-dir "$RUN" >"$tmp/monitor.json" 2>&1 &
monitor_pid=$!
bg_pids+=("$monitor_pid")
sleep 0.5
connects frontend "$backend_ip" 9090 || true
for _ in $(seq 50); do [ -s "$tmp/monitor.json" ] && break; sleep 0.1; done
check "monitor: a live drop (frontend -> backend:9090) is streamed as it happens" \
  jq -se "length > 0 and all(.destination.port == 9090 and .verdict == \"dropped\" and .source.identity == $frontend_identity)" "$tmp/monitor.json"
kill "$monitor_pid" 2>/dev/null || true
# policy trace: the rule that decides, and the realised map agreeing with it.
frontend_id=$(tessera endpoint get --container-id tsr-pe2e-frontend -o json | jq -r .id)
tessera policy trace --from-endpoint "$frontend_id" --to-endpoint "$backend_id" --port 8080 -o json >"$tmp/trace-allowed.json"
check "trace: frontend -> backend:8080 allowed by backend-allow-frontend, and the datapath agrees" jq -e \
  '.allowed and .ingress.decision == "allow" and .ingress.matches[0].name == "backend-allow-frontend" and (.ingress.datapath | startswith("allow")) and .egress.decision == "default-allow"' "$tmp/trace-allowed.json"
tessera policy trace --from-label app=other --to-ip "$backend_ip" --port 8080 -o json >"$tmp/trace-denied.json"
check "trace: other -> backend's IP:8080 denied by the ingress default (enforced by backend-allow-frontend)" jq -e \
  '(.allowed | not) and .ingress.decision == "default-deny" and .ingress.enforcedBy[0].name == "backend-allow-frontend" and (.ingress.matches | length) == 0' "$tmp/trace-denied.json"
check "trace: the table names the deciding rule" bash -c \
  "$TESSERA_BIN/tessera policy trace --from-endpoint $frontend_id --to-endpoint $backend_id --port 9090 --run-dir $RUN | grep -q 'datapath: deny'"
check "trace without a destination is refused" bash -c "! $TESSERA_BIN/tessera policy trace --from-endpoint $frontend_id --run-dir $RUN 2>/dev/null"

# Metrics: the kernel's drops as a Prometheus counter by direction, verdict and reason.
datapath_metric() {
  curl -s "http://127.0.0.1:$((mport + 2))/metrics" | awk -v k="$1" '$1 == k {print $2}'
}
for _ in $(seq 80); do [ -n "$(datapath_metric 'tessera_datapath_packets_total{direction="ingress",verdict="dropped",reason="policy-default"}')" ] && break; sleep 0.1; done
check "metrics: ingress policy-default drops counted in tessera_datapath_packets_total" \
  [ "$(datapath_metric 'tessera_datapath_packets_total{direction="ingress",verdict="dropped",reason="policy-default"}' | cut -d. -f1)" -gt 0 ]
check "metrics: the family has its # HELP" bash -c "curl -s http://127.0.0.1:$((mport + 2))/metrics | grep -q '^# HELP tessera_datapath_packets_total '"
check "flow stats: events received, none lost" bash -c \
  "[ \"\$($TESSERA_BIN/tessera datapath flows --run-dir $RUN -o json | jq '.received > 0 and .lost == 0')\" = true ]"

other_id=$(tessera endpoint get --container-id tsr-pe2e-other -o json | jq -r .id)
check "relabel other to frontend" tessera endpoint labels --container-id tsr-pe2e-other --label app=frontend -o json
check "relabelled other keeps its endpoint ID" [ "$(tessera endpoint get --container-id tsr-pe2e-other -o json | jq -r .id)" = "$other_id" ]
check "relabelled other -> backend:8080 connects" connects other "$backend_ip" 8080

check "policy deleted" tessera policy delete default/backend-allow-frontend
sleep 0.3
check "without policy, frontend -> backend:9090 connects (default allow)" connects frontend "$backend_ip" 9090

check "policy re-imported" tessera policy import "$tmp/policy.yaml"
sleep 0.3
check "policy back in force: frontend -> backend:9090 dropped" dropped frontend "$backend_ip" 9090

# held_connection PORT NAME: frontend holds a connection to a listener on backend:PORT that
# writes what it receives to $tmp/received-NAME; fd 7 feeds it (`echo … >&7`, closed with
# `exec 7>&-`), and "before" is sent at once.
held_connection() {
  ip netns exec tsr-pe2e-backend timeout 30 nc -l -p "$1" >"$tmp/received-$2" 2>/dev/null &
  bg_pids+=($!)
  sleep 0.3
  mkfifo "$tmp/feed-$2"
  ip netns exec tsr-pe2e-frontend nc -q 1 "$backend_ip" "$1" <"$tmp/feed-$2" >/dev/null 2>&1 &
  bg_pids+=($!)
  exec 7>"$tmp/feed-$2"
  echo before >&7
  sleep 0.3
}

# An allowed connection stays open across a restart of the datapath daemon.
cat >"$tmp/policy8081.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-allow-frontend-8081, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "8081", protocol: TCP}]}]
YAML
tessera policy import "$tmp/policy8081.yaml" >/dev/null
held_connection 8081 restart
datapath_pid=$(cat "$RUN/datapath.pid")
kill -TERM "$datapath_pid"
while kill -0 "$datapath_pid" 2>/dev/null; do sleep 0.05; done
"$TESSERA_BIN/tessera-datapathd" --run-dir "$RUN" --state-dir "$tmp/state" --bpf-pin-dir "$PIN" >>"$RUN/datapath.log" 2>&1 &
for _ in $(seq 200); do tessera status >/dev/null 2>&1 && break; sleep 0.05; done
echo after >&7
exec 7>&-
sleep 1
check "an open connection survived the datapathd restart" grep -qx after "$tmp/received-restart"
check "data before the restart arrived too" grep -qx before "$tmp/received-restart"
check "after the restart: other (now frontend) -> backend:8080 still connects" connects other "$backend_ip" 8080
check "after the restart: frontend -> backend:9090 still dropped" dropped frontend "$backend_ip" 9090

# A connection whose conntrack entries are gone (expired, or evicted from a full
# table) is tracked again from its next segment where the backend's policy allows
# both halves: frontend in to 7070, answers to anyone (egress not enforced). Its own
# port: the listener on 8081 above may still be closing.
held_connection 7070 evicted
ct_7070() { tessera datapath ct list -o json | jq '[.entries[] | select(.destinationPort == 7070)] | length'; }
check "conntrack tracks the open connection to 7070" [ "$(ct_7070)" -gt 0 ]
bpftool -j map dump pinned "$PIN/globals/tessera_ct" | jq -r '.[].key | join(" ")' |
  while read -r key; do bpftool map delete pinned "$PIN/globals/tessera_ct" key $key; done
check "every conntrack entry deleted" [ "$(tessera datapath ct list -o json | jq '.entries | length')" = 0 ]
echo after >&7
sleep 0.5
check "conntrack picked the connection up again mid-stream" [ "$(ct_7070)" -gt 0 ]
exec 7>&-
sleep 1
check "data after the entries were deleted arrived" grep -qx after "$tmp/received-evicted"

for pod in backend other frontend; do chain_del "$pod"; done
check "endpoints gone after DEL" [ "$(tessera endpoint list -o json | jq '.endpoints | length')" = 0 ]
e2e_result
