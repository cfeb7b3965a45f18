#!/usr/bin/env bash
# Kamailio + dmbridge vs Kamailio's own ims_diameter_server (cdp), one run each, the same
# client for both: `dmbridge bench` sending freeDiameter test_app requests (closed loop,
# CONCURRENCY in flight, SECONDS long) to
#   A. dmbridge run + kamailio with dmbridge.so and tests/kamailio/bench-echo.cfg, whose event
#      route echoes the request's Test-AVP with dm_send_reply;
#   B. kamailio with cdp + ims_diameter_server (../shared/peers/kamailio-ims/run.sh), whose
#      event_route[diameter:request] echoes the Test-AVP the same way.
# Prints answers/s, p99 and the ratio; the raw JSON summaries are kept in the work dir.
#
# usage: scripts/bench-kamailio.sh [SECONDS (10)] [CONCURRENCY (100)]
#        LOADS="0.2 0.5 0.8" scripts/bench-kamailio.sh ...  also fixed-rate runs at these
#                                                     fractions of each side's maximum, the
#                                                     bridge's own share (its /metrics) and
#                                                     the same rates against `run --echo`;
#                                                     TICK_US=N: bench --tick-us N (0: the
#                                                     1 ms bursts of before the pacer)
#        RATES="100000 160000" ...                    the same at these absolute rates
#                                                     instead (LOADS ignored): compares
#                                                     builds or worker counts at equal load
#        SCHED=1 ...                                  with LOADS/RATES: `perf sched record`
#                                                     over each of A's rate runs, then the
#                                                     run-queue delay per task (root; adds
#                                                     the tracer's own cost to the run)
#        DMB_WORKERS=N ...                            A's module workers (bench-echo.cfg: 2)
#        SCHED_SLICE_US=N / SCHED_FIFO=P ...          A's bridge ([scheduling] slice_us /
#                                                     fifo_priority, also the echo bridge's)
#                                                     and module workers (sched_slice_us /
#                                                     sched_fifo_priority): their scheduling
#        ANCHOR=0 ECHO=0 ...                          skip B / the `run --echo` rate runs
#        ECHO_REGEX=1 scripts/bench-kamailio.sh ...   A's route extracts the value with the
#                                                     regex of B's route (see bench-echo.cfg)
#        CPUS_SERVER=1 CPUS_LOAD=0 ...                taskset -c lists: the Kamailio
#                                                     instances (their processes inherit),
#                                                     the bridges (also the echo one) on
#                                                     CPUS_SERVER (CPUS_BRIDGE=L: the
#                                                     bridges on L), this script and so the
#                                                     `dmbridge bench` client and perf on
#                                                     CPUS_LOAD (BENCHMARKS "Session 19");
#                                                     every run logs each process's CPU list
#                                                     and each CPU's busy share (/proc/stat)
# Needs scripts/setup.sh, `cargo build --release -p dmbridge-bridge -p dmbridge-cabi` (done
# here when missing; DMBRIDGE_BIN / DMB_LIBDIR take another dmbridge / libdmbridge.a, for A/B
# runs; BRIDGE_THREADS=N: dmbridge run --threads N); the module is built into
# target/kamailio-module, or DMB_SO=/path/dmbridge.so runs that build of it instead (a
# before/after pair of the module, when the shm wire is the same). Loopback only, free ports;
# bounded: about 2 x (SECONDS + 5) s, plus 3 x SECONDS per LOADS entry. Stops everything it
# started (by PID) on exit.
set -euo pipefail
exec </dev/null
secs=${1:-10}
conc=${2:-100}
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
shared=${DMBRIDGE_SHARED:-$top/../shared}
dmb=${DMBRIDGE_BIN:-$top/target/release/dmbridge}
libdir=${DMB_LIBDIR:-$top/target/release}
kmod="$top/target/kamailio-module"
so=${DMB_SO:-$kmod/dmbridge.so}
work=$(mktemp -d /tmp/dmb-bench-kam.XXXXXX)
bench_name=bench-kamailio
shm_name="dmb-bench-kam-$$"
. "$top/scripts/bench-lib.sh"
pin_setup
# run_client NAME SERVER_PIDS ARGS...: `dmbridge bench ARGS` (the client) -> $work/NAME.json,
# logging once what every process got (CPU lists) and each CPU's busy share over the run
run_client() {
  local name=$1 srv=$2 rc=0 c
  shift 2
  cpu_stat >"$work/$name.cpustat0"
  "$dmb" bench "$@" >"$work/$name.json" 2>"$work/$name.bench.log" &
  client_pid=$!
  sleep 0.3
  # shellcheck disable=SC2086 # one word per PID
  affinity "server=$(descendants $srv | paste -sd,)" "client=$client_pid" "script=$$" >/dev/null
  wait "$client_pid" || rc=$?
  cpu_stat >"$work/$name.cpustat1"
  log "$name: cpu busy $(paste -d' ' "$work/$name.cpustat0" "$work/$name.cpustat1" |
    awk '{printf "%s %.0f%% ", $1, 100 * ($5 - $2) / ($6 - $3 > 0 ? $6 - $3 : 1)}')"
  return "$rc"
}

