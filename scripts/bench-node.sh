#!/usr/bin/env bash
# The "Diameter node" benchmark of BENCHMARKS.md: one client (`dmbridge bench`, same
# template, 100 requests in flight, SECONDS per run) against three test_app servers started
# side by side on loopback, taking turns in each round:
#   bridge  `dmbridge run --echo` (the node answering in process)
#   fd      freeDiameter 1.2.1's test_app server (shared/peers/freediameter/run.sh server)
#   erlang  Erlang/OTP diameter (shared/peers/erlang/dia_peer.escript server --apps ta)
# and prints answers/s, p50 and p99 per run, then the bridge/freeDiameter ratio per round.
#
# usage: scripts/bench-node.sh [SECONDS=10] [ROUNDS=2]
# Bounded: ROUNDS x 3 x (SECONDS + ~1 s) plus start-up; everything it starts is killed by PID
# on exit (also on Ctrl-C or failure). Needs scripts/setup.sh (freeDiameter, test_app.fdx,
# Erlang) and a release build (built here unless DMBRIDGE_BIN names a binary).
# Env: DMBRIDGE_FD_DEPS (default build/deps/fd), DMBRIDGE_SHARED (default ../shared),
#      BENCH_JSON_DIR (keep each run's --json summary there),
#      DMBRIDGE_BASELINE_BIN (a second dmbridge, e.g. one built from an older commit: it runs
#      as "baseline" in every round beside "bridge", for before/after numbers in one run),
#      BRIDGE_EXTRA_TOML (appended to "bridge"'s configuration only, e.g. "[metrics]" with
#      "listen = ..." to measure with metrics on against a baseline that has none; the word
#      PORT in it is replaced by a free port).
set -euo pipefail
secs=${1:-10}
rounds=${2:-2}
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
shared=${DMBRIDGE_SHARED:-$top/../shared}
deps=${DMBRIDGE_FD_DEPS:-$top/build/deps/fd}
template=$top/cfg-examples/bench/test_app.json

fail() { echo "bench-node: $*" >&2; exit 1; }
for f in "$deps/test_app.fdx" "$deps/bind_lo.so"; do
  [ -f "$f" ] || fail "missing $f: run scripts/setup.sh"
done
command -v freeDiameterd >/dev/null || fail "freeDiameterd missing: run scripts/setup.sh"
command -v escript >/dev/null || fail "escript missing: run scripts/setup.sh"
[ -f "$shared/peers/erlang/dia_peer.escript" ] || fail "no $shared/peers (set DMBRIDGE_SHARED)"

if [ -n "${DMBRIDGE_BIN:-}" ]; then
  bin=$DMBRIDGE_BIN
else
  (cd "$top" && cargo build --release -q -p dmbridge-bridge)
  bin=$top/target/release/dmbridge
fi

work=$(mktemp -d /tmp/bench-node.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_listen() { # port, what
  for _ in $(seq 1 150); do
    if ss -Hltn "sport = :$1" | grep -q .; then return 0; fi
    sleep 0.2
  done
  fail "$2 does not listen on $1"
}

# 1. The bridge with its in-process responder.
bport=$(free_port)
cat > "$work/bridge.toml" <<EOF
[node]
origin_host = "bridge.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:$bport"]
allow_unknown_peers = true
[[applications]]
id = 16777215
vendor = 999999
EOF
blport=$(free_port)
sed "s/127.0.0.1:$bport/127.0.0.1:$blport/" "$work/bridge.toml" > "$work/baseline.toml"
if [ -n "${BRIDGE_EXTRA_TOML:-}" ]; then
  printf '%s\n' "${BRIDGE_EXTRA_TOML//PORT/$(free_port)}" >> "$work/bridge.toml"
fi
"$bin" run --echo --config "$work/bridge.toml" > "$work/bridge.log" 2>&1 &
pids+=($!); disown
wait_listen "$bport" "dmbridge run --echo"

# 1b. The same bridge configuration on the baseline binary, when one is given.
if [ -n "${DMBRIDGE_BASELINE_BIN:-}" ]; then
  "$DMBRIDGE_BASELINE_BIN" run --echo --config "$work/baseline.toml" > "$work/baseline.log" 2>&1 &
  pids+=($!); disown
  wait_listen "$blport" "baseline dmbridge run --echo"
fi

# 2. freeDiameter's test_app server.
fport=$(free_port)
cp "$deps/test_app.fdx" "$deps/bind_lo.so" "$work/"
sh "$shared/peers/freediameter/run.sh" server "$work" "$fport"
pids+=("$(cat "$work/server.pid")")
wait_listen "$fport" "freeDiameter test_app server"

# 3. Erlang/OTP diameter.
eport=$(free_port)
escript "$shared/peers/erlang/dia_peer.escript" server --port "$eport" --apps ta \
  --duration $((rounds * 3 * (secs + 5) + 60)) > "$work/erlang.log" 2>&1 &
pids+=($!); disown
wait_listen "$eport" "Erlang dia_peer server"

run_one() { # name port round
  local out="$work/$1-$3.json"
  "$bin" bench --connect "127.0.0.1:$2" --template "$template" --concurrency 100 \
    --duration "$secs" --json --quiet > "$out" || true
  if [ -n "${BENCH_JSON_DIR:-}" ]; then mkdir -p "$BENCH_JSON_DIR"; cp "$out" "$BENCH_JSON_DIR/"; fi
  python3 - "$1" "$out" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
try:
    j = json.load(open(path))
except Exception as e:
    print(f"{name:8} no summary ({e})"); sys.exit(0)
if "error" in j:
    print(f"{name:8} error: {j['error']}"); sys.exit(0)
l = j["latency_us"]
print(f"{name:8} {j['answers_per_sec']:>10.0f} answers/s  p50 {l['p50']/1000:6.2f} ms  "
      f"p99 {l['p99']/1000:6.2f} ms  sent {j['sent']} answered {j['answered']} "
      f"codes {json.dumps(j['result_codes'])} timeouts {j['timeouts']}")
PY
}

ratio() { # other-name bridge.json other.json
  python3 - "$@" <<'PY'
import json, sys
name = sys.argv[1]
try:
    b, f = (json.load(open(p))["answers_per_sec"] for p in sys.argv[2:4])
    print(f"         bridge / {name} = {b / f:.3f}x" if f else f"         {name} answered nothing")
except Exception as e:
    print(f"         no {name} ratio ({e})")
PY
}

echo "dmbridge bench, template test_app.json, 100 in flight, ${secs} s per run, load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
  echo "round $r"
  run_one bridge "$bport" "$r"
  [ -n "${DMBRIDGE_BASELINE_BIN:-}" ] && run_one baseline "$blport" "$r"
  run_one fd "$fport" "$r"
  run_one erlang "$eport" "$r"
  ratio freeDiameter "$work/bridge-$r.json" "$work/fd-$r.json"
  [ -n "${DMBRIDGE_BASELINE_BIN:-}" ] && ratio baseline "$work/bridge-$r.json" "$work/baseline-$r.json"
done
