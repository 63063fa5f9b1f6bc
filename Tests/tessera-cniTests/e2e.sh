#!/usr/bin/env bash
# End-to-end: the real Tessera node (tessera node up) and the real Debian CNI plugins.
# Pods are network namespaces created here; each is attached by the chain ptp (host-local
# IPAM) -> tessera-cni, executed the way libcni does it: env vars, config on stdin, the
# previous plugin's result injected as prevResult, the final result cached and given to
# CHECK and DEL, DEL in reverse order, and a runtime's DEL after a failed ADD.
#
#   TESSERA_BIN=/path/to/dir/with/tessera-binaries sudo -E bash Tests/tessera-cniTests/e2e.sh
#
# Skips (exit 77, with the reason) unless root, /usr/lib/cni/ptp exists and TESSERA_BIN is set.
# Environment:
#   TESSERA_BIN        directory holding tessera and tessera-*d
#   TESSERA_CNI        the plugin binary (default <repo>/.build-cni/tessera-cni, built if missing)
#   TESSERA_CLI_OPTS   options telling `tessera endpoint get` where the node is
#                      (default: --run-dir $RUN)
#   TESSERA_E2E_FAKE=1 self-test of this harness against fake_endpointd.py instead of the
#                      daemons (needs python3-grpcio); everything else is real.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

skip() {
  echo "e2e: SKIP: $*"
  exit 77
}
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, veths)"
[ -x /usr/lib/cni/ptp ] && [ -x /usr/lib/cni/host-local ] || skip "/usr/lib/cni/ptp missing (apt-get install containernetworking-plugins)"
FAKE=${TESSERA_E2E_FAKE:-0}
if [ "$FAKE" != 1 ]; then
  [ -n "${TESSERA_BIN:-}" ] || skip "TESSERA_BIN is not set (directory with the tessera and tessera-*d binaries)"
  [ -x "$TESSERA_BIN/tessera" ] || skip "$TESSERA_BIN/tessera not found"
fi
command -v jq >/dev/null || skip "jq missing"

PLUGIN=${TESSERA_CNI:-$repo/.build-cni/tessera-cni}
if [ ! -x "$PLUGIN" ]; then
  make -s -C "$repo/Sources/tessera-cni" all || { echo "e2e: cannot build tessera-cni" >&2; exit 1; }
fi

tmp=$(mktemp -d /tmp/tsr-e2e.XXXXXX)
RUN=$tmp/run
PIN=/sys/fs/bpf/tessera-cni-e2e-$$
mkdir -p "$RUN" "$tmp/cache" "$tmp/ipam"
SOCK=$RUN/endpoint.sock
CLI_OPTS=(${TESSERA_CLI_OPTS:---run-dir $RUN})
NET=tsr-e2e
PODS=(1 2 3)
fake_pid=

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # description command...
  local d=$1
  shift
  if "$@"; then pass "$d"; else fail "$d"; fi
}

# --- the node ------------------------------------------------------------------------------
node_up() {
  rm -f "$SOCK" # a stale socket from the previous node must not count as up
  if [ "$FAKE" = 1 ]; then
    /usr/bin/python3 "$here/fake_endpointd.py" "$SOCK" "$RUN" >"$tmp/fake.log" 2>&1 &
    fake_pid=$!
  else
    "$TESSERA_BIN/tessera" node up --run-dir "$RUN" --state-dir "$tmp/state" --bpf-pin-dir "$PIN" --detach --no-supervise >"$tmp/node-up.log" 2>&1 || {
      cat "$tmp/node-up.log"
      return 1
    }
  fi
  for _ in $(seq 300); do [ -S "$SOCK" ] && return 0; sleep 0.1; done
  echo "e2e: no endpoint socket at $SOCK after 30 s"
  return 1
}
node_down() {
  if [ "$FAKE" = 1 ]; then
    [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null && wait "$fake_pid" 2>/dev/null
    fake_pid=
  else
    "$TESSERA_BIN/tessera" node down --run-dir "$RUN" >>"$tmp/node-down.log" 2>&1
  fi
}
# endpoint_get CONTAINER_ID: the CLI's JSON for the endpoint (an object), or fails.
endpoint_get() {
  if [ "$FAKE" = 1 ]; then
    jq -e --arg id "$1" '[.[] | select(.container_id == $id) | {id: (.id|tonumber), containerId: .container_id,
      state: (if .state == "ENDPOINT_STATE_READY" then "ready" else .state end), identity, labels, ips,
      policyRevision: (.policy_revision|tonumber)}] | first' "$RUN/endpoints.json"
  else
    "$TESSERA_BIN/tessera" endpoint get --container-id "$1" -o json "${CLI_OPTS[@]}" |
      jq -e 'if type == "array" then first else . end'
  fi
}

