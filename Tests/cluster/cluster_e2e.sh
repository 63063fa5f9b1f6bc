#!/usr/bin/env bash
# A simulated cluster on one machine: a 3-member etcd, 2 identity-service and
# 2 policy-service replicas on loopback TCP with mutual TLS (certificates made
# here with openssl), and 4 nodes (endpointd + datapathd each, own run dir,
# state dir, node name, bpf pin dir and pod subnet) whose pods are attached
# through ptp + host-local + tessera-cni in network namespaces.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/cluster/cluster_e2e.sh
#
# Checks (one ok/FAIL line each; any FAIL fails the script):
#  1. one `tessera policy import` on one policy replica is enforced on all four
#     nodes with real TCP across nodes (allowed peer connects, denied does not);
#  2. equal label sets get one identity on every node; both replicas agree;
#  3. SIGKILL of one identityd and one policyd replica during a create churn:
#     no failed create for known label sets, no duplicate identity in etcd,
#     references of live pods kept (also once the dead replica's lease is gone),
#     none leaked after deletes (each node keeps its last reference to an
#     identity for the release delay, then gives it back), and a policy imported after the kill is
#     enforced on every node (the watches failed over);
#  4. a node certificate cannot release or resync another node's references;
#  5. a client without a certificate (or with a stranger CA's) is refused;
#  6. a node that dies for good (endpointd SIGKILLed) loses its references
#     with its own lease after the TTL while the others keep theirs, and
#     restores them when it comes back;
#  7. with every identity and policy replica down, a pod whose label set its
#     node already holds is still created through the CNI plugin with its
#     policy in force, a new label set gets CNI code 11, and the references
#     are exact once the replicas are back.
# Skips (exit 77) with a reason without root, bpffs/eBPF, etcd, the CNI
# plugins, openssl, or python3-grpcio. CLUSTER_KEEP=1 keeps the temp dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
started=$SECONDS
E2E_NAME=cluster-e2e
EVENTUALLY_INTERVAL=0.2
. "$repo/Tests/lib/e2e.sh"
require_node
mountpoint -q /sys/fs/bpf || skip "bpffs is not mounted at /sys/fs/bpf"
require_cni_plugins ptp host-local
require_commands etcd etcdctl jq nc openssl protoc
/usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null || skip "python3-grpcio / python3-protobuf missing"

tmp=$(mktemp -d /tmp/tsr-cl.XXXXXX)
tag=cl$$
NODES=(1 2 3 4)
REPLICAS=(1 2)
PREFIX=/tessera/identities
# Nodes keep their last reference to an identity this long (seconds) after its last pod went.
RELEASE_DELAY=3
pids=()        # every daemon and helper started here
etcd_pids=()
netns_made=()  # pod netns names, removed by cleanup even if a DEL failed
kill_replica_id=
kill_replica_pol=