if [ ! -x "$dmb" ] || [ ! -f "$libdir/libdmbridge.a" ]; then
  log "building dmbridge and libdmbridge (release)"
  (cd "$top" && cargo build --release -q -p dmbridge-bridge -p dmbridge-cabi)
fi
# the module goes to this worktree's target/, next to the libdmbridge it links
[ -n "${DMB_SO:-}" ] || make -s -C "$top/module-glue/kamailio" OUT="$kmod" DMB_LIBDIR="$libdir" >/dev/null

bench() { # name port origin-host -> $work/name.json
  run_client "$1" "$(server_pids "$1")" --connect "127.0.0.1:$2" \
    --template "$top/cfg-examples/bench/test_app.json" \
    --origin-host "$3" --app-vendor 999999 --concurrency "$conc" --duration "$secs" \
    --timeout-ms 5000 --connect-timeout-ms 15000 --json --quiet || {
      log "bench against $1 failed:"; cat "$work/$1.bench.log" >&2; return 1; }
}
server_pids() { # name -> the PIDs answering it (the Kamailio instance, its bridge)
  case $1 in
    dmbridge) echo "$kam_a $bridge_pid" ;;
    echo) echo "$echo_pid" ;;
    ims) echo "$ims_pid" ;;
  esac
}

# LOADS="0.2 0.5 0.8": open-loop runs at these fractions of the closed-loop rate just
# measured, for latency under load (p50/p99/p99.9 from the schedule and from the send).
# For A also what the bridge and the module add (issue 15 item 3): the bridge's
# dmbridge_script_reply_latency_seconds over the run (its /metrics scraped before and after;
# quantiles interpolated in the buckets), and, after A, the same rates against
# `dmbridge run --echo` (answering in the bridge): A's end-to-end minus echo's is what the
# script round trip adds over answering in the bridge.
[ -z "${RATES:-}" ] || LOADS="$RATES"
rates_of() { # name -> the absolute rates of LOADS for that side's closed-loop maximum
  local f max
  if [ -n "${RATES:-}" ]; then printf '%s\n' $RATES; return; fi
  max=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['answers_per_sec'])" "$work/$1.json")
  for f in $LOADS; do python3 -c "print(int($max * $f))"; done
}
scrape() { # metrics-port file
  python3 -c "import urllib.request,sys; open(sys.argv[2],'w').write(urllib.request.urlopen('http://127.0.0.1:'+sys.argv[1]+'/metrics').read().decode())" "$1" "$2"
}
at_loads() { # name port origin-host [side whose maximum sets the rates] [metrics port]
  local f rate rates i=0
  [ -n "${LOADS:-}" ] || return 0
  rates=($(rates_of "${4:-$1}"))
  for f in $LOADS; do
    rate=${rates[$i]}; i=$((i + 1))
    log "$1: rate $rate/s ($f of ${4:-$1}'s maximum), ${secs}s"
    [ -z "${5:-}" ] || scrape "$5" "$work/$1-load$f.before.prom"
    if [ -n "${SCHED:-}" ] && [ -n "${5:-}" ]; then
      perf sched record -a -o "$work/$1-load$f.sched" -- sleep "$secs" >/dev/null 2>&1 &
      sched_pid=$!
      pids+=("$sched_pid")
    fi
    run_client "$1-load$f" "$(server_pids "$1")" --connect "127.0.0.1:$2" \
      --template "$top/cfg-examples/bench/test_app.json" \
      --origin-host "$3" --app-vendor 999999 --rate "$rate" --duration "$secs" \
      ${TICK_US:+--tick-us "$TICK_US"} \
      --timeout-ms 5000 --connect-timeout-ms 15000 --json --quiet ||
      log "$1 at $rate/s: the run failed (an overloaded server cuts a client off); its counts follow"
    [ -z "${5:-}" ] || scrape "$5" "$work/$1-load$f.after.prom"
    if [ -n "${sched_pid:-}" ]; then
      wait "$sched_pid" || true
      sched_pid=
      log "$1 at $rate/s: run-queue delay per task (perf sched; cores = CPU used)"
      python3 "$top/scripts/sched-delays.py" "$work/$1-load$f.sched" "$bridge_pid=bridge" \
        "$client_pid=client" || true
      rm -f "$work/$1-load$f.sched"
    fi
    python3 - "$work/$1-load$f" "$1" "$f" "$rate" "$(cut -d' ' -f1 /proc/loadavg)" <<'EOF' ||
import json, os, re, sys
base = sys.argv[1]
d = json.load(open(base + ".json")); l, s = d["latency_us"], d.get("latency_from_send_us", {})
print(f"{sys.argv[2]:<9} load {sys.argv[3]:<4} {int(sys.argv[4]):>8}/s  answered {d['answered']}/{d['sent']}"
      f" timeouts {d['timeouts']}  us from schedule p50 {l['p50']} p99 {l['p99']} p99.9 {l['p999']}"
      f"  from send p50 {s.get('p50')} p99 {s.get('p99')} p99.9 {s.get('p999')}  loadavg {sys.argv[5]}")
def buckets(path):
    pat = re.compile(r'^dmbridge_script_reply_latency_seconds_bucket\{le="([^"]+)"\} (\d+)', re.M)
    return {float(le): int(n) for le, n in pat.findall(open(path).read())}
if os.path.exists(base + ".after.prom"):
    a, b = buckets(base + ".after.prom"), buckets(base + ".before.prom")
    cum = sorted((le, a[le] - b.get(le, 0)) for le in a)  # this run's cumulative counts
    n = cum[-1][1] if cum else 0
    def q(p):  # linear within the bucket, as Prometheus' histogram_quantile
        lo, below = 0.0, 0
        for le, c in cum:
            if c >= p * n:
                if le == float("inf"):
                    return f">{lo * 1e6:.0f}"
                return f"{(lo + (le - lo) * (p * n - below) / max(c - below, 1)) * 1e6:.0f}"
            lo, below = le, c
    if n:
        print(f"{'':<9} bridge+module (script_reply_latency, {n} requests) us"
              f" p50 {q(0.5)} p99 {q(0.99)} p99.9 {q(0.999)}")
EOF
      log "$1 at $rate/s: no summary"
  done
}
added() { # what A adds over echo at the same absolute rates, per quantile
  [ -n "${LOADS:-}" ] || return 0
  python3 - "$work" $LOADS <<'EOF' || log "no difference to echo (a run without a summary)"
import json, sys
work = sys.argv[1]
for f in sys.argv[2:]:
    a, e = (json.load(open(f"{work}/{n}-load{f}.json")) for n in ("dmbridge", "echo"))
    row = []
    for k, name in (("latency_us", "from schedule"), ("latency_from_send_us", "from send")):
        row.append(name + " " + " ".join(f"p{p} {a[k][kk] - e[k][kk]:+}" for p, kk in
                                          (("50", "p50"), ("99", "p99"), ("99.9", "p999"))))
    print(f"added by the script round trip at load {f} (dmbridge minus echo): us {'; '.join(row)}")
EOF
}

