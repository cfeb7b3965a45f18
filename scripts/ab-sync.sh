#!/usr/bin/env bash
# The sync round trip of several builds or settings, interleaved (issue 15 item 1): each
# VARIANT gets its own `dmbridge run` and its own Kamailio (tests/kamailio/bench-originate.cfg,
# 4 SIP workers, `sync-ta`), all against ONE test_app peer; then REPS times, for each variant
# in turn, BATCH MESSAGEs one at a time (scripts/sip-one-at-a-time.py). So every variant sees
# the same load, batch by batch, which one bench-originate run per build cannot give on a
# shared box. Prints per variant the median over the batches of the end-to-end p50 and of
# the script's `dm_send_request` time (X-Rt-Us, bench-originate.cfg), and the p90s.
#
# usage: scripts/ab-sync.sh REPS BATCH VARIANT...
#   VARIANT = name:dmbridge-binary:dmbridge.so:sync_spin_us:busy_poll_us
#             (an empty sync_spin_us / busy_poll_us leaves the parameter out: its default, and
#             what a build without the parameter needs)
# environment: PEER=echo|fd (`dmbridge run --echo --threads 1` of ECHO_BIN, or freeDiameter's
#   test_app server), ECHO_BIN (default this tree's release binary), GAP (seconds between
#   calls, 0), APP=ta|ro is not offered: the test_app request only.
# Loopback only, free ports; stops what it started by PID.
set -euo pipefail
exec </dev/null
reps=$1 batch=$2
shift 2
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
shared=${DMBRIDGE_SHARED:-$top/../shared}
work=$(mktemp -d /tmp/dmb-ab-sync.XXXXXX)
bench_name=ab-sync
. "$top/scripts/bench-lib.sh"
trap 'bench_cleanup; rm -f /dev/shm/dmb-ab-sync-$$-*' EXIT
peer_port=$(free_port)
start_ta_peer "${PEER:-echo}" "$work/peer" "$peer_port"
names=() ports=()
i=0
for v in "$@"; do
  IFS=: read -r name bin so spin poll <<<"$v"
  i=$((i + 1))
  d="$work/v$i"
  mkdir -p "$d/kam"
  {
    printf 'node = { origin_host = "bridge%d.test.local", origin_realm = "test.local", listen = ["127.0.0.1:%s"] }\n' "$i" "$(free_port)"
    printf 'applications = [{ id = 16777215, vendor = 999999 }]\n'
    printf 'peers = [{ host = "server.test.local", address = "127.0.0.1", port = %s }]\n' "$peer_port"
    printf 'routes = [{ realm = "test.local", app_id = 16777215, peers = ["server.test.local"] }]\n'
    printf '[app]\nsegment = "/dev/shm/dmb-ab-sync-%s-%d"\ncontrol_socket = "%s/control.sock"\nmax_workers = 16\n' "$$" "$i" "$d"
    [ -z "$poll" ] || printf 'busy_poll_us = %s\n' "$poll"
  } >"$d/bridge.toml"
  "$bin" run --config "$d/bridge.toml" >"$d/bridge.log" 2>&1 &
  pids+=($!)
  wait_log "$d/bridge.log" "serving workers" 10
  port=$(free_udp_port)
  kamailio -m 256 -DD -E -Y "$d/kam" -f "$top/tests/kamailio/bench-originate.cfg" \
    -A "SIP_PORT=$port" -A "DMB_SO=\"$so\"" -A "DMB_SOCKET=\"$d/control.sock\"" \
    ${spin:+-A "SYNC_SPIN_US=$spin"} >"$d/kam.log" 2>&1 &
  pids+=($!)
  names+=("$name") ports+=("$port")
done
for k in "${!names[@]}"; do # warm-up: answering, the peer connected
  for _ in $(seq 30); do
    python3 "$top/scripts/sip-one-at-a-time.py" "${ports[$k]}" sync-ta 20 0.001 \
      | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["failed"] != 0)' && break
    sleep 1
  done
done
log "load average $(cut -d' ' -f1-3 /proc/loadavg); $reps x $batch calls per variant"
for r in $(seq "$reps"); do
  for k in "${!names[@]}"; do
    python3 "$top/scripts/sip-one-at-a-time.py" "${ports[$k]}" sync-ta "$batch" "${GAP:-0}" \
      "{\"variant\": \"${names[$k]}\", \"rep\": $r, \"loadavg_start\": \"$(cut -d' ' -f1 /proc/loadavg)\"}" \
      >>"$work/results.jsonl"
  done
done
python3 - "$work/results.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
order = list(dict.fromkeys(r["variant"] for r in rows))
print(f"{'variant':<20} {'e2e p50 ms':>11} {'e2e p90':>8} {'rt p50 us':>10} {'rt p90':>7} {'failed':>7}  load")
for v in order:
    rs = [r for r in rows if r["variant"] == v]
    med = lambda f: statistics.median(f(r) for r in rs)
    rt = [r for r in rs if "rt_us" in r]
    rtm = lambda k: statistics.median(r["rt_us"][k] for r in rt) if rt else float("nan")
    loads = [x for r in rs for x in r["loadavg"]]
    print(f"{v:<20} {med(lambda r: r['latency_ms']['p50']):>11.3f} {med(lambda r: r['latency_ms']['p90']):>8.3f}"
          f" {rtm('p50'):>10.0f} {rtm('p90'):>7.0f} {sum(r['failed'] for r in rs):>7}  {min(loads)}-{max(loads)}")
EOF
log "results: $work/results.jsonl"
