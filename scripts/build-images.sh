#!/usr/bin/env bash
# Builds Tessera's container images with podman, offline: nothing is pulled. The
# binaries are built here (release, Swift standard library linked statically), and
# each image is FROM scratch with the binaries, exactly the shared libraries `ldd`
# says they still need (glibc, libstdc++, zlib, sqlite3, libbpf, libelf, …) and the
# dynamic loader. Containerfiles: deploy/images/<image>/Containerfile.
#
#   scripts/build-images.sh                 # all three images, tagged :<version>
#   scripts/build-images.sh --tag TAG       # tag them :TAG instead
#   scripts/build-images.sh --prefix P      # name them P/tessera-… (default localhost)
#   scripts/build-images.sh --only node     # one image: node, identityd or policyd (repeatable)
#   scripts/build-images.sh --skip-build    # reuse the binaries already in .build/release
#
# Images: <prefix>/tessera-node (endpointd, datapathd, the CLI, the eBPF object, the
# static tessera-cni plugin and conflist, tessera-cni-install), <prefix>/tessera-identityd
# and <prefix>/tessera-policyd (each with the CLI for its probes). Labelled with
# org.opencontainers.image.version and .revision. Prints each image's name on the
# last lines. Installs podman with apt when it is missing (root).
#
# Time on two cores: the release build is the slow part (from nothing about 16
# CPU-minutes, 21 minutes of wall time on a machine shared with other builds; when
# .build/release is current, 25–80 s for everything, images included).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

tag=
prefix=localhost
only=()
skip_build=false
while (($#)); do
  case $1 in
  --tag) tag=$2; shift 2 ;;
  --prefix) prefix=$2; shift 2 ;;
  --only) only+=("$2"); shift 2 ;;
  --skip-build) skip_build=true; shift ;;
  -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
  *) echo "build-images: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
((${#only[@]})) || only=(node identityd policyd)
for image in "${only[@]}"; do
  case $image in node | identityd | policyd) ;; *) echo "build-images: --only takes node, identityd or policyd" >&2; exit 2 ;; esac
done

if ! command -v podman >/dev/null; then
  echo "build-images: installing podman" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends podman >/dev/null
fi

version=$(sed -n 's/.*static let current = "\(.*\)".*/\1/p' Sources/TesseraRuntime/DaemonInfoService.swift)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
tag=${tag:-$version}

# Binaries: only the products the images hold, each built once (they share every module).
swift_products=(tessera)
for image in "${only[@]}"; do
  case $image in
  node) swift_products+=(tessera-endpointd tessera-datapathd) ;;
  identityd) swift_products+=(tessera-identityd) ;;
  policyd) swift_products+=(tessera-policyd) ;;
  esac
done
if ! $skip_build; then
  scripts/install-deps.sh >&2 # clang, bpftool, the static C libraries
  for product in "${swift_products[@]}"; do
    echo "build-images: swift build -c release --static-swift-stdlib --product $product" >&2
    swift build -c release --static-swift-stdlib --product "$product" >&2
  done
fi
bin=$(swift build -c release --show-bin-path)
for product in "${swift_products[@]}"; do
  [ -x "$bin/$product" ] || { echo "build-images: $bin/$product is missing (drop --skip-build)" >&2; exit 1; }
done
if [[ " ${only[*]} " == *" node "* ]]; then
  scripts/build-bpf.sh >&2
  make -s -C Sources/tessera-cni static >&2
fi

stage_root=$repo/.build-images
rm -rf "$stage_root"

# Copies binaries into ROOT/usr/bin and every shared object they load (ldd's resolved
# paths, and the loader) at the same path in ROOT.
stage_binaries() { # root binary...
  local root=$1 binary lib
  shift
  mkdir -p "$root/usr/bin" "$root/tmp" "$root/etc" "$root/run/tessera" "$root/var/lib/tessera"
  chmod 1777 "$root/tmp"
  for binary in "$@"; do
    install -m 0755 "$binary" "$root/usr/bin/"
    # Symbols too: the Swift binaries go from about 190 MB to 90 MB (most of the rest is
    # Foundation's ICU data).
    strip "$root/usr/bin/$(basename "$binary")"
    # Dynamic: "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)".
    # Static binaries ("not a dynamic executable") need nothing.
    while read -r lib; do
      [ -e "$root$lib" ] && continue
      install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done < <(ldd "$binary" 2>/dev/null | grep -oE '(=> )?/[^ ]+' | sed 's/^=> //' | sort -u)
  done
  # Name resolution for dns:NAME:PORT addresses without a libc in the image's /etc.
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  printf 'root:x:0:0:root:/:/usr/bin/tessera\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
}

names=()
for image in "${only[@]}"; do
  context=$stage_root/$image
  root=$context/rootfs
  case $image in
  node)
    stage_binaries "$root" "$bin/tessera-endpointd" "$bin/tessera-datapathd" "$bin/tessera" \
      .build-cni/static/tessera-cni-install
    install -D -m 0644 .build-bpf/endpoint.bpf.o "$root/usr/lib/tessera/endpoint.bpf.o"
    install -D -m 0755 .build-cni/static/tessera-cni "$root/usr/lib/tessera/cni/tessera-cni"
    install -D -m 0644 deploy/cni/10-tessera.conflist "$root/usr/lib/tessera/cni/10-tessera.conflist"
    ;;
  identityd | policyd)
    stage_binaries "$root" "$bin/tessera-$image" "$bin/tessera"
    ;;
  esac
  cp "deploy/images/$image/Containerfile" "$context/Containerfile"
  name=$prefix/tessera-$image:$tag
  echo "build-images: $name ($(du -sh "$root" | cut -f1) staged)" >&2
  previous=$(podman image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
  # --layers=false: no intermediate image per instruction is left behind.
  podman build --quiet --network none --pull=never --layers=false \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --tag "$name" "$context" >/dev/null
  # The image this one replaces under the same name (unless a container still uses it).
  if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$name")" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
  fi
  names+=("$name")
done
for name in "${names[@]}"; do
  echo "build-images: built $name, $(podman image inspect --format '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1 / 1e6}')" >&2
done
printf '%s\n' "${names[@]}"
