#!/usr/bin/env python3
# Run-queue delay per task over a `perf sched record -a` capture (scripts/bench-kamailio.sh
# and scripts/bench-originate.sh SCHED=1): how long each thread, once runnable, waited for a
# core. On a box whose cores carry the client, the bridge and the SIP server's workers, a
# request waits at least as long as the process that has to handle it waits here, so this is
# what a latency p99 is compared with (issue 15 item 3).
#
# usage: scripts/sched-delays.py [--json FILE] PERF_SCHED_DATA [PID=label ...]
# A label "role#n" (e.g. sip-worker#2) also counts its process under "role": one more row
# per role with the delays of all its processes (the SIP server's 4 workers wait as one
# pool: any of them may take the next request). Labelled processes are always listed; of
# the others the busiest, as long as they used 1% of a core.
import collections, json, re, subprocess, sys
args = sys.argv[1:]
json_out = None
if args[:1] == ["--json"]:
    json_out, args = args[1], args[2:]
# Run-queue delay per task from `perf sched timehist --state`: each line is one run of a
# thread (ending at `time`); the wait before it was spent runnable when the thread had been
# preempted (its previous line's state R: the whole wait) or after a wake-up (sch delay).
labels = dict(a.split("=", 1) for a in args[1:])  # PID=name for the processes of interest
out = subprocess.run(["perf", "sched", "timehist", "--state", "-i", args[0]],
                     capture_output=True, text=True).stdout
line = re.compile(r"^\s*([\d.]+)\s+\[(\d+)\]\s+(.*?)\[([\d/]+)\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)\s*$")
# per process (pid), named by its label, else by its threads' names
delays = collections.defaultdict(list); run = collections.Counter(); last = {}
names = collections.defaultdict(set); t0 = t1 = None
for l in out.splitlines():
    m = line.match(l)
    if not m: continue
    t = float(m[1]); t0 = t if t0 is None else t0; t1 = t
    comm, ids = m[3].strip(), m[4].split("/")
    tid, pid = ids[0], ids[-1]
    wait, sch, ran, state = float(m[5]), float(m[6]), float(m[7]), m[8]
    if tid in last:  # the first run of a thread has no known wait
        delays[pid].append(wait if last[tid] == "R" else sch)
    last[tid] = state; run[pid] += ran; names[pid].add(comm)
span = (t1 - t0) * 1000 if t0 is not None else 1
def q(v, p): v = sorted(v); return v[min(len(v) - 1, int(p * len(v)))]
rows = []  # (name, delays, ms run)
busiest = [p for p in sorted(delays, key=lambda p: -run[p]) if p not in labels][:14]
for pid in sorted(set(busiest) | (set(labels) & set(delays)), key=lambda p: -run[p]):
    if run[pid] < span * 0.01 and pid not in labels: continue
    name = labels.get(pid, "") or ",".join(sorted(names[pid]))[:20]
    rows.append((f"{name} {pid}", delays[pid], run[pid]))
roles = collections.defaultdict(lambda: ([], [0.0]))
for pid, lab in labels.items():
    if "#" in lab and pid in delays:
        r = roles[lab.split("#")[0]]; r[0].extend(delays[pid]); r[1][0] += run[pid]
for role, (v, ran) in sorted(roles.items()):
    rows.append((f"{role} (all)", v, ran[0]))
print(f"{'process (threads)':<34} {'runs':>8} {'cores':>6} {'rq delay ms: p50':>17} {'p99':>7} {'p99.9':>7} {'max':>7} {'>1ms':>6} {'ms in them':>10}")
res = []
for name, v, ran in rows:
    if not v: continue
    r = {"process": name, "runs": len(v), "cores": round(ran / span, 3),
         "p50_ms": round(q(v, .5), 3), "p99_ms": round(q(v, .99), 3),
         "p999_ms": round(q(v, .999), 3), "max_ms": round(max(v), 3),
         "over_1ms": sum(x > 1 for x in v), "ms_over_1ms": round(sum(x for x in v if x > 1), 1)}
    res.append(r)
    print(f"{name[:34]:<34} {len(v):>8} {r['cores']:>6.2f} {r['p50_ms']:>17.3f} {r['p99_ms']:>7.3f} {r['p999_ms']:>7.3f} {r['max_ms']:>7.3f} {r['over_1ms']:>6} {r['ms_over_1ms']:>10.1f}")
if json_out:
    json.dump(res, open(json_out, "w"))