# The script's own stdout/stderr: a trap may run inside a command whose output goes to /dev/null.
exec 3>&1 4>&2
cleanup() {
  local status=$?
  set +e
  exec 1>&3 2>&4
  if declare -f chain_del >/dev/null; then
    for n in "${NODES[@]}"; do
      on_node "$n"
      for f in "$CHAIN_STATE"/*.json; do [ -f "$f" ] && chain_del "$(basename "$f" .json)"; done
    done
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for ns in "${netns_made[@]}"; do ip netns del "$ns" 2>/dev/null; done
  for n in "${NODES[@]}"; do rm -rf "/sys/fs/bpf/tsr-$tag-n$n"; done
  for pid in "${etcd_pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if [ "$status" != 0 ] && [ "$status" != 77 ]; then
    echo "cluster-e2e: last lines of the logs:"
    for log in "$tmp"/*/run/*.log "$tmp"/etcd-*.log; do [ -f "$log" ] && { echo "--- $log"; tail -n 8 "$log"; }; done
  fi
  if [ "${CLUSTER_KEEP:-}" = 1 ]; then echo "cluster-e2e: kept $tmp"; else rm -rf "$tmp"; fi
  echo "cluster-e2e: $((SECONDS - started)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'echo "cluster-e2e: interrupted" >&4; exit 130' INT TERM


# ---------------------------------------------------------------- etcd, 3 members
declare -A cport pport
cluster_spec=
for m in 1 2 3; do
  cport[$m]=$(free_port) pport[$m]=$(free_port)
  cluster_spec+="${cluster_spec:+,}m$m=http://127.0.0.1:${pport[$m]}"
done
ENDPOINTS=http://127.0.0.1:${cport[1]},http://127.0.0.1:${cport[2]},http://127.0.0.1:${cport[3]}
STORE=etcd:$ENDPOINTS
etcdctl() { ETCDCTL_API=3 command etcdctl --endpoints "$ENDPOINTS" --command-timeout 5s "$@"; }
for m in 1 2 3; do
  etcd --name "m$m" --data-dir "$tmp/etcd-m$m" \
    --listen-client-urls "http://127.0.0.1:${cport[$m]}" --advertise-client-urls "http://127.0.0.1:${cport[$m]}" \
    --listen-peer-urls "http://127.0.0.1:${pport[$m]}" --initial-advertise-peer-urls "http://127.0.0.1:${pport[$m]}" \
    --initial-cluster "$cluster_spec" --initial-cluster-token "$tag" --initial-cluster-state new \
    >"$tmp/etcd-m$m.log" 2>&1 &
  etcd_pids+=($!)
done
etcd_healthy() { [ "$(etcdctl endpoint health 2>&1 | grep -c 'is healthy')" = 3 ]; }
eventually 30 etcd_healthy || { echo "cluster-e2e: etcd cluster did not become healthy"; exit 1; }
echo "cluster-e2e: etcd: 3 members at $ENDPOINTS"

# ---------------------------------------------------------------- certificates
pki=$tmp/pki
mkdir -p "$pki"
ossl() { (cd "$pki" && openssl "$@" >/dev/null 2>&1); }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=tessera-cluster-ca -keyout ca.key -out ca.pem
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=stranger-ca -keyout stranger-ca.key -out stranger-ca.pem
cert() { # name san-dns ca
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" -keyout "$1.key" -out "$1.csr"
  echo "subjectAltName=DNS:$2" >"$pki/$1.ext"
  ossl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.pem"
}
for r in "${REPLICAS[@]}"; do cert "identity-$r" "identity-$r" ca; cert "policy-$r" "policy-$r" ca; done
for n in "${NODES[@]}"; do cert "node-$n" "node-$n" ca; done
cert stranger node-1 stranger-ca # claims to be node-1, signed by another CA
tls() { echo --tls-cert-file "$pki/$1.pem" --tls-key-file "$pki/$1.key" --tls-ca-file "$pki/ca.pem"; }

# ---------------------------------------------------------------- identity and policy replicas
declare -A id_port pol_port id_pid pol_pid
for r in "${REPLICAS[@]}"; do id_port[$r]=$(free_port) pol_port[$r]=$(free_port); done
ID_ADDR=127.0.0.1:${id_port[1]},127.0.0.1:${id_port[2]}
POL_ADDR=127.0.0.1:${pol_port[1]},127.0.0.1:${pol_port[2]}
daemon() { # run-dir log-name executable args...
  local dir=$1 name=$2 exe=$3; shift 3
  mkdir -p "$dir"
  "$TESSERA_BIN/$exe" --run-dir "$dir" "$@" >>"$dir/$name.log" 2>&1 &
  pids+=($!)
}
serving() { # run-dir service (status exits 1 while any of the four is missing: read its JSON anyway)
  { "$TESSERA_BIN/tessera" status --run-dir "$1" -o json --timeout 2 2>/dev/null || true; } |
    jq -e --arg s "$2" '.services[] | select(.service == $s) | .health == "serving"'
}
# Replica r: identityd and policyd share a run dir (identityd announces new
# identities to the policyd beside it; policyd follows both identityd replicas).
for r in "${REPLICAS[@]}"; do
  ctl=$tmp/ctl$r/run
  # A short lease: the keys of a replica killed below expire within the test.
  daemon "$ctl" identityd tessera-identityd --state-dir "$tmp/ctl$r/state" --node-name "identity-$r" \
    --listen "127.0.0.1:${id_port[$r]}" $(tls "identity-$r") --identity-store "$STORE" --etcd-lease-ttl 5
  id_pid[$r]=$!
  daemon "$ctl" policyd tessera-policyd --state-dir "$tmp/ctl$r/state" --node-name "policy-$r" \
    --listen "127.0.0.1:${pol_port[$r]}" $(tls "policy-$r") --policy-store "$STORE" --identity-address "$ID_ADDR"
  pol_pid[$r]=$!
done
for r in "${REPLICAS[@]}"; do
  eventually 60 serving "$tmp/ctl$r/run" identity || { echo "cluster-e2e: identityd $r not serving"; exit 1; }
  eventually 60 serving "$tmp/ctl$r/run" policy || { echo "cluster-e2e: policyd $r not serving"; exit 1; }
done
echo "cluster-e2e: identity replicas at $ID_ADDR, policy replicas at $POL_ADDR (mTLS)"

# ---------------------------------------------------------------- 4 nodes
on_node() { # n: points the tessera CLI and the CNI chain at node n
  NODE=$1
  RUN=$tmp/n$1/run
  CHAIN_NAME=tsr-$tag-n$1 CHAIN_STATE=$tmp/n$1/cni CHAIN_NETNS_PREFIX=tsr-$tag-
  CHAIN_SOCKET=$RUN/endpoint.sock CHAIN_CNI=$repo/.build-cni/tessera-cni
  CHAIN_SUBNET=10.196.$1.0/24 CHAIN_ROUTES='[{"dst":"10.196.0.0/16"}]'
}
. "$repo/scripts/lib/cni-chain.sh"
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }
for n in "${NODES[@]}"; do
  daemon "$tmp/n$n/run" datapathd tessera-datapathd --state-dir "$tmp/n$n/state" --node-name "node-$n" \
    --backend bpf --bpf-pin-dir "/sys/fs/bpf/tsr-$tag-n$n"
done
for n in "${NODES[@]}"; do
  eventually 60 serving "$tmp/n$n/run" datapath || { echo "cluster-e2e: datapathd $n not serving"; exit 1; }
done
backend=$({ "$TESSERA_BIN/tessera" status --run-dir "$tmp/n1/run" -o json 2>/dev/null || true; } | jq -r '.services[] | select(.service=="datapath") | .backend' || true)
case $backend in bpf*) ;; *) skip "the datapath runs '$backend', not eBPF" ;; esac
for n in "${NODES[@]}"; do
  daemon "$tmp/n$n/run" endpointd tessera-endpointd --state-dir "$tmp/n$n/state" --node-name "node-$n" \
    --identity-address "$ID_ADDR" --policy-address "$POL_ADDR" --identity-release-delay "$RELEASE_DELAY" $(tls "node-$n") --cluster-store "$STORE"
done
for n in "${NODES[@]}"; do
  eventually 60 serving "$tmp/n$n/run" endpoint || { echo "cluster-e2e: endpointd $n not serving"; exit 1; }
done
echo "cluster-e2e: 4 nodes up ($((SECONDS - started)) s)"

# Pods: a backend on every node; frontends on nodes 1 and 3, others on 2 and 4.
declare -A pod_labels pod_node pod_ip
add_pod() { # node pod app
  on_node "$1"
  netns_made+=("$CHAIN_NETNS_PREFIX$2")
  pod_node[$2]=$1 pod_labels[$2]=$3
  chain_add "$2" "[\"app=$3\"]" >"$tmp/add-$2.out" 2>&1 || { fail "ADD $2 on node-$1: $(cat "$tmp/add-$2.out")"; return 1; }
  pod_ip[$2]=$(chain_ip "$2")
}
added=0
for spec in 1:backend1:backend 1:frontend1:frontend 2:backend2:backend 2:other2:other \
  3:backend3:backend 3:frontend3:frontend 4:backend4:backend 4:other4:other; do
  IFS=: read -r n pod app <<<"$spec"
  add_pod "$n" "$pod" "$app" && added=$((added + 1))
done
[ "$added" = 8 ] && pass "8 pods added through ptp + host-local + tessera-cni on 4 nodes" || exit 1
for n in "${NODES[@]}"; do
  for port in 8080 9090; do
    ip netns exec "tsr-$tag-backend$n" nc -lk -p "$port" >/dev/null 2>&1 &
    pids+=($!)
  done
done
connects() { ip netns exec "tsr-$tag-$1" nc -z -w 1 "${pod_ip[$2]}" "$3" >/dev/null 2>&1; }
dropped() { ! connects "$@"; }
listening() { connects "$1" "$2" 8080 && connects "$1" "$2" 9090; }
for n in "${NODES[@]}"; do
  eventually 10 listening "other$((n % 2 == 0 ? 4 : 2))" "backend$n" || true
done
# Without policy every pod reaches every backend: the drops below are policy's.
baseline_ok=1
for n in "${NODES[@]}"; do connects "other2" "backend$n" 8080 || baseline_ok=0; done
[ "$baseline_ok" = 1 ] && pass "before any policy: other@node-2 reaches the backends of all 4 nodes on 8080" ||
  fail "before any policy: other@node-2 does not reach every backend on 8080"

# ---------------------------------------------------------------- check 2: one identity per label set
identity_of() { "$TESSERA_BIN/tessera" endpoint get --container-id "tsr-$tag-n${pod_node[$1]}-$1" --run-dir "$tmp/n${pod_node[$1]}/run" -o json | jq -r .identity; }
declare -A ids
same=1
for app in backend frontend other; do
  for pod in "${!pod_labels[@]}"; do
    [ "${pod_labels[$pod]}" = "$app" ] || continue
    id=$(identity_of "$pod")
    if [ -z "${ids[$app]:-}" ]; then ids[$app]=$id; elif [ "${ids[$app]}" != "$id" ]; then same=0; echo "  $pod has identity $id, not ${ids[$app]}"; fi
  done
done
[ "$same" = 1 ] && pass "check 2: equal label sets have one identity on all nodes (backend ${ids[backend]}, frontend ${ids[frontend]}, other ${ids[other]})" ||
  fail "check 2: equal label sets have one identity on all nodes"
id_nodes() { # run-dir id: the nodes an identity replica says reference it
  "$TESSERA_BIN/tessera" identity get "$2" --run-dir "$1" -o json | jq -c '.nodes | keys'
}
all_nodes_listed() {
  local want='["node-1","node-2","node-3","node-4"]'
  [ "$(id_nodes "$tmp/ctl1/run" "${ids[backend]}")" = "$want" ] && [ "$(id_nodes "$tmp/ctl2/run" "${ids[backend]}")" = "$want" ]
}
check "check 2: both identity replicas see the backend identity referenced by node-1..node-4" eventually 10 all_nodes_listed

# ---------------------------------------------------------------- check 1: one import, enforced everywhere
cat >"$tmp/policy-8080.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-allow-frontend, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
YAML
check "check 1: policy imported once, on policy replica 1" "$TESSERA_BIN/tessera" policy import "$tmp/policy-8080.yaml" --run-dir "$tmp/ctl1/run"
# Peers on other nodes: frontend1 or frontend3, other2 or other4.
front_for() { [ "$1" = 1 ] || [ "$1" = 4 ] && echo frontend3 || echo frontend1; }
other_for() { [ "$1" = 2 ] && echo other4 || echo other2; }
for n in "${NODES[@]}"; do
  f=$(front_for "$n") o=$(other_for "$n")
  if eventually 20 dropped "$o" "backend$n" 8080 && eventually 10 connects "$f" "backend$n" 8080 && dropped "$f" "backend$n" 9090; then
    pass "check 1: node-$n enforces it: $f@node-${pod_node[$f]} -> backend$n:8080 connects, $o@node-${pod_node[$o]} dropped, 9090 dropped"
  else
    fail "check 1: node-$n enforces it ($f -> backend$n:8080 connects, $o dropped, 9090 dropped)"
  fi
done

# ---------------------------------------------------------------- check 4 + 5: certificates
mkdir -p "$tmp/py"
(cd "$repo/proto" && protoc -I . --python_out="$tmp/py" $(find . -name '*.proto' | sed 's|^\./||'))
call() { # port server-name cert|- call args...: prints the JSON answer
  local port=$1 name=$2 cert=$3; shift 3
  local c=- k=-
  [ "$cert" = - ] || { c=$pki/$cert.pem k=$pki/$cert.key; }
  GRPC_VERBOSITY=NONE /usr/bin/python3 "$here/mtls_client.py" "$tmp/py" "127.0.0.1:$port" "$name" "$pki/ca.pem" "$c" "$k" "$@"
}
code_is() { jq -e --arg c "$1" '.code == $c' <<<"$2" >/dev/null; }
# Reference keys: value/<labels>/<node> -> "<ID>" or "<ID> <count>".
etcd_refs() {
  etcdctl get --prefix "$PREFIX/value/" -w json | jq -r '.kvs[]? | "\(.value | @base64d | split(" ")[0]) \(.key | @base64d | sub("^.*/"; ""))"' | sort -u
}
ref_key_exists() { etcd_refs | grep -qx "$2 node-$1"; }
for r in "${REPLICAS[@]}"; do
  port=${id_port[$r]}
  out=$(call "$port" "identity-$r" node-2 identities)
  code_is OK "$out" && pass "check 4: node-2's certificate is served by identity replica $r" || fail "check 4: node-2's certificate is served by identity replica $r: $out"
  out=$(call "$port" "identity-$r" node-2 release "${ids[frontend]}" node-1)
  code_is PERMISSION_DENIED "$out" && pass "check 4: node-2 may not release node-1's reference on replica $r (PERMISSION_DENIED)" ||
    fail "check 4: node-2 releasing node-1's reference on replica $r: $out"
  out=$(call "$port" "identity-$r" node-2 sync node-1)
  code_is PERMISSION_DENIED "$out" && pass "check 4: node-2 may not resync node-1's references on replica $r (PERMISSION_DENIED)" ||
    fail "check 4: node-2 resyncing node-1's references on replica $r: $out"
  out=$(call "$port" "identity-$r" node-2 release "${ids[frontend]}")
  jq -e '.code == "OK" and (.released | not)' <<<"$out" >/dev/null &&
    pass "check 4: node-2 releasing frontend (held by nodes 1 and 3) on replica $r releases nothing" ||
    fail "check 4: node-2 releasing an identity it does not hold on replica $r: $out"
  out=$(call "$port" "identity-$r" stranger release "${ids[frontend]}" node-1)
  code_is UNAVAILABLE "$out" && pass "check 5: a stranger CA's certificate naming node-1 is refused by identity replica $r" ||
    fail "check 5: a stranger CA's certificate on identity replica $r: $out"
  for svc in identity policy; do
    p=${id_port[$r]} what=identities
    [ "$svc" = policy ] && { p=${pol_port[$r]}; what=policies; }
    out=$(call "$p" "$svc-$r" - "$what")
    code_is UNAVAILABLE "$out" && pass "check 5: a TLS client without a certificate is refused by $svc replica $r" ||
      fail "check 5: a TLS client without a certificate on $svc replica $r: $out"
  done
  out=$(call "$port" "identity-$r" - plaintext-identities)
  code_is UNAVAILABLE "$out" && pass "check 5: a plaintext client is refused by identity replica $r" ||
    fail "check 5: a plaintext client on identity replica $r: $out"
