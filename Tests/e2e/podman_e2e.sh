#!/usr/bin/env bash
# Pods started by a real container runtime: podman (its CNI backend, Go libcni)
# runs tessera-cni as the main plugin with host-local IPAM (and chained after
# ptp for two containers), against a real node
# (tessera node up, eBPF datapath), and busybox in the containers speaks real TCP.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/e2e/podman_e2e.sh
#
# Podman passes the container name as K8S_POD_NAME and no namespace or labels, so
# the labels come from the workload registry (`tessera workload set default/NAME`).
# Policy: web accepts client on TCP 8080 only. Checks: each `podman run` leaves an
# endpoint with the registered labels; client connects and other, an unregistered
# container and client on another port are dropped, each from its first packet; a
# prober hammering web's (static) address from before web exists never connects (no
# window at start); `podman restart` and `podman rm -f` run DEL and ADD again and
# leave no endpoint, veth or identity reference behind; with the endpoint service
# down `podman run` fails with CNI's "try again later" (11) and leaves no container.
#
# Needs root, podman, runc or crun, busybox-static and eBPF; installs podman, runc
# and busybox-static with apt when missing; skips (77) with the reason otherwise.
# Everything it made (containers, network config, node, pins) goes on every exit.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
E2E_NAME=podman-e2e
. "$repo/Tests/lib/e2e.sh"
require_node
require_cni_plugins host-local
require_commands jq
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q "statically linked" || missing+=(busybox-static)
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null 2>&1 ||
    skip "cannot install ${missing[*]} with apt"
fi

tmp=$(mktemp -d /tmp/tsr-podman.XXXXXX)
RUN=$tmp/run
PIN=/sys/fs/bpf/tessera-podman-$$
NET=tsr-podman-$$
SUBNET_PREFIX=10.195.0
SUBNET_PREFIX_CHAINED=10.195.1
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }

