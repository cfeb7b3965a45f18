#!/usr/bin/env bash
# Issue 12 item 3, against the real binary: `dmbridge run --echo` (release) with the default
# limits of cfg-examples/dmbridge.toml on free loopback ports, a legitimate peer
# (`dmbridge bench`, bench.test.local from its configured address 127.0.0.1, a small rate)
# kept busy throughout, and the attacks of the issue run one after the other from other
# loopback addresses (127.0.0.2.. : the configured peer's own address is exempt from the
# stranger caps, so attacking from it would prove nothing):
#   silent    256 silent connections from 32 sources, reopened every 10 s
#   headers   pre-CER messages as large as the pre-CER limit allows, header + body but one
#             byte, held open (64 sources x 8)
#   trickle   64 connections (32 sources) sending a header then one byte every 500 ms
#   onesource 300 connections from one source address at once
# Prints per attack: the node's VmRSS (/proc/PID/status) and open fds (/proc/PID/fd) idle,
# peak during, and after; the connections the attack got accepted/refused; then the refusal
# counters from the metrics endpoint and the legitimate peer's answered/failed counts.
#
# usage: scripts/bench-strangers.sh [ATTACK_SECONDS=25]
# Bounded: 4 attacks x (ATTACK_SECONDS + ~12 s drain) plus start-up; every process it starts
# is killed by PID on exit (also on Ctrl-C or failure); loopback only.
# Env: DMBRIDGE_BIN (default target/release/dmbridge, built if missing).
set -euo pipefail
secs=${1:-25}
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
bin=${DMBRIDGE_BIN:-$top/target/release/dmbridge}
if [ ! -x "$bin" ]; then
  (cd "$top" && cargo build --release -q -p dmbridge-bridge --bin dmbridge)
fi
command -v python3 >/dev/null || { echo "bench-strangers: python3 missing" >&2; exit 1; }

bench_name=bench-strangers
shm_name=dmbridge-strangers-$$
. "$top/scripts/bench-lib.sh"
work=$(mktemp -d /tmp/bench-strangers.XXXXXX)
trap 'bench_cleanup; rm -rf "$work"' EXIT

port=$(free_port)
mport=$(free_port)
cat >"$work/dmbridge.toml" <<TOML
[node]
origin_host = "bridge.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:$port"]
host_ip_addresses = ["127.0.0.1"]
[[applications]]
id = 16777215
vendor = 999999
[[peers]]
host = "bench.test.local"
address = "127.0.0.1"
mode = "accept"
[metrics]
listen = "127.0.0.1:$mport"
[app]
segment = "/dev/shm/$shm_name"
control_socket = "$work/control.sock"
TOML
"$bin" run --echo --config "$work/dmbridge.toml" >"$work/bridge.log" 2>&1 &
node=$!
pids+=("$node")
wait_log "$work/bridge.log" "listening on" 10

# The legitimate peer: 20 requests/s for the whole run.
total=$((4 * (secs + 12) + 8))
"$bin" bench --connect "127.0.0.1:$port" --template "$top/cfg-examples/bench/test_app.json" \
  --origin-host bench.test.local --rate 20 --duration "$total" --json \
  >"$work/bench.json" 2>"$work/bench.err" &
pids+=("$!")
legit=$!

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$node" "$port" "$secs" <<'PY'
import os, socket, struct, sys, threading, time
pid, port, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
PRE_CER = 8192   # max_message_size_before_cer (default)

def footprint():
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))

class Peak:
    def __init__(self):
        self.rss, self.fds, self.stop = 0, 0, False
        self.t = threading.Thread(target=self.run, daemon=True); self.t.start()
    def run(self):
        while not self.stop:
            r, f = footprint(); self.rss = max(self.rss, r); self.fds = max(self.fds, f)
            time.sleep(0.1)
    def end(self):
        self.stop = True; self.t.join(); return self.rss, self.fds

def conn(src):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.bind((f"127.0.0.{src}", 0)); s.settimeout(2); s.connect(("127.0.0.1", port)); return s

