#!/usr/bin/env bash
# Installs every system package Tessera needs to build, run and test on a fresh
# Debian 12 machine. Idempotent: re-running it installs nothing new.
set -euo pipefail

packages=(
  protobuf-compiler protobuf-c-compiler libprotobuf-c-dev libnghttp2-dev libjansson-dev libnl-3-dev libnl-route-3-dev
  libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config make
  iproute2 netcat-openbsd iputils-ping curl containernetworking-plugins etcd-server etcd-client
  sqlite3 libsqlite3-dev valgrind jq python3-grpcio python3-protobuf
  iptables ipset nftables libipset13 libnftables1 util-linux python3-scapy python3-yaml clang-format
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The datapath pins its maps and programs under bpffs.
if [ -d /sys/fs/bpf ] && ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf || echo "install-deps: could not mount bpffs (eBPF tests will skip)"
fi
echo "install-deps: ok"
