#!/usr/bin/env bash
# Imports etcd's v3 API protos from Debian's golang-etcd-server-dev (the same
# etcd release as etcd-server) into third_party/etcd/, then regenerates the
# Swift client with scripts/generate-proto.sh. Run it only to move to another
# etcd release; the result is committed.
#
# Only deletions are made (gogoproto and google.api imports and options), so
# the wire format is etcd's own.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download golang-etcd-server-dev >/dev/null 2>&1) \
  || { echo "import-etcd-protos: cannot download golang-etcd-server-dev" >&2; exit 1; }
deb=$(ls "$work"/golang-etcd-server-dev_*.deb)
dpkg-deb -x "$deb" "$work/x"
src="$work/x/usr/share/gocode/src/go.etcd.io/etcd"
version=$(basename "$deb" | sed -E 's/^golang-etcd-server-dev_([^_]+)_.*/\1/')

out=third_party/etcd
rm -rf "$out/etcd"
for file in etcdserver/etcdserverpb/rpc.proto mvcc/mvccpb/kv.proto auth/authpb/auth.proto; do
  mkdir -p "$out/etcd/$(dirname "$file")"
  python3 - "$src/$file" "$out/etcd/$file" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r'^import "(gogoproto/gogo|google/api/annotations)\.proto";\n', '', text, flags=re.M)
text = re.sub(r'^option \(gogoproto\.[a-z_]+\) = (true|false);\n', '', text, flags=re.M)
# rpc Foo(A) returns (B) { option (google.api.http) = { ... }; }  ->  rpc Foo(A) returns (B) {}
text = re.sub(r'\{\s*option \(google\.api\.http\) = \{(?:[^{}]|\{[^{}]*\})*\};\s*\}', '{}', text)
assert 'gogoproto' not in text and 'google.api' not in text, sys.argv[1]
open(sys.argv[2], 'w').write(text)
PY
done
echo "$version" > "$out/VERSION"
echo "import-etcd-protos: etcd $version protos in $out; now run scripts/generate-proto.sh"
