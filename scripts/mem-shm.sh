#!/usr/bin/env bash
# Memory of the shared-memory seam: RSS of `dmbridge run` and of each Kamailio process
# attached to it (dmbridge.so workers, tests/kamailio/bench-echo.cfg), at idle, in the
# middle of a load (`dmbridge bench`, test_app echo through the script, closed loop) and at
# idle again after it; and the shared memory the segments take (the memfd mappings in the
# bridge's /proc/PID/maps) next to what one segment for every slot would map.
#
# usage: scripts/mem-shm.sh [SECONDS (10)] [CONCURRENCY (100)] [WORKERS (4)]
# Needs scripts/setup.sh, `cargo build --release -p dmbridge-bridge -p dmbridge-cabi` and
# `make -C module-glue/kamailio` (done here when missing). Loopback only, free ports;
# bounded: about SECONDS + 15 s. Stops everything it started (by PID) on exit.
#
# Columns (kB, from /proc/PID/status): VmRSS = RssAnon (private heap/stacks) + RssFile
# (mapped binaries and libraries) + RssShmem (the segments' pages this process touched).
set -euo pipefail
exec </dev/null
secs=${1:-10}
conc=${2:-100}
workers=${3:-4}
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
dmb="$top/target/release/dmbridge"
so=${DMB_SO:-$top/build/kamailio/dmbridge.so}
work=$(mktemp -d /tmp/dmb-mem-shm.XXXXXX)
seg="dmb-mem-$$"
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT

log() { printf 'mem-shm: %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_log() { # file pattern seconds
  for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  log "timed out waiting for '$2' in $1"; tail -n 20 "$1" >&2; return 1
}

if [ ! -x "$dmb" ] || [ ! -f "$top/target/release/libdmbridge.a" ]; then
  log "building dmbridge and libdmbridge (release)"
  (cd "$top" && cargo build --release -q -p dmbridge-bridge -p dmbridge-cabi)
fi
[ -f "$so" ] || make -s -C "$top/module-glue/kamailio" OUT="$(dirname "$so")" >/dev/null

bport=$(free_port)
cat >"$work/dmbridge.toml" <<EOF
[node]
origin_host = "server.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:$bport"]
allow_unknown_peers = true

[[applications]]
id = 16777215
vendor = 999999

[app]
segment = "$seg"
control_socket = "$work/run/control.sock"
EOF
"$dmb" run --config "$work/dmbridge.toml" >"$work/bridge.log" 2>&1 &
bridge=$!
pids+=("$bridge")
wait_log "$work/bridge.log" "serving workers" 10
mkdir -p "$work/kam"
kamailio -DD -E -Y "$work/kam" -f "$top/tests/kamailio/bench-echo.cfg" \
  -A "SIP_PORT=$(free_port)" -A "DMB_SO=\"$so\"" -A "DMB_SOCKET=\"$work/run/control.sock\"" \
  -A "DMB_WORKERS=$workers" >"$work/kamailio.log" 2>&1 &
pids+=($!)
wait_log "$work/bridge.log" 'handles \["16777214"\]' 15
sleep 2

# one line per process: label pid VmRSS RssAnon RssFile RssShmem
sample() { # phase
  local phase=$1 p
  row() { awk -v ph="$phase" -v who="$1" -v pid="$2" \
    '/^VmRSS/{r=$2} /^RssAnon/{a=$2} /^RssFile/{f=$2} /^RssShmem/{s=$2}
     END{printf "%-8s %-20s %7s %8s %8s %8s %8s\n", ph, who, pid, r, a, f, s}' "/proc/$2/status"; }
  row "dmbridge run" "$bridge"
  for p in $(pgrep -x kamailio); do
    grep -q "memfd:$seg" "/proc/$p/maps" 2>/dev/null && row "kamailio (attached)" "$p"
  done
}

{
  printf '%-8s %-20s %7s %8s %8s %8s %8s\n' phase process pid VmRSS RssAnon RssFile RssShmem
  sample idle
  "$dmb" bench --connect "127.0.0.1:$bport" --template "$top/cfg-examples/bench/test_app.json" \
    --origin-host bench.test.local --app-vendor 999999 --concurrency "$conc" --duration "$secs" \
    --timeout-ms 5000 --connect-timeout-ms 15000 --json --quiet >"$work/bench.json" 2>"$work/bench.log" &
  bench=$!
  pids+=("$bench")
  sleep $((secs / 2 + 1))
  sample load
  wait "$bench" || { log "bench failed:"; cat "$work/bench.log" >&2; }
  sleep 2
  sample after
} | tee "$work/rss.txt"

# The segments, as the bridge maps them: one memfd per attached worker.
n=0; total=0
while read -r range _; do
  n=$((n + 1)); total=$((total + 16#${range#*-} - 16#${range%-*}))
done < <(grep "memfd:$seg" "/proc/$bridge/maps")
echo "segments mapped by the bridge: $n, $total bytes in all"
python3 - "$work/bench.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
rps = next((d[k] for k in ("answers_per_sec", "answers_per_s", "rps") if k in d), None)
print(f"load: {rps:,.0f} answers/s, answered={d.get('answered')} timeouts={d.get('timeouts')}" if rps else f"load: {d}")
EOF
ring=1048576
per=$(( 4096 + ( (256 + 3*256 + 3*ring + 4095) / 4096 ) * 4096 ))
printf 'per worker (1 MiB rings): %d bytes; one segment for all 64 slots (before): %.1f MiB\n' \
  "$per" "$(echo "(4096 + 64 * ($per - 4096)) / 1048576" | bc -l)"
log "work dir $work"