done
frontend_refs_kept() { ref_key_exists 1 "${ids[frontend]}" && ref_key_exists 3 "${ids[frontend]}"; }
check "check 4: node-1 and node-3 still hold frontend's references in etcd" frontend_refs_kept
check "check 4: frontend1 -> backend2:8080 still connects" connects frontend1 backend2 8080

# ---------------------------------------------------------------- check 3: replicas killed during churn
# 5 creates per node (20), known label sets (backend, frontend, other) and two
# new ones made at once on every node (churn-a, churn-b); after each node's 3rd
# create it waits for the kill, so the kill lands between creates in flight.
churn=$tmp/churn
mkdir -p "$churn"
churn_node() { # n
  local n=$1 k app
  for k in 1 2 3 4 5; do
    case $k in 1) app=backend ;; 2) app=churn-a ;; 3) app=frontend ;; 4) app=churn-b ;; 5) app=other ;; esac
    [ "$k" = 4 ] && { for _ in $(seq 300); do [ -f "$churn/killed" ] && break; sleep 0.1; done; }
    if "$TESSERA_BIN/tessera" endpoint create --run-dir "$tmp/n$n/run" --container-id "churn-n$n-$k" --ip "10.197.$n.$k" \
      --namespace default --pod "churn-n$n-$k" --label "app=$app" -o json >"$churn/n$n-$k.out" 2>&1; then
      echo "ok $app" >"$churn/n$n-$k.status"
    else
      echo "failed $app" >"$churn/n$n-$k.status"
    fi
  done
}
churn_pids=()
for n in "${NODES[@]}"; do churn_node "$n" & churn_pids+=($!); pids+=($!); done
done_count() { ls "$churn"/*.status 2>/dev/null | wc -l; }
eventually 60 bash -c "[ \$(ls $churn/*.status 2>/dev/null | wc -l) -ge 6 ]" || true
# The lease replica 1 binds its keys to (kept in its state database).
id1_lease=$(/usr/bin/python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT value FROM setting WHERE name = ?", ("lease",)).fetchone()[0])' \
  "$tmp/ctl1/state/identity-node-references.db")
kill -9 "${id_pid[1]}" "${pol_pid[1]}"
wait "${id_pid[1]}" "${pol_pid[1]}" 2>/dev/null || true
echo "cluster-e2e: SIGKILL identityd replica 1 (pid ${id_pid[1]}) and policyd replica 1 (pid ${pol_pid[1]}) after $(done_count) of 20 creates"
touch "$churn/killed"
for pid in "${churn_pids[@]}"; do wait "$pid" || true; done
known_failed=0 new_failed=0
for f in "$churn"/*.status; do
  read -r result app <"$f"
  [ "$result" = ok ] && continue
  echo "  $(basename "$f" .status) ($app): $(tail -n 2 "${f%.status}.out")"
  case $app in churn-*) new_failed=$((new_failed + 1)) ;; *) known_failed=$((known_failed + 1)) ;; esac
done
[ "$(done_count)" = 20 ] && [ "$known_failed" = 0 ] && pass "check 3: 20 creates across the kill, none failed for a known label set" ||
  fail "check 3: $known_failed of the creates for known label sets failed ($(done_count) of 20 ran)"
[ "$new_failed" = 0 ] && pass "check 3: the creates of new label sets (churn-a, churn-b) succeeded too" ||
  fail "check 3: $new_failed creates of new label sets failed"
churn_id() { jq -r .identity "$churn/n$1-$2.out" 2>/dev/null; }
one_id=1
for k in 1 2 3 4 5; do
  for n in 2 3 4; do [ "$(churn_id "$n" "$k")" = "$(churn_id 1 "$k")" ] || one_id=0; done
done
[ "$one_id" = 1 ] && [ "$(churn_id 1 1)" = "${ids[backend]}" ] && pass "check 3: every label set of the churn has one identity on all nodes, the pods' for known ones" ||
  fail "check 3: a label set of the churn got several identities"

no_duplicates() { # id/ and labels/ map one to one
  local ids_json labels_json
  ids_json=$(etcdctl get --prefix "$PREFIX/id/" -w json)
  labels_json=$(etcdctl get --prefix "$PREFIX/labels/" -w json)
  jq -e -n --arg p "$PREFIX" --argjson i "$ids_json" --argjson l "$labels_json" '
    ([$i.kvs[]? | (.value | @base64d)]) as $lab
    | ([$l.kvs[]? | {labels: (.key | @base64d | ltrimstr($p + "/labels/")), id: (.value | @base64d)}]) as $back
    | ($lab | length) == ($lab | unique | length)
      and ($lab | length) == ($back | length)
      and ([$i.kvs[]? | {labels: (.value | @base64d), id: (.key | @base64d | ltrimstr($p + "/id/"))}] | sort) == ($back | sort)'
}
check "check 3: no duplicate identity in etcd (id/ and labels/ one to one)" no_duplicates

# References in etcd must be exactly what the live endpoints hold: (identity, node).
held_refs() {
  for n in "${NODES[@]}"; do
    "$TESSERA_BIN/tessera" endpoint list --run-dir "$tmp/n$n/run" -o json |
      jq -r --arg n "node-$n" '.endpoints[] | select(.identity >= 256) | "\(.identity) \($n)"'
  done | sort -u
}
refs_match() { [ "$(held_refs)" = "$(etcd_refs)" ]; }
show_refs() { echo "  held by endpoints: $(held_refs | tr '\n' ';')"; echo "  in etcd:           $(etcd_refs | tr '\n' ';')"; }
# Wait until the killed replica's lease has expired: keys bound to it are gone.
lease_gone() { for l in $id1_lease; do etcdctl lease timetolive "$(printf %x "$l")" | grep -q "already expired" || return 1; done; }
check "check 3: the killed identity replica's lease expired (5 s TTL)" eventually 20 lease_gone
if eventually 10 refs_match; then pass "check 3: references in etcd are exactly the live endpoints' (identity, node) after the kill"; else
  fail "check 3: references in etcd are exactly the live endpoints' (identity, node) after the kill"; show_refs
fi

cat >"$tmp/policy-9090.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-allow-other-9090, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: other}}]
    toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
YAML
check "check 3: a policy imported after the kill, on policy replica 2" "$TESSERA_BIN/tessera" policy import "$tmp/policy-9090.yaml" --run-dir "$tmp/ctl2/run"
for n in "${NODES[@]}"; do
  o=$(other_for "$n")
  if eventually 20 connects "$o" "backend$n" 9090 && dropped "$o" "backend$n" 8080; then
    pass "check 3: node-$n enforces the policy imported after the kill ($o -> backend$n:9090 connects, 8080 still dropped)"
  else
    fail "check 3: node-$n enforces the policy imported after the kill ($o -> backend$n:9090)"
  fi
done

# ---------------------------------------------------------------- 6. a node's lease
node_leases() { etcdctl get --keys-only --prefix "$PREFIX/nodes/" | sed -n 's|^.*/nodes/||p' | sort | tr '\n' ' '; }
check "check 6: every node has a lease of its own in etcd (nodes/<node>)" eventually 10 \
  eval '[ "$(node_leases)" = "node-1 node-2 node-3 node-4 " ]'
node4_refs() { etcd_refs | grep -c ' node-4$' || true; }
before4=$(node4_refs)
others_before=$(etcd_refs | grep -v ' node-4$')
ep4=$(pgrep -f "tessera-endpointd --run-dir $tmp/n4/run" | head -n1)
kill -9 "$ep4"
echo "cluster-e2e: SIGKILL node-4's endpointd (pid $ep4), which held $before4 reference keys"
node4_gone() { [ "$(node4_refs)" = 0 ] && [ "$(node_leases)" = "node-1 node-2 node-3 " ]; }
check "check 6: node-4's references and lease expire after the TTL (5 s) with node-4 dead" eventually 25 node4_gone
check "check 6: the other nodes' references are untouched" eval '[ "$(etcd_refs | grep -v " node-4$")" = "$others_before" ]'
daemon "$tmp/n4/run" endpointd tessera-endpointd --state-dir "$tmp/n4/state" --node-name "node-4" \
  --identity-address "$ID_ADDR" --policy-address "$POL_ADDR" --identity-release-delay "$RELEASE_DELAY" $(tls "node-4") --cluster-store "$STORE"
eventually 60 serving "$tmp/n4/run" endpoint || fail "check 6: node-4's endpointd did not come back"
if eventually 20 refs_match; then pass "check 6: node-4 back: its references restored under a new lease (etcd = live pods)"; else
  fail "check 6: node-4 back: its references restored"; show_refs
fi

# ---------------------------------------------------------------- 7. replicas unreachable
for r in "${REPLICAS[@]}"; do kill -9 "${id_pid[$r]}" "${pol_pid[$r]}" 2>/dev/null || true; done
for r in "${REPLICAS[@]}"; do wait "${id_pid[$r]}" "${pol_pid[$r]}" 2>/dev/null || true; done
echo "cluster-e2e: every identity and policy replica SIGKILLed"
if add_pod 1 backend1b backend; then
  pass "check 7: replicas down: a pod with a label set node-1 holds (backend) is created through the CNI plugin"
  ip netns exec "tsr-$tag-backend1b" nc -lk -p 8080 >/dev/null 2>&1 &
  pids+=($!)
  if eventually 10 connects frontend1 backend1b 8080 && dropped other2 backend1b 8080; then
    pass "check 7: its policy is in force (frontend1 -> backend1b:8080 connects, other2 dropped)"
  else
    fail "check 7: its policy is in force (frontend1 -> backend1b:8080, other2 dropped)"
  fi
fi
on_node 1
netns_made+=("${CHAIN_NETNS_PREFIX}lonely")
out=$(chain_add lonely '["app=brand-new"]' 2>&1 || true)
if grep -q '"code": *11' <<<"$out"; then
  pass "check 7: replicas down: a new label set gets CNI code 11 (try again)"
else
  fail "check 7: replicas down: a new label set should get CNI code 11: $out"
fi
chain_del lonely >/dev/null 2>&1 || true
for r in "${REPLICAS[@]}"; do
  ctl=$tmp/ctl$r/run
  daemon "$ctl" identityd tessera-identityd --state-dir "$tmp/ctl$r/state" --node-name "identity-$r" \
    --listen "127.0.0.1:${id_port[$r]}" $(tls "identity-$r") --identity-store "$STORE" --etcd-lease-ttl 5
  daemon "$ctl" policyd tessera-policyd --state-dir "$tmp/ctl$r/state" --node-name "policy-$r" \
    --listen "127.0.0.1:${pol_port[$r]}" $(tls "policy-$r") --policy-store "$STORE" --identity-address "$ID_ADDR"
done
for r in "${REPLICAS[@]}"; do
  eventually 60 serving "$tmp/ctl$r/run" identity && eventually 60 serving "$tmp/ctl$r/run" policy ||
    fail "check 7: replica $r did not come back"
done
if eventually 20 refs_match; then pass "check 7: replicas back: references in etcd are exactly the live endpoints' again"; else
  fail "check 7: replicas back: references in etcd are exactly the live endpoints' again"; show_refs
fi

for n in "${NODES[@]}"; do
  for k in 1 2 3 4 5; do
    "$TESSERA_BIN/tessera" endpoint delete --run-dir "$tmp/n$n/run" --container-id "churn-n$n-$k" >/dev/null 2>&1 || true
  done
done
if eventually 15 refs_match; then pass "check 3: after the churn's endpoints are deleted, no reference leaked (etcd = live pods)"; else
  fail "check 3: after the churn's endpoints are deleted, no reference leaked"; show_refs
fi
for n in "${NODES[@]}"; do
  on_node "$n"
  for f in "$CHAIN_STATE"/*.json; do [ -f "$f" ] && chain_del "$(basename "$f" .json)"; done
done
no_refs() { [ -z "$(etcdctl get --keys-only --prefix "$PREFIX/value/")" ]; }
# Each node keeps its last reference to an identity for the release delay, so a pod
# of that label set created meanwhile costs no call; then it goes.
if no_refs; then fail "check 3: the nodes gave their last references back at once (release delay ${RELEASE_DELAY} s)"; else
  pass "check 3: the nodes keep their last references for the release delay (${RELEASE_DELAY} s) after their pods went"
fi
if eventually 15 no_refs; then pass "check 3: after every pod is deleted, etcd holds no reference"; else
  fail "check 3: after every pod is deleted, etcd holds no reference"; show_refs
fi

e2e_result "($((SECONDS - started)) s)"