# --- A: Kamailio + dmbridge ----------------------------------------------------------------
bport=$(free_port)
mport=$(free_port)
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
segment = "/dev/shm/$shm_name"
control_socket = "$work/control.sock"

[metrics]
listen = "127.0.0.1:$mport"
EOF
if [ -n "${SCHED_SLICE_US:-}${SCHED_FIFO:-}" ]; then
  printf '\n[scheduling]\n%s%s' "${SCHED_SLICE_US:+slice_us = $SCHED_SLICE_US
}" "${SCHED_FIFO:+fifo_priority = $SCHED_FIFO
}" >>"$work/dmbridge.toml"
fi
"${on_bridge[@]}" "$dmb" run --config "$work/dmbridge.toml" ${BRIDGE_THREADS:+--threads "$BRIDGE_THREADS"} \
  >"$work/bridge.log" 2>&1 &
bridge_pid=$!
pids+=($!)
wait_log "$work/bridge.log" "serving workers" 10
mkdir -p "$work/kam-a"
"${on_server[@]}" kamailio -DD -E -Y "$work/kam-a" -f "$top/tests/kamailio/bench-echo.cfg" \
  -A "SIP_PORT=$(free_port)" -A "DMB_SO=\"$so\"" -A "DMB_SOCKET=\"$work/control.sock\"" \
  ${ECHO_REGEX:+-A ECHO_REGEX} ${DMB_WORKERS:+-A "DMB_WORKERS=$DMB_WORKERS"} \
  ${SCHED_SLICE_US:+-A "DMB_SCHED_SLICE_US=$SCHED_SLICE_US"} \
  ${SCHED_FIFO:+-A "DMB_SCHED_FIFO=$SCHED_FIFO"} >"$work/kamailio-dmbridge.log" 2>&1 &
