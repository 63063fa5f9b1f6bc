#!/usr/bin/env bash
# Adversarial suite: real packets from pods in network namespaces trying to get
# around policy on a real node (tessera node up, eBPF datapath), pods attached
# through the CNI chain of scripts/lib/cni-chain.sh. Every verdict is a count
# where the traffic would arrive (a sniffer or listener in the target pod, an
# nftables counter behind the host veth's program), never the datapath's own
# report.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/adversarial/run.sh [CASE...]
#
# Cases (all by default): spoof ethertypes ext6 frag icmp icmprules midstream broadcast race
# reuse etcd
#   spoof       other forges frontend's IPv4/IPv6 source (TCP SYN, UDP) toward
#               backend:8080, a world source and the host's address toward edge
#   ethertypes  802.1Q/802.1ad-tagged IPv4, LLDP, an unknown ethertype from a pod
#   ext6        IPv6 TCP behind 5, 8 and 10 extension headers to a port-specific deny
#   frag        IPv4 fragments: allowed datagram, denied first fragment, a lone
#               later fragment, a tiny first fragment without the TCP header
#   icmp        fragmentation-needed for a tracked flow (must pass), made-up ICMP
#               errors for flows that do not exist (must not)
#   icmprules   backend allows frontend's echo requests only: other ICMP types,
#               ICMP in IPv6, ND and MLD messages sent off the link (must not)
#   midstream   TCP without SYN, SCTP without INIT, on connections nobody opened (as one opened
#               before a pod's policy was in force): into mid, which may send only
#               to frontend, then mid's answers to the sender (must not arrive); out
#               of frontend, which admits nobody, then the peer's (must not)
#   broadcast   a pod allowed egress to world but not the node sends UDP to the
#               limited broadcast, IPv4 multicast and the node's directed broadcast:
#               a host socket on 0.0.0.0 must not receive it (a pod allowed the
#               node too: must)
#   race        deny-X-allow-rest peer while new pods labelled X probe it from
#               before their ADD (0 admitted); new allowed pods do connect; more
#               pods of one X identity while a pod of it lives (the ordering skip)
#   reuse       frontend holds a connection to a pod that is then deleted; a pod of
#               another identity given the same address (args.cni.ips) answers it
#               from that address: frontend must receive none of it
#   etcd        bad ipcache entries written straight into etcd are not applied
#
# Environment: ADV_RACE_ROUNDS (20), ADV_FRAGMENT_RULE (reassemble | drop-nonfirst:
# the datapath's documented rule for fragments), ADV_IPV6 (1; 0 runs IPv4 only).
# Skips with a reason without root, eBPF, the CNI plugins or scapy. Prints
# `N passed, N failed` and exits non-zero on any failure.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PY=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1
skip() { echo "adversarial: SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root"
[ -x /usr/lib/cni/ptp ] && [ -x /usr/lib/cni/host-local ] || skip "/usr/lib/cni/ptp or host-local missing (containernetworking-plugins)"
[ -n "${TESSERA_BIN:-}" ] && [ -x "$TESSERA_BIN/tessera" ] || skip "TESSERA_BIN is not set to the built binaries"
command -v jq >/dev/null || skip "jq missing"
"$PY" -c 'import scapy.all' 2>/dev/null || skip "python3-scapy missing (scripts/install-deps.sh)"
CNI_BIN=${ADV_CNI:-$repo/.build-cni/tessera-cni}
[ -x "$CNI_BIN" ] || skip "tessera-cni not built (make -C Sources/tessera-cni)"

all_cases=(spoof ethertypes ext6 frag icmp icmprules midstream broadcast race reuse etcd)
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=("${all_cases[@]}")
wants() { local c; for c in "${cases[@]}"; do [ "$c" = "$1" ] && return 0; done; return 1; }

tmp=$(mktemp -d /tmp/adversary.XXXXXX)
RUN=$tmp/run
PIN=/sys/fs/bpf/adversary-$$
NODE=adv-node-$$
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }
CHAIN_NAME=adv CHAIN_SUBNET=10.213.0.0/24 CHAIN_STATE=$tmp/cni CHAIN_NETNS_PREFIX=adv-
CHAIN_SOCKET=$RUN/endpoint.sock CHAIN_CNI=$CNI_BIN
. "$repo/scripts/lib/cni-chain.sh"
SUBNET6=fd00:ad:213::/64
# How pods are attached: `main` (tessera-cni as the main plugin, host-local IPAM:
# the recommended mode, no window before ADD returns) or `ptp` (ptp + host-local
# chained with tessera-cni, the shared chain of scripts/lib/cni-chain.sh). With
# ADV_CHAIN=auto (default) the first that works here, dual-stack before IPv4 only;
# the output says which and why the others were not used.
chain_mode=${ADV_CHAIN:-auto}
use_ipv6=${ADV_IPV6:-1}
ipam_ranges() {
  if [ "$use_ipv6" = 1 ]; then printf '[[{"subnet":"%s"}],[{"subnet":"%s"}]]' "$CHAIN_SUBNET" "$SUBNET6"
  else printf '[[{"subnet":"%s"}]]' "$CHAIN_SUBNET"; fi
}
ipam_routes() { if [ "$use_ipv6" = 1 ]; then echo '[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]'; else echo '[{"dst":"0.0.0.0/0"}]'; fi; }
if ! grep -q CHAIN_SUBNET6 "$repo/scripts/lib/cni-chain.sh"; then
  # The shared chain gives one IPv4 range; these pods want a dual-stack one.
  chain_ptp_config() {
    printf '{"cniVersion":"1.0.0","name":"%s","type":"ptp","ipMasq":false,"ipam":{"type":"host-local","ranges":%s,"routes":%s,"dataDir":"%s/ipam"}}' \
      "$CHAIN_NAME" "$(ipam_ranges)" "$(ipam_routes)" "$CHAIN_STATE"
  }
