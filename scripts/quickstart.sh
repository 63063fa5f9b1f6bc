#!/usr/bin/env bash
# One command for a fresh Debian 12 machine: install what Tessera needs, build
# it, start a node and run the demo (pods created through the CNI plugin with
# policy enforced).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
bin=$(scripts/build.sh debug | tail -n 1)
TESSERA_BIN=$bin scripts/demo.sh
