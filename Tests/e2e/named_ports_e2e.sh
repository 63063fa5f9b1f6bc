#!/usr/bin/env bash
# End-to-end named ports in the kernel: a real node (tessera node up, eBPF
# datapath), pods attached by the real ptp + host-local plugins chained with
# tessera-cni, each declaring its named ports in args.cni.ports, and real TCP
# between them.
#
#   TESSERA_BIN=<dir with tessera and tessera-*d> bash Tests/e2e/named_ports_e2e.sh
#
# Checks: a CiliumNetworkPolicy ingress `port: http` opens the backend's own http
# port only, and resolves per pod (backend: http=8080, backend2 with the same
# labels: http=7070); a rule with `protocol: UDP` does not open the TCP port of that
# name (the realised map has no entry for it); a Kubernetes NetworkPolicy egress
# `port: http` resolves through the ports the peer's pods declare, and another pod
# naming its own port 9090 `http` does not open 9090 towards them, also for a rule
# with ports and no peer; a pod declaring a new http
# port after the egress policy exists is reachable (the client is regenerated), and
# the port of a deleted pod leaves the client's map; an invalid port name in
# args.cni.ports fails ADD with code 7 and leaves no endpoint; invalid named ports in
# a policy are refused at import. Every drop is shown to connect once the policies
# are deleted. Skips with a reason without root, CNI plugins or eBPF.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
E2E_NAME=named-ports-e2e
. "$repo/Tests/lib/e2e.sh"
require_node
require_cni_plugins ptp host-local
require_commands jq nc

tmp=$(mktemp -d /tmp/tsr-npe2e.XXXXXX)
RUN=$tmp/run
PIN=/sys/fs/bpf/tessera-npe2e-$$
tessera() { "$TESSERA_BIN/tessera" "$@" --run-dir "$RUN"; }
CHAIN_NAME=tsr-npe2e CHAIN_SUBNET=10.193.0.0/24 CHAIN_STATE=$tmp/cni CHAIN_NETNS_PREFIX=tsr-npe2e-
CHAIN_SOCKET=$RUN/endpoint.sock CHAIN_CNI=$repo/.build-cni/tessera-cni
. "$repo/scripts/lib/cni-chain.sh"
pods=(frontend other backend backend2 client backend3 client2 bad)
bg_pids=()

trap e2e_teardown EXIT

connects() { # from-pod ip port
  ip netns exec "tsr-npe2e-$1" nc -z -w 1 "$2" "$3" 2>/dev/null
}
dropped() { ! connects "$@"; }
listen() { # pod port...: workloads that accept connections until the test ends
  local port
  for port in "${@:2}"; do
    ip netns exec "tsr-npe2e-$1" nc -lk -p "$port" >/dev/null 2>&1 &
    bg_pids+=($!)
  done
}
endpoint_field() { # pod jq-path
  tessera endpoint get --container-id "tsr-npe2e-$1" -o json | jq -r "$2"
}
# policy_has ENDPOINT-ID JQ-CONDITION: an entry of the endpoint's realised map
# (tessera datapath policy get) satisfies the condition.
policy_has() {
  tessera datapath policy get "$1" -o json | jq -e "any(.entries[]; $2)" >/dev/null
}
policy_lacks() { ! policy_has "$@"; }
http() { # port: args.cni.ports declaring http on that TCP port
  printf '[{"name":"http","containerPort":%s,"protocol":"TCP"}]' "$1"
}

mport=$(free_port_block 4)
start_node --metrics-base-port "$mport"

# --- 1. Ingress, CiliumNetworkPolicy: `port: http` is the backend's own http port.
cat >"$tmp/ingress.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-http-from-frontend, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: http, protocol: TCP}]}]
YAML
# 3. The same name with protocol UDP, from `other`: the pods declare http as TCP,
# so this rule resolves to nothing and must not open anything (no L3-only allow,
# no TCP entry).
cat >"$tmp/ingress-udp.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-http-udp-from-other, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: other}}]
    toPorts: [{ports: [{port: http, protocol: UDP}]}]
