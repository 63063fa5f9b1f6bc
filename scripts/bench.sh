#!/usr/bin/env bash
# Runs the benchmarks in release mode against a real node (bounded: a few
# minutes), prints the table and writes BENCHMARKS.md and bench-results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
bin=$(scripts/build.sh release | tail -n 1)
"$bin/tessera-bench" --bin-dir "$bin" --cni .build-cni/tessera-cni --output-directory . "$@"
