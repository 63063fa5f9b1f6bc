#!/usr/bin/env bash
# The deployables: the Kubernetes manifests (YAML, and every flag they pass is one the
# daemon or CLI documents), then the container images built by scripts/build-images.sh
# and run the way the manifests run them, on this machine's podman:
#
#   identityd   own run dir, sqlite store, --policy-service none, TCP :P1 with mutual TLS
#   policyd     own run dir, sqlite store, follows identityd over mutual TLS, TCP :P2
#   datapathd   --privileged, /sys/fs/bpf, eBPF backend (the memory backend only when the
#               daemon itself says eBPF is unusable here), shares the node's run dir
#   endpointd   node's run dir, identity and policy over mutual TLS (its node certificate)
#
# Each container must answer the manifests' exec probes (`tessera status --service X`,
# readiness and --live), the host's CLI must read the same health through the
# bind-mounted run dirs, an endpoint created through the node agent must get an
# identity and be realised, and the node image's entrypoint must install a static
# plugin and the conflist into a host directory. Containers, images, certificates and
# pinned maps the test made are removed on every exit.
#
# Needs root and podman (installed with apt when missing; runc too when the default
# runtime cannot start containers here); otherwise exits 77 with the reason.
#
# Time on two cores: the release build dominates — from nothing about 16 CPU-minutes
# (21 minutes of wall time here while other builds shared the cores), and 25–80 s when
# .build/release is current (it is reused between runs); the checks take 30–40 s more.
# TESSERA_IMAGES_TEST_TIMEOUT (seconds, default 3600) bounds the image build.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
started=$SECONDS
passed=0 failed=0
check() { # description command...
  local description=$1
  shift
  if "$@" >/dev/null 2>&1; then
    echo "ok   $description"
    passed=$((passed + 1))
  else
    echo "FAIL $description"
    failed=$((failed + 1))
    return 1
  fi
}
finish() {
  echo "images-test: $passed passed, $failed failed ($((SECONDS - started)) s)"
  [ "$failed" = 0 ]
  exit
}
skip() { echo "images-test: SKIP: $*"; exit 77; }

version=$(sed -n 's/.*static let current = "\(.*\)".*/\1/p' Sources/TesseraRuntime/DaemonInfoService.swift)

