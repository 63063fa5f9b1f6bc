#!/usr/bin/env bash
# scripts/install.sh staged into a temporary root: every file in place, each unit's
# ExecStart binary installed where the unit says, settings files that parse and are
# kept on a second install, and the daemons' own flag parsing accepting what the
# units pass.
#
#   TESSERA_BIN=<dir with the built binaries> bash Tests/deploy/install_test.sh
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=${TESSERA_BIN:-$repo/.build/debug}
[ -x "$bin/tessera-endpointd" ] || { echo "install-test: SKIP: no built binaries in $bin (run scripts/build.sh)"; exit 77; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
passed=0 failed=0
check() { # description command...
  local description=$1
  shift
  if "$@" >/dev/null 2>&1; then echo "ok   $description"; passed=$((passed + 1)); else echo "FAIL $description"; failed=$((failed + 1)); fi
}

check "install.sh stages into a root" "$repo/scripts/install.sh" --root "$root" --prefix /usr --bin-dir "$bin" --cni-conf main
for f in /usr/bin/tessera /usr/bin/tessera-identityd /usr/bin/tessera-policyd /usr/bin/tessera-datapathd /usr/bin/tessera-endpointd \
  /usr/lib/tessera/endpoint.bpf.o /opt/cni/bin/tessera-cni /etc/cni/net.d/10-tessera.conflist /usr/share/doc/tessera/README.md; do
  check "$f installed" test -s "$root$f"
done
for d in identityd policyd datapathd endpointd; do
  unit="$root/lib/systemd/system/tessera-$d.service"
  exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
  check "tessera-$d.service runs $exec_start, which is installed" test -x "$root$exec_start"
  check "tessera-$d.service reads /etc/tessera/$d.env" grep -qx "EnvironmentFile=-/etc/tessera/$d.env" "$unit"
  check "/etc/tessera/$d.env parses" bash -c "set -a; . '$root/etc/tessera/$d.env'"
  # Every flag the unit passes is one the daemon documents.
  help=$("$root$exec_start" --help 2>&1)
  for flag in $(sed -n "s|^ExecStart=[^ ]* \(.*\)|\1|p" "$unit" | grep -o -- '--[a-z-]*'); do
    check "tessera-$d knows $flag" grep -q -- "$flag" <<<"$help"
  done
done
check "node.env names this machine" grep -q -- "--node-name $(hostname)" "$root/etc/tessera/node.env"
echo 'TESSERA_POLICYD_ARGS="--policy-store etcd:http://10.0.0.1:2379"' >"$root/etc/tessera/policyd.env"
check "a second install" "$repo/scripts/install.sh" --root "$root" --prefix /usr --bin-dir "$bin"
check "... keeps the operator's settings" grep -q "10.0.0.1" "$root/etc/tessera/policyd.env"
check "a bad --cni-conf is refused" bash -c "! '$repo/scripts/install.sh' --root '$root' --bin-dir '$bin' --cni-conf bogus"
echo "install-test: $passed passed, $failed failed"
[ "$failed" = 0 ]
