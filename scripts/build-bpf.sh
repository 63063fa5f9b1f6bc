#!/usr/bin/env bash
# Compiles the eBPF datapath object once: Sources/CTesseraBPF/bpf/endpoint.bpf.c
# -> .build-bpf/endpoint.bpf.o (loaded per endpoint by BPFDatapathBackend with
# libbpf; regeneration never recompiles). Runnable from any directory.
#
# Environment: CLANG (default: clang from the Swift toolchain, then PATH),
# BPF_OUT_DIR (default: <repo>/.build-bpf).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/Sources/CTesseraBPF/bpf"
out_dir="${BPF_OUT_DIR:-$repo/.build-bpf}"

find_clang() {
  if [[ -n "${CLANG:-}" ]]; then echo "$CLANG"; return; fi
  for c in /opt/swift/usr/bin/clang "$(command -v clang 2>/dev/null || true)"; do
    if [[ -n "$c" && -x "$c" ]] && "$c" -print-targets 2>/dev/null | grep -qw bpf; then echo "$c"; return; fi
  done
  echo "build-bpf: no clang with the bpf target found (set CLANG=...)" >&2
  exit 1
}
clang="$(find_clang)"

multiarch="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
for h in /usr/include/bpf/bpf_helpers.h "/usr/include/$multiarch/asm/types.h"; do
  [[ -f "$h" ]] || { echo "build-bpf: missing $h (install libbpf-dev and linux-libc-dev)" >&2; exit 1; }
done

# An `unreachable` the optimiser proves (a switch default no parse result
# reaches) becomes a call to the extern kfunc __bpf_trap with clang >= 21; any
# extern makes libbpf load the kernel's whole BTF (5 MB) on every object open,
# about 7 ms more per endpoint. Older clang has neither the trap nor the flag.
no_trap=()
if "$clang" -target bpf -mllvm -bpf-disable-trap-unreachable -c -x c /dev/null -o /dev/null 2>/dev/null; then
  no_trap=(-mllvm -bpf-disable-trap-unreachable)
fi

mkdir -p "$out_dir"
tmp="$out_dir/endpoint.bpf.o.tmp.$$"
trap 'rm -f "$tmp"' EXIT

"$clang" -O2 -g -target bpf -mcpu=v3 "${no_trap[@]}" \
  -Wall -Wextra -Werror -Wno-unused-parameter \
  -I"/usr/include/$multiarch" -I"$src" \
  -MD -MF "$out_dir/endpoint.bpf.d" \
  -c "$src/endpoint.bpf.c" -o "$tmp"
mv -f "$tmp" "$out_dir/endpoint.bpf.o"
trap - EXIT

# Fail here rather than at load time if the object lost its programs or maps.
if command -v nm >/dev/null 2>&1; then
  syms="$(nm "$out_dir/endpoint.bpf.o")"
  for sym in from_container to_container handle_from_container handle_to_container tessera_ipcache tessera_endpoints tessera_ct tessera_policy tessera_policy_stats tessera_metrics tessera_handlers tessera_loader tessera_frags tessera_events tessera_events_lost ENDPOINT_ID; do
    grep -qw "$sym" <<<"$syms" || { echo "build-bpf: symbol $sym missing from the object" >&2; exit 1; }
  done
  externs="$(awk '$1 == "U" || $1 == "w" || $1 == "v" { print $2 }' <<<"$syms")"
  [[ -z "$externs" ]] || { echo "build-bpf: the object has extern symbols ($externs): libbpf would load the kernel's BTF per endpoint" >&2; exit 1; }
else
  echo "build-bpf: warning: nm not found, symbol check of the object not done" >&2
fi
echo "build-bpf: $out_dir/endpoint.bpf.o"