YAML
# The client's traffic is let in on every port, so that what the client can reach
# is decided by its own egress policy alone (case 4).
cat >"$tmp/ingress-client.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: backend-all-from-client, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}, {matchLabels: {app: client2}}]
YAML
check "ingress policy (port: http) imported" tessera policy import "$tmp/ingress.yaml"
check "ingress policy (port: http, protocol: UDP) imported" tessera policy import "$tmp/ingress-udp.yaml"
check "ingress policy (all ports from client) imported" tessera policy import "$tmp/ingress-client.yaml"

check "frontend ADD" chain_add frontend '["app=frontend"]'
# `other` names 9090 "http": a pod of another identity must not widen egress rules
# towards the backends with it (case 4).
check "other ADD (http=9090/TCP)" chain_add other '["app=other"]' "$(http 9090)"
check "backend ADD (http=8080/TCP)" chain_add backend '["app=backend"]' "$(http 8080)"
frontend_ip=$(chain_ip frontend) backend_ip=$(chain_ip backend)
listen backend 8080 9090 7070
backend_id=$(endpoint_field backend .id)
check "endpoint get shows backend's named port http=8080/TCP" bash -c \
  "$TESSERA_BIN/tessera endpoint get $backend_id -o json --run-dir $RUN | jq -e '.namedPorts == [{name: \"http\", port: 8080, protocol: \"TCP\"}]' >/dev/null"
sleep 0.2
check "frontend -> backend:8080 (its http) connects" connects frontend "$backend_ip" 8080
check "frontend -> backend:9090 is dropped" dropped frontend "$backend_ip" 9090
check "other -> backend:8080 is dropped" dropped other "$backend_ip" 8080
# The trace resolves the name on the destination endpoint, as the node does.
frontend_id=$(endpoint_field frontend .id)
backend_id=$(endpoint_field backend .id)
tessera policy trace --from-endpoint "$frontend_id" --to-endpoint "$backend_id" --port 8080 -o json >"$tmp/trace8080.json"
check "trace frontend -> backend:8080: allowed by the http section, and the datapath agrees" jq -e \
  '.allowed and .ingress.decision == "allow" and .ingress.matches[0].name == "backend-http-from-frontend" and (.ingress.datapath | startswith("allow"))' "$tmp/trace8080.json"
tessera policy trace --from-endpoint "$frontend_id" --to-endpoint "$backend_id" --port 9090 -o json >"$tmp/trace9090.json"
check "trace frontend -> backend:9090: default-deny, no section (backend's http is 8080)" jq -e \
  '(.allowed | not) and .ingress.decision == "default-deny" and (.ingress.matches | length) == 0 and (.ingress.datapath | startswith("deny"))' "$tmp/trace9090.json"

# --- 2. Ingress resolves per pod: backend2 has the same labels (same identity) and
# its own http port.
check "backend2 ADD (same labels, http=7070/TCP)" chain_add backend2 '["app=backend"]' "$(http 7070)"
backend2_ip=$(chain_ip backend2)
listen backend2 7070 8080
backend2_id=$(endpoint_field backend2 .id)
check "backend2 has backend's identity" [ "$(endpoint_field backend2 .identity)" = "$(endpoint_field backend .identity)" ]
sleep 0.2
check "frontend -> backend2:7070 (its http) connects" connects frontend "$backend2_ip" 7070
check "frontend -> backend2:8080 is dropped (not backend2's http)" dropped frontend "$backend2_ip" 8080
check "frontend -> backend:7070 is dropped (not backend's http)" dropped frontend "$backend_ip" 7070

# --- 3. Protocol: the realised maps, read back from the datapath.
frontend_identity=$(endpoint_field frontend .identity)
other_identity=$(endpoint_field other .identity)
tessera datapath policy get "$backend_id" -o json >"$tmp/backend-policy.json"
check "policy get backend: TCP 8080 allowed from frontend's identity" jq -e \
  "any(.entries[]; .direction == \"ingress\" and .peerIdentity == $frontend_identity and (.protocol | ascii_upcase) == \"TCP\" and .port == 8080 and .verdict == \"allow\")" "$tmp/backend-policy.json"
