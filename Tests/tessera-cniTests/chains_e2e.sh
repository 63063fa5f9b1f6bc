#!/usr/bin/env bash
# The CNI chains against a real node (tessera node up, eBPF datapath), with real TCP between
# pods in network namespaces. For each chain
#   ptp    -> tessera-cni      (chained; Debian's ptp + host-local)
#   bridge -> tessera-cni      (chained; Debian's bridge + host-local: prevResult is
#                               [bridge, host veth, eth0])
#   tessera-cni as the main plugin with host-local IPAM (the recommended mode)
# three pods a, b, c and a policy letting only a reach b on TCP 8080. Checks: a -> b:8080
# connects, a -> b:9090 and c -> b:8080 are dropped, every pod's programs sit on its own host
# veth (the peer of its eth0) and never on the bridge. On the bridge, c steals b's MAC
# (gratuitous ARP with b's MAC as the Ethernet source): the bridge moves the MAC to c's port,
# and none of b's packets may reach c.
#
# The window: b's listener is bound and an AF_PACKET sniffer runs in b's namespace before
# b's ADD, while c floods b. Every packet that reaches b's namespace before ADD returns is
# counted. Main plugin: must be 0 (its links come up only after the policy is in force), and
# the sniffer must see a's allowed traffic afterwards (it works). Chained ptp: the count is
# measured and printed, not asserted (ptp routes the pod before tessera-cni runs).
#
# Then macvlan -> tessera-cni must fail ADD with code 106 and leave no endpoint.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/tessera-cniTests/chains_e2e.sh
#
# Skips (exit 77, with the reason) without root, eBPF, the CNI plugins, jq or python3.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PY=/usr/bin/python3
skip() { echo "chains-e2e: SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, veths, eBPF)"
for p in ptp bridge host-local macvlan; do
  [ -x "/usr/lib/cni/$p" ] || skip "/usr/lib/cni/$p missing (apt-get install containernetworking-plugins)"
done
[ -n "${TESSERA_BIN:-}" ] && [ -x "$TESSERA_BIN/tessera" ] || skip "TESSERA_BIN is not set to the built binaries"
command -v jq >/dev/null && command -v tc >/dev/null && [ -x "$PY" ] || skip "jq, tc or python3 missing"
PLUGIN=${TESSERA_CNI:-$repo/.build-cni/tessera-cni}
[ -x "$PLUGIN" ] || make -s -C "$repo/Sources/tessera-cni" all || skip "tessera-cni cannot be built"

tmp=$(mktemp -d /tmp/cni-chains.XXXXXX)
RUN=$tmp/run
PIN=/sys/fs/bpf/cni-chains-$$
NET=cni-chains-$$
BR=cnibr$$
MVLINK=cnimv$$ # macvlan's master: one end of a veth pair (no dummy module needed)
SUPER=10.181.0.0/16 # every pod address of this test; unreachable unless a pod route exists
NS_PREFIX=cni-ch$$-
bg_pids=()
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }

passed=0 failed=0
check() { # description command...
  local d=$1
  shift
  if "$@" >/dev/null 2>&1; then passed=$((passed + 1)); echo "ok   $d"; else failed=$((failed + 1)); echo "FAIL $d"; fi
}
not() { ! "$@"; }