fi
main_config() { # labels-json; $ADV_ADD_IPS (a JSON list) asks host-local for those addresses
  printf '{"cniVersion":"1.0.0","name":"%s","type":"tessera-cni","socketPath":"%s","ipam":{"type":"host-local","ranges":%s,"routes":%s,"dataDir":"%s/ipam"},"args":{"cni":{"labels":%s%s}}}' \
    "$CHAIN_NAME" "$CHAIN_SOCKET" "$(ipam_ranges)" "$(ipam_routes)" "$CHAIN_STATE" "$1" \
    "${ADV_ADD_IPS:+,\"ips\":$ADV_ADD_IPS}"
}
main_add() { # pod labels-json
  mkdir -p "$CHAIN_STATE"
  ip netns add "$CHAIN_NETNS_PREFIX$1" 2>/dev/null || true
  ip -n "$CHAIN_NETNS_PREFIX$1" link set lo up
  chain_exec tessera-cni ADD "$1" "$(main_config "$2")" >"$CHAIN_STATE/$1.json" || { cat "$CHAIN_STATE/$1.json"; return 1; }
}
main_del() {
  chain_exec tessera-cni DEL "$1" "$(main_config '[]')" >/dev/null 2>&1 || true
  rm -f "$CHAIN_STATE/$1.json"
  ip netns del "$CHAIN_NETNS_PREFIX$1" 2>/dev/null || true
}
pod_attach() { if [ "$chain_mode" = main ]; then main_add "$@"; else [ "$use_ipv6" = 1 ] && export CHAIN_SUBNET6=$SUBNET6; chain_add "$@"; fi; }
pod_detach() { if [ "$chain_mode" = main ]; then main_del "$1"; else chain_del "$1"; fi; }

pods=()
bg_pids=()
etcd_pid=
cleanup() {
  for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pod in "${pods[@]}"; do pod_detach "$pod"; done
  "$TESSERA_BIN/tessera" node down --run-dir "$RUN" >/dev/null 2>&1
  [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null
  for ns in $(ip netns list | awk '{print $1}' | grep '^adv-'); do
    [ -e "$tmp/netns-$ns" ] && ip netns del "$ns" 2>/dev/null
  done
  nft delete table netdev "adv_$$" 2>/dev/null
  rm -rf "$PIN" "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0 failed=0 skipped=0
check() { # description command...
  local d=$1; shift
  if "$@" >/dev/null 2>&1; then passed=$((passed + 1)); echo "ok   $d"; else failed=$((failed + 1)); echo "FAIL $d"; fi
}
note_skip() { skipped=$((skipped + 1)); echo "SKIP $*"; }
eventually() { # seconds command...
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do [ $SECONDS -ge $end ] && return 1; sleep 0.1; done
}
add_pod() { # pod labels-json
  pods+=("$1")
  : >"$tmp/netns-adv-$1"
  pod_attach "$1" "$2" >"$tmp/add-$1.log" 2>&1
}
ip4_of() { jq -r '[.ips[].address | select(contains(":") | not)][0] // empty' "$CHAIN_STATE/$1.json" | cut -d/ -f1; }
ip6_of() { jq -r '[.ips[].address | select(contains(":"))][0] // empty' "$CHAIN_STATE/$1.json" | cut -d/ -f1; }
identity_of() { tessera endpoint get --container-id "adv-$1" -o json | jq -r .identity; }

# ---- node ---------------------------------------------------------------------
store_flags=()
if wants etcd && command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
  free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  cport=$(free_port) pport=$(free_port)
  ETCD=http://127.0.0.1:$cport
  etcd --name adv --data-dir "$tmp/etcd" --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "adv=http://127.0.0.1:$pport" >"$tmp/etcd.log" 2>&1 &
  etcd_pid=$!
  export ETCDCTL_API=3
  if eventually 10 etcdctl --endpoints "$ETCD" endpoint health; then
    store_flags=(--identity-store "etcd:$ETCD")
  else
    echo "adversarial: etcd did not start:"; tail -5 "$tmp/etcd.log"
  fi
fi
tessera node up --detach --no-supervise --node-name "$NODE" --state-dir "$tmp/state" --bpf-pin-dir "$PIN" "${store_flags[@]}" \
  >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log" "$RUN"/*.log 2>/dev/null | tail -40; exit 1; }
backend_kind=$(tessera status -o json | jq -r '.services[] | select(.service=="datapath") | .backend')
case $backend_kind in bpf*) ;; *) skip "the datapath runs '$backend_kind', not eBPF" ;; esac
echo "adversarial: datapath $backend_kind, binaries $TESSERA_BIN, plugin $CNI_BIN, store ${store_flags[*]:-sqlite}"

