#!/usr/bin/env bash
# Where one `dm_send_request` round trip goes, hop by hop (issue 15 item 1): CALLS SIP MESSAGEs,
# one at a time, through Kamailio (1 SIP worker, tests/kamailio/bench-originate.cfg `sync-ta`)
# -> dmbridge.so -> `dmbridge run` -> the test_app peer and back, traced system-wide with perf
# tracepoints (sched_switch/sched_wakeup, raw_syscalls enter/exit). Prints, per hop, the median
# time between the system calls that hand the call on, and per call the bridge's and the peer's
# wake-ups and system calls. Needs perf with the sched and raw_syscalls tracepoints (root, or
# a low perf_event_paranoid), Kamailio and freeDiameter (scripts/setup.sh).
#
# usage: scripts/trace-sync.sh [CALLS (300)]
# environment: DMBRIDGE_BIN, SO (a dmbridge.so; default this tree's build/kamailio one),
#   THREADS (dmbridge run --threads), PEER=fd|echo (freeDiameter's test_app server or
#   `dmbridge run --echo --threads 1`), KEEP=1 keeps the work directory (perf.data, perf.txt).
# Each traced system call costs ~1-3 µs: read the hops relative to each other, and compare
# builds by the counts. Loopback only, free ports; stops what it started by PID.
set -euo pipefail
exec </dev/null
calls=${1:-300}
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
shared=${DMBRIDGE_SHARED:-$top/../shared}
bin=${DMBRIDGE_BIN:-$top/target/release/dmbridge}
so=${SO:-$top/build/kamailio/dmbridge.so}
work=$(mktemp -d /tmp/dmb-trace-sync.XXXXXX)
bench_name=trace-sync
shm_name="dmb-trace-sync-$$"
. "$top/scripts/bench-lib.sh"
trap 'bench_cleanup; [ "${KEEP:-0}" = 1 ] || rm -rf "$work"' EXIT
[ -x "$bin" ] && [ -f "$so" ] || { log "build first: cargo build --release --workspace; make -C module-glue/kamailio"; exit 1; }
peer_port=$(free_port)
ECHO_BIN=$bin start_ta_peer "${PEER:-fd}" "$work/peer" "$peer_port"
# the bridge: the peer above as the route of test_app, and the workers' socket
cat >"$work/bridge.toml" <<EOT
node = { origin_host = "bridge.test.local", origin_realm = "test.local", listen = ["127.0.0.1:$(free_port)"] }
applications = [{ id = 16777215, vendor = 999999 }]
peers = [{ host = "server.test.local", address = "127.0.0.1", port = $peer_port }]
routes = [{ realm = "test.local", app_id = 16777215, peers = ["server.test.local"] }]
app = { segment = "/dev/shm/$shm_name", control_socket = "$work/control.sock" }
EOT
"$bin" run --config "$work/bridge.toml" ${THREADS:+--threads "$THREADS"} >"$work/bridge.log" 2>&1 &
bridge_pid=$!; pids+=("$bridge_pid")
wait_log "$work/bridge.log" "serving workers" 10
kport=$(free_udp_port)
mkdir -p "$work/kam"
kamailio -m 256 -DD -E -Y "$work/kam" -f "$top/tests/kamailio/bench-originate.cfg" \
  -A "SIP_PORT=$kport" -A SIP_CHILDREN=1 -A "DMB_SO=\"$so\"" \
  -A "DMB_SOCKET=\"$work/control.sock\"" >"$work/kam.log" 2>&1 &
pids+=($!)
# warm-up (Kamailio attached, the peer connected), untraced
calls() { python3 "$top/scripts/sip-one-at-a-time.py" "$kport" sync-ta "$@"; }
answered() { # the JSON of sip-one-at-a-time.py -> one line; false when a call failed
  python3 -c 'import json, sys; d = json.load(sys.stdin); l = d["latency_ms"]; print("%d calls: p50 %s ms, p90 %s ms, failed %d" % (d["calls"], l["p50"], l["p90"], d["failed"])); sys.exit(1 if d["failed"] else 0)'
}
for _ in $(seq 30); do calls 20 0.001 | answered >/dev/null && break; sleep 1; done
log "load average $(cut -d' ' -f1-3 /proc/loadavg)"
perf record -q -o "$work/perf.data" -a \
  -e sched:sched_switch,sched:sched_wakeup,raw_syscalls:sys_enter,raw_syscalls:sys_exit \
  -- python3 "$top/scripts/sip-one-at-a-time.py" "$kport" sync-ta "$calls" 0.002 >"$work/calls.json"