kam_a=$!
pids+=("$kam_a")
wait_log "$work/bridge.log" 'handles \["16777214"\]' 15
sleep 1
[ -z "${SCHED_SLICE_US:-}${SCHED_FIFO:-}" ] ||
  log "A: bridge $(grep -h -o 'scheduling.*' "$work/bridge.log" | tail -1); Kamailio's processes (class priority/slice ns): $(
    for p in $(pgrep -P "$kam_a"); do printf '%s/%s ' "$(ps -o cls=,rtprio= -p "$p" | tr -s ' ')" \
      "$(sed -n 's/^se\.slice *: *//p' "/proc/$p/sched")"; done)"
log "A: dmbridge bench -> dmbridge run + Kamailio dmbridge.so (${secs}s, $conc in flight; load average $(cut -d' ' -f1-3 /proc/loadavg))"
bench dmbridge "$bport" bench.test.local
at_loads dmbridge "$bport" bench.test.local dmbridge "$mport"
# the script's own count: every answer above must have come from dm_send_reply
kamcmd -s "unix:$work/kam-a/kamailio_ctl" dmbridge.status >"$work/status.txt" 2>&1 || true
replies=$(sed -n 's/^[[:space:]]*replies: //p' "$work/status.txt")
kill "$kam_a" 2>/dev/null || true
if [ -n "${LOADS:-}" ] && [ "${ECHO:-1}" != 0 ]; then
  # the same client at A's absolute rates against the bridge answering by itself
  eport=$(free_port)
  sed "s/127.0.0.1:$bport/127.0.0.1:$eport/; s/127.0.0.1:$mport/127.0.0.1:$(free_port)/" \
    "$work/dmbridge.toml" | grep -v -e '^segment' -e '^control_socket' >"$work/echo.toml"
  "${on_bridge[@]}" "$dmb" run --echo --config "$work/echo.toml" >"$work/echo.log" 2>&1 &
  echo_pid=$!
  pids+=("$echo_pid")
  wait_log "$work/echo.log" "listening on" 10
  at_loads echo "$eport" bench.test.local dmbridge
  kill "$echo_pid" 2>/dev/null || true
  added
fi

# --- B: Kamailio cdp + ims_diameter_server -------------------------------------------------
if [ "${ANCHOR:-1}" = 0 ]; then
  echo '{}' >"$work/ims.json"
else
iport=$(free_port)
mkdir -p "$work/ims"
"${on_server[@]}" sh "$shared/peers/kamailio-ims/run.sh" "$work/ims" "$iport" "$(free_port)" 4 "$(free_port)"
ims_pid=$(cat "$work/ims/kamailio.pid")
pids+=("$ims_pid")
for _ in $(seq 100); do
  python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$iport)))" && break
  sleep 0.1
done
sleep 1
log "B: dmbridge bench -> Kamailio cdp + ims_diameter_server (${secs}s, $conc in flight; load average $(cut -d' ' -f1-3 /proc/loadavg))"
bench ims "$iport" client.test.local
at_loads ims "$iport" client.test.local
fi

# --- summary -------------------------------------------------------------------------------
python3 - "$work/dmbridge.json" "$work/ims.json" "$secs" "$conc" "${replies:-?}" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
script_replies = sys.argv[5]
def get(d, *keys):
    for k in keys:
        if isinstance(d, dict) and k in d:
            return d[k]
    return None
def row(name, d):
    rps = get(d, "answers_per_sec", "answers_per_s", "rps")
    lat = d.get("latency_us") or d.get("latency") or {}
    p99 = get(lat, "p99", "p99_us") if isinstance(lat, dict) else None
    if p99 is None:
        p99 = get(d, "p99_us", "latency_p99_us")
    codes = get(d, "result_codes") or {}
    print(f"{name:<44} {rps:>12,.0f} {p99 if p99 is not None else '?':>10}  "
          f"answered={get(d, 'answered')} timeouts={get(d, 'timeouts')} codes={json.dumps(codes)}")
    return rps
print(f"test_app echo, {sys.argv[4]} in flight, {sys.argv[3]} s, client: dmbridge bench")
print(f"{'server':<44} {'answers/s':>12} {'p99 (us)':>10}")
ra = row("Kamailio + dmbridge.so + dmbridge run", a)
rb = row("Kamailio cdp + ims_diameter_server", b) if b else None
print(f"dm_send_reply calls counted by the module (dmbridge.status replies): {script_replies}"
      f" for {a.get('answered')} answers")
if ra and rb:
    print(f"ratio: {ra / rb:.1f}x")
EOF
log "raw summaries in $work/{dmbridge,ims}.json"