check "policy get backend: no entry from frontend other than TCP 8080" jq -e \
  "all(.entries[] | select(.peerIdentity == $frontend_identity); (.protocol | ascii_upcase) == \"TCP\" and .port == 8080 and .endPort <= 8080)" "$tmp/backend-policy.json"
check "policy get backend: nothing for UDP" jq -e \
  'all(.entries[]; (.protocol | ascii_upcase) != "UDP")' "$tmp/backend-policy.json"
check "policy get backend: nothing from other's identity (the UDP rule resolves to nothing)" jq -e \
  "all(.entries[]; .peerIdentity != $other_identity)" "$tmp/backend-policy.json"
check "policy get backend2: TCP 7070 from frontend, not 8080" bash -c \
  "$TESSERA_BIN/tessera datapath policy get $backend2_id -o json --run-dir $RUN | jq -e 'any(.entries[]; .peerIdentity == $frontend_identity and .port == 7070) and all(.entries[]; .port != 8080)' >/dev/null"

# --- 4. Egress, Kubernetes NetworkPolicy: the name resolves through the ports the
# backends' pods declare (8080 from backend, 7070 from backend2: one identity),
# towards any backend; not through other's 9090.
cat >"$tmp/egress.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress-http, namespace: default}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: backend}}}]
    ports: [{port: http}]
YAML
check "egress policy (NetworkPolicy, port: http) imported" tessera policy import "$tmp/egress.yaml"
check "client ADD" chain_add client '["app=client"]'
client_id=$(endpoint_field client .id)
sleep 0.2
check "client -> backend:8080 connects" connects client "$backend_ip" 8080
check "client -> backend2:7070 connects (egress names resolve through the peer's pods)" connects client "$backend2_ip" 7070
check "client -> backend:9090 is dropped (other's http=9090 does not count)" dropped client "$backend_ip" 9090
# 8080 is backend's http, so the egress rule allows it towards backend2 too; this
# also shows that backend2:8080, dropped from frontend above, is listening.
check "client -> backend2:8080 connects" connects client "$backend2_ip" 8080
check "policy get client: no egress entry for 6060 yet" policy_lacks "$client_id" '.port == 6060'

# --- 5. A pod declaring a new http port after the egress policy exists. The
# client's map is regenerated asynchronously after backend3's ADD returns, so the
# checks poll for up to 3 s.
check "backend3 ADD (same labels, http=6060/TCP)" chain_add backend3 '["app=backend"]' "$(http 6060)"
backend3_ip=$(chain_ip backend3)
listen backend3 6060
check "client -> backend3:6060 connects (client regenerated, within 3 s)" eventually 3 connects client "$backend3_ip" 6060
check "policy get client: egress TCP 7070 present while backend2 exists" policy_has "$client_id" '.direction == "egress" and .port == 7070'
chain_del backend2
check "policy get client: 7070 gone after backend2's DEL (within 3 s)" eventually 3 policy_lacks "$client_id" '.port == 7070'
check "policy get client: 8080 still there" policy_has "$client_id" '.direction == "egress" and .port == 8080'
check "policy get client: 6060 still there" policy_has "$client_id" '.direction == "egress" and .port == 6060'
check "client -> backend3:6060 still connects" connects client "$backend3_ip" 6060

# --- 5b. An egress rule with ports and no peer: each pod identity's own http port,
# towards that identity only (Kubernetes resolves the name on the destination pod).
# `other` names 9090 "http": that opens 9090 towards other, never towards the
# backends, which listen on 9090 too.
cat >"$tmp/egress-any.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client2-egress-any-http, namespace: default}
spec:
  podSelector: {matchLabels: {app: client2}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: http}]
