#!/usr/bin/env bash
# Runs the whole test suite: Swift unit and integration tests (real daemons),
# the C plugin's unit tests, proto vectors and bounded fuzzing, and the
# end-to-end CNI test with the real Debian plugins in network namespaces.
#
# Tests that need root, eBPF or a missing tool skip with a printed reason.
# Exit status is non-zero when any part fails.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
bin=$(scripts/build.sh debug | tail -n 1) || { echo "test: build failed" >&2; exit 1; }
export TESSERA_BIN=$bin

logs=.build-test-logs
rm -rf "$logs" && mkdir -p "$logs"
failures=()
skipped=()
summaries=()
passed=0
# A part that cannot run here (no root, eBPF, a tool) exits 77 after saying why:
# it is reported as skipped, never as ok.
run() { # name command...
  local name=$1 status
  shift
  echo "=== $name"
  "$@"
  status=$?
  case $status in
  0) echo "=== $name: ok"; passed=$((passed + 1)) ;;
  77) echo "=== $name: SKIPPED"; skipped+=("$name") ;;
  *) echo "=== $name: FAILED ($status)"; failures+=("$name") ;;
  esac
}

# Long outputs go to a log; what failed is repeated at the very end, where a
# reader of a truncated CI log looks first.
swift_tests() {
  # One test at a time: the integration and etcd tests wait on processes, and on
  # two cores their waits would starve the in-process tests' deadlines.
  swift test --no-parallel 2>&1 | tee "$logs/swift-test.log"
  local status=${PIPESTATUS[0]}
  if ((status != 0)); then
    summaries+=("swift test exited $status; failing tests and issues:")
    mapfile -t -O "${#summaries[@]}" summaries < <(grep -E "✘|recorded an issue|error:|Fatal error|signal [0-9]+|Crash" "$logs/swift-test.log" | head -n 40)
    summaries+=("last lines:")
    mapfile -t -O "${#summaries[@]}" summaries < <(tail -n 15 "$logs/swift-test.log")
  fi
  return "$status"
}

fuzz() {
  if make -s -C Sources/tessera-cni fuzz FUZZ_TIME="${FUZZ_TIME:-15}" >"$logs/fuzz.log" 2>&1; then
    grep -E "^Done|stat::number_of_executed_units" "$logs/fuzz.log"
    return 0
  fi
  tail -n 60 "$logs/fuzz.log"
  summaries+=("fuzzing failed; see $logs/fuzz.log")
  return 1
}

run "formatting (swift format, clang-format; scripts/format.sh to fix)" scripts/format.sh --check
run "swift tests" swift_tests
run "tessera-cni unit tests + vectors" make -s -C Sources/tessera-cni test
run "tessera-cni fuzzing (bounded)" fuzz
run "end-to-end CNI (netns, ptp + host-local + tessera-cni)" bash Tests/tessera-cniTests/e2e.sh
run "end-to-end policy in the kernel (real TCP between pods)" bash Tests/e2e/policy_e2e.sh
run "end-to-end named ports (args.cni.ports; ingress per pod, egress through the peer identity's pods, regeneration, a pod widening a rule; real TCP between pods)" bash Tests/e2e/named_ports_e2e.sh
run "end-to-end CNI chains (ptp, bridge, tessera-cni as main plugin; the window measured)" bash Tests/tessera-cniTests/chains_e2e.sh
run "end-to-end CIDR peers (ipBlock with except, fromCIDR, a CIDR deny; real TCP to a namespace behind the host)" bash Tests/e2e/cidr_e2e.sh
run "end-to-end ICMP rules (icmps by type and family; real ping and raw ICMP messages between pods)" bash Tests/e2e/icmp_e2e.sh
run "a real container runtime (podman's CNI backend runs tessera-cni; busybox containers, real TCP by policy)" bash Tests/e2e/podman_e2e.sh
run "adversarial suite (forged sources, ethertypes, IPv6 extension headers, fragments, ICMP, deny-X race, etcd ipcache)" bash Tests/adversarial/run.sh
run "end-to-end two nodes on one etcd (cross-node policy by identity)" bash Tests/e2e/two_nodes_e2e.sh
run "simulated cluster (3 etcd members, 2+2 identity/policy replicas on mTLS, 4 nodes; replicas killed under churn)" bash Tests/cluster/cluster_e2e.sh
run "tessera node up --cluster (a local cluster from the CLI: pods on 2 nodes, one import enforced on both, a replica killed, down leaves nothing)" bash Tests/cluster/node_up_cluster_e2e.sh
run "bad-input campaign (Python grpcio against every method)" bash Tests/badinput/run.sh
run "failure drill (SIGKILL each daemon in turn under churn)" bash Tests/drill/run.sh
run "install script staged into a temporary root (units, settings files, binaries)" bash Tests/deploy/install_test.sh
run "container images (podman, FROM scratch) run as the Kubernetes manifests run them; manifests validated" bash Tests/deploy/images_test.sh

echo
for name in "${skipped[@]}"; do echo "test: skipped: $name"; done
if ((${#failures[@]})); then
  for line in "${summaries[@]}"; do echo "test: $line"; done
  echo "test: FAILED: ${failures[*]}"
  echo "parts: $passed passed, ${#failures[@]} failed, ${#skipped[@]} skipped"
  exit 1
fi
echo "parts: $passed passed, 0 failed, ${#skipped[@]} skipped"
echo "test: all parts that could run passed"
