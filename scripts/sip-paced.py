#!/usr/bin/env python3
"""SIP MESSAGE requests at a fixed rate with a chosen arrival process, from a plain UDP socket:
scripts/bench-originate.sh's fixed-rate runs with ARRIVALS=even or poisson instead of sipp.

Why: sipp opens the calls due at each turn of its main loop, which sleeps about 1 ms, so at
a fixed rate the requests of one client leave in bursts once per millisecond (at 9,750 calls/s
over 4 clients, ~2.4 calls per client per burst, the 4 clients' bursts close together). The
SIP server's core then has a burst of work to do every millisecond, and a call waits for the
others of its burst even when the core is idle most of the time (BENCHMARKS "Session 21").
An operator's SIP server receives requests from many independent clients: closer to a Poisson
process (ARRIVALS=poisson) than to synchronized bursts. ARRIVALS=even spaces the requests
evenly (1/rate apart): no two arrive together, the least the server's core can queue.

usage: sip-paced.py PORT USER RATE SECONDS even|poisson PHASE OUTDIR INDEX
  RATE calls/s from this process; PHASE (0..1) shifts the even schedule by that share of a
  gap, so several processes interleave instead of sending together.
Writes into OUTDIR what bench-originate.sh reads from a sipp client (the same names with
INDEX): stat{INDEX}.csv (the counters' last row: SuccessfulCall(C), FailedCall(C),
Retransmissions(C) always 0, ElapsedTime(C)), paced{INDEX}_rtt.csv (response times, ms)
and rt{INDEX}.log ("rt peer worker" per call, from the reply's X-Rt-Us, X-Peer-Us and
X-Worker-Us, as sipp logs them with bench-originate.sh's RT_US=1 scenario, then a fourth field
sipp has not: when the reply arrived, CLOCK_MONOTONIC in us, to line a slow call up with a
`perf sched record -k mono` trace of the same seconds).

A call counts when its reply is a 200 with an X-Result of a 2xxx Result-Code or "answered";
one without a final reply within 2 s of the last request is failed (nothing is resent: a loss
shows as a failure, not as a retransmission). The sender sleeps until each request's due time
(timer slack 1 us, prctl PR_SET_TIMERSLACK) and never sends early; a late request goes at
once, so the schedule never drifts. A child process reads the replies from the same socket.
"""
import ctypes
import os
import random
import re
import socket
import sys
import time

port, user, rate, secs, kind, phase, outdir, idx = sys.argv[1:9]
port, rate, secs, phase = int(port), float(rate), float(secs), float(phase)
if kind not in ("even", "poisson") or rate <= 0:
    sys.exit(f"sip-paced.py: arrivals {kind!r} at {rate}/s: want even|poisson and a rate > 0")
n = max(1, int(rate * secs))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", 0))
lp = s.getsockname()[1]

pid = os.fork()
if pid == 0:
    # the replies: until every request has its final reply, or 2 s after the last one went
    rt_re = re.compile(rb"^X-Rt-Us: (-?[0-9]+)\r$", re.M)
    peer_re = re.compile(rb"^X-Peer-Us: ([0-9]+)\r$", re.M)
    worker_re = re.compile(rb"^X-Worker-Us: ([0-9]+)\r$", re.M)
    ok_re = re.compile(rb"^SIP/2\.0 200 .*^X-Result: (2[0-9]{3}|answered)\r$", re.S | re.M)
    sent_re = re.compile(rb"^Call-ID: pc-[0-9]+-([0-9]+)-", re.M)
    end = time.monotonic() + secs + 30
    s.settimeout(0.5)
    ok = failed = 0
    lat, rtlog = [], []
    while ok + failed < n and time.monotonic() < end:
        try:
            data = s.recv(65535)
        except socket.timeout:
            continue
        if data.startswith(b"SIP/2.0 1"):
            continue
        now = time.monotonic_ns()
        if not ok_re.search(data):
            failed += 1
            continue
        ok += 1
        m = sent_re.search(data)
        if m:
            lat.append((now - int(m.group(1))) / 1e6)
        v = [r.search(data) for r in (rt_re, peer_re, worker_re)]
        if all(v):
            rtlog.append(" ".join(x.group(1).decode() for x in v) + f" {now // 1000}")
    failed = n - ok
    with open(os.path.join(outdir, f"paced{idx}_rtt.csv"), "w") as f:
        f.write("Date_ms;response_time_ms\n")
        f.writelines(f"0;{x:.3f}\n" for x in lat)
    with open(os.path.join(outdir, f"rt{idx}.log"), "w") as f:
        f.writelines(line + "\n" for line in rtlog if line)
    e = int(secs)
    with open(os.path.join(outdir, f"stat{idx}.csv"), "w") as f:
        f.write("SuccessfulCall(C);FailedCall(C);Retransmissions(C);ElapsedTime(C)\n")
        f.write(f"{ok};{failed};0;{e // 3600:02d}:{e % 3600 // 60:02d}:{e % 60:02d}\n")
    os._exit(0)

# the requests: on schedule, never early
try:
    ctypes.CDLL(None, use_errno=True).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 us
except (OSError, AttributeError):
    pass
rng = random.Random(os.getpid())
gap = 1e9 / rate
due = time.monotonic_ns() + int(gap * phase if kind == "even" else rng.expovariate(1.0) * gap)
dst = ("127.0.0.1", port)
for i in range(n):
    now = time.monotonic_ns()
    if due > now:
        time.sleep((due - now) / 1e9)
    sent = time.monotonic_ns()
    msg = (f"MESSAGE sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK-pc-{idx}-{i}\r\n"
           f"From: <sip:49171{i}@test.local>;tag=pc{idx}-{i}\r\nTo: <sip:{user}@test.local>\r\n"
           f"Call-ID: pc-{i}-{sent}-{idx}-{lp}@127.0.0.1\r\nCSeq: 1 MESSAGE\r\n"
           f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    s.sendto(msg, dst)
    due += int(gap) if kind == "even" else int(rng.expovariate(1.0) * gap)
os.waitpid(pid, 0)