YAML
check "egress policy (ports: http, no peer) imported" tessera policy import "$tmp/egress-any.yaml"
check "client2 ADD" chain_add client2 '["app=client2"]'
other_ip=$(chain_ip other)
listen other 9090
check "client2 -> backend:8080 connects (backend's own http)" eventually 3 connects client2 "$backend_ip" 8080
check "client2 -> other:9090 connects (other's own http)" eventually 3 connects client2 "$other_ip" 9090
check "client2 -> backend:9090 is dropped (other's http opens nothing towards backend)" dropped client2 "$backend_ip" 9090
check "client2 -> backend3:6060 connects" connects client2 "$backend3_ip" 6060

# --- 6. Bad input.
endpoint_count() { tessera endpoint list -o json | jq '.endpoints | length'; }
endpoints_before=$(endpoint_count)
bad_add_fails() { ! chain_add bad '["app=bad"]' '[{"name":"HTTP","containerPort":8080,"protocol":"TCP"}]'; }
check "bad ADD (port name \"HTTP\") fails" bad_add_fails
cp "$CHAIN_STATE/bad.json" "$tmp/bad-add.json"
sed 's/^/  | /' "$tmp/bad-add.json"
check "bad ADD: CNI error code 7 naming the port" jq -e '.code == 7 and ((.msg + " " + (.details // "")) | test("HTTP"))' "$tmp/bad-add.json"
check "bad ADD: no endpoint left (none for its container, the count unchanged)" bash -c \
  "$TESSERA_BIN/tessera endpoint list -o json --run-dir $RUN | jq -e '(.endpoints | length) == $endpoints_before and all(.endpoints[]; (tostring | test(\"tsr-npe2e-bad\")) | not)' >/dev/null"
chain_del bad
cat >"$tmp/bad-name.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-name, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: backend}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "http_x", protocol: TCP}]}]
YAML
cat >"$tmp/bad-endport.yaml" <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-endport, namespace: default}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: http, endPort: 90}]
YAML
tessera policy import "$tmp/bad-name.yaml" >"$tmp/bad-name.out" 2>&1
status=$?
check "import of port \"http_x\" is refused" [ "$status" != 0 ]
check "  with a message naming the port" grep -q 'http_x' "$tmp/bad-name.out"
tessera policy import "$tmp/bad-endport.yaml" >"$tmp/bad-endport.out" 2>&1
status=$?
check "import of {port: http, endPort: 90} is refused" [ "$status" != 0 ]
check "  with a message naming endPort" grep -qi 'endPort' "$tmp/bad-endport.out"
check "neither bad policy was stored (the five good ones are)" bash -c \
  "$TESSERA_BIN/tessera policy list -o json --run-dir $RUN | jq -e '[.policies[].name] | sort == [\"backend-all-from-client\", \"backend-http-from-frontend\", \"backend-http-udp-from-other\", \"client-egress-http\", \"client2-egress-any-http\"]' >/dev/null"
for f in bad-name bad-endport; do sed 's/^/  | /' "$tmp/$f.out"; done

# --- The drops above were made by the policies: without them, they connect.
for policy in backend-http-from-frontend backend-http-udp-from-other backend-all-from-client client-egress-http client2-egress-any-http; do
  check "policy $policy deleted" tessera policy delete "default/$policy"
done
check "without policies, frontend -> backend:9090 connects" eventually 3 connects frontend "$backend_ip" 9090
check "without policies, other -> backend:8080 connects" eventually 3 connects other "$backend_ip" 8080
check "without policies, frontend -> backend:7070 connects" eventually 3 connects frontend "$backend_ip" 7070
check "without policies, client -> backend:9090 connects" eventually 3 connects client "$backend_ip" 9090
check "without policies, frontend -> backend3:6060 connects" eventually 3 connects frontend "$backend3_ip" 6060
check "without policies, client2 -> backend:9090 connects" eventually 3 connects client2 "$backend_ip" 9090

for pod in client2 backend3 client backend other frontend; do chain_del "$pod"; done
check "endpoints gone after DEL" [ "$(tessera endpoint list -o json | jq '.endpoints | length')" = 0 ]
e2e_result
