#!/usr/bin/env bash
# `tessera node up --cluster` end to end: the CLI starts a whole local cluster
# (etcd, 2 identity + 2 policy replicas on mutual TLS, 2 nodes on eBPF), and:
#  1. bad inputs are refused with a clear message (--nodes 0/100, a busy
#     --base-port, a second cluster in the same run dir, not root);
#  2. node status --cluster / tessera status on the run dir: every component serving;
#  3. pods made with each node's pod helper (tessera-cni + host-local) get
#     one identity per label set across nodes;
#  4. one policy imported through node-1's CLI is enforced on both nodes with
#     real TCP (allowed pair connects, denied pair does not, also across nodes);
#  5. with one identityd replica SIGKILLed, a pod with a new label set is still created;
#  6. node down --cluster leaves no network namespace, no pinned map, no
#     process; a second down has nothing to stop.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/cluster/node_up_cluster_e2e.sh
#
# Skips (exit 77) with a reason without root, bpffs, etcd, openssl, the CNI
# plugins, tessera-cni or nc. NODE_UP_CLUSTER_KEEP=1 keeps the temp dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
started=$SECONDS
name=node-up-cluster-e2e
E2E_NAME=$name
EVENTUALLY_INTERVAL=0.2
. "$repo/Tests/lib/e2e.sh"
require_node
mountpoint -q /sys/fs/bpf || skip "bpffs is not mounted at /sys/fs/bpf"
require_cni_plugins host-local
# Where LocalEtcdCluster looks for it.
[ -x /usr/bin/etcd ] || [ -x /usr/local/bin/etcd ] || [ -x /usr/sbin/etcd ] || skip "etcd missing (etcd-server)"
require_commands jq nc openssl python3