# ---- policy and pods ------------------------------------------------------------
cat >"$tmp/policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: adv-backend, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}, {port: "8080", protocol: UDP}]}]
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    icmps: [{fields: [{type: EchoRequest, family: IPv4}, {type: EchoRequest, family: IPv6}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: adv-edge, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: edge}}
  ingress:
  - fromEntities: [world, host]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: adv-ext, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: ext}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "7070", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: adv-bcast, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: bcast}}
  egress:
  - toEntities: [world]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: adv-bcastok, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: bcastok}}
  egress:
  - toEntities: [world, host]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: adv-mid, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: mid}}
  egress:
  - toEndpoints: [{matchLabels: {app: frontend}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: adv-frontend, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: frontend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: nobody}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: adv-guard, namespace: default}
spec:
  endpointSelector: {matchExpressions: [{key: app, operator: In, values: [guard, filler]}]}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: x}}]
YAML
# guard's policy is also large (every cluster identity on 80 ports), so each new
# identity costs its regeneration hundreds of map entries next to the one deny.
{
  echo '---'
  echo 'apiVersion: cilium.io/v2'
  echo 'kind: CiliumNetworkPolicy'
  echo 'metadata: {name: adv-guard-ports, namespace: default}'
  echo 'spec:'
  echo '  endpointSelector: {matchExpressions: [{key: app, operator: In, values: [guard, filler]}]}'
  echo '  ingress:'
  for r in 0 1; do
    echo '  - fromEntities: [cluster]'
    echo "    toPorts: [{ports: [$(for p in $(seq $((10000 + r * 40)) $((10039 + r * 40))); do printf '{port: "%s", protocol: TCP},' "$p"; done | sed 's/,$//')]}]"
  done
} >>"$tmp/policy.yaml"
check "policies imported" tessera policy import "$tmp/policy.yaml"

# The first pod finds the attachment mode that works here.
attached=
for mode in main ptp; do
  [ "$chain_mode" = auto ] || [ "$chain_mode" = "$mode" ] || continue
  for v6 in $([ "${ADV_IPV6:-1}" = 1 ] && echo 1) 0; do
    use_ipv6=$v6
    saved_mode=$chain_mode; chain_mode=$mode
    if add_pod frontend '["app=frontend"]'; then attached=$mode; break 2; fi
    echo "adversarial: attaching with $mode (IPv6 $v6) failed: $(tr -d '\n' <"$tmp/add-frontend.log" | tail -c 240)"
    pod_detach frontend
    chain_mode=$saved_mode
  done
done
[ -n "$attached" ] || { echo "adversarial: FAIL: no attachment mode works"; exit 1; }
chain_mode=$attached
echo "adversarial: pods attached with $([ "$chain_mode" = main ] && echo "tessera-cni as the main plugin" || echo "the ptp chain"), IPv6 $([ "$use_ipv6" = 1 ] && echo on || echo "off (skips say why)")"
for p in other backend edge ext guard mid; do
  add_pod "$p" "[\"app=$p\"]" || { echo "FAIL ADD $p: $(cat "$tmp/add-$p.log")"; exit 1; }