def alive(s):
    """False once the node closed or reset it."""
    try:
        s.setblocking(False)
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False

def header(length):
    # Diameter header, version 1, a CER (257, R flag) announcing `length` bytes.
    return struct.pack("!I", (1 << 24) | length) + struct.pack("!I", (0x80 << 24) | 257) + bytes(12)

def run_attack(opened, every):
    """`opened()` opens one round of connections; held `every` s, reopened until `secs` pass."""
    stats = {"connected": 0, "connect_failed": 0, "closed_by_node": 0}
    held, end = [], time.time() + secs
    while time.time() < end:
        for s in held:
            if not alive(s): stats["closed_by_node"] += 1
            s.close()
        held = []
        for s in opened(stats):
            held.append(s)
        left = end - time.time()
        time.sleep(max(0, min(every, left)))
    for s in held:
        if not alive(s): stats["closed_by_node"] += 1
        s.close()
    return stats

def silent(stats):
    out = []
    for i in range(256):
        try: out.append(conn(2 + i % 32)); stats["connected"] += 1
        except OSError: stats["connect_failed"] += 1
    return out

def headers(stats):
    out = []
    for i in range(512):
        try:
            s = conn(40 + i % 64); s.sendall(header(PRE_CER) + bytes(PRE_CER - 21))
            out.append(s); stats["connected"] += 1
        except OSError: stats["connect_failed"] += 1
    return out

def trickle(stats):
    out = []
    for i in range(64):
        try:
            s = conn(110 + i % 32); s.sendall(header(1000)); out.append(s); stats["connected"] += 1
        except OSError: stats["connect_failed"] += 1
    def drip(socks):
        for _ in range(int(12 / 0.5)):
            for s in socks:
                try: s.sendall(b"\0")
                except OSError: pass
            time.sleep(0.5)
    threading.Thread(target=drip, args=(list(out),), daemon=True).start()
    return out

def onesource(stats):
    out = []
    for i in range(300):
        try: out.append(conn(200)); stats["connected"] += 1
        except OSError: stats["connect_failed"] += 1
    return out

idle = footprint()
print(f"idle: VmRSS {idle[0]} kB, fds {idle[1]}")
print(f"{'attack':<10} {'RSS before':>10} {'RSS peak':>9} {'RSS after':>9} {'fds before':>10} {'fds peak':>8} {'fds after':>9}  connections")
# Silent ones reopened every 10 s as in the issue; the others held 12 s, past the 10 s
# message_timeout, so that the node's own closing is what is seen.
for name, fn, every in [("silent", silent, 10), ("headers", headers, 12), ("trickle", trickle, 12), ("onesource", onesource, 10)]:
    before = footprint(); peak = Peak()
    stats = run_attack(fn, every)
    time.sleep(11)   # cer_timeout 5 s / message_timeout 10 s: the node closes what is left
    p = peak.end(); after = footprint()
    print(f"{name:<10} {before[0]:>10} {p[0]:>9} {after[0]:>9} {before[1]:>10} {p[1]:>8} {after[1]:>9}  {stats}", flush=True)
PY

wait "$legit" || true
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "refusals (metrics endpoint):"
python3 -c "
import urllib.request,sys
t=urllib.request.urlopen('http://127.0.0.1:$mport/metrics',timeout=5).read().decode()
print('\n'.join('  '+l for l in t.splitlines() if l.startswith('dmbridge_refusals_total')))
"
echo "legitimate peer (dmbridge bench, 20/s throughout):"
python3 -c "
import json
d=json.load(open('$work/bench.json'))
keys=[k for k in d if k in ('sent','answered','ok','success','errors','timeouts','failed','result_codes','answers_per_sec','connect_failures')]
print('  '+', '.join(f'{k}={d[k]}' for k in keys) if keys else '  '+json.dumps(d)[:600])
" || { echo "  bench output:"; cat "$work/bench.json" "$work/bench.err"; }
