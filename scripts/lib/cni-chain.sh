# Runs the CNI chain ptp (host-local IPAM) -> tessera-cni the way libcni does:
# env vars, config on stdin, the previous result injected as prevResult, DEL in
# reverse order. Sourced by scripts/demo.sh and the end-to-end tests.
#
# Set before use: CHAIN_NAME, CHAIN_SUBNET, CHAIN_STATE (dir for IPAM and cached
# results), CHAIN_SOCKET (endpoint socket), CHAIN_CNI (tessera-cni binary),
# CHAIN_NETNS_PREFIX (pod netns = prefix + pod name). Optional: CHAIN_ROUTES, a
# JSON list of IPAM routes for the pod (e.g. to reach another node's pods);
# CHAIN_MODE=main runs tessera-cni as the main plugin (it creates the veth and
# delegates to host-local; no window) instead of the ptp chain (the default here,
# kept by the tests that measure or exercise the chained mode).
# chain_add takes an optional third argument, the pod's named ports as a JSON
# array in the Kubernetes container-port shape (args.cni.ports); without it the
# configuration has no "ports" key, as before.

chain_exec() { # plugin command pod config-json
  local plugin=$1 command=$2 pod=$3 config=$4 dir=/usr/lib/cni
  [ "$plugin" = tessera-cni ] && dir=$(dirname "$CHAIN_CNI")
  echo "$config" | env -i PATH="$PATH" CNI_COMMAND="$command" CNI_CONTAINERID="$CHAIN_NAME-$pod" \
    CNI_NETNS="/var/run/netns/$CHAIN_NETNS_PREFIX$pod" CNI_IFNAME=eth0 CNI_PATH="/usr/lib/cni:$(dirname "$CHAIN_CNI")" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$pod" "$dir/$plugin"
}

chain_ptp_config() {
  printf '{"cniVersion":"1.0.0","name":"%s","type":"ptp","ipMasq":false,"ipam":{"type":"host-local","ranges":[[{"subnet":"%s"}]],"routes":%s,"dataDir":"%s/ipam"}}' \
    "$CHAIN_NAME" "$CHAIN_SUBNET" "${CHAIN_ROUTES:-[]}" "$CHAIN_STATE"
}

# chain_cni_args LABELS-JSON [PORTS-JSON]: the args.cni object's members.
chain_cni_args() {
  printf '"labels":%s' "$1"
  [ -z "${2:-}" ] || printf ',"ports":%s' "$2"
}

chain_main_config() { # labels-json-array [ports-json-array]
  printf '{"cniVersion":"1.0.0","name":"%s","type":"tessera-cni","socketPath":"%s","ipam":{"type":"host-local","ranges":[[{"subnet":"%s"}]],"routes":%s,"dataDir":"%s/ipam"},"args":{"cni":{%s}}}' \
    "$CHAIN_NAME" "$CHAIN_SOCKET" "$CHAIN_SUBNET" "${CHAIN_ROUTES:-[]}" "$CHAIN_STATE" "$(chain_cni_args "$1" "${2:-}")"
}

chain_tessera_config() { # labels-json-array prevResult [ports-json-array]
  printf '{"cniVersion":"1.0.0","name":"%s","type":"tessera-cni","socketPath":"%s","args":{"cni":{%s}},"prevResult":%s}' \
    "$CHAIN_NAME" "$CHAIN_SOCKET" "$(chain_cni_args "$1" "${3:-}")" "$2"
}

# chain_add POD LABELS-JSON [PORTS-JSON]: creates the pod netns and runs ADD through
# the chain; the result is cached in $CHAIN_STATE/POD.json. Returns non-zero if a
# plugin failed (the failing plugin's error JSON is then in POD.json).
chain_add() {
  local pod=$1 labels=$2 ports=${3:-} prev
  mkdir -p "$CHAIN_STATE"
  ip netns add "$CHAIN_NETNS_PREFIX$pod" 2>/dev/null || true
  ip -n "$CHAIN_NETNS_PREFIX$pod" link set lo up
  if [ "${CHAIN_MODE:-chained}" = main ]; then
    chain_exec tessera-cni ADD "$pod" "$(chain_main_config "$labels" "$ports")" >"$CHAIN_STATE/$pod.json" || {
      cat "$CHAIN_STATE/$pod.json"
      return 1
    }
    return 0
  fi
  prev=$(chain_exec ptp ADD "$pod" "$(chain_ptp_config)") || { echo "$prev"; return 1; }
  chain_exec tessera-cni ADD "$pod" "$(chain_tessera_config "$labels" "$prev" "$ports")" >"$CHAIN_STATE/$pod.json" || {
    cat "$CHAIN_STATE/$pod.json"
    return 1
  }
}

# chain_del POD: DEL in reverse order with the cached result, then removes the netns.
chain_del() {
  local pod=$1
  if [ "${CHAIN_MODE:-chained}" = main ]; then
    chain_exec tessera-cni DEL "$pod" "$(chain_main_config '[]')" >/dev/null || true
    rm -f "$CHAIN_STATE/$pod.json"
  elif [ -f "$CHAIN_STATE/$pod.json" ]; then
    chain_exec tessera-cni DEL "$pod" "$(chain_tessera_config '[]' "$(cat "$CHAIN_STATE/$pod.json")")" >/dev/null || true
    chain_exec ptp DEL "$pod" "$(chain_ptp_config)" >/dev/null || true
    rm -f "$CHAIN_STATE/$pod.json"
  fi
  ip netns del "$CHAIN_NETNS_PREFIX$pod" 2>/dev/null || true
}

# chain_ip POD: the pod's address from the cached result.
chain_ip() {
  jq -r '.ips[0].address' "$CHAIN_STATE/$1.json" | cut -d/ -f1
}
