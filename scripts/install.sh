#!/usr/bin/env bash
# Installs a Tessera node agent on this machine: the four daemons and the CLI,
# the eBPF object, the CNI plugin, systemd units and one environment file per
# daemon (kept when already there: they hold the operator's settings).
#
#   scripts/install.sh                       # release build, install under /usr/local and /
#   scripts/install.sh --bin-dir DIR         # install binaries already built in DIR (no build)
#   scripts/install.sh --root DIR            # stage into DIR instead of / (packaging, tests)
#   scripts/install.sh --prefix /usr         # binaries in /usr/bin (units follow)
#   scripts/install.sh --cni-conf main       # also install the CNI conflist: main (tessera-cni
#                                            # creates the veth, host-local IPAM; recommended)
#                                            # or chained (ptp -> tessera-cni; has a window)
#
# Then: edit /etc/tessera/*.env, `systemctl enable --now tessera-identityd tessera-policyd
# tessera-datapathd tessera-endpointd`. The binaries link the Swift runtime of the
# toolchain that built them (/opt/swift): install on machines that have it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

root=/
prefix=/usr/local
bin_dir=
cni_conf=none
while (($#)); do
  case $1 in
  --root) root=$2; shift 2 ;;
  --prefix) prefix=$2; shift 2 ;;
  --bin-dir) bin_dir=$2; shift 2 ;;
  --cni-conf) cni_conf=$2; shift 2 ;;
  -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
  *) echo "install: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case $cni_conf in none | main | chained) ;; *) echo "install: --cni-conf must be main, chained or none" >&2; exit 2 ;; esac
root=${root%/}

if [ -z "$bin_dir" ]; then
  "$repo/scripts/install-deps.sh"
  bin_dir=$("$repo/scripts/build.sh" release | tail -n 1)
fi
daemons=(tessera-identityd tessera-policyd tessera-datapathd tessera-endpointd)
for binary in tessera "${daemons[@]}"; do
  [ -x "$bin_dir/$binary" ] || { echo "install: $bin_dir/$binary is missing: build with scripts/build.sh" >&2; exit 1; }
done
bpf_object="$repo/.build-bpf/endpoint.bpf.o"
cni_plugin="$repo/.build-cni/tessera-cni"
[ -f "$bpf_object" ] || { echo "install: $bpf_object is missing: run scripts/build-bpf.sh" >&2; exit 1; }
[ -x "$cni_plugin" ] || { echo "install: $cni_plugin is missing: run make -C Sources/tessera-cni" >&2; exit 1; }

put() { # mode source destination
  install -D -m "$1" "$2" "$root$3"
  echo "install: $3"
}
for binary in tessera "${daemons[@]}"; do put 0755 "$bin_dir/$binary" "$prefix/bin/$binary"; done
put 0644 "$bpf_object" /usr/lib/tessera/endpoint.bpf.o
put 0755 "$cni_plugin" /opt/cni/bin/tessera-cni
put 0644 "$repo/README.md" /usr/share/doc/tessera/README.md
for daemon in "${daemons[@]}"; do
  unit="$root/lib/systemd/system/$daemon.service"
  install -D -m 0644 "$repo/deploy/systemd/$daemon.service" "$unit"
  sed -i "s|/usr/local/bin/|$prefix/bin/|" "$unit"
  echo "install: /lib/systemd/system/$daemon.service"
done
# Settings files are the operator's: installed once, never overwritten.
for env in node identityd policyd datapathd endpointd; do
  target="$root/etc/tessera/$env.env"
  if [ -e "$target" ]; then
    echo "install: /etc/tessera/$env.env kept"
    continue
  fi
  install -D -m 0644 "$repo/deploy/env/$env.env" "$target"
  [ "$env" = node ] && sed -i "s|--node-name node-1|--node-name $(hostname)|" "$target"
  echo "install: /etc/tessera/$env.env"
done
case $cni_conf in
main) put 0644 "$repo/deploy/cni/10-tessera.conflist" /etc/cni/net.d/10-tessera.conflist ;;
chained) put 0644 "$repo/deploy/cni/20-tessera-chained-ptp.conflist" /etc/cni/net.d/20-tessera-chained-ptp.conflist ;;
esac
if [ "$root" = "" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "install: done; settings in $root/etc/tessera/*.env, then: systemctl enable --now ${daemons[*]}"
