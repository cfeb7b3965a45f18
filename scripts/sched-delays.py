#!/usr/bin/env python3
# Run-queue delay per task over a `perf sched record -a` capture (scripts/bench-kamailio.sh
# SCHED=1): how long each thread, once runnable, waited for a core. On a box whose cores carry
# the client, the bridge and the SIP server's workers, a request waits at least as long as the
# process that has to handle it waits here, so this is what a latency p99 is compared with
# (issue 15 item 3).
#
# usage: scripts/sched-delays.py PERF_SCHED_DATA [PID=label ...]
import collections, re, subprocess, sys
# Run-queue delay per task from `perf sched timehist --state`: each line is one run of a
# thread (ending at `time`); the wait before it was spent runnable when the thread had been
# preempted (its previous line's state R: the whole wait) or after a wake-up (sch delay).
labels = dict(a.split("=", 1) for a in sys.argv[2:])  # PID=name for the processes of interest
out = subprocess.run(["perf", "sched", "timehist", "--state", "-i", sys.argv[1]],
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
print(f"{'process (threads)':<34} {'runs':>8} {'cores':>6} {'rq delay ms: p50':>17} {'p99':>7} {'p99.9':>7} {'max':>7} {'>1ms':>6} {'ms in them':>10}")
for pid, v in sorted(delays.items(), key=lambda kv: -run[kv[0]])[:14]:
    if run[pid] < span * 0.01 and pid not in labels: continue
    name = labels.get(pid, "") or ",".join(sorted(names[pid]))[:20]
    print(f"{(name + ' ' + pid)[:34]:<34} {len(v):>8} {run[pid] / span:>6.2f} {q(v, .5):>17.3f} {q(v, .99):>7.3f} {q(v, .999):>7.3f} {max(v):>7.3f} {sum(x > 1 for x in v):>6} {sum(x for x in v if x > 1):>10.1f}")
