#!/usr/bin/env bash
# The bridge's throughput with 1, 2 and 4 runtime threads (`dmbridge run --threads N`) and
# with no --threads (the default: 1 since session 9; older builds: one worker per core), taking turns in each round so every thread count
# of a round sees the same machine load:
#   echo      `dmbridge run --echo` (the node answering in process)
#   kamailio  `dmbridge run` + Kamailio with dmbridge.so (tests/kamailio/bench-echo.cfg, 2
#             module workers); Kamailio stays up and re-attaches to each new bridge
# Client: `dmbridge bench`, freeDiameter test_app requests, CONCURRENCY (100) in flight, one
# connection, SECONDS per run.
#
# usage: scripts/bench-threads.sh [SECONDS (5)] [ROUNDS (2)] [MODES ("echo kamailio")]
#        THREADS="1 2 4 default"
# Loopback only, free ports; stops what it started by PID.
set -euo pipefail
exec </dev/null
secs=${1:-5}
rounds=${2:-2}
modes=${3:-echo kamailio}
threads=${THREADS:-1 2 4 default}
conc=${CONCURRENCY:-100}
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
dmb=${DMBRIDGE_BIN:-$top/target/release/dmbridge}
libdir=${DMB_LIBDIR:-$top/target/release}
kmod="$top/target/kamailio-module"
so="$kmod/dmbridge.so"
work=$(mktemp -d /tmp/dmb-bench-threads.XXXXXX)
bench_name=bench-threads
shm_name="dmb-bench-threads-$$"
. "$top/scripts/bench-lib.sh"

if [ ! -x "$dmb" ] || [ ! -f "$libdir/libdmbridge.a" ]; then
  log "building dmbridge and libdmbridge (release)"
  (cd "$top" && cargo build --release -q -p dmbridge-bridge -p dmbridge-cabi)
fi
make -s -C "$top/module-glue/kamailio" OUT="$kmod" DMB_LIBDIR="$libdir" >/dev/null

port=$(free_port)
cat >"$work/bridge.toml" <<EOF
[node]
origin_host = "server.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:$port"]
allow_unknown_peers = true

[[applications]]
id = 16777215
vendor = 999999

[app]
segment = "/dev/shm/$shm_name"
control_socket = "$work/control.sock"
EOF

kam=""
start_kamailio() {
  mkdir -p "$work/kam"
  kamailio -DD -E -Y "$work/kam" -f "$top/tests/kamailio/bench-echo.cfg" \
    -A "SIP_PORT=$(free_udp_port)" -A "DMB_SO=\"$so\"" -A "DMB_SOCKET=\"$work/control.sock\"" \
    >"$work/kamailio.log" 2>&1 &
  kam=$!; pids+=("$kam")
}

run_one() { # mode threads round
  local mode=$1 t=$2 r=$3 log="$work/bridge-$1-$2-$3.log" b opt=() ticks0 ticks1
  [ "$t" = default ] || opt=(--threads "$t")
  if [ "$mode" = echo ]; then
    "$dmb" run --config "$work/bridge.toml" --echo "${opt[@]}" >"$log" 2>&1 &
  else
    "$dmb" run --config "$work/bridge.toml" "${opt[@]}" >"$log" 2>&1 &
  fi
  b=$!; pids+=("$b")
  wait_log "$log" "listening on" 10
  if [ "$mode" = kamailio ]; then
    [ -n "$kam" ] || start_kamailio
    wait_log "$log" 'handles \["16777214"\]' 30
  fi
  sleep 0.5
  ticks0=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$b/stat")
  "$dmb" bench --connect "127.0.0.1:$port" --template "$top/cfg-examples/bench/test_app.json" \
    --app-vendor 999999 --concurrency "$conc" --duration "$secs" --timeout-ms 5000 \
    --json --quiet >"$work/$mode-$t-$r.json"
  ticks1=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$b/stat")
  kill "$b"; wait "$b" 2>/dev/null || true
  python3 - "$work/$mode-$t-$r.json" "$mode" "$t" "$r" "$((ticks1 - ticks0))" "$secs" \
    "$(cut -d' ' -f1 /proc/loadavg)" <<'EOF' | tee -a "$work/results.jsonl"
import json, os, sys
b = json.load(open(sys.argv[1]))
mode, t, r, ticks, secs, load = sys.argv[2:]
print(json.dumps({"mode": mode, "threads": t, "round": int(r),
                  "answers_per_s": b["answers_per_sec"], "answered": b["answered"],
                  "sent": b["sent"], "codes": b["result_codes"],
                  "p50_us": b["latency_us"]["p50"], "p99_us": b["latency_us"]["p99"],
                  "bridge_cpu_cores": round(int(ticks) / os.sysconf("SC_CLK_TCK") / float(secs), 2),
                  "loadavg": float(load)}))
EOF
}

for r in $(seq "$rounds"); do
  for mode in $modes; do
    for t in $threads; do
      log "round $r: $mode, threads $t"
      run_one "$mode" "$t" "$r"
    done
  done
done
python3 - "$work/results.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'mode':<9} {'threads':>7} {'round':>5} {'answers/s':>10} {'p50 us':>7} {'p99 us':>7} {'bridge cpu':>10} {'load':>5}")
for x in rows:
    print(f"{x['mode']:<9} {x['threads']:>7} {x['round']:>5} {x['answers_per_s']:>10,.0f} {x['p50_us']:>7} {x['p99_us']:>7} {x['bridge_cpu_cores']:>10} {x['loadavg']:>5}")
EOF
log "results in $work/results.jsonl"
