#!/usr/bin/env bash
# Builds tessera-cni and installs it where container runtimes look for CNI plugins.
#
#   deploy/cni/install.sh                      # build, install /opt/cni/bin/tessera-cni
#   deploy/cni/install.sh --conf               # also install 10-tessera.conflist (tessera-cni as the
#                                              # main plugin with host-local: the recommended mode)
#   deploy/cni/install.sh --conf-chained       # install 20-tessera-chained-ptp.conflist instead
#                                              # (ptp -> tessera-cni; has a window, see the README)
#   deploy/cni/install.sh --link-plugins       # also link Debian's ptp/host-local into the bin dir
#   deploy/cni/install.sh --bin-dir DIR --conf-dir DIR
#
# Debian's containernetworking-plugins live in /usr/lib/cni (podman searches there and in
# /opt/cni/bin); runtimes that only search /opt/cni/bin (containerd, CRI-O defaults) need
# --link-plugins so host-local (which tessera-cni executes for IPAM) and ptp are found too.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

bin_dir=/opt/cni/bin
conf_dir=/etc/cni/net.d
install_conf=false
conf_file=10-tessera.conflist
link_plugins=false
while (($#)); do
  case $1 in
  --bin-dir) bin_dir=$2; shift 2 ;;
  --conf-dir) conf_dir=$2; shift 2 ;;
  --conf) install_conf=true; shift ;;
  --conf-chained) install_conf=true; conf_file=20-tessera-chained-ptp.conflist; shift ;;
  --link-plugins) link_plugins=true; shift ;;
  -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
  *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

build_dir=${BUILD_DIR:-$repo/.build-cni}
make -s -C "$repo/Sources/tessera-cni" BUILD_DIR="$build_dir" all
install -D -m 0755 "$build_dir/tessera-cni" "$bin_dir/tessera-cni"
echo "install.sh: installed $bin_dir/tessera-cni"

if $link_plugins; then
  for p in ptp host-local loopback; do
    if [ ! -e "$bin_dir/$p" ] && [ -x "/usr/lib/cni/$p" ]; then
      ln -s "/usr/lib/cni/$p" "$bin_dir/$p"
      echo "install.sh: linked $bin_dir/$p -> /usr/lib/cni/$p"
    fi
  done
fi

if $install_conf; then
  install -D -m 0644 "$here/$conf_file" "$conf_dir/$conf_file"
  echo "install.sh: installed $conf_dir/$conf_file"
fi

# The plugin answers VERSION without the endpoint service: a quick self-check.
echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION "$bin_dir/tessera-cni" >/dev/null
echo "install.sh: ok"
