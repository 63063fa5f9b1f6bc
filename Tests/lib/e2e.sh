# Shared by the end-to-end suites (Tests/e2e, Tests/cluster): the skip convention
# (exit 77, which scripts/test.sh reports as skipped, never as ok), checks and their
# tally, polling, free loopback ports and the summary line.
#
# Source it with E2E_NAME (the suite's name in its output) and repo (the repository
# root) set:   E2E_NAME=policy-e2e; . "$repo/Tests/lib/e2e.sh"

passed=0 failed=0

# skip REASON...: the suite cannot run on this machine; says why and exits 77.
skip() {
  echo "$E2E_NAME: SKIP: $*"
  exit 77
}

# require_node: what every suite that starts a node needs: root, the built binaries
# (TESSERA_BIN) and the built CNI plugin.
require_node() {
  [ "$(id -u)" = 0 ] || skip "needs root (network namespaces, eBPF)"
  [ -n "${TESSERA_BIN:-}" ] && [ -x "$TESSERA_BIN/tessera" ] || skip "TESSERA_BIN is not set to the built binaries"
  [ -x "$repo/.build-cni/tessera-cni" ] || skip "tessera-cni not built (make -C Sources/tessera-cni)"
}

# require_commands COMMAND...: skips naming the first one missing.
require_commands() {
  local command
  for command in "$@"; do command -v "$command" >/dev/null || skip "$command missing"; done
}

# require_cni_plugins PLUGIN...: the Debian plugins under /usr/lib/cni.
require_cni_plugins() {
  local plugin
  for plugin in "$@"; do
    [ -x "/usr/lib/cni/$plugin" ] || skip "/usr/lib/cni/$plugin missing (containernetworking-plugins)"
  done
}

pass() {
  passed=$((passed + 1))
  echo "ok   $*"
}
fail() {
  failed=$((failed + 1))
  echo "FAIL $*"
}

# check DESCRIPTION COMMAND...: counts the command's outcome; its stdout is dropped,
# its stderr shown (the reason of a failure).
check() {
  local description=$1
  shift
  if "$@" >/dev/null; then pass "$description"; else fail "$description"; fi
}

# eventually SECONDS COMMAND...: polls every $EVENTUALLY_INTERVAL seconds (0.1 unless
# the suite sets it) until the command succeeds; fails once the seconds have passed.
eventually() {
  local end=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep "${EVENTUALLY_INTERVAL:-0.1}"
  done
}

# free_port: a loopback TCP port free at the time of asking.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# free_port_block N: the first of N consecutive free loopback ports (the daemons'
# metrics ports follow one base port).
free_port_block() {
  python3 - "$1" <<'PY'
import random, socket, sys
count = int(sys.argv[1])
for _ in range(200):
    base = random.randrange(20000, 60000)
    sockets = []
    try:
        for port in range(base, base + count):
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            sockets.append(s)
        print(base)
        break
    except OSError:
        pass
    finally:
        for s in sockets:
            s.close()
else:
    sys.exit("no block of %d free ports found" % count)
PY
}

# e2e_result [NOTE]: the summary line; succeeds only when no check failed.
e2e_result() {
  echo "$E2E_NAME: $passed passed, $failed failed${1:+ $1}"
  [ "$failed" = 0 ]
}

# start_node [ARG...]: `tessera node up` in $RUN (state in $tmp/state, maps under $PIN,
# detached and unsupervised, so a suite may kill and restart daemons), with the extra
# arguments given; on failure shows the logs and fails the suite. Skips unless the
# datapath runs eBPF.
start_node() {
  "$TESSERA_BIN/tessera" node up --run-dir "$RUN" --detach --no-supervise --state-dir "$tmp/state" \
    --bpf-pin-dir "$PIN" "$@" >"$tmp/up.log" 2>&1 || {
    cat "$tmp/up.log" "$RUN"/*.log
    exit 1
  }
  require_bpf_datapath
}

# require_bpf_datapath: skips unless the node in $RUN enforces with eBPF.
require_bpf_datapath() {
  local backend
  backend=$("$TESSERA_BIN/tessera" status --run-dir "$RUN" -o json |
    jq -r '.services[] | select(.service=="datapath") | .backend') && [ -n "$backend" ] || {
    # A node that does not answer is a failure, not a reason to skip.
    echo "$E2E_NAME: tessera status gave no datapath backend"
    exit 1
  }
  case $backend in bpf*) ;; *) skip "the datapath runs '$backend', not eBPF" ;; esac
  echo "$E2E_NAME: datapath backend $backend"
}

# e2e_teardown: what a one-node suite's EXIT trap undoes, even after a failure: the
# background processes in bg_pids, the pods in pods (through chain_del), the node in
# $RUN, its maps under $PIN and $tmp.
e2e_teardown() {
  local pid pod
  for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pod in "${pods[@]}"; do chain_del "$pod"; done
  "$TESSERA_BIN/tessera" node down --run-dir "$RUN" >/dev/null 2>&1
  rm -rf "$PIN" "$tmp"
}