# ------------------------------------------------------------------ manifests (no cluster here)
manifests_check() {
  python3 - "$repo" "$version" <<'PY'
import glob, json, os, sys
import yaml

repo, version = sys.argv[1], sys.argv[2]
errors = []
docs = []
for path in sorted(glob.glob(os.path.join(repo, "deploy/kubernetes/*.yaml"))):
    try:
        for doc in yaml.safe_load_all(open(path)):
            if doc is not None:
                docs.append((os.path.basename(path), doc))
    except yaml.YAMLError as e:
        errors.append(f"{path}: {e}")
def find(kind, name):
    for _, d in docs:
        if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
            return d
    errors.append(f"no {kind} {name}")
    return {}
for f, d in docs:
    for key in ("apiVersion", "kind", "metadata"):
        if key not in d:
            errors.append(f"{f}: a document without {key}")
    if d.get("kind") != "Namespace" and d.get("metadata", {}).get("namespace") != "tessera":
        errors.append(f"{f}: {d.get('kind')} {d['metadata'].get('name')} is not in namespace tessera")
find("Namespace", "tessera")
config = find("ConfigMap", "tessera-config").get("data", {})
for key in ("etcd-endpoints", "identity-address", "policy-address"):
    if key not in config:
        errors.append(f"tessera-config has no {key}")
conflist = find("ConfigMap", "tessera-cni").get("data", {}).get("10-tessera.conflist", "")
if json.loads(conflist or "null") != json.load(open(os.path.join(repo, "deploy/cni/10-tessera.conflist"))):
    errors.append("ConfigMap tessera-cni differs from deploy/cni/10-tessera.conflist")

containers = []  # (workload, container, image, command, args)
def pod(kind, name):
    d = find(kind, name)
    spec = d.get("spec", {}).get("template", {}).get("spec", {})
    labels = d.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    selector = d.get("spec", {}).get("selector", {}).get("matchLabels", {})
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        errors.append(f"{kind} {name}: the selector does not match the pod's labels")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        containers.append((name, c))
    return d, spec
for name, port in (("tessera-identityd", 7001), ("tessera-policyd", 7002)):
    d, spec = pod("Deployment", name)
    if d.get("spec", {}).get("replicas") != 2:
        errors.append(f"{name}: replicas is not 2")
    svc = find("Service", name).get("spec", {})
    if svc.get("selector") != d["spec"]["selector"]["matchLabels"]:
        errors.append(f"Service {name} does not select the Deployment's pods")
    if [p.get("port") for p in svc.get("ports", [])] != [port]:
        errors.append(f"Service {name} is not on {port}")
    c = spec["containers"][0]
    args = c.get("args", [])
    if f"--listen=0.0.0.0:{port}" not in args or not any(a.startswith("--tls-ca-file=") for a in args):
        errors.append(f"{name}: not serving mutual TLS on {port}")
    if [p.get("containerPort") for p in c.get("ports", [])] != [port]:
        errors.append(f"{name}: containerPort is not {port}")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    if "secret" not in volumes.get("tls", {}):
        errors.append(f"{name}: certificates are not from a Secret")
ds, spec = pod("DaemonSet", "tessera-node")
if not spec.get("hostNetwork"):
    errors.append("the node agent is not on the host network")
host_paths = {v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v}
for p in ("/sys/fs/bpf", "/run/tessera", "/var/lib/tessera", "/opt/cni/bin", "/etc/cni/net.d"):
    if p not in host_paths:
        errors.append(f"the node agent does not mount the host's {p}")
names = [c["name"] for c in spec.get("containers", [])]
if names != ["datapathd", "endpointd"] or [c["name"] for c in spec.get("initContainers", [])] != ["install-cni"]:
    errors.append(f"node agent containers: {names}")
for c in spec.get("containers", []):
    if c["name"] == "datapathd" and not c.get("securityContext", {}).get("privileged"):
        errors.append("datapathd is not privileged")

# What the test checks next against the binaries: each container's entrypoint and flags.
entrypoints = {"tessera-identityd": "tessera-identityd", "tessera-policyd": "tessera-policyd"}
for workload, c in containers:
    image = c.get("image", "")
    expected = {"tessera-identityd": "tessera-identityd", "tessera-policyd": "tessera-policyd"}.get(workload, "tessera-node")
    if image != f"localhost/{expected}:{version}":
        errors.append(f"{workload}/{c['name']}: image {image}, not localhost/{expected}:{version}")
    command = c.get("command", [f"/usr/bin/{entrypoints.get(workload, 'tessera-cni-install')}"])
    flags = sorted({a.split("=")[0] for a in c.get("args", []) if a.startswith("--")})
    print("FLAGS", os.path.basename(command[0]), " ".join(flags))
    for probe in ("readinessProbe", "livenessProbe"):
        if c["name"] == "install-cni":
            continue
        cmd = c.get(probe, {}).get("exec", {}).get("command")
        if not cmd:
            errors.append(f"{workload}/{c['name']}: no exec {probe}")
            continue
        print("PROBE", " ".join(cmd))
for e in errors:
    print("ERROR", e)
sys.exit(1 if errors else 0)
PY
}

manifest_report=$(manifests_check 2>&1)
manifests_ok=$?
grep ^ERROR <<<"$manifest_report"
check "deploy/kubernetes: YAML parses; namespace, config, 2-replica Deployments and headless Services on mTLS, privileged host-network DaemonSet with its hostPaths, probes, images" test "$manifests_ok" = 0
grep -q "^PROBE" <<<"$manifest_report" || check "the manifests have probes" false

