#!/usr/bin/env bash
# Formats the hand-written code: Swift with the toolchain's `swift format`
# (.swift-format), C with Debian's clang-format (a .clang-format per C tree:
# the plugin's and the datapath's). Generated code (Sources/TesseraProto,
# Sources/EtcdProto, the plugin's proto/) is left as its generator wrote it.
#
#   scripts/format.sh           # rewrite files in place
#   scripts/format.sh --check   # change nothing; list unformatted files and fail (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
[ "${1:-}" = "--check" ] && check=true

command -v clang-format >/dev/null || { echo "format: clang-format missing: run scripts/install-deps.sh" >&2; exit 1; }
swift format --version >/dev/null 2>&1 || { echo "format: the toolchain has no 'swift format'" >&2; exit 1; }

mapfile -t swift_files < <(git ls-files '*.swift' | grep -v -E '^Sources/(TesseraProto|EtcdProto)/')
mapfile -t c_files < <(git ls-files 'Sources/tessera-cni/*.[ch]' 'Tests/tessera-cniTests/*.[ch]' 'Sources/CTesseraBPF/*.[ch]' |
  grep -v -E '^Sources/tessera-cni/proto/')

if ! $check; then
  swift format format --in-place --configuration .swift-format "${swift_files[@]}"
  clang-format -i "${c_files[@]}"
  echo "format: ${#swift_files[@]} Swift and ${#c_files[@]} C files formatted"
  exit 0
fi

unformatted=()
scratch=$(mktemp)
trap 'rm -f "$scratch"' EXIT
for f in "${swift_files[@]}"; do
  swift format format --configuration .swift-format "$f" >"$scratch" && cmp -s "$scratch" "$f" || unformatted+=("$f")
done
for f in "${c_files[@]}"; do
  clang-format "$f" >"$scratch" && cmp -s "$scratch" "$f" || unformatted+=("$f")
done
if ((${#unformatted[@]})); then
  printf 'format: not formatted: %s\n' "${unformatted[@]}"
  echo "format: ${#unformatted[@]} files differ from what scripts/format.sh would write; run it and commit"
  exit 1
fi
echo "format: ${#swift_files[@]} Swift and ${#c_files[@]} C files are formatted"
