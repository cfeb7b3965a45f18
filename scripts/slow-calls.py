#!/usr/bin/env python3
"""Which tasks' activity on the server's core lines up with the slow calls of a paced run.

usage: slow-calls.py RUN_DIR PERF_SCHED_DATA [CPU (1)] [WINDOW_MS (10)]
  RUN_DIR: a fixed-rate run of scripts/bench-originate.sh with ARRIVALS=even|poisson (its
  rt*.log lines "rt peer worker recv_us": the script's round trip, the peer's part, and when
  the reply arrived, CLOCK_MONOTONIC in us); PERF_SCHED_DATA: `perf sched record -a -k mono`
  over some seconds of that run (the same clock).
Each call spans [recv - rt, recv] (the reply leaves right after the resume route: the span ends
a few tens of us late, which does not matter at this scale). A task "touches" a call when it
was woken on CPU, or ran there, within WINDOW_MS before or during the call. For each task
seen on CPU: the share of slow calls (added = rt - peer >= 1 ms) and of fast ones (< 500 us)
it touched; a task that touches most slow calls and few fast ones is what the slow calls
wait for (BENCHMARKS "Session 21": the VM agent's thread and kdamond on the server's core).
Tasks perf cannot name (another pid namespace) show as their tid.
"""
import bisect
import collections
import glob
import os
import re
import subprocess
import sys

run_dir, data = sys.argv[1], sys.argv[2]
cpu = int(sys.argv[3]) if len(sys.argv) > 3 else 1
window = (float(sys.argv[4]) if len(sys.argv) > 4 else 10.0) / 1000
out = subprocess.run(["perf", "sched", "timehist", "-w", "-i", data],
                     capture_output=True, text=True).stdout
head = re.compile(r"^\s*(\d+\.\d+)\s+\[(\d+)\]\s+(\S.*?)\s{2,}(.*)$")
run = re.compile(r"^([\d.]+)\s+([\d.]+)\s+([\d.]+)")
name_re = re.compile(r"^(.*?)\[(\d+)(?:/\d+)?\]$")
events = collections.defaultdict(list)  # task -> [(from, to)] it was active on `cpu`
t0 = t1 = None
for line in out.splitlines():
    m = head.match(line)
    if not m:
        continue
    t, c, who, rest = float(m[1]), int(m[2]), m[3].strip(), m[4]
    t0 = t if t0 is None else t0
    t1 = t
    if c != cpu:
        continue
    if "awakened:" in rest:
        woken = rest.split("awakened:", 1)[1].strip()
        n = name_re.match(woken)
        task = f"{n[1]}[{n[2]}]" if n and n[1] else woken
        events[task].append((t, t))
        continue
    r = run.match(rest)
    if r and not who.startswith("<idle>"):
        n = name_re.match(who)
        task = f"{n[1]}[{n[2]}]" if n else who
        events[task].append((t - float(r[3]) / 1000, t))
if t0 is None:
    sys.exit(f"{data}: no events")
calls = []
for f in glob.glob(os.path.join(run_dir, "rt*.log")):
    for line in open(f):
        v = [int(x) for x in line.split() if x.lstrip("-").isdigit()]
        if len(v) < 4:
            continue
        end = v[3] / 1e6
        start = end - v[0] / 1e6
        if t0 <= start and end <= t1:
            calls.append((start, end, v[0] - v[1]))
if not calls:
    sys.exit(f"{run_dir}: no call with a reply time inside the trace (ARRIVALS=even|poisson?)")
slow = [c for c in calls if c[2] >= 1000]
fast = [c for c in calls if c[2] < 500]
print(f"{len(calls)} calls in the trace's {t1 - t0:.1f} s: {len(slow)} with added >= 1 ms, "
      f"{len(fast)} under 500 us; tasks active on CPU {cpu} within {window * 1000:g} ms before "
      f"or during them:")


def touched(spans, c):
    starts = [s for s, _ in spans]
    i = bisect.bisect_right(starts, c[1])  # spans starting before the call ends
    return any(e >= c[0] - window for _, e in spans[max(0, i - 64):i])


rows = []
for task, spans in events.items():
    spans.sort()
    s = sum(1 for c in slow if touched(spans, c))
    f = sum(1 for c in fast if touched(spans, c))
    if s:
        rows.append((s / max(1, len(slow)), f / max(1, len(fast)), task, len(spans)))
rows.sort(key=lambda r: (r[1] - r[0], r[2]))
for s, f, task, n in rows[:15]:
    print(f"  {task:<28} slow calls {s * 100:5.1f}%  fast calls {f * 100:5.1f}%  ({n} wake-ups/runs)")