tmp=$(mktemp -d /tmp/tsr-nuc.XXXXXX)
ROOT=$tmp/cluster
T=$TESSERA_BIN/tessera
pids=() # listeners started here
exec 3>&1 4>&2
cleanup() {
  local status=$?
  set +e
  exec 1>&3 2>&4
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  [ -f "$ROOT/cluster.json" ] && "$T" node down --cluster --run-dir "$ROOT" >/dev/null 2>&1
  if [ "$status" != 0 ] && [ "$status" != 77 ]; then
    echo "$name: last lines of the logs:"
    for log in "$ROOT"/etcd/*.log "$ROOT"/control/*/*.log "$ROOT"/nodes/*/*.log "$tmp"/*.out; do
      [ -f "$log" ] && { echo "--- $log"; tail -n 8 "$log"; }
    done
  fi
  if [ "${NODE_UP_CLUSTER_KEEP:-}" = 1 ]; then echo "$name: kept $tmp"; else rm -rf "$tmp"; fi
  echo "$name: $((SECONDS - started)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'echo "$name: interrupted" >&4; exit 130' INT TERM

refused() { # description expected-text command...: fails with a message containing the text
  local d=$1 want=$2; shift 2
  local out
  if out=$("$@" 2>&1); then fail "$d: succeeded"; return; fi
  if grep -qF -- "$want" <<<"$out"; then pass "$d: $(head -n 1 <<<"$out")"; else fail "$d: '$out' lacks '$want'"; fi
}

# ---------------------------------------------------------------- 1. bad inputs
refused "--nodes 0 refused" "--nodes must be 1 to 16, not 0" "$T" node up --cluster --nodes 0 --run-dir "$ROOT"
refused "--nodes 100 refused" "--nodes must be 1 to 16, not 100" "$T" node up --cluster --nodes 100 --run-dir "$ROOT"
refused "--etcd-members 2 refused" "--etcd-members must be 1 or 3" "$T" node up --cluster --etcd-members 2 --run-dir "$ROOT"
refused "--nodes without --cluster refused" "--nodes goes with --cluster" "$T" node up --nodes 2 --run-dir "$ROOT"
busy=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -c 'import socket, sys, time; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(60)' "$((busy + 2))" &
pids+=($!)
eventually 5 bash -c "ss -ltn | grep -q '127.0.0.1:$((busy + 2)) '"
refused "a busy --base-port refused" "port $((busy + 2)) on 127.0.0.1 is in use" "$T" node up --cluster --base-port "$busy" --run-dir "$ROOT"
[ ! -e "$ROOT/cluster.json" ] && pass "nothing was laid out by the refused starts" || fail "a refused start left $ROOT/cluster.json"
if command -v setpriv >/dev/null && setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$T" 2>/dev/null; then
  refused "not root refused" "needs root" setpriv --reuid=65534 --regid=65534 --clear-groups "$T" node up --cluster --run-dir "$tmp/nobody"
else
  echo "note: the not-root case is not checked here ($T is not executable by nobody)"
fi

# ---------------------------------------------------------------- 2. up, status
if ! "$T" node up --cluster --nodes 2 --detach --run-dir "$ROOT" >"$tmp/up.out" 2>&1; then
  fail "node up --cluster --nodes 2 --detach"
  cat "$tmp/up.out"
  exit 1
fi
pass "node up --cluster --nodes 2 --detach ($((SECONDS - started)) s in)"
sed -n '/^Local cluster up/,$p' "$tmp/up.out" | sed 's/^/  | /'
for want in "run dir $ROOT/nodes/node-1" "run dir $ROOT/nodes/node-2" "$ROOT/nodes/node-1/pod add" \
  "tessera --run-dir $ROOT/nodes/node-1 endpoint list" "Logs: $ROOT/etcd/*.log"; do
  grep -qF -- "$want" "$tmp/up.out" && pass "the summary says '$want'" || fail "the summary lacks '$want'"
done
refused "a second cluster in the same run dir refused" "a cluster is already running in $ROOT" "$T" node up --cluster --detach --run-dir "$ROOT"

"$T" node status --cluster --run-dir "$ROOT" -o json >"$tmp/status.json" || true
jq -e '.healthy and ([.components[] | select(.health == "serving")] | length) == 9' "$tmp/status.json" >/dev/null &&
  pass "node status --cluster -o json: 9 components serving (1 etcd, 2 identity, 2 policy, 2 x datapath + endpoint)" ||
  { fail "node status --cluster -o json"; cat "$tmp/status.json"; }
"$T" status --run-dir "$ROOT" >"$tmp/status.txt" 2>&1 && grep -q "node-2/endpoint  serving" "$tmp/status.txt" &&
  pass "tessera status on the cluster's run dir shows every component" || { fail "tessera status on the cluster's run dir"; cat "$tmp/status.txt"; }
"$T" status --run-dir "$ROOT/nodes/node-1" -o json | jq -e '[.services[] | select(.health == "serving")] | length == 4' >/dev/null &&
  pass "tessera status --run-dir <node-1>: its datapath and endpoint, and the identity and policy replicas it reaches" ||
  fail "tessera status --run-dir <node-1>"
plan=$ROOT/cluster.json
pin_root=$(jq -r .pinRoot "$plan")
netns_prefix=$(jq -r .netnsPrefix "$plan")
for n in 1 2; do
  [ -d "$(jq -r ".nodes[$((n - 1))].pinDirectory" "$plan")" ] && pass "node-$n pins its maps in its own directory under $pin_root" || fail "node-$n has no pin directory"
done
all_pids=$(jq -r '.components[] | .pid // empty' "$tmp/status.json" | sort -u)

# ---------------------------------------------------------------- 3. pods through the CNI plugin
pod() { "$ROOT/nodes/node-$1/pod" "${@:2}"; }
added=0
for spec in 1:backend1:backend 1:frontend:frontend 2:backend2:backend 2:other:other; do
  IFS=: read -r n p app <<<"$spec"
  if pod "$n" add "$p" "app=$app" >"$tmp/add-$p.out" 2>&1; then added=$((added + 1)); else fail "pod add $p on node-$n: $(cat "$tmp/add-$p.out")"; fi
done
[ "$added" = 4 ] && pass "4 pods added with the nodes' pod helpers (tessera-cni + host-local): $(cat "$tmp"/add-*.out | tr '\n' ';')" || exit 1
declare -A node_of=([backend1]=1 [frontend]=1 [backend2]=2 [other]=2)
ip_of() { pod "${node_of[$1]}" ip "$1"; }
identity_of() { "$T" endpoint get --container-id "$(jq -r ".nodes[$((${node_of[$1]} - 1))].cniNetwork" "$plan")-$1" --run-dir "$ROOT/nodes/node-${node_of[$1]}" -o json | jq -r .identity; }
id1=$(identity_of backend1) id2=$(identity_of backend2)
[ -n "$id1" ] && [ "$id1" = "$id2" ] && [ "$id1" != "$(identity_of other)" ] &&
  pass "app=backend has one identity on node-1 and node-2 ($id1), other has another" ||
  fail "identities across nodes: backend1 $id1, backend2 $id2"
for b in backend1 backend2; do
  # The helper itself, not a function in a subshell: it execs into nc, so $! is nc's pid.
  "$ROOT/nodes/node-${node_of[$b]}/pod" exec "$b" nc -lk -p 8080 >/dev/null 2>&1 &
  pids+=($!)
done
connects() { pod "${node_of[$1]}" exec "$1" nc -z -w 1 "$(ip_of "$2")" 8080; }
dropped() { ! connects "$@"; }
eventually 10 connects other backend1 && eventually 10 connects frontend backend2 &&
  pass "before any policy: other@node-2 -> backend1@node-1 and frontend@node-1 -> backend2@node-2 connect" ||
  fail "before any policy: pods do not reach each other across nodes"

# ---------------------------------------------------------------- 4. one import through node-1's CLI
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
"$T" policy import "$tmp/policy.yaml" --run-dir "$ROOT/nodes/node-1" >"$tmp/import.out" 2>&1 &&
  pass "policy imported through node-1's CLI (tessera --run-dir $ROOT/nodes/node-1 policy import)" ||
  fail "policy import through node-1's CLI: $(cat "$tmp/import.out")"
for b in backend1 backend2; do
  n=${node_of[$b]}
  if eventually 20 dropped other "$b" && eventually 10 connects frontend "$b"; then
    pass "node-$n enforces it: frontend@node-1 -> $b:8080 connects, other@node-2 -> $b:8080 dropped"
  else
    fail "node-$n enforces it (frontend -> $b connects, other -> $b dropped)"
  fi
done

# ---------------------------------------------------------------- 5. an identity replica down
id1_pid=$(cat "$ROOT/control/replica-1/identity.pid")
kill -9 "$id1_pid"
eventually 5 bash -c "! kill -0 $id1_pid"
if pod 2 add afterkill app=after-kill >"$tmp/add-afterkill.out" 2>&1; then
  node_of[afterkill]=2
  pass "identityd replica 1 SIGKILLed: a pod with a new label set is still created on node-2 (identity $(identity_of afterkill))"
else
  fail "a create with identityd replica 1 down: $(cat "$tmp/add-afterkill.out")"
fi
"$T" node status --cluster --run-dir "$ROOT" -o json >"$tmp/status2.json" || true
jq -e '(.healthy | not) and ([.components[] | select(.component == "identity-1")][0].health == "down")' "$tmp/status2.json" >/dev/null &&
  pass "node status --cluster reports identity-1 down and the cluster unhealthy" || fail "node status --cluster after the kill: $(jq -c '[.components[] | {component, health}]' "$tmp/status2.json")"

# ---------------------------------------------------------------- 6. down
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
pids=()
"$T" node down --cluster --run-dir "$ROOT" >"$tmp/down.out" 2>&1 && pass "node down --cluster" || fail "node down --cluster: $(cat "$tmp/down.out")"
sed 's/^/  | /' "$tmp/down.out"
left_ns=$(ip netns list | awk '{print $1}' | grep "^$netns_prefix" || true)
[ -z "$left_ns" ] && pass "no network namespace of the cluster is left" || fail "namespaces left: $left_ns"
[ ! -e "$pin_root" ] && pass "no pinned map or program is left ($pin_root is gone)" || fail "pins left: $(find "$pin_root" | head)"
left_pids=
# A zombie is gone too: detached daemons are reaped by PID 1, which some container inits do late.
alive() { [ -r "/proc/$1/stat" ] && ! sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | grep -q '^[ZX]'; }
for pid in $all_pids; do alive "$pid" && left_pids+=" $pid"; done
left_cmd=$(pgrep -f -- "$ROOT" || true)
[ -z "$left_pids" ] && [ -z "$left_cmd" ] && pass "no process of the cluster is left" || fail "processes left:$left_pids $left_cmd"
"$T" node down --cluster --run-dir "$ROOT" >"$tmp/down2.out" 2>&1 && grep -q "nothing to stop" "$tmp/down2.out" &&
  pass "a second node down --cluster: $(cat "$tmp/down2.out")" || fail "a second node down --cluster: $(cat "$tmp/down2.out")"
if "$T" node status --cluster --run-dir "$ROOT" -o json >"$tmp/status3.json" 2>/dev/null; then
  fail "node status --cluster after down succeeded"
else
  jq -e '[.components[] | select(.health != "down")] | length == 0' "$tmp/status3.json" >/dev/null &&
    pass "node status --cluster after down: every component down, exit 1" || fail "node status after down: $(cat "$tmp/status3.json")"
fi

e2e_result "($((SECONDS - started)) s)"