# --- pods and chains, run the way libcni runs them ------------------------------------------
ns() { echo "$NS_PREFIX$1-$2"; } # chain pod
subnet() { case $1 in ptp) echo 10.181.1.0/24 ;; bridge) echo 10.181.2.0/24 ;; main) echo 10.181.3.0/24 ;; macvlan) echo 10.181.4.0/24 ;; esac; }
ipam() { # chain
  printf '{"type":"host-local","ranges":[[{"subnet":"%s"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"%s/ipam"}' \
    "$(subnet "$1")" "$tmp"
}
first_conf() { # chain: the interface plugin's config (tessera-cni's own in main mode)
  case $1 in
  ptp) printf '{"cniVersion":"1.0.0","name":"%s","type":"ptp","ipMasq":false,"ipam":%s}' "$NET-ptp" "$(ipam ptp)" ;;
  bridge) printf '{"cniVersion":"1.0.0","name":"%s","type":"bridge","bridge":"%s","isGateway":true,"ipMasq":false,"ipam":%s}' \
    "$NET-bridge" "$BR" "$(ipam bridge)" ;;
  macvlan) printf '{"cniVersion":"1.0.0","name":"%s","type":"macvlan","master":"%s","mode":"bridge","ipam":%s}' \
    "$NET-macvlan" "$MVLINK" "$(ipam macvlan)" ;;
  esac
}
tsr_conf() { # chain pod [prevResult]
  local labels="[\"app=$2\",\"chain=$1\"]"
  if [ "$1" = main ]; then
    printf '{"cniVersion":"1.0.0","name":"%s","type":"tessera-cni","socketPath":"%s","timeoutMs":20000,"logFile":"%s/cni.log","logLevel":"debug","args":{"cni":{"labels":%s}},"ipam":%s}' \
      "$NET-main" "$RUN/endpoint.sock" "$tmp" "$labels" "$(ipam main)"
  else
    printf '{"cniVersion":"1.0.0","name":"%s","type":"tessera-cni","socketPath":"%s","timeoutMs":20000,"logFile":"%s/cni.log","logLevel":"debug","args":{"cni":{"labels":%s}},"prevResult":%s}' \
      "$NET-$1" "$RUN/endpoint.sock" "$tmp" "$labels" "${3:-null}"
  fi
}
cni_exec() { # binary command chain pod config
  env -i PATH="$PATH" CNI_COMMAND="$2" CNI_CONTAINERID="$NET-$3-$4" CNI_NETNS="/var/run/netns/$(ns "$3" "$4")" \
    CNI_IFNAME=eth0 CNI_PATH="/usr/lib/cni:$(dirname "$PLUGIN")" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$4" "$1" <<<"$5"
}
pod_ns() { # chain pod: the namespace (the runtime's part)
  ip netns add "$(ns "$1" "$2")" 2>/dev/null
  ip -n "$(ns "$1" "$2")" link set lo up
}
# add CHAIN POD: ADD through the chain; the result goes to $tmp/CHAIN-POD.json and the time
# tessera-cni's ADD returned (epoch seconds) to $tmp/CHAIN-POD.done.
add() {
  local chain=$1 pod=$2 prev out rc
  pod_ns "$chain" "$pod"
  if [ "$chain" = main ]; then
    out=$(cni_exec "$PLUGIN" ADD main "$pod" "$(tsr_conf main "$pod")")
    rc=$?
  else
    prev=$(cni_exec "/usr/lib/cni/$chain" ADD "$chain" "$pod" "$(first_conf "$chain")") || { echo "$prev"; return 1; }
    echo "$prev" >"$tmp/$chain-$pod.json" # what a runtime knows if the next plugin fails
    date +%s.%N >"$tmp/$chain-$pod.routed"
    out=$(cni_exec "$PLUGIN" ADD "$chain" "$pod" "$(tsr_conf "$chain" "$pod" "$prev")")
    rc=$?
  fi
  date +%s.%N >"$tmp/$chain-$pod.done"
  if [ "$rc" != 0 ]; then
    echo "$out" >"$tmp/$chain-$pod.err"
    return "$rc"
  fi
  echo "$out" >"$tmp/$chain-$pod.json"
}
del() { # chain pod: DEL in reverse order, then the namespace
  local chain=$1 pod=$2 cached=null
  [ -f "$tmp/$chain-$pod.json" ] && cached=$(cat "$tmp/$chain-$pod.json")
  if [ "$chain" = main ]; then
    cni_exec "$PLUGIN" DEL main "$pod" "$(tsr_conf main "$pod")" >/dev/null
  else
    cni_exec "$PLUGIN" DEL "$chain" "$pod" "$(tsr_conf "$chain" "$pod" "$cached")" >/dev/null
    cni_exec "/usr/lib/cni/$chain" DEL "$chain" "$pod" "$(first_conf "$chain")" >/dev/null
  fi
  rm -f "$tmp/$chain-$pod.json"
  ip netns del "$(ns "$chain" "$pod")" 2>/dev/null
}
pod_ip() { jq -r '[.ips[].address | select(contains("."))][0]' "$tmp/$1-$2.json" | cut -d/ -f1; }
host_veth() { # chain pod: the endpoint's host interface, as the service has it
  tessera endpoint get --container-id "$NET-$1-$2" -o json | jq -r 'if type == "array" then first else . end | .hostInterface'
}
tc_bpf() { # dev direction: the bpf filters tc lists (captured first: grep -q must not cut tc off)
  local f
  f=$(tc filter show dev "$1" "$2" 2>/dev/null)
  grep bpf <<<"$f"
}
has_programs() { tc_bpf "$1" ingress && tc_bpf "$1" egress; } # dev: programs in both directions
no_programs() { ! tc_bpf "$1" ingress && ! tc_bpf "$1" egress; }
peer_of_eth0() { # chain pod: the host name of the veth peer of the pod's eth0, from the kernel
  local idx
  idx=$(ip -n "$(ns "$1" "$2")" -o link show eth0 | sed -n 's/.*eth0@if\([0-9]*\).*/\1/p')
  [ -n "$idx" ] && ip -o link show | awk -F': ' -v i="$idx" '$1 == i {sub(/@.*/, "", $2); print $2}'
}
connects() { # chain from ip port
  ip netns exec "$(ns "$1" "$2")" "$PY" -c '
import socket, sys
s = socket.socket(); s.settimeout(1.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("connected")
except OSError:
    sys.exit(1)' "$3" "$4"
}
dropped() { ! connects "$@"; }
bg() { "$@" & bg_pids+=($!); }

# A listener on 8080 and 9090 that logs the time of every accepted connection.
LISTENER='
import select, socket, sys, time
out = open(sys.argv[1], "a", buffering=1)
socks = []
for port in (8080, 9090):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(128); socks.append(s)
while True:
    for s in select.select(socks, [], [])[0]:
        c, peer = s.accept(); out.write("%.6f %s %d\n" % (time.time(), peer[0], s.getsockname()[1])); c.close()'
# Every packet that reaches the namespace (not sent by it, not on lo), with the kernel's receive
# time (SO_TIMESTAMPNS): under load the sniffer reads late, and its own clock would move
# packets that arrived before ADD returned to after it.
SNIFFER='
import socket, struct, sys, time
ETH_P_ALL, SO_TIMESTAMPNS = 3, 35
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
out = open(sys.argv[1], "a", buffering=1)
open(sys.argv[1] + ".ready", "w").close()
while True:
    data, ancillary, _, addr = s.recvmsg(65535, 64)
    received = next((sec + nsec / 1e9 for level, kind, raw in ancillary
                     if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
                     for sec, nsec in [struct.unpack("qq", raw[:16])]), None) or time.time()
    ifname, proto, pkttype = addr[0], addr[1], addr[2]
    if ifname == "lo" or pkttype == socket.PACKET_OUTGOING:
        continue
    src = "-"
    if proto == 0x0800 and len(data) >= 34:
        src = socket.inet_ntop(socket.AF_INET, data[26:30])
    elif proto == 0x86dd and len(data) >= 38:
        src = socket.inet_ntop(socket.AF_INET6, data[22:38])
    # time, interface, ethertype, length, IP source, first 48 bytes (for the report)
    out.write("%.6f %s 0x%04x %d %s %s\n" % (received, ifname, proto, len(data), src, data[:48].hex()))'
# Gratuitous ARP for the sender's own address (argv[2]) with another pod's MAC (argv[1]) as
# the Ethernet source, every 50 ms for argv[3] seconds: the bridge learns that MAC here.
MAC_THIEF='
import socket, sys, time
stolen, own_ip, end = bytes.fromhex(sys.argv[1].replace(":", "")), socket.inet_aton(sys.argv[2]), time.time() + float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
own_mac = s.getsockname()[4]
arp = bytes.fromhex("0001080006040001") + own_mac + own_ip + bytes(6) + own_ip
while time.time() < end:
    s.send(b"\xff" * 6 + stolen + b"\x08\x06" + arp)
    time.sleep(0.05)'
# A denied peer that keeps trying to reach the target: TCP connects to 8080 and UDP datagrams.
FLOODER='
import socket, sys, time
ip, end = sys.argv[1], time.time() + float(sys.argv[2])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while time.time() < end:
    t = socket.socket(); t.setblocking(False)
    try:
        t.connect_ex((ip, 8080))
        u.sendto(b"x", (ip, 8080))
    except OSError:
        pass
    time.sleep(0.002); t.close()'
count_before() { # file epoch: lines with a time before epoch
  awk -v t="$2" '$1 < t' "$1" 2>/dev/null | wc -l
}

cleanup() {
  set +e
  for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; done
  for chain in ptp bridge main macvlan; do
    for pod in a b c; do [ -e "/var/run/netns/$(ns "$chain" "$pod")" ] && del "$chain" "$pod"; done
  done
  "$TESSERA_BIN/tessera" node down --run-dir "$RUN" >/dev/null 2>&1
  ip link del "$BR" 2>/dev/null
  ip link del "$MVLINK" 2>/dev/null
  ip route del unreachable "$SUPER" 2>/dev/null
  ip route show | awk '$1 ~ /^10\.181\./ {print $1}' | while read -r r; do ip route del "$r" 2>/dev/null; done
  rm -rf "$PIN" "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Packets for a pod that does not exist yet must not leave the machine by its default route.
ip route add unreachable "$SUPER" || { echo "chains-e2e: cannot add the unreachable route for $SUPER"; exit 1; }

tessera node up --detach --no-supervise --state-dir "$tmp/state" --bpf-pin-dir "$PIN" >"$tmp/up.log" 2>&1 || {
  cat "$tmp/up.log" "$RUN"/*.log
  exit 1
}
backend=$(tessera status -o json | jq -r '.services[] | select(.service=="datapath") | .backend')
case $backend in bpf*) ;; *) skip "the datapath runs '$backend', not eBPF" ;; esac
echo "chains-e2e: datapath backend $backend"

for chain in ptp bridge main; do
  cat >"$tmp/policy-$chain.yaml" <<YAML
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b-allows-a-$chain, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: b, chain: $chain}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a, chain: $chain}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
YAML
  check "policy for the $chain chain imported" tessera policy import "$tmp/policy-$chain.yaml"
done

declare -A window
for chain in ptp bridge main; do
  echo "--- chain: $chain"
  check "$chain: a ADD" add "$chain" a
  check "$chain: c ADD" add "$chain" c
  # host-local hands out addresses in order: b, added third, gets .4.
  b_ip=${SUPER%.0.0/16}.$(subnet "$chain" | cut -d. -f3).4
  # b's namespace exists before its ADD, with its workload and a sniffer already running.
  pod_ns "$chain" b
  bg ip netns exec "$(ns "$chain" b)" "$PY" -c "$LISTENER" "$tmp/$chain-b.accepted"
  bg ip netns exec "$(ns "$chain" b)" "$PY" -c "$SNIFFER" "$tmp/$chain-b.sniffed"
  for _ in $(seq 100); do [ -e "$tmp/$chain-b.sniffed.ready" ] && break; sleep 0.05; done
  bg ip netns exec "$(ns "$chain" c)" "$PY" -c "$FLOODER" "$b_ip" 6
  flooder=${bg_pids[-1]}
  sleep 0.5
  check "$chain: b ADD (while c floods it)" add "$chain" b
  [ -f "$tmp/$chain-b.err" ] && cat "$tmp/$chain-b.err"
  check "$chain: b got the expected address $b_ip" [ "$(pod_ip "$chain" b)" = "$b_ip" ]
  done_at=$(cat "$tmp/$chain-b.done")
  wait "$flooder" 2>/dev/null
  a_ip=$(pod_ip "$chain" a)
  c_ip=$(pod_ip "$chain" c)
  n_before=$(count_before "$tmp/$chain-b.sniffed" "$done_at")
  n_from_c=$(awk -v t="$done_at" -v c="$c_ip" '$1 < t && $5 == c' "$tmp/$chain-b.sniffed" 2>/dev/null | wc -l)
  n_accepted=$(awk -v t="$done_at" -v c="$c_ip" '$1 < t && $2 == c' "$tmp/$chain-b.accepted" 2>/dev/null | wc -l)
  window[$chain]="$n_before packets reached b before ADD returned, $n_from_c of them from c; c connected $n_accepted times"
  if [ -f "$tmp/$chain-b.routed" ]; then
    ms=$(awk -v a="$(cat "$tmp/$chain-b.routed")" -v b="$done_at" 'BEGIN {printf "%.1f", (b - a) * 1000}')
    window[$chain]+=" (the interface plugin returned ${ms} ms before tessera-cni's ADD did)"
  fi
  if [ "$chain" = main ]; then
    # The moment CreateEndpoint returned (links still down), from the plugin's debug log.
    ready_at=$(sed -n "s/.*ADD main container=$NET-main-b endpoint=[0-9]* ready at \([0-9.]*\):.*/\1/p" "$tmp/cni.log" | tail -1)
    n_unready=$(count_before "$tmp/$chain-b.sniffed" "${ready_at:-0}")
    window[$chain]+="; $n_unready before the policy was in force"
  fi
  echo "chains-e2e: $chain window: ${window[$chain]}"
  awk -v t="$done_at" '$1 < t' "$tmp/$chain-b.sniffed" | head -3 | sed 's/^/    before ADD returned: /'
  if [ "$chain" = main ]; then
    check "main: the plugin logged when the policy was in force" [ -n "$ready_at" ]
    check "main: no packet at all reached b before its policy was in force (c flooded it throughout)" [ "$n_unready" = 0 ]
    check "main: no packet from c reached b before ADD returned" [ "$n_from_c" = 0 ]
    check "main: c never connected to b's listener before ADD returned" [ "$n_accepted" = 0 ]
  fi

  check "$chain: a -> b:8080 connects" connects "$chain" a "$b_ip" 8080
  check "$chain: a -> b:9090 is dropped" dropped "$chain" a "$b_ip" 9090
  check "$chain: c -> b:8080 is dropped" dropped "$chain" c "$b_ip" 8080
  check "$chain: c -> b:9090 is dropped" dropped "$chain" c "$b_ip" 9090
  # By the kernel's receive times, not the listener's: a connection c made in the chained
  # window can sit in the accept queue past ADD's return and be accepted after it.
  awk -v c="$c_ip" -v t="$done_at" '$1 >= t && $5 == c' "$tmp/$chain-b.sniffed" | head -3 | sed 's/^/    from c after ADD returned: /'
  check "$chain: once ADD returned, no packet from c reached b (c flooded on)" \
    [ "$(awk -v c="$c_ip" -v t="$done_at" '$1 >= t && $5 == c' "$tmp/$chain-b.sniffed" | wc -l)" = 0 ]
  check "$chain: the listener saw a" [ "$(awk -v a="$a_ip" '$2 == a' "$tmp/$chain-b.accepted" | wc -l)" -gt 0 ]
  check "$chain: the sniffer saw a's packets after ADD (it was listening throughout)" \
    [ "$(awk -v a="$a_ip" -v t="$done_at" '$1 >= t && $5 == a' "$tmp/$chain-b.sniffed" | wc -l)" -gt 0 ]
  if [ "$chain" = main ]; then
    check "main: the sniffer counts packets (a's allowed traffic after ADD)" [ "$(wc -l <"$tmp/$chain-b.sniffed")" -gt 0 ]
  fi
  declare -A seen=()
  for pod in a b c; do
    hv=$(host_veth "$chain" "$pod")
    check "$chain: $pod's endpoint is on the peer of its eth0 ($hv)" [ -n "$hv" -a "$hv" = "$(peer_of_eth0 "$chain" "$pod")" ]
    check "$chain: $pod's programs are on its host veth $hv" has_programs "$hv"
    check "$chain: $pod's host veth is its own" [ -z "${seen[$hv]:-}" ]
    seen[$hv]=1
  done
  unset seen
  if [ "$chain" = bridge ]; then
    check "bridge: the bridge $BR carries no programs" no_programs "$BR"
    check "bridge: prevResult listed the bridge first (the old rule's pick)" \
      [ "$(jq -r '.interfaces[0].name' "$tmp/bridge-b.json")" = "$BR" ]
    # MAC theft: c sends frames from its own address with b's MAC as the Ethernet source, so
    # the bridge learns b's MAC on c's port and delivers a's traffic for b to c. c has no
    # policy of its own (its ingress allows everything): only the destination check keeps
    # b's traffic out of c.
    b_mac=$(ip -n "$(ns bridge b)" link show eth0 | awk '/link\/ether/ {print $2}')
    c_hv=$(host_veth bridge c)
    bg ip netns exec "$(ns bridge c)" "$PY" -c "$SNIFFER" "$tmp/bridge-c.sniffed"
    for _ in $(seq 100); do [ -e "$tmp/bridge-c.sniffed.ready" ] && break; sleep 0.05; done
    bg ip netns exec "$(ns bridge c)" "$PY" -c "$MAC_THIEF" "$b_mac" "$c_ip" 3
    # b's own frames take its MAC back until c's next one (every 50 ms): the bridge is
    # polled for the theft, then a sends to b while c holds b's MAC.
    stolen=
    for _ in $(seq 40); do
      bridge fdb show br "$BR" | grep -qi "^$b_mac dev $c_hv " && { stolen=1; break; }
      sleep 0.05
    done
    check "bridge: c's frames moved b's MAC to c's port ($c_hv) on the bridge" [ -n "$stolen" ]
    connects bridge a "$b_ip" 8080 >/dev/null
    wait "${bg_pids[-1]}" 2>/dev/null
    b_hex=$(printf '%02x' ${b_ip//./ })
    check "bridge: no packet for b reached c while c held b's MAC" \
      [ "$(awk -v b="$b_hex" '$3 == "0x0800" && substr($6, 61, 8) == b' "$tmp/bridge-c.sniffed" | wc -l)" = 0 ]
  fi
  if [ "$chain" = main ]; then
    hv=$(host_veth main b)
    check "main: CHECK passes" bash -c "env -i PATH=\"\$PATH\" CNI_COMMAND=CHECK CNI_CONTAINERID=$NET-main-b CNI_NETNS=/var/run/netns/$(ns main b) CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni:$(dirname "$PLUGIN") $PLUGIN <<<\"\$(jq -c --argjson p \"\$(cat $tmp/main-b.json)\" '. + {prevResult: \$p}' <<<'$(tsr_conf main b)')\""
    check "main: DEL b" del main b
    check "main: DEL removed b's veth" not ip link show "$hv"
    check "main: DEL removed b's endpoint" not tessera endpoint get --container-id "$NET-main-b"
    check "main: DEL released b's address" [ ! -e "$tmp/ipam/$NET-main/$b_ip" ]
    pod_ns main b
    check "main: DEL again (already gone) succeeds" del main b
  fi
done

echo "--- chain: macvlan"
ip link add "$MVLINK" type veth peer name "${MVLINK}p" && ip link set "$MVLINK" up
pod_ns macvlan a
add macvlan a
rc=$?
check "macvlan: ADD fails" [ "$rc" != 0 ]
check "macvlan: with code 106 (no host-side veth)" [ "$(jq -r .code "$tmp/macvlan-a.err")" = 106 ]
check "macvlan: the message says why" grep -q "is of kind macvlan" <<<"$(jq -r .details "$tmp/macvlan-a.err")"
check "macvlan: no endpoint was created" not tessera endpoint get --container-id "$NET-macvlan-a"
del macvlan a

echo "chains-e2e: windows (packets from a flooding denied peer reaching the pod before ADD returned):"
for chain in ptp bridge main; do echo "  $chain: ${window[$chain]:-not measured}"; done
echo "chains-e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