# Against Kubernetes' own schemas, strictly (an unknown or misspelt field fails):
# kubernetes-validate from PyPI in a throwaway venv; skipped with a note without PyPI.
venv=$(mktemp -d)
if python3 -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/pip" install -q kubernetes-validate==1.37.0 >/dev/null 2>&1; then
  for k8s in 1.30.0 1.37.0; do
    check "deploy/kubernetes validates strictly against Kubernetes $k8s's schemas (kubernetes-validate)" \
      "$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s" deploy/kubernetes/*.yaml ||
      "$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s" deploy/kubernetes/*.yaml
  done
else
  echo "images-test: note: kubernetes-validate could not be installed from PyPI; schema check not run"
fi
rm -rf "$venv"

# ------------------------------------------------------------------ images
# A failed manifest check fails the test even where images cannot be built here.
skip_images() {
  ((failed)) && finish
  skip "$@"
}
[ "$(id -u)" = 0 ] || skip_images "needs root (podman, --privileged, host networking)"
if ! command -v podman >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends podman; } >/dev/null 2>&1 ||
    skip_images "podman is not installed and apt-get could not install it"
fi

tag=imgtest-$$
prefix=localhost
tmp=$(mktemp -d)
pin_dir=/sys/fs/bpf/tessera-imgtest-$$
containers=()
images=()
podman_global=()
p() { podman "${podman_global[@]}" "$@"; }
etcd_pid=
build_pid=
cleanup() {
  [ -n "$build_pid" ] && kill "$build_pid" 2>/dev/null && wait "$build_pid" 2>/dev/null
  for c in "${containers[@]}"; do p rm -f -t 3 "$c" >/dev/null 2>&1; done
  [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null
  # Every image of this run's tag, also those of a build stopped half-way.
  for i in "${images[@]}" $(podman images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep ":$tag\$"); do
    p rmi -f "$i" >/dev/null 2>&1
  done
  rm -rf "$pin_dir" "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

echo "images-test: scripts/build-images.sh --tag $tag (the release build is the slow part)"
build_started=$SECONDS
# In the background, so that a signal reaches the cleanup at once (timeout passes it on
# to the whole build).
timeout "${TESSERA_IMAGES_TEST_TIMEOUT:-3600}" scripts/build-images.sh --tag "$tag" >"$tmp/build.out" 2>"$tmp/build.err" &
build_pid=$!
if ! wait "$build_pid"; then
  tail -n 30 "$tmp/build.err"
  check "scripts/build-images.sh builds the three images" false
  finish
fi
build_pid=
mapfile -t images <"$tmp/build.out"
echo "images-test: images built in $((SECONDS - build_started)) s"
grep "^build-images: built" "$tmp/build.err"
check "three images built (node, identityd, policyd)" test "${#images[@]}" = 3
node_image=$prefix/tessera-node:$tag
identityd_image=$prefix/tessera-identityd:$tag
policyd_image=$prefix/tessera-policyd:$tag
for image in "$node_image" "$identityd_image" "$policyd_image"; do
  check "$image is labelled version $version" \
    test "$(podman image inspect --format '{{index .Labels "org.opencontainers.image.version"}}' "$image")" = "$version"
  check "$image is labelled with the revision" \
    test "$(podman image inspect --format '{{index .Labels "org.opencontainers.image.revision"}}' "$image")" != ""
  check "$image has one layer (FROM scratch: no base image)" \
    test "$(podman image inspect --format '{{len .RootFS.Layers}}' "$image")" = 1
done

# A runtime that can start containers here. crun refuses cgroups v1+v2 hybrids and
# podman's default rlimits may exceed this machine's: then runc with the limits in force.
run_flags=()
if ! p run --rm --network none "$identityd_image" --help >"$tmp/probe.log" 2>&1; then
  if ! command -v runc >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends runc >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends runc; } >/dev/null 2>&1
  fi
  podman_global=(--runtime runc)
  run_flags=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
  if ! p run --rm --network none "${run_flags[@]}" "$identityd_image" --help >>"$tmp/probe.log" 2>&1; then
    cat "$tmp/probe.log"
    skip_images "podman cannot start a container on this machine (crun and runc both failed; see above)"
  fi
  echo "images-test: the default runtime cannot start containers here; using runc with this machine's rlimits"
fi
check "identityd image runs (--help)" p run --rm --network none "${run_flags[@]}" "$identityd_image" --help
check "node image runs tessera-endpointd" p run --rm --network none "${run_flags[@]}" --entrypoint /usr/bin/tessera-endpointd "$node_image" --help
check "node image runs tessera-datapathd" p run --rm --network none "${run_flags[@]}" --entrypoint /usr/bin/tessera-datapathd "$node_image" --help

# Every flag a manifest passes is one the binary in the image documents.
while read -r _ binary flags; do
  help=$(p run --rm --network none "${run_flags[@]}" --entrypoint "/usr/bin/$binary" "$node_image" --help 2>&1 ||
    p run --rm --network none "${run_flags[@]}" --entrypoint "/usr/bin/$binary" "$identityd_image" --help 2>&1 ||
    p run --rm --network none "${run_flags[@]}" --entrypoint "/usr/bin/$binary" "$policyd_image" --help 2>&1)
  for flag in $flags; do check "manifests: $binary knows $flag" grep -q -- "$flag" <<<"$help"; done
done < <(grep ^FLAGS <<<"$manifest_report" | sort -u)
status_help=$(p run --rm --network none "${run_flags[@]}" --entrypoint /usr/bin/tessera "$node_image" status --help 2>&1)
check "manifests' probes: tessera status knows --service and --live" grep -q -- "--live" <<<"$status_help"

# ------------------------------------------------------------------ certificates
mkdir -p "$tmp/tls" "$tmp/node-run" "$tmp/node-state" "$tmp/host/opt/cni/bin" "$tmp/host/etc/cni/net.d"
(
  cd "$tmp/tls" || exit 1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=tessera-imgtest-ca \
    -keyout ca.key -out ca.crt
  for name in tessera-identityd tessera-policyd node-1; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" -keyout "$name.key" -out "$name.csr"
    printf 'subjectAltName=DNS:%s\n' "$name" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile "$name.ext" -out "$name.crt"
  done
) >"$tmp/openssl.log" 2>&1
check "certificates made (CA, identityd, policyd, node-1)" test -s "$tmp/tls/node-1.crt"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
tls() { echo "--tls-cert-file=/etc/tessera/tls/$1.crt --tls-key-file=/etc/tessera/tls/$1.key --tls-ca-file=/etc/tessera/tls/ca.crt"; }
start() { # name image podman-flags... -- args...
  local name=tessera-imgtest-$$-$1 image=$2 flags=()
  shift 2
  while [ "$1" != -- ]; do flags+=("$1"); shift; done
  shift
  containers+=("$name")
  p run -d --name "$name" --network host "${run_flags[@]}" -v "$tmp/tls:/etc/tessera/tls:ro" "${flags[@]}" "$image" \
    --run-dir=/run/tessera --state-dir=/var/lib/tessera "$@" >/dev/null
}
# eventually SECONDS command...: retried every half second.
eventually() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}
in_container() { p exec "tessera-imgtest-$$-$1" /usr/bin/tessera "${@:2}"; }
probe() { in_container "$1" status --service "$2" --timeout 2 "${@:3}"; }
logs_on_failure() { # container
  echo "--- logs of $1 (last 20 lines)"
  p logs "tessera-imgtest-$$-$1" 2>&1 | tail -n 20
}

# The stores the manifests use: one etcd on loopback ports (Debian's etcd-server, as
# the other etcd tests), else each replica's own SQLite database.
store=sqlite
identity_store=() policy_store=() cluster_store=()
if command -v etcd >/dev/null; then
  etcd_client=$(free_port) etcd_peer=$(free_port)
  ETCD=http://127.0.0.1:$etcd_client
  etcd --name imgtest --data-dir "$tmp/etcd" --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "imgtest=http://127.0.0.1:$etcd_peer" >"$tmp/etcd.log" 2>&1 &
  etcd_pid=$!
  if eventually 20 env ETCDCTL_API=3 etcdctl --endpoints "$ETCD" endpoint health; then
    store=etcd
    identity_store=(--identity-store="etcd:$ETCD")
    policy_store=(--policy-store="etcd:$ETCD")
    cluster_store=(--cluster-store="etcd:$ETCD")
  else
    tail -n 20 "$tmp/etcd.log"
    check "etcd starts on loopback" false
  fi
else
  echo "images-test: note: no etcd (etcd-server): identityd and policyd keep SQLite stores"
fi

# ------------------------------------------------------------------ identityd and policyd, as the Deployments run them
# Two replicas of each on the shared store, TCP with mutual TLS on loopback; identityd
# with no policyd beside it, policyd following both identityd replicas.
id_ports=("$(free_port)" "$(free_port)")
pol_ports=("$(free_port)" "$(free_port)")
identity_addresses=127.0.0.1:${id_ports[0]},127.0.0.1:${id_ports[1]}
for r in 1 2; do
  mkdir -p "$tmp/identityd-$r/run" "$tmp/identityd-$r/state" "$tmp/policyd-$r/run" "$tmp/policyd-$r/state"
  # shellcheck disable=SC2046
  start "identityd-$r" "$identityd_image" -v "$tmp/identityd-$r/run:/run/tessera" -v "$tmp/identityd-$r/state:/var/lib/tessera" -- \
    --node-name="identity-$r" --policy-service=none --listen="127.0.0.1:${id_ports[r - 1]}" $(tls tessera-identityd) \
    "${identity_store[@]}"
done
for r in 1 2; do
  # shellcheck disable=SC2046
  start "policyd-$r" "$policyd_image" -v "$tmp/policyd-$r/run:/run/tessera" -v "$tmp/policyd-$r/state:/var/lib/tessera" -- \
    --node-name="policy-$r" --identity-address="$identity_addresses" --listen="127.0.0.1:${pol_ports[r - 1]}" \
    $(tls tessera-policyd) "${policy_store[@]}"
done
for r in 1 2; do
  eventually 60 probe "identityd-$r" identity
  check "identityd-$r container ($store store): readiness probe (tessera status --service identity) passes" \
    probe "identityd-$r" identity || logs_on_failure "identityd-$r"
  check "identityd-$r container: liveness probe (--live) passes" probe "identityd-$r" identity --live
done
check "identityd: the host's CLI reads its health through the bind-mounted run dir" \
  .build/release/tessera status --run-dir "$tmp/identityd-1/run" --service identity --timeout 5
for r in 1 2; do
  eventually 60 probe "policyd-$r" policy
  check "policyd-$r container ($store store): ready once it follows identityd over mutual TLS (its first identity sync)" \
    probe "policyd-$r" policy || logs_on_failure "policyd-$r"
  check "policyd-$r container: liveness probe (--live) passes" probe "policyd-$r" policy --live
done
# The probes tell the two apart: a policyd whose identity service is unreachable answers
# (alive) but is not ready.
mkdir -p "$tmp/orphan/run" "$tmp/orphan/state"
# shellcheck disable=SC2046
start policyd-orphan "$policyd_image" -v "$tmp/orphan/run:/run/tessera" -v "$tmp/orphan/state:/var/lib/tessera" -- \
  --node-name=policy-3 --identity-address="127.0.0.1:$(free_port)" $(tls tessera-policyd)
eventually 60 probe policyd-orphan policy --live
not_ready() { ! probe policyd-orphan policy; }
check "a policyd that cannot reach identityd passes liveness (--live)" probe policyd-orphan policy --live
check "... and fails readiness (NOT_SERVING until its first identity sync)" not_ready

if [ "$store" = etcd ]; then
  # One rule repository: imported through one replica, read back from the other.
  cat >"$tmp/policy.yaml" <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: imgtest-web, namespace: imgtest}
spec:
  endpointSelector: {matchLabels: {app: imgtest-web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: imgtest-client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
YAML
  check "a policy imported through policyd-1 (the CLI in its container)" \
    p exec -i "tessera-imgtest-$$-policyd-1" /usr/bin/tessera policy import - <"$tmp/policy.yaml"
  policy_on_2() { in_container policyd-2 policy list -o json | grep -q imgtest-web; }
  check "... is in policyd-2's repository (etcd)" eventually 20 policy_on_2
fi

# ------------------------------------------------------------------ the node agent, as the DaemonSet runs it
datapath_backend=bpf
start datapathd "$node_image" --privileged -v /sys/fs/bpf:/sys/fs/bpf -v "$tmp/node-run:/run/tessera" \
  -v "$tmp/node-state:/var/lib/tessera" --entrypoint /usr/bin/tessera-datapathd -- \
  --node-name=node-1 --backend=bpf --bpf-pin-dir="$pin_dir"
if ! eventually 30 probe datapathd datapath; then
  if p logs "tessera-imgtest-$$-datapathd" 2>&1 | grep -q "eBPF is unusable here"; then
    p logs "tessera-imgtest-$$-datapathd" 2>&1 | grep -o "eBPF is unusable here[^\"]*" | head -n 1
    echo "images-test: this machine has no usable eBPF: datapathd is checked with the memory backend"
    datapath_backend=memory
    p rm -f -t 3 "tessera-imgtest-$$-datapathd" >/dev/null 2>&1
    start datapathd "$node_image" -v "$tmp/node-run:/run/tessera" -v "$tmp/node-state:/var/lib/tessera" \
      --entrypoint /usr/bin/tessera-datapathd -- --node-name=node-1 --backend=memory
    eventually 30 probe datapathd datapath
  fi
fi
check "datapathd container ($datapath_backend backend): readiness probe passes" probe datapathd datapath ||
  logs_on_failure datapathd
[ "$datapath_backend" = bpf ] && check "datapathd pinned its maps under the host's bpffs ($pin_dir)" test -d "$pin_dir"
# The identity service by name, as the DaemonSet names it (dns:NAME:PORT, resolved by
# the glibc in the image from the container's /etc/hosts); policy by its two addresses.
# shellcheck disable=SC2046
start endpointd "$node_image" -v "$tmp/node-run:/run/tessera" -v "$tmp/node-state:/var/lib/tessera" \
  --add-host tessera-identityd.imgtest:127.0.0.1 --entrypoint /usr/bin/tessera-endpointd -- --node-name=node-1 \
  --identity-address="dns:tessera-identityd.imgtest:${id_ports[0]}" \
  --policy-address="127.0.0.1:${pol_ports[0]},127.0.0.1:${pol_ports[1]}" $(tls node-1) "${cluster_store[@]}"
eventually 60 probe endpointd endpoint
check "endpointd container: readiness probe passes (identity and policy over mutual TLS)" probe endpointd endpoint ||
  logs_on_failure endpointd
check "endpointd container: liveness probe (--live) passes" probe endpointd endpoint --live
check "node agent: the host's CLI sees datapath and endpoint serving in the shared run dir" \
  .build/release/tessera status --run-dir "$tmp/node-run" --service datapath --service endpoint --timeout 5

# An endpoint through the node agent: a new identity from identityd (no policyd beside
# it), policy from the policy replicas, realised by datapathd.
in_container endpointd endpoint create --container-id imgtest-1 --ip 10.199.0.9 \
  --namespace imgtest --pod web-1 --label k8s:app=imgtest-web -o json >"$tmp/endpoint.json" 2>"$tmp/endpoint.err"
python3 - "$tmp/endpoint.json" >"$tmp/endpoint.check" 2>&1 <<'PY'
import json, sys
try:
    ep = json.load(open(sys.argv[1]))
except ValueError:
    sys.exit("no endpoint in the CLI's answer")
print(ep)
# The create returns once its policy is in force (policyRevision > 0); by then a
# later pass (the policy replicas announcing its new identity) may be running.
if (ep.get("state") not in ("ready", "regenerating") or int(ep.get("policyRevision", 0)) < 1
        or int(ep.get("identity", 0)) < 256):
    sys.exit(f"endpoint state {ep.get('state')}, policy revision {ep.get('policyRevision')}, "
             f"identity {ep.get('identity')}: its policy is not in force with a new identity")
PY
check "an endpoint created through the node agent has its policy in force with a new identity (identityd --policy-service none)" \
  test $? = 0 || {
  cat "$tmp/endpoint.err" "$tmp/endpoint.check"
  logs_on_failure identityd-1
  logs_on_failure endpointd
}
identity_listed() { in_container "$1" identity list -o json | grep -q imgtest-web; }
check "... and identityd-1 lists that identity" identity_listed identityd-1
[ "$store" = etcd ] && check "... and so does identityd-2 (the shared store)" eventually 20 identity_listed identityd-2
if [ "$store" = etcd ]; then
  endpoint_id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$tmp/endpoint.json" 2>/dev/null)
  enforced() {
    in_container endpointd datapath policy get "$endpoint_id" -o json |
      python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["ingressEnforced"] else 1)'
  }
  check "... and the policy imported through policyd-1 is in force for it (ingress enforced in the datapath)" enforced
fi
check "... and the endpoint is deleted" in_container endpointd endpoint delete --container-id imgtest-1
# Each create asks a policy replica (round-robin) how far its log is; only the replica
# whose WatchPolicy stream endpointd follows can answer for that stream.
more_endpoints() {
  local i
  for i in 2 3 4 5; do
    in_container endpointd endpoint create --container-id "imgtest-$i" --ip "10.199.0.1$i" --namespace imgtest \
      --pod "web-$i" --label k8s:app=imgtest-web --timeout 20 -o json |
      python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["state"] == "ready" else 1)' || return 1
  done
}
check "four more endpoints ready in turn, with two policy replicas behind --policy-address" more_endpoints
for i in 2 3 4 5; do in_container endpointd endpoint delete --container-id "imgtest-$i" >/dev/null 2>&1; done

# ------------------------------------------------------------------ the CNI installer (the DaemonSet's init container)
check "node image entrypoint installs the plugin and conflist into the host's directories" \
  p run --rm --network none "${run_flags[@]}" -v "$tmp/host/opt/cni/bin:/host/opt/cni/bin" \
  -v "$tmp/host/etc/cni/net.d:/host/etc/cni/net.d" "$node_image"
check "... /opt/cni/bin/tessera-cni is executable" test -x "$tmp/host/opt/cni/bin/tessera-cni"
check "... and statically linked (it runs on the host, outside the image)" \
  bash -c "file '$tmp/host/opt/cni/bin/tessera-cni' | grep -q 'statically linked'"
check "... and answers VERSION on the host" \
  bash -c "echo '{\"cniVersion\":\"1.0.0\"}' | CNI_COMMAND=VERSION '$tmp/host/opt/cni/bin/tessera-cni' | grep -q 1.0.0"
check "... /etc/cni/net.d/10-tessera.conflist is deploy/cni's" cmp "$tmp/host/etc/cni/net.d/10-tessera.conflist" deploy/cni/10-tessera.conflist
installer_refuses() { ! p run --rm --network none "${run_flags[@]}" "$node_image" --bin-dir /host/nowhere; }
check "the installer fails when the host directory is not mounted" installer_refuses

echo "images-test: image sizes:"
for image in "$node_image" "$identityd_image" "$policyd_image"; do
  echo "  $image $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
done
finish