cleanup() {
  set +e
  for n in "${PODS[@]}"; do
    [ -f "$tmp/cache/pod-$n.json" ] && chain_del "$n" >/dev/null 2>&1
    ip netns del "tsr-e2e-pod-$n" 2>/dev/null
  done
  node_down >/dev/null 2>&1
  # Stray daemons of this run directory (node down failed): their pid files, if any.
  for f in "$RUN"/*.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
  done
  # Host routes ptp leaves when a DEL failed (its veth went away with the namespace).
  ip route show | awk '$1 ~ /^10\.199\.0\./ {print $1}' | while read -r r; do ip route del "$r" 2>/dev/null; done
  rm -rf "$tmp" "$PIN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- libcni, in bash -------------------------------------------------------------------------
ptp_conf() {
  printf '{"cniVersion":"1.0.0","name":"%s","type":"ptp","ipMasq":false,"ipam":{"type":"host-local","subnet":"10.199.0.0/24","dataDir":"%s"}}' \
    "$NET" "$tmp/ipam"
}
tsr_conf() {
  printf '{"cniVersion":"1.0.0","name":"%s","type":"tessera-cni","socketPath":"%s","timeoutMs":15000,"logFile":"%s","logLevel":"debug","args":{"cni":{"labels":["app=e2e","e2e:pod=pod-%s"]}}}' \
    "$NET" "$SOCK" "$tmp/tessera-cni.log" "$1"
}
with_prev() { # conf result: the conf with prevResult (libcni injects it for chained plugins)
  if [ -n "$2" ]; then jq -c --argjson prev "$2" '. + {prevResult: $prev}' <<<"$1"; else echo "$1"; fi
}
# exec_plugin BINARY COMMAND POD CONF: runs one plugin as libcni does; stdout is its output.
exec_plugin() {
  local bin=$1 cmd=$2 n=$3 conf=$4
  env -i PATH="$PATH" CNI_COMMAND="$cmd" CNI_CONTAINERID="e2e-$$-$n" CNI_NETNS="/var/run/netns/tsr-e2e-pod-$n" \
    CNI_IFNAME=eth0 CNI_PATH="/usr/lib/cni:$(dirname "$PLUGIN")" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-$n" "$bin" <<<"$conf"
}
add_ms=0
# chain_add N: ADD through the chain; caches the result. On failure the runtime's DEL runs.
chain_add() {
  local n=$1 r1 r2 rc t0
  ip netns add "tsr-e2e-pod-$n" || return 1
  r1=$(exec_plugin /usr/lib/cni/ptp ADD "$n" "$(ptp_conf)") || {
    echo "ptp ADD failed: $r1"
    return 1
  }
  t0=$(date +%s%N)
  r2=$(exec_plugin "$PLUGIN" ADD "$n" "$(with_prev "$(tsr_conf "$n")" "$r1")")
  rc=$?
  add_ms=$((($(date +%s%N) - t0) / 1000000))
  echo "$r2" >"$tmp/out-pod-$n.json"
  if [ "$rc" != 0 ]; then
    echo "$r1" >"$tmp/cache/pod-$n.json" # what the runtime knows: ptp's part succeeded
    chain_del "$n" >/dev/null
    return "$rc"
  fi
  echo "$r2" >"$tmp/cache/pod-$n.json"
}
# chain_del N: DEL in reverse order, each plugin given the cached result.
chain_del() {
  local n=$1 cached="" rc=0
  [ -f "$tmp/cache/pod-$n.json" ] && cached=$(cat "$tmp/cache/pod-$n.json")
  out=$(exec_plugin "$PLUGIN" DEL "$n" "$(with_prev "$(tsr_conf "$n")" "$cached")") || rc=$?
  [ "$rc" = 0 ] || echo "tessera-cni DEL: $out"
  exec_plugin /usr/lib/cni/ptp DEL "$n" "$(with_prev "$(ptp_conf)" "$cached")" >/dev/null || rc=$?
  [ "$rc" = 0 ] && rm -f "$tmp/cache/pod-$n.json"
  return "$rc"
}
# chain_check N: CHECK in order, each plugin given the cached result.
chain_check() {
  local n=$1 cached
  cached=$(cat "$tmp/cache/pod-$n.json")
  exec_plugin /usr/lib/cni/ptp CHECK "$n" "$(with_prev "$(ptp_conf)" "$cached")" || return 1
  exec_plugin "$PLUGIN" CHECK "$n" "$(with_prev "$(tsr_conf "$n")" "$cached")"
}
# tsr_direct COMMAND STDIN [VAR=value...]: tessera-cni alone with bad input; sets out and rc.
tsr_direct() {
  local cmd=$1 in=$2
  shift 2
  out=$(env -i PATH="$PATH" CNI_COMMAND="$cmd" CNI_CONTAINERID=e2e-direct CNI_NETNS=/var/run/netns/none \
    CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni "$@" "$PLUGIN" <<<"$in")
  rc=$?
}
code_is() { [ "$rc" != 0 ] && [ "$(jq -r .code <<<"$out" 2>/dev/null)" = "$1" ]; }
not() { ! "$@"; }
json_true() { # json jq-args...: the filter yields true
  local j=$1
  shift
  [ "$(jq "$@" <<<"$j" 2>/dev/null)" = true ]
}
endpoint_absent() { ! endpoint_get "$1" >/dev/null 2>&1; }

# --- the test --------------------------------------------------------------------------------
for n in "${PODS[@]}"; do ip netns del "tsr-e2e-pod-$n" 2>/dev/null; done
if ! node_up; then
  fail "node up"
  echo "e2e: 0 passed, 1 failed"
  exit 1
fi
pass "node up (endpoint socket $SOCK)"

for n in 1 2; do
  if chain_add "$n"; then
    pass "pod-$n: ptp + tessera-cni ADD (${add_ms} ms)"
  else
    fail "pod-$n: ADD: $(cat "$tmp/out-pod-$n.json" 2>/dev/null)"
    continue
  fi
  result=$(cat "$tmp/cache/pod-$n.json")
  ip=$(jq -r '.ips[0].address | split("/")[0]' <<<"$result")
  # Checked right after ADD returned, without waiting: ADD is synchronous.
  ep=$(endpoint_get "e2e-$$-$n")
  check "pod-$n: endpoint ready when ADD returned" [ "$(jq -r .state <<<"$ep")" = ready ]
  check "pod-$n: endpoint has an identity" [ "$(jq -r '.identity // 0' <<<"$ep")" -gt 0 ]
  check "pod-$n: endpoint has the pod IP $ip" json_true "$ep" --arg ip "$ip" '.ips | map(split("/")[0]) | index($ip) != null'
  check "pod-$n: endpoint carries the CNI labels" json_true "$ep" '.labels | tostring | contains("e2e")'
  check "pod-$n: ADD result is ptp's result" [ "$(jq -S 'del(.cniVersion)' <<<"$result")" = \
    "$(jq -S 'del(.cniVersion)' <<<"$(cat "$tmp/cache/pod-$n.json")")" ]
  check "pod-$n: host veth from ptp" [ -n "$(jq -r '.interfaces[] | select(.sandbox == null) | .name' <<<"$result")" ]
  check "pod-$n: CHECK passes" chain_check "$n"
done
id1=$(endpoint_get "e2e-$$-1" | jq -r .id)
id2=$(endpoint_get "e2e-$$-2" | jq -r .id)
check "two pods, two endpoints" [ -n "$id1" ] && [ "$id1" != "$id2" ]

# The plugin's own overhead: its exec-to-exit time minus the RPC, from its debug log.
if [ -f "$tmp/tessera-cni.log" ]; then
  total=$(grep -m1 'ADD container=e2e-'"$$"'-1 ifname=eth0 result=ok' "$tmp/tessera-cni.log" | sed -n 's/.* time=\([0-9.]*\)ms.*/\1/p')
  rpc=$(grep -m1 'debug grpc /tessera.endpoint.v1.EndpointService/CreateEndpoint' "$tmp/tessera-cni.log" | sed -n 's/.* time=\([0-9.]*\)ms.*/\1/p')
  [ -n "$total" ] && [ -n "$rpc" ] &&
    echo "e2e: tessera-cni ADD: ${total} ms inside the plugin, ${rpc} ms of it in CreateEndpoint(sync):" \
      "plugin overhead $(awk -v t="$total" -v r="$rpc" 'BEGIN { printf "%.3f", t - r }') ms + exec"
fi
# exec -> exit of the plugin itself (VERSION: no RPC), mean of 50 runs.
t0=$(date +%s%N)
for _ in $(seq 50); do CNI_COMMAND=VERSION "$PLUGIN" </dev/null >/dev/null; done
echo "e2e: tessera-cni exec->exit without RPC: $(awk -v ns="$(($(date +%s%N) - t0))" 'BEGIN { printf "%.3f", ns / 50 / 1e6 }') ms"

# tessera-cni's own DEL takes the host veth down before the endpoint's programs go: ptp
# deletes the veth only after it, and until then the veth would pass anything.
host_veth=$(jq -r '[.interfaces[] | select((.sandbox // "") == "")][0].name // empty' "$tmp/cache/pod-1.json")
exec_plugin "$PLUGIN" DEL 1 "$(with_prev "$(tsr_conf 1)" "$(cat "$tmp/cache/pod-1.json")")" >/dev/null
link_down() { [ -n "$1" ] && ip -j link show dev "$1" | jq -e '.[0].flags | index("UP") | not' >/dev/null; }
check "pod-1: tessera-cni DEL takes the host veth ($host_veth) down before ptp deletes it" link_down "$host_veth"

# DEL, then DEL again.
if chain_del 1; then pass "pod-1: DEL"; else fail "pod-1: DEL"; fi
check "pod-1: endpoint gone after DEL" endpoint_absent "e2e-$$-1"
if chain_del 1; then pass "pod-1: second DEL succeeds"; else fail "pod-1: second DEL"; fi

# VERSION
tsr_direct VERSION '{"cniVersion":"1.0.0"}'
check "VERSION" [ "$rc" = 0 -a "$(jq -c '[.cniVersion, .supportedVersions]' <<<"$out")" = '["1.0.0",["0.4.0","1.0.0","1.1.0"]]' ]

# Every error code from a real bad input.
tsr_direct ADD '{"cniVersion":"0.3.1","name":"tsr-e2e","type":"tessera-cni"}'
check "code 1: unsupported cniVersion 0.3.1" code_is 1
tsr_direct ADD "$(tsr_conf 9)" CNI_CONTAINERID=
check "code 4: CNI_CONTAINERID missing" code_is 4
tsr_direct ADD '{"cniVersion": "1.0.0", "name": '
check "code 6: truncated JSON" code_is 6
tsr_direct ADD "$(tsr_conf 9)"
check "code 7: ADD without prevResult" code_is 7
tsr_direct ADD "$(jq -c '.timeoutMs = "soon"' <<<"$(tsr_conf 9)")"
check "code 7: timeoutMs of the wrong type" code_is 7

# The endpoint service stopped: ADD fails with 11 and nothing is left behind.
node_down
chain_add 3
rc=$?
out=$(cat "$tmp/out-pod-3.json")
check "code 11: ADD with the node down" code_is 11
ip3=$(jq -r '.ips[0].address | split("/")[0]' "$tmp/cache/pod-3.json" 2>/dev/null)
check "node down: no IPAM reservation left for pod-3" not grep -rqs "e2e-$$-3" "$tmp/ipam"
check "node down: no host route left for pod-3" [ -z "$(ip route show | grep "^${ip3:-none} ")" ]
ip netns del tsr-e2e-pod-3 2>/dev/null
# DEL of pod-2 with the service down succeeds (the runtime can release the
# address): the deletion is queued next to the socket, and the node deletes the
# endpoint before it serves again.
out=$(exec_plugin "$PLUGIN" DEL 2 "$(with_prev "$(tsr_conf 2)" "$(cat "$tmp/cache/pod-2.json")")")
rc=$?
check "DEL with the node down: success" [ "$rc" = 0 ]
check "... the deletion is queued" bash -c "ls '$RUN'/deletion-queue/*@eth0.json"
if node_up; then
  if [ "$FAKE" = 1 ]; then
    pass "pod-2: queued deletion (fake service: not run)"
  else
    check "the node ran the queued deletion before serving: pod-2's endpoint is gone" endpoint_absent "e2e-$$-2"
    check "... and the queue is empty" bash -c "[ -z \"\$(ls -A '$RUN/deletion-queue')\" ]"
  fi
  if chain_del 2; then pass "pod-2: DEL again once the node is back (idempotent)"; else fail "pod-2: DEL again once the node is back"; fi
  node_down
fi

echo "e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