done
[ "$use_ipv6" = 1 ] && [ -z "$(ip6_of frontend)" ] && echo "adversarial: the pods got no IPv6 address; IPv6 checks skip"
[ "$chain_mode" = ptp ] && echo "adversarial: note: in the ptp chain a pod is routed before ADD returns (the documented window); the race case (6) needs the main plugin to pass"
host_addr=$(tessera datapath ipcache list -o json | jq -r --arg gw "$(jq -r '.ips[0].gateway // empty' "$CHAIN_STATE/frontend.json")" \
  '[.entries[] | select(.identity == 1 and (.prefix | endswith("/32")))] | (map(select(.prefix == ($gw + "/32"))) + .)[0].prefix // empty' | cut -d/ -f1)
[ -n "$host_addr" ] || host_addr=$(jq -r '.ips[0].gateway' "$CHAIN_STATE/frontend.json")
sleep 2 # IPv6 duplicate address detection in the pods
jq -n --arg host "$host_addr" --arg rule "${ADV_FRAGMENT_RULE:-reassemble}" --arg table "adv_$$" \
  '{pods: {frontend: "adv-frontend", other: "adv-other", backend: "adv-backend", edge: "adv-edge", ext: "adv-ext", guard: "adv-guard", mid: "adv-mid"},
    host_addr: $host, world_addr: "198.51.100.7", fragment_rule: $rule, nft_table: $table}' >"$tmp/context.json"

