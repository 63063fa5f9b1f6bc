extension ClusterPlan {
  /// The text of a node's pod helper: pods are network namespaces attached
  /// through `tessera-cni` as the main plugin (it creates the veth and keeps it
  /// down until the pod's policy is in force) with host-local IPAM, the way a
  /// container runtime would call it; `scripts/lib/cni-chain.sh` runs the same.
  ///
  /// - Parameters:
  ///   - cniPlugin: the `tessera-cni` executable.
  ///   - pluginDirectories: `CNI_PATH` (where `host-local` is).
  public func podScript(for node: Node, cniPlugin: String, pluginDirectories: [String]) -> String {
    let routes = #"[{"dst":"\#(podCIDR)"}]"#
    return #"""
      #!/usr/bin/env bash
      # Pods of \#(node.name) of the local cluster in \#(root) (made by tessera node up --cluster).
      #
      #   pod add NAME [LABEL...]   a pod (netns \#(node.netnsPrefix)NAME) through tessera-cni; prints its address
      #   pod del NAME              CNI DEL, then the namespace goes
      #   pod list                  NAME ADDRESS of each pod of this node
      #   pod ip NAME               the pod's address
      #   pod exec NAME CMD...      run CMD in the pod's network namespace
      #
      # LABEL is key=value (namespace: default). Pods of every node reach each
      # other through the host; policy decides what passes.
      set -euo pipefail
      NETWORK='\#(node.cniNetwork)'
      PREFIX='\#(node.netnsPrefix)'
      SOCKET='\#(node.runDirectory)/endpoint.sock'
      PLUGIN='\#(cniPlugin)'
      STATE='\#(node.cniDirectory)'
      SUBNET='\#(node.podSubnet)'
      ROUTES='\#(routes)'
      CNI_DIRS='\#(pluginDirectories.joined(separator: ":"))'

      usage() { sed -n '3,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
      valid_name() { [[ $1 =~ ^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$ ]] || { echo "pod: name '$1': lowercase letters, digits and '-', at most 32" >&2; exit 2; }; }
      config() { # labels-json
        printf '{"cniVersion":"1.0.0","name":"%s","type":"tessera-cni","socketPath":"%s","ipam":{"type":"host-local","ranges":[[{"subnet":"%s"}]],"routes":%s,"dataDir":"%s/ipam"},"args":{"cni":{"labels":%s}}}' \
          "$NETWORK" "$SOCKET" "$SUBNET" "$ROUTES" "$STATE" "$1"
      }
      cni() { # command pod config
        echo "$3" | env -i PATH="$PATH" CNI_COMMAND="$1" CNI_CONTAINERID="$NETWORK-$2" CNI_NETNS="/var/run/netns/$PREFIX$2" \
          CNI_IFNAME=eth0 CNI_PATH="$CNI_DIRS" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$2" "$PLUGIN"
      }
      address() { grep -o '"address": *"[^"]*"' "$STATE/$1.json" | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/' | cut -d/ -f1; }

      command=${1:-}
      [ -n "$command" ] || usage
      shift
      case $command in
      add)
        [ $# -ge 1 ] || usage
        pod=$1; shift; valid_name "$pod"
        [ ! -f "$STATE/$pod.json" ] || { echo "pod: $pod exists on \#(node.name) ($(address "$pod"))" >&2; exit 1; }
        labels=
        for label in "$@"; do
          [[ $label =~ ^[A-Za-z0-9_./:-]+=[A-Za-z0-9_.-]*$ ]] || { echo "pod: label '$label' is not key=value" >&2; exit 2; }
          labels+="${labels:+,}\"$label\""
        done
        mkdir -p "$STATE"
        ip netns add "$PREFIX$pod"
        ip -n "$PREFIX$pod" link set lo up
        if ! cni ADD "$pod" "$(config "[$labels]")" >"$STATE/$pod.json.tmp"; then
          cat "$STATE/$pod.json.tmp" >&2
          rm -f "$STATE/$pod.json.tmp"
          ip netns del "$PREFIX$pod" 2>/dev/null || true
          exit 1
        fi
        mv "$STATE/$pod.json.tmp" "$STATE/$pod.json"
        echo "$pod on \#(node.name): $(address "$pod") (netns $PREFIX$pod)"
        ;;
      del)
        [ $# -eq 1 ] || usage
        valid_name "$1"
        cni DEL "$1" "$(config '[]')" >/dev/null || true
        rm -f "$STATE/$1.json"
        ip netns del "$PREFIX$1" 2>/dev/null || true
        ;;
      list)
        for f in "$STATE"/*.json; do [ -f "$f" ] && echo "$(basename "$f" .json) $(address "$(basename "$f" .json)")"; done
        ;;
      ip)
        [ $# -eq 1 ] && [ -f "$STATE/$1.json" ] || { echo "pod: no pod '${1:-}' on \#(node.name)" >&2; exit 1; }
        address "$1"
        ;;
      exec)
        [ $# -ge 2 ] || usage
        pod=$1; shift
        exec ip netns exec "$PREFIX$pod" "$@"
        ;;
      *) usage ;;
      esac

      """#
  }
}
