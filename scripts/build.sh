#!/usr/bin/env bash
# Builds everything: the eBPF object, the C CNI plugin and the Swift daemons and CLI.
#
#   scripts/build.sh            # debug build (fast to compile)
#   scripts/build.sh release    # optimised build (benchmarks)
#
# Prints the directory holding the Swift binaries on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-debug}

scripts/build-bpf.sh >&2
make -s -C Sources/tessera-cni all >&2
swift build -c "$config" >&2
swift build -c "$config" --show-bin-path