answered <"$work/calls.json" || log "some calls failed"
perf script -i "$work/perf.data" -F comm,pid,tid,cpu,time,event,trace >"$work/perf.txt" 2>/dev/null
python3 - "$work/perf.txt" "$bridge_pid" "$peer_pid" <<'EOP'
import re, statistics, sys
path, bpid, ppid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pat = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
ev, wake, sysc, tids = [], {}, {}, {"B": set(), "F": set()}
for line in open(path):
    m = pat.match(line)
    if not m:
        continue
    comm, pid, tid, _cpu, t, e, rest = m.groups()
    pid, tid = int(pid), int(tid)
    who = ("P" if comm == "python3" else "K" if comm == "kamailio"
           else "B" if pid == bpid else "F" if pid == ppid else None)
    if who in tids:
        tids[who].add(tid)
    if e == "sched:sched_wakeup":
        w = re.search(r" pid=(\d+)", rest)
        if w:
            wake.setdefault(int(w.group(1)), 0)
            wake[int(w.group(1))] += 1
        continue
    if who is None or not e.startswith("raw_syscalls"):
        continue
    nr = int(rest.split()[1])
    ret = int(rest.split("=")[1]) if e.endswith("sys_exit") else None
    if ret is None:
        sysc[who] = sysc.get(who, 0) + 1
    ev.append((float(t) * 1e6, who, "e" if ret is None else "x", nr, ret))
READ, SEND = (0, 17, 19, 45, 47), (1, 20, 44, 46)
steps = [  # (hop, the event that ends it); x86-64 system call numbers
    ("client -> Kamailio reads the SIP request", lambda x: x[1] == "K" and x[2] == "x" and x[3] == 45 and x[4] > 0),
    ("Kamailio: script + module -> doorbell", lambda x: x[1] == "K" and x[2] == "e" and x[3] == 46),
    ("doorbell -> bridge wakes", lambda x: x[1] == "B" and x[2] == "x" and x[3] == 232 and x[4] > 0),
    ("bridge: ring -> TCP send", lambda x: x[1] == "B" and x[2] == "e" and x[3] in SEND),
    ("TCP -> peer reads", lambda x: x[1] == "F" and x[2] == "x" and x[3] in READ and x[4] > 0),
    ("peer turnaround", lambda x: x[1] == "F" and x[2] == "e" and x[3] in SEND),
    ("peer sends -> bridge reads", lambda x: x[1] == "B" and x[2] == "x" and x[3] in READ and x[4] > 0),
    ("bridge: answer -> doorbell", lambda x: x[1] == "B" and x[2] == "e" and x[3] == 46),
    ("doorbell -> Kamailio wakes", lambda x: x[1] == "K" and x[2] == "x" and x[3] in (7, 232) and x[4] > 0),
    ("Kamailio: answer -> SIP reply", lambda x: x[1] == "K" and x[2] == "e" and x[3] == 44),
    ("SIP reply -> client", lambda x: x[1] == "P" and x[2] == "x" and x[3] == 45 and x[4] > 0),
]
starts = [i for i, x in enumerate(ev) if x[1] == "P" and x[2] == "e" and x[3] == 44]
segs, tot, other = [[] for _ in steps], [], 0
for c, i0 in enumerate(starts):
    end = starts[c + 1] if c + 1 < len(starts) else len(ev)
    i, ts = i0, [ev[i0][0]]
    for _, pred in steps:
        while i < end and not pred(ev[i]):
            i += 1
        if i >= end:
            break
        ts.append(ev[i][0])
    if len(ts) != len(steps) + 1:
        other += 1  # a call whose hand-overs did not follow this order
        continue
    for k in range(len(steps)):
        segs[k].append(ts[k + 1] - ts[k])
    tot.append(ts[-1] - ts[0])
n = len(starts)
print(f"{len(tot)} of {n} calls in the usual order ({other} otherwise); median µs per hop:")
for k, (name, _) in enumerate(steps):
    if segs[k]:
        print(f"  {name:42} {statistics.median(segs[k]):7.1f}")
if tot:
    print(f"  {'total':42} {statistics.median(tot):7.1f}")
print("per call:")
for who, name in (("B", "bridge"), ("F", "peer")):
    w = sum(wake.get(t, 0) for t in tids[who])
    print(f"  {name:8} wake-ups {w / n:5.2f}  system calls {sysc.get(who, 0) / n:5.2f}")
print(f"  kamailio system calls {sysc.get('K', 0) / n:5.2f}")
EOP
