#!/usr/bin/env bash
# The quick-start demo: starts a node, creates three pods through the real CNI
# plugin (tessera-cni as the main plugin with host-local IPAM; DEMO_CNI_MODE=chained
# for ptp + host-local, then tessera-cni), imports a policy, and shows the
# identities, endpoints, selectors and realised policy; with the eBPF datapath
# it also proves enforcement with real TCP between the pods.
#
#   scripts/demo.sh            # run the demo; the node and pods stay up
#   scripts/demo.sh --cleanup  # delete the demo pods, stop the node, remove its state and pinned maps
#
# Pods are network namespaces tsr-demo-{frontend,backend,other} on 10.198.0.0/24.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bin=${TESSERA_BIN:-$(swift build --show-bin-path)}
tessera="$bin/tessera"
cni="$repo/.build-cni/tessera-cni"
export TESSERA_RUN_DIR=${TESSERA_RUN_DIR:-/run/tessera}
state=/var/lib/tessera/demo
pin=/sys/fs/bpf/tessera-demo
pods=(frontend backend other)

CHAIN_NAME=tessera-demo CHAIN_SUBNET=10.198.0.0/24 CHAIN_STATE=$state/cni CHAIN_NETNS_PREFIX=tsr-demo-
CHAIN_SOCKET=$TESSERA_RUN_DIR/endpoint.sock CHAIN_CNI=$cni
# tessera-cni as the main plugin, the recommended mode: the pod's links come up only
# once its policy is in force. DEMO_CNI_MODE=chained runs ptp + tessera-cni instead.
CHAIN_MODE=$([ "${DEMO_CNI_MODE:-main}" = chained ] && echo chained || echo main)
. scripts/lib/cni-chain.sh

cleanup() {
  for pod in "${pods[@]}"; do chain_del "$pod"; done
  "$tessera" node down || true
  # The demo's own node: its pinned maps and state go with it.
  rm -rf "$pin" "$state"
}

if [ "${1:-}" = --cleanup ]; then
  cleanup
  exit 0
fi

[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces, eBPF)" >&2; exit 1; }
if ! "$tessera" status >/dev/null 2>&1; then
  "$tessera" node up --detach --state-dir "$state" --bpf-pin-dir "$pin"
fi
echo
"$tessera" status
echo

for pod in "${pods[@]}"; do
  [ -f "$CHAIN_STATE/$pod.json" ] && continue
  start=$(date +%s%N)
  chain_add "$pod" "[\"app=$pod\"]"
  echo "pod $pod: $([ "$CHAIN_MODE" = main ] && echo "tessera-cni (main plugin)" || echo "ptp + tessera-cni") ADD returned in $((($(date +%s%N) - start) / 1000000)) ms with policy in force"
done

cat >"$state/backend-policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: backend-allow-frontend
  namespace: default
spec:
  endpointSelector:
    matchLabels:
      app: backend
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: frontend
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
YAML
echo
"$tessera" policy import "$state/backend-policy.yaml"
echo
echo "--- endpoints"; "$tessera" endpoint list
echo; echo "--- identities"; "$tessera" identity list
echo; echo "--- selectors"; "$tessera" selectors
backend_id=$("$tessera" endpoint get --container-id tessera-demo-backend -o json | jq -r .id)
echo; echo "--- realised policy of the backend (endpoint $backend_id)"; "$tessera" datapath policy get "$backend_id"

backend_ip=$(chain_ip backend)
if "$tessera" status -o json | jq -e '.services[] | select(.service=="datapath") | .backend | startswith("bpf")' >/dev/null; then
  echo; echo "--- enforcement with real TCP"
  for port in 8080 9090; do
    ip netns exec tsr-demo-backend timeout 5 nc -l -p "$port" >/dev/null 2>&1 &
  done
  sleep 0.3
  for client in frontend other; do
    for port in 8080 9090; do
      if ip netns exec "tsr-demo-$client" timeout 2 nc -z -w 1 "$backend_ip" "$port"; then r=connected; else r=dropped; fi
      echo "$client -> backend:$port  $r"
    done
  done
  wait || true
else
  echo; echo "(the datapath runs the memory test backend: policy is computed but not enforced in the kernel)"
fi
echo
echo "The node and pods stay up. Stop with: scripts/demo.sh --cleanup"