# ---- packet cases (cases.py) ------------------------------------------------------
py_cases=()
for c in spoof ethertypes ext6 frag icmp icmprules midstream; do wants "$c" && py_cases+=("$c"); done
if [ ${#py_cases[@]} -gt 0 ]; then
  (cd "$here" && timeout 120 "$PY" cases.py "$tmp/context.json" "${py_cases[@]}") 2>&1 | tee "$tmp/cases.out"
  passed=$((passed + $(grep -c '^ok ' "$tmp/cases.out")))
  failed=$((failed + $(grep -c '^FAIL' "$tmp/cases.out")))
  skipped=$((skipped + $(grep -c '^SKIP' "$tmp/cases.out")))
  grep -q '^cases: ' "$tmp/cases.out" || { failed=$((failed + 1)); echo "FAIL cases.py did not finish"; }
fi

# The forged packets are reported: each forged SYN is a drop event with the
# forged address, the reason and other's endpoint (tessera observe).
if wants spoof; then
  forged_events() {
    tessera observe --type drop --last 4096 -o json | jq -s --arg ip "$(ip4_of frontend)" \
      'map(select(.reason == "invalid-source" and .direction == "egress" and .source.ip == $ip and .source.port == 41001 and .destination.port == 8080)) | length'
  }
  check "events: other's 3 forged IPv4 SYNs are reported as invalid-source drops with the forged address" \
    [ "$(forged_events)" = 3 ]
fi

# Every kind of drop the packet cases provoke is reported as an event with its
# reason (tessera observe), not only counted.
if [ ${#py_cases[@]} -gt 0 ]; then
  tessera observe --type drop --last 4096 -o json >"$tmp/drops.json"
  seen_reason() { jq -se --arg r "$1" 'map(select(.reason == $r)) | length > 0' "$tmp/drops.json" >/dev/null; }
  if wants spoof; then check "events: forged sources reported as invalid-source" seen_reason invalid-source; fi
  if wants ethertypes; then check "events: other ethertypes reported as unknown-l3" seen_reason unknown-l3; fi
  if wants ext6; then check "events: unparsed IPv6 extension chains reported as ipv6-ext-headers" seen_reason ipv6-ext-headers; fi
  if wants frag; then check "events: stray later fragments reported as fragment" seen_reason fragment; fi
  check "events: policy drops reported as policy-default or policy-deny" \
    bash -c "jq -se 'map(select(.reason == \"policy-default\" or .reason == \"policy-deny\")) | length > 0' '$tmp/drops.json' >/dev/null"
fi

# ---- 6. deny-X-allow-rest race ------------------------------------------------------
if wants race; then
  guard_ip=$(ip4_of guard)
  rounds=${ADV_RACE_ROUNDS:-20}
  ip netns exec adv-guard "$PY" "$here/race.py" guard 8080 "$tmp/guard.log" $((rounds * 10 + 60)) &
  bg_pids+=($!)
  sleep 0.3
  : >"$tmp/guard.log"
  race_round() { # pod labels-json seconds-to-probe-after-ADD
    local pod=$1
    ip netns add "adv-$pod" && : >"$tmp/netns-adv-$pod"
    ip -n "adv-$pod" link set lo up
    rm -f "$tmp/stop-$pod"
    ip netns exec "adv-$pod" "$PY" "$here/race.py" probe "$guard_ip" 8080 "$tmp/stop-$pod" 10 "$tmp/probe-$pod" &
    local prober=$!
    sleep 0.15 # the prober is looping before the ADD starts
    add_pod "$pod" "$2" || echo "adversarial: ADD $pod failed: $(tail -c 300 "$tmp/add-$pod.log")"
    date +%s.%N >"$tmp/added-$pod"
    sleep "$3" # and keeps going after it returned
    touch "$tmp/stop-$pod"
    wait "$prober"
    ip4_of "$pod" >"$tmp/ip-$pod"
  }
  # A busy node: endpoints (no interface) with guard's policy, each regenerated
  # for every new app=x identity, as many peers as ahead of guard in the queue.
  fillers=${ADV_RACE_FILLERS:-40}
  for i in $(seq "$fillers"); do
    tessera endpoint create --container-id "adv-filler-$i" --ip "10.213.$((100 + i / 250)).$((i % 250 + 1))" --label app=filler --async >/dev/null 2>&1 \
      || { echo "adversarial: race: filler endpoint $i could not be created"; break; }
  done
  x_ips=() y_ips=()
  for i in $(seq "$rounds"); do
    race_round "x$i" "[\"app=x\",\"run=r$i-$$\"]" 0.5
    x_ips+=("$(cat "$tmp/ip-x$i")")
    if [ $((i % 5)) = 0 ] || { [ "$i" = "$rounds" ] && [ ${#y_ips[@]} = 0 ]; }; then
      race_round "y$i" "[\"app=y\",\"run=r$i-$$\"]" 1.5
      y_ips+=("$(cat "$tmp/ip-y$i")")
    fi
    pod_detach "x$i"
  done
  sleep 0.3
  admitted_y=0 attempts_x=0
  accepted_from() { [ -n "$1" ] && grep -cx "$1" "$tmp/guard.log" || true; }
  accepted_total() { local total=0 ip n; for ip; do n=$(accepted_from "$ip"); total=$((total + ${n:-0})); done; echo "$total"; }
  admitted_x=$(accepted_total "${x_ips[@]}")
  y_connected=0
  for ip in "${y_ips[@]}"; do
    n=$(accepted_from "$ip"); n=${n:-0}
    admitted_y=$((admitted_y + n)); [ "$n" -gt 0 ] && y_connected=$((y_connected + 1))
  done
  connected_x=0
  for i in $(seq "$rounds"); do
    read -r a c _ <"$tmp/probe-x$i" || { a=0 c=0; }
    attempts_x=$((attempts_x + a)) connected_x=$((connected_x + c))
  done
  for f in "$tmp"/probe-y*; do
    [ -e "$f" ] || continue
    read -r a c errs first <"$f"
    y=${f##*probe-}
    delay=$(awk -v f="$first" -v t="$(cat "$tmp/added-$y")" 'BEGIN { if (f > 0) printf "%.0f ms", (f - t) * 1000; else print "never" }')
    echo "adversarial: race: new allowed pod $y: $a attempts, $c connected (errors $errs); first connect after ADD returned: $delay"
  done
  echo "adversarial: race: $fillers busy peers with guard's policy; $rounds new pods labelled app=x made $attempts_x connect attempts ($connected_x connected by their own count); guard accepted $admitted_x from them; ${#y_ips[@]} new allowed pods got $admitted_y accepted"
  check "6 guard (deny app=x, allow all) accepted 0 connections from $rounds brand-new app=x pods probing from before their ADD" [ "$admitted_x" = 0 ]
  y_ok() { [ "$y_connected" -ge 1 ] && [ "$y_connected" = "${#y_ips[@]}" ]; }
  check "6 control: each of ${#y_ips[@]} brand-new allowed pods (app=y) connected to guard right after ADD" y_ok
  # The same identity again: a pod whose identity another pod of this node already
  # realised skips the wait for peers (docs/architecture.md §1); peers' maps were ordered
  # behind that identity when it first appeared, so its first packets meet the deny too.
  same_labels="[\"app=x\",\"run=same-$$\"]"
  race_round xa "$same_labels" 0.3
  same_ips=("$(cat "$tmp/ip-xa")") same_ids=("$(identity_of xa)")
  for i in $(seq "${ADV_RACE_SAME_ROUNDS:-5}"); do
    race_round "xs$i" "$same_labels" 0.5
    same_ips+=("$(cat "$tmp/ip-xs$i")") same_ids+=("$(identity_of "xs$i")")
    pod_detach "xs$i"
  done
  pod_detach xa
  sleep 0.3
  admitted_same=$(accepted_total "${same_ips[@]}")
  echo "adversarial: race: ${#same_ips[@]} app=x pods sharing identity ${same_ids[*]}: guard accepted $admitted_same"
  one_identity() { [ "$(printf '%s\n' "${same_ids[@]}" | sort -u | wc -l)" = 1 ] && [ -n "${same_ids[0]}" ]; }
  check "6 the later pods share the first one's identity (the ordering skip is what is tried)" one_identity
  check "6 guard accepted 0 connections from app=x pods whose identity a live pod already carried" [ "$admitted_same" = 0 ]
  got_ips=0; for ip in "${x_ips[@]}"; do [ -n "$ip" ] && got_ips=$((got_ips + 1)); done
  check "6 every app=x ADD succeeded ($got_ips of $rounds)" [ "$got_ips" = "$rounds" ]
fi

# ---- broadcast and multicast reach the node's sockets ---------------------------------
# The kernel delivers a limited or directed broadcast, and IPv4 multicast, arriving on a
# pod's veth to the node's sockets bound to 0.0.0.0: to policy such a destination is
# the node (host), never world.
if wants broadcast; then
  for p in bcast bcastok; do add_pod "$p" "[\"app=$p\"]" || { echo "FAIL ADD $p: $(cat "$tmp/add-$p.log")"; exit 1; }; done
  bport=$("$PY" -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0",0)); print(s.getsockname()[1])')
  "$PY" -c "
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', $bport)); s.settimeout(0.2)
end = time.time() + 30
with open('$tmp/bcast.log', 'a') as log:
    while time.time() < end:
        try: data, peer = s.recvfrom(2048)
        except socket.timeout: continue
        log.write(data.decode(errors='replace') + '\\n'); log.flush()
" &
  bg_pids+=($!)
  sleep 0.3
  # The node's directed broadcast: of an interface that has one (eth0's, here).
  directed=$(ip -o -4 addr show | awk '$0 ~ / brd / && $2 != "lo" { for (i = 1; i < NF; i++) if ($i == "brd") { print $(i + 1); exit } }')
  send_udp() { # pod destination marker
    ip netns exec "adv-$1" "$PY" -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')
for _ in range(3): s.sendto(b'$3', ('$2', $bport))
"
  }
  received() { grep -qx "$1" "$tmp/bcast.log" 2>/dev/null; }
  not_received() { sleep 0.5; ! received "$1"; }
  targets=("limited 255.255.255.255" "multicast 224.0.0.1")
  [ -n "$directed" ] && targets+=("directed $directed")
  for t in "${targets[@]}"; do
    read -r kind addr <<<"$t"
    send_udp bcastok "$addr" "ok-$kind"
    check "broadcast control: a pod allowed the node reaches a host socket through $addr ($kind)" eventually 3 received "ok-$kind"
    send_udp bcast "$addr" "no-$kind"
    check "broadcast: a pod allowed world but not the node does not reach a host socket through $addr ($kind)" not_received "no-$kind"
  done
  [ -n "$directed" ] || note_skip "broadcast: no interface here has an IPv4 broadcast address (directed broadcast not tried)"
fi

# ---- 8. a reused address inherits no connection -------------------------------------
# frontend (ingress: nobody) connects out to lender:8080 and holds the connection; lender
# is deleted and heir, another identity, is given lender's address. heir answers the old
# connection from that address (the tuple frontend's conntrack entry was keyed on): a
# sniffer in frontend counts what arrives. The control: lender's own greeting on the live
# connection arrives the same way.
if wants reuse; then
  if [ "$chain_mode" != main ]; then
    note_skip "8 reuse: asking host-local for an address (args.cni.ips) needs tessera-cni as the main plugin"
  elif ! add_pod lender '["app=backend"]'; then
    check "8 ADD lender" false
  else
    lender_ip=$(ip4_of lender) frontend_ip=$(ip4_of frontend)
    ip netns exec adv-lender "$PY" -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(8); held = []
while True:
    c, _ = s.accept(); c.sendall(b"hello"); held.append(c)' &
    lender_pid=$!
    bg_pids+=("$lender_pid")
    eventually 5 bash -c "ip netns exec adv-lender ss -ltnH 'sport = :8080' | grep -q ."
    ip netns exec adv-frontend "$PY" -c "
import socket, struct, sys
ETH_P_ALL = 3
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
out = open(sys.argv[1], 'a', buffering=1)
open(sys.argv[1] + '.ready', 'w').close()
while True:
    data, addr = s.recvfrom(65535)
    if addr[0] == 'lo' or addr[2] == socket.PACKET_OUTGOING or addr[1] != 0x0800 or data[23] != 6:
        continue
    ihl = (data[14] & 15) * 4
    sport = struct.unpack('!H', data[14 + ihl:16 + ihl])[0]
    out.write('%s %d %d\\n' % (socket.inet_ntoa(data[26:30]), sport, len(data)))" "$tmp/reuse.sniffed" &
    bg_pids+=($!)
    for _ in $(seq 50); do [ -e "$tmp/reuse.sniffed.ready" ] && break; sleep 0.1; done
    sleep 0.2
    ip netns exec adv-frontend "$PY" -c "
import socket, sys, time
s = socket.create_connection(('$lender_ip', 8080), timeout=3)
open(sys.argv[1], 'w').write('%d\\n' % s.getsockname()[1])
time.sleep(40)" "$tmp/reuse.port" &
    bg_pids+=($!)
    eventually 5 test -s "$tmp/reuse.port"
    client_port=$(cat "$tmp/reuse.port" 2>/dev/null)
    sleep 0.5
    from_lender() { awk -v ip="$lender_ip" '$1 == ip && $2 == 8080' "$tmp/reuse.sniffed" | wc -l; }
    check "8 control: frontend connected to lender:8080 and received its greeting through the tracked flow" \
      [ -n "$client_port" -a "$(from_lender)" -gt 0 ]
    # The pod goes first, its workload after: frontend's connection gets no FIN, so its
    # entry stays established (a FIN would leave it 10 s).
    pod_detach lender
    kill "$lender_pid" 2>/dev/null
    : >"$tmp/reuse.sniffed"
    if ADV_ADD_IPS="[\"$lender_ip\"]" add_pod heir '["app=heir"]' && [ "$(ip4_of heir)" = "$lender_ip" ]; then
      check "8 heir (another identity) got lender's address $lender_ip" true
      ip netns exec adv-heir "$PY" -c "
import logging; logging.getLogger('scapy').setLevel(logging.ERROR)
from scapy.all import IP, TCP, Raw, send
for seq in range(5):
    send(IP(src='$lender_ip', dst='$frontend_ip') / TCP(sport=8080, dport=$client_port, flags='PA', seq=1000 + seq, ack=1) / Raw(b'injected'), verbose=False)
    send(IP(src='$lender_ip', dst='$frontend_ip') / TCP(sport=8080, dport=$client_port, flags='A', seq=1000 + seq, ack=1), verbose=False)" \
        2>"$tmp/reuse.send.err"
      check "8 heir sent its 10 segments (scapy)" [ $? = 0 -a ! -s "$tmp/reuse.send.err" ]
      sleep 0.5
      check "8 frontend received nothing heir sent on lender's old connection ($(from_lender) packets)" [ "$(from_lender)" = 0 ]
    else
      check "8 ADD heir on lender's released address $lender_ip (got $(ip4_of heir 2>/dev/null))" false
    fi
  fi
fi

# ---- 7. bad etcd ipcache entries ----------------------------------------------------
if wants etcd; then
  if [ ${#store_flags[@]} = 0 ]; then
    note_skip "7 bad etcd ipcache entries: etcd-server (etcd, etcdctl) is not installed or did not start"
  else
    e() { etcdctl --endpoints "$ETCD" "$@"; }
    lease=$(e lease grant 300 | awk '{print $2}')
    fe_id=$(identity_of frontend) other_id=$(identity_of other)
    other_ip=$(ip4_of other) backend_ip=$(ip4_of backend)
    P=/tessera/ipcache
    entry() { printf '{"identity":%s,"node":"adv-remote"}' "$1"; }
    e put --lease="$lease" "$P/10.213.9.9/32" "$(entry "$fe_id")" >/dev/null        # a valid remote entry: the control
    e put --lease="$lease" "$P/0.0.0.0/0" "$(entry "$fe_id")" >/dev/null
    e put --lease="$lease" "$P/::/0" "$(entry "$fe_id")" >/dev/null
    e put --lease="$lease" "$P/$other_ip/32" "$(entry "$fe_id")" >/dev/null       # a local pod's address
    e put --lease="$lease" "$P/10.213.9.1/32" "$(entry 1)" >/dev/null             # host
    e put --lease="$lease" "$P/10.213.9.2/32" "$(entry 2)" >/dev/null             # world
    e put --lease="$lease" "$P/10.213.9.3/32" '{"identity":' >/dev/null           # garbage
    e put --lease="$lease" "$P/10.213.9.4/32" 'not json at all' >/dev/null
    e put --lease="$lease" "$P/10.213.10.0/24" "$(entry "$fe_id")" >/dev/null     # a /24
    other_ip6=$(ip6_of other)
    [ -n "$other_ip6" ] && e put --lease="$lease" "$P/$other_ip6/128" "$(entry "$fe_id")" >/dev/null
    # Claims on the addresses host-local hands out next, made before any pod holds them.
    last=$(cat "$CHAIN_STATE/ipam/$CHAIN_NAME/last_reserved_ip.0" 2>/dev/null)
    mapfile -t next_ips < <("$PY" -c "import ipaddress,sys; a=ipaddress.ip_address(sys.argv[1]); print(*[a+i for i in (1,2,3)], sep='\n')" "${last:-10.213.0.100}")
    for ip in "${next_ips[@]}"; do e put --lease="$lease" "$P/$ip/32" "$(entry "$fe_id")" >/dev/null; done
    ipc() { tessera datapath ipcache list -o json; }
    has_prefix() { ipc | jq -e --arg p "$1" '.entries | map(select(.prefix == $p)) | length > 0'; }
    lacks_prefix() { ! has_prefix "$1"; }
    check "7 control: a valid entry of another node (10.213.9.9/32) is applied" eventually 15 has_prefix 10.213.9.9/32
    sleep 1
    ipc >"$tmp/ipcache.json"
    check "7 0.0.0.0/0 from etcd is not applied" lacks_prefix 0.0.0.0/0
    check "7 ::/0 from etcd is not applied" lacks_prefix ::/0
    check "7 a /24 from etcd is not applied" lacks_prefix 10.213.10.0/24
    check "7 an entry claiming identity 1 (host) is not applied" lacks_prefix 10.213.9.1/32
    check "7 an entry claiming identity 2 (world) is not applied" lacks_prefix 10.213.9.2/32
    check "7 garbage JSON values are not applied" bash -c "! jq -e '.entries | map(select(.prefix == \"10.213.9.3/32\" or .prefix == \"10.213.9.4/32\")) | length > 0' $tmp/ipcache.json"
    check "7 a local pod's address keeps its own identity ($other_ip -> $other_id, not $fe_id)" \
      bash -c "jq -e --arg p $other_ip/32 --argjson id $other_id '.entries | map(select(.prefix == \$p)) | length == 1 and .[0].identity == \$id' $tmp/ipcache.json"
    check "7 no etcd entry claims host or world anywhere in the ipcache except the node's own addresses" \
      bash -c "! jq -e '.entries | map(select(.prefix | startswith(\"10.213.9.\") or startswith(\"10.213.10.\"))) | map(select(.identity < 256)) | length > 0' $tmp/ipcache.json"
    [ -n "$other_ip6" ] && check "7 a local pod's IPv6 address keeps its own identity" \
      bash -c "jq -e --arg p $other_ip6/128 --argjson id $other_id '.entries | map(select(.prefix == \$p)) | length == 1 and .[0].identity == \$id' $tmp/ipcache.json"
    conn_other() { ip netns exec adv-other "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(0 if s.connect_ex(('$backend_ip', 8080)) == 0 else 1)"; }
    ip netns exec adv-backend "$PY" "$here/race.py" guard 8080 "$tmp/backend7.log" 25 &
    bg_pids+=($!)
    sleep 0.3
    denied_other() { ! conn_other; }
    check "7 other (denied) still cannot connect to backend:8080" denied_other
    check "7 ... and backend accepted nothing from it" bash -c "! grep -qx $other_ip $tmp/backend7.log"
    # A pod created on an address another node claimed beforehand: its own
    # identity must win, now and after the cluster ipcache's periodic resync.
    if add_pod late '["app=late"]'; then
      late_ip=$(ip4_of late) late_id=$(identity_of late)
      late_has_own() { ipc | jq -e --arg p "$late_ip/32" --argjson id "$late_id" '.entries | map(select(.prefix == $p)) | length == 1 and .[0].identity == $id'; }
      claimed=no; for ip in "${next_ips[@]}"; do [ "$ip" = "$late_ip" ] && claimed=yes; done
      check "7 a new pod got an address claimed in etcd beforehand ($late_ip; claimed: ${next_ips[*]})" [ "$claimed" = yes ]
      check "7 ... and its own identity is in the ipcache right after ADD" late_has_own
      sleep 12 # longer than the cluster ipcache's resync (10 s)
      check "7 ... and still after a resync of the cluster ipcache" late_has_own
      conn_late() { ip netns exec adv-late "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(0 if s.connect_ex(('$backend_ip', 8080)) == 0 else 1)"; }
      denied_late() { ! conn_late; }
      check "7 ... and it cannot reach backend:8080 as frontend" denied_late
    else
      check "7 ADD of a pod on a pre-claimed address" false
    fi
  fi
fi

echo "adversarial: $passed passed, $failed failed${skipped:+, $skipped skipped}"
[ "$failed" = 0 ]