# Podman reads the CNI backend, the plugin directories and the network config from
# this file only: the machine's own containers.conf and /etc/cni/net.d are untouched.
export CONTAINERS_CONF=$tmp/containers.conf
mkdir -p "$tmp/net.d" "$tmp/plugins" "$tmp/rootfs/bin" "$tmp/rootfs/www" "$tmp/rootfs/etc"
cp "$repo/.build-cni/tessera-cni" "$tmp/plugins/"
cat >"$CONTAINERS_CONF" <<EOF
[network]
network_backend = "cni"
cni_plugin_dirs = ["$tmp/plugins", "/usr/lib/cni"]
network_config_dir = "$tmp/net.d"
EOF
cat >"$tmp/net.d/$NET.conflist" <<EOF
{"cniVersion":"1.0.0","name":"$NET","plugins":[{"type":"tessera-cni","socketPath":"$RUN/endpoint.sock","timeoutMs":10000,"logFile":"$tmp/cni.log","ipam":{"type":"host-local","ranges":[[{"subnet":"$SUBNET_PREFIX.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$tmp/ipam"}}]}
EOF
# The chained mode: ptp makes the veth, libcni hands its result to tessera-cni.
cat >"$tmp/net.d/$NET-chained.conflist" <<EOF
{"cniVersion":"1.0.0","name":"$NET-chained","plugins":[{"type":"ptp","ipMasq":false,"ipam":{"type":"host-local","ranges":[[{"subnet":"$SUBNET_PREFIX_CHAINED.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$tmp/ipam"}},{"type":"tessera-cni","socketPath":"$RUN/endpoint.sock","timeoutMs":10000,"logFile":"$tmp/cni.log"}]}
EOF
# The containers' root: busybox alone (no image, no registry).
cp /bin/busybox "$tmp/rootfs/bin/"
echo hello >"$tmp/rootfs/www/index.html"

podman_global=()
run_flags=()
p() { podman "${podman_global[@]}" "$@"; }
# prun [podman run options] -- command...: a container on the test's network and root.
prun() {
  local options=()
  while [ "$1" != -- ]; do options+=("$1") && shift; done
  shift
  p run "${run_flags[@]}" --label "$NET=1" --network "${network:-$NET}" "${options[@]}" --rootfs "$tmp/rootfs" "$@"
}

cleanup() {
  p ps -aq --filter "label=$NET" | xargs -r podman "${podman_global[@]}" rm -f -t 0 >/dev/null 2>&1
  "$TESSERA_BIN/tessera" node down --run-dir "$RUN" >/dev/null 2>&1
  rm -rf "$PIN" "$tmp"
}
trap cleanup EXIT

# A runtime that can start containers here: crun refuses some machines' rlimits, then
# runc with the limits in force (as Tests/deploy/images_test.sh does).
if ! p run --rm --network none --rootfs "$tmp/rootfs" /bin/busybox true >"$tmp/probe.log" 2>&1; then
  podman_global=(--runtime runc)
  run_flags=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
  if ! p run --rm --network none "${run_flags[@]}" --rootfs "$tmp/rootfs" /bin/busybox true >>"$tmp/probe.log" 2>&1; then
    cat "$tmp/probe.log"
    skip "podman cannot start a container on this machine (crun and runc both failed; see above)"
  fi
  echo "podman-e2e: the default runtime cannot start containers here; using runc with this machine's rlimits"
fi

# connects NAME IP PORT: a fresh container NAME sends an HTTP request; true on a reply.
connects() {
  prun --rm --name "$1" -- /bin/busybox sh -c \
    "printf 'GET /index.html HTTP/1.0\r\n\r\n' | busybox nc -w 2 $2 $3" 2>/dev/null | grep -q hello
}
endpoint_of() { # container-name → its endpoint JSON (by the container ID podman used)
  local id
  id=$(p inspect --format '{{.Id}}' "$1" 2>/dev/null) || return 1
  tessera endpoint list -o json | jq -e --arg id "$id" '.endpoints[] | select(.containerId == $id)'
}

tessera node up --detach --state-dir "$tmp/state" --bpf-pin-dir "$PIN" >/dev/null ||
  skip "tessera node up failed (eBPF unusable here?)"
tessera workload set default/web app=web >/dev/null
tessera workload set default/client app=client >/dev/null
tessera workload set default/other app=other >/dev/null
tessera workload set default/prober app=other >/dev/null
cat >"$tmp/policy.yaml" <<'EOF'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-client, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
EOF
tessera policy import "$tmp/policy.yaml" >/dev/null

# The prober starts before web and tries web's static address continuously.
WEB_IP=$SUBNET_PREFIX.50
prun -d --name prober -- /bin/busybox sh -c \
  "while true; do busybox nc -w 1 $WEB_IP 8080 </dev/null && echo CONNECTED; done" >/dev/null
check "prober container started through the plugin" endpoint_of prober
sleep 0.5
check "podman run -d web (static address through CNI_ARGS IP)" \
  prun -d --name web --ip "$WEB_IP" -- /bin/busybox sh -c \
  "busybox httpd -p 9090 -h /www && exec busybox httpd -f -p 8080 -h /www"
sleep 1
check "web's endpoint carries the registered labels and is ready" \
  eval 'endpoint_of web | jq -e ".state == \"ready\" and (.labels | index(\"k8s:app=web\")) != null"'
check "web's endpoint has the address podman reports" \
  test "$(p inspect web --format "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}")" = "$WEB_IP"
check "client -> web:8080 connects (first packets)" connects client "$WEB_IP" 8080
check "other -> web:8080 is dropped" eval '! connects other '"$WEB_IP"' 8080'
check "a container with no workload entry -> web:8080 is dropped" eval '! connects stranger '"$WEB_IP"' 8080'
check "client -> web:9090 (a port the policy does not allow) is dropped" eval '! connects client '"$WEB_IP"' 9090'
web_identity=$(endpoint_of web | jq -r .identity)
check "other's drop at web is a policy verdict naming both identities" eval 'tessera observe -o json | jq -se \
  "[.[] | select(.verdict == \"dropped\" and .reason == \"policy-default\" and .destination.identity == $web_identity and .destination.port == 8080 and (.source.labels | index(\"k8s:app=other\")) != null)] | length > 0"'
p logs prober >"$tmp/prober.log" 2>&1
check "the prober never connected (no window while web started)" eval '! grep -q CONNECTED '"$tmp/prober.log"

# Chained after ptp: libcni passes ptp's result to tessera-cni as prevResult.
tessera workload set default/chained-client app=client >/dev/null
tessera workload set default/chained-other app=other >/dev/null
check "chained (ptp + tessera-cni): client -> web:8080 connects" \
  eval 'network=$NET-chained connects chained-client '"$WEB_IP"' 8080'
check "chained (ptp + tessera-cni): other -> web:8080 is dropped" \
  eval '! network=$NET-chained connects chained-other '"$WEB_IP"' 8080'
check "that drop names the ptp-attached peer's address and identity" eval 'tessera observe -o json | jq -se \
  "[.[] | select(.verdict == \"dropped\" and (.source.ip | startswith(\"$SUBNET_PREFIX_CHAINED.\")) and (.source.labels | index(\"k8s:app=other\")) != null)] | length > 0"'

# Restart: podman tears the network down (DEL) and sets it up again (ADD).
web_id=$(endpoint_of web | jq -r .id)
check "podman restart web" p restart -t 0 web
sleep 0.5
check "web has a new endpoint after the restart" eval '[ "$(endpoint_of web | jq -r .id)" != "'"$web_id"'" ]'
check "client -> web:8080 connects after the restart" connects client "$(p inspect web --format "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}")" 8080
check "other -> web:8080 is still dropped after the restart" \
  eval '! connects other "$(p inspect web --format "{{(index .NetworkSettings.Networks \"'"$NET"'\").IPAddress}}")" 8080'

# Removal: DEL leaves nothing of the container behind.
web_veth=$(endpoint_of web | jq -r .hostInterface)
p rm -f -t 0 web prober >/dev/null 2>&1
check "no endpoint is left after podman rm -f" eval '[ "$(tessera endpoint list -o json | jq ".endpoints | length")" = 0 ]'
check "web's host veth is gone" eval '[ -n "'"$web_veth"'" ] && ! ip link show "'"$web_veth"'" 2>/dev/null'
check "web's identity holds no reference any more" \
  eval 'tessera identity get '"$web_identity"' -o json | jq -e ".references == 0"'

# The endpoint service gone: CNI code 11 (try again later), and no container left.
tessera node down >/dev/null
out=$(prun -d --name late -- /bin/busybox sleep 60 2>&1)
check "podman run fails while the endpoint service is down" test -z "$(p ps -q --filter name=late)"
check "podman's error says the endpoint service is unavailable" grep -q "endpoint service unavailable" <<<"$out"
check "the plugin answered CNI's try-again-later (11)" \
  grep -q "ADD container=.* result=error code=11 .*endpoint service unavailable" "$tmp/cni.log"
echo "$out" | head -n 3

e2e_result
