#!/bin/sh
# End-to-end benchmark of the SIP-server seam (BENCHMARKS.md, "End to end through the
# shared-memory seam"): `dmbridge bench` -> `dmbridge run` -> C workers on libdmbridge
# (tests/c/dmb_echo_worker, replying through the library) -> answer, against freeDiameter's
# test_app server driven by the same client, taking turns, in the same run.
# usage: tests/c/bench-e2e.sh [ROUNDS [SECONDS [CONCURRENCY [WORKERS]]]]   (default 3 10 100 2)
# Needs: cargo, cc, freeDiameterd, build/deps/fd/test_app.fdx and bind_lo.so
# (../shared/peers/freediameter/build-test-app.sh). Loopback only; stops what it starts.
set -eu
rounds=${1:-3}; secs=${2:-10}; conc=${3:-100}; workers=${4:-2}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
(cd "$top" && cargo build --release -q -p dmbridge-bridge)
sh "$here/build-echo-worker.sh" >/dev/null
bin=$top/target/release/dmbridge
W=$(mktemp -d /tmp/dmb-bench-e2e.XXXXXX)
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$W"; }
trap cleanup EXIT INT TERM
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bp=$(port); fp=$(port)
cat >"$W/bridge.toml" <<CFG
[node]
origin_host = "bridge.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:$bp"]
allow_unknown_peers = true

[[applications]]
id = 16777215
vendor = 999999

[app]
segment = "/dev/shm/dmb-bench-e2e-$$"
control_socket = "$W/ctl.sock"
reply_timeout = "5s"
max_workers = 16
CFG
"$bin" run --config "$W/bridge.toml" >"$W/bridge.log" 2>&1 &
bpid=$!; pids="$pids $bpid"
for _ in $(seq 100); do [ -S "$W/ctl.sock" ] && break; sleep 0.05; done
"$top/target/release/dmb_echo_worker" "$W/ctl.sock" "$workers" '*' >"$W/workers.log" 2>&1 &
pids="$pids $!"
cp "$top/build/deps/fd/test_app.fdx" "$top/build/deps/fd/bind_lo.so" "$W/"
sh "$top/../shared/peers/freediameter/run.sh" server "$W" "$fp"
pids="$pids $(cat "$W/server.pid")"
sleep 1.5
run() { # name port
  "$bin" bench --connect "127.0.0.1:$2" --template "$top/cfg-examples/bench/test_app.json" \
    --concurrency "$conc" --duration "$secs" --json --quiet >"$W/$1.json" 2>"$W/$1.err" || true
  python3 - "$W/$1.json" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
lat = d.get("latency_us", {})
print(f'{sys.argv[2]:>14}: {d.get("answers_per_sec", 0):>9.0f} answers/s  p50 {lat.get("p50", 0)/1000:.2f} ms  '
      f'p99 {lat.get("p99", 0)/1000:.2f} ms  sent {d.get("sent")}  answered {d.get("answered")}  '
      f'codes {d.get("result_codes")}  timeouts {d.get("timeouts")}')
PY
}
for r in $(seq "$rounds"); do
  echo "round $r"
  run dmbridge+C "$bp"
  run freeDiameter "$fp"
done
grep -h "served" "$W/workers.log" || true
