#!/usr/bin/env python3
"""One SIP MESSAGE at a time from a plain UDP socket, timed from send to the final reply at
microsecond resolution (sipp's response times are whole milliseconds). A call counts when its
final reply is a 200 with an X-Result of a 2xxx Result-Code or "answered" (what
tests/kamailio/bench-originate.cfg and tests/opensips/bench-originate.cfg put there).

usage: sip-one-at-a-time.py PORT USER CALLS [GAP_SECONDS [EXTRA_JSON]]
Prints one JSON object: EXTRA_JSON's fields (its "loadavg_start" becomes "loadavg": [start,
now]), then mode, calls, ok, failed and latency_ms (samples, p50, p90, p99, p999, max), and,
when the replies carry "X-Rt-Us: <us>" (the sync routes of bench-originate.cfg: the time the
script spent in its Diameter request function, as the blocked worker sees it), rt_us (samples,
p50, p90, p99) of the calls that counted.
Used by scripts/bench-originate.sh (the one-at-a-time rows) and scripts/trace-sync.sh.
"""
import json
import re
import socket
import sys
import time

port, user, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
gap = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
out = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(2.0)
lp = s.getsockname()[1]
lat, rts, failed = [], [], 0
rt_re = re.compile(rb"^X-Rt-Us: (-?[0-9]+)\r$", re.M)
ok_re = re.compile(rb"^SIP/2\.0 200 .*^X-Result: (2[0-9]{3}|answered)\r$", re.S | re.M)
for i in range(n):
    msg = (f"MESSAGE sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bK-lat-{i}\r\n"
           f"From: <sip:49171{i}@test.local>;tag=lat{i}\r\nTo: <sip:{user}@test.local>\r\n"
           f"Call-ID: lat-{i}-{lp}@127.0.0.1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
           f"Content-Length: 0\r\n\r\n").encode()
    t0 = time.perf_counter()
    s.sendto(msg, ("127.0.0.1", port))
    try:
        while True:
            data = s.recv(65535)
            if not data.startswith(b"SIP/2.0 1"):
                break
    except socket.timeout:
        failed += 1
        continue
    t1 = time.perf_counter()
    if ok_re.search(data):
        lat.append((t1 - t0) * 1000.0)
        rt = rt_re.search(data)
        if rt:
            rts.append(int(rt.group(1)))
    else:
        failed += 1
    if gap:
        time.sleep(gap)
lat.sort()
rts.sort()


def pct(q, v=lat, nd=3):
    return round(v[min(len(v) - 1, int(q * len(v)))], nd) if v else None


if "loadavg_start" in out:
    now = float(open("/proc/loadavg").read().split()[0])
    out["loadavg"] = [float(out.pop("loadavg_start")), now]
out.update({"mode": "one-at-a-time", "calls": n, "ok": len(lat), "failed": failed,
            "latency_ms": {"samples": len(lat), "p50": pct(0.5), "p90": pct(0.9),
                           "p99": pct(0.99), "p999": pct(0.999),
                           "max": lat[-1] if lat else None}})
if rts:
    out["rt_us"] = {"samples": len(rts), "p50": pct(0.5, rts, 0), "p90": pct(0.9, rts, 0),
                    "p99": pct(0.99, rts, 0)}
print(json.dumps(out))
