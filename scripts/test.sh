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

failures=()
run() { # name command...
  local name=$1
  shift
  echo "=== $name"
  if "$@"; then echo "=== $name: ok"; else echo "=== $name: FAILED"; failures+=("$name"); fi
}

run "swift tests" swift test
run "tessera-cni unit tests + vectors" make -s -C Sources/tessera-cni test
run "tessera-cni fuzzing (bounded)" make -s -C Sources/tessera-cni fuzz FUZZ_TIME=${FUZZ_TIME:-15}
run "end-to-end CNI (netns, ptp + host-local + tessera-cni)" bash Tests/tessera-cniTests/e2e.sh
run "end-to-end policy in the kernel (real TCP between pods)" bash Tests/e2e/policy_e2e.sh

echo
if ((${#failures[@]})); then
  echo "test: FAILED: ${failures[*]}"
  exit 1
fi
echo "test: all parts passed"
