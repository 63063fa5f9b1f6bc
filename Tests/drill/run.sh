#!/usr/bin/env bash
# Failure drill: churn (creates and deletes through the real CLI and CNI
# plugin) while each daemon in turn is killed with SIGKILL and restarted with
# its own command line. Then, once converged, asserts:
#   - no duplicate identities (one ID per label set, one label set per ID);
#   - the node's references per identity equal its live endpoints;
#   - every endpoint is ready, with its identity and policy in the datapath;
#   - endpoints that existed before endpointd was killed are restored with
#     the same IDs and identities;
#   - while endpointd is down the CNI plugin returns code 11 and nothing is
#     left behind.
# Bounded: ROUNDS (default 2) rounds of four kills. Memory datapath, so it
# runs anywhere the daemons run; the kernel-level checks live in the e2e tests.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/drill/run.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
skip() { echo "drill: SKIP: $*"; exit 0; }
[ -n "${TESSERA_BIN:-}" ] && [ -x "$TESSERA_BIN/tessera" ] || skip "TESSERA_BIN is not set to the built binaries"
command -v jq >/dev/null || skip "jq missing"
cni=$repo/.build-cni/tessera-cni
[ -x "$cni" ] || skip "tessera-cni not built (make -C Sources/tessera-cni)"
rounds=${ROUNDS:-2}

tmp=$(mktemp -d /tmp/tsr-drill.XXXXXX)
RUN=$tmp/run
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }
churn_pid=
cleanup() {
  [ -n "$churn_pid" ] && kill "$churn_pid" 2>/dev/null && wait "$churn_pid" 2>/dev/null
  "$TESSERA_BIN/tessera" node down --run-dir "$RUN" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

violations=0 checks=0 kills=0
violation() { echo "drill: VIOLATION: $*"; violations=$((violations + 1)); }
check() { checks=$((checks + 1)); "$@" || true; }

tessera node up --detach --state-dir "$tmp/state" --datapath-backend memory >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; exit 1; }
cat >"$tmp/policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: drill, namespace: default}
spec:
  endpointSelector: {matchLabels: {tier: backend}}
  ingress: [{fromEndpoints: [{matchLabels: {tier: frontend}}], toPorts: [{ports: [{port: "8080", protocol: TCP}]}]}]
YAML
tessera policy import "$tmp/policy.yaml" >/dev/null || exit 1

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

cni_add() { # container: ADD with a minimal prevResult, as a runtime would after ptp
  printf '{"cniVersion":"1.0.0","name":"drill","type":"tessera-cni","socketPath":"%s","prevResult":{"cniVersion":"1.0.0","interfaces":[],"ips":[{"address":"10.253.0.9/24"}]}}' "$RUN/endpoint.sock" |
    env -i CNI_COMMAND=ADD CNI_CONTAINERID="$1" CNI_NETNS=/var/run/netns/none CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
      CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$1" "$cni"
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
      out=$(cni_add drill-cni-down); status=$?
      check [ "$status" != 0 ] || violation "CNI ADD succeeded with endpointd down"
      check jq -e '.code == 11' <<<"$out" >/dev/null || violation "CNI ADD with endpointd down did not return code 11: $out"
    fi
    "${cmdline[@]}" >>"$RUN/$service.log" 2>&1 &
    disown
    wait_healthy
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
# References equal live endpoints, per identity.
while read -r id count; do
  refs=$(jq --argjson id "$id" '[.identities[] | select(.id == $id) | .references] | first // 0' <<<"$identities")
  check [ "$refs" = "$count" ] || violation "identity $id: $refs references for $count live endpoints"
done < <(jq -r '[.endpoints[] | .identity] | group_by(.) | map("\(.[0]) \(length)") | .[]' <<<"$endpoints")
while read -r id refs; do
  count=$(jq --argjson id "$id" '[.endpoints[] | select(.identity == $id)] | length' <<<"$endpoints")
  check [ "$refs" = "$count" ] || violation "identity $id holds $refs references but $count endpoints use it (leak)"
done < <(jq -r '.identities[] | select(.id >= 256 and .references > 0) | "\(.id) \(.references)"' <<<"$identities")
# Every endpoint ready and realised with its identity.
while read -r id identity state; do
  check [ "$state" = ready ] || violation "endpoint $id is $state"
  realised=$(tessera datapath policy get "$id" -o json 2>/dev/null | jq -r '"\(.identity) \(.realizedRevision)"')
  check [ "${realised% *}" = "$identity" ] && [ "${realised#* }" -ge 1 ] || violation "endpoint $id: datapath has '$realised', want identity $identity realised"
done < <(jq -r '.endpoints[] | "\(.id) \(.identity) \(.state)"' <<<"$endpoints")

echo "drill: $rounds rounds, $kills kills, $created creates returned success, $live live endpoints, $checks invariant checks, $violations violations"
[ "$violations" = 0 ]
