#!/usr/bin/env python3
"""The bridge's latency histograms over one benchmark run, from two scrapes of its /metrics.

usage: scripts/prom-delta.py BEFORE AFTER   (files holding the /metrics text; or
       scripts/prom-delta.py --scrape PORT FILE to write one scrape)

Prints one JSON object: for each histogram family below (all label sets summed), the
requests observed between the two scrapes and their p50/p99/p99.9 in microseconds,
interpolated linearly inside the bucket (buckets: shm/src/times.rs BOUNDS_US, all families,
25 µs steps at the bottom, so a quantile under 1 ms is read to within 25-250 µs).
  script_request_latency  a script's request through the bridge, the peer's time included
  script_request_bridge   the same per answered request minus the time waited for the peer
  script_request_worker   the same requests as the SIP-server worker's library saw them: the
                          script's call -> its outcome handed back to the module
  script_request_outside_bridge  that minus the bridge's round trip, request by request (the
                          SIP server's process, the rings, doorbells and wake-ups)
  answer_latency          our request written -> the peer's answer read
  script_reply_latency    incoming: request handed to a worker -> the script's reply
"""
import json
import re
import sys
import urllib.request

FAMILIES = {
    "script_request_latency": "dmbridge_script_request_latency_seconds",
    "script_request_bridge": "dmbridge_script_request_bridge_seconds",
    "script_request_worker": "dmbridge_script_request_worker_seconds",
    "script_request_outside_bridge": "dmbridge_script_request_outside_bridge_seconds",
    "answer_latency": "dmbridge_answer_latency_seconds",
    "script_reply_latency": "dmbridge_script_reply_latency_seconds",
}
LINE = re.compile(r'^(\w+)_bucket\{(.*)\}\s+(\S+)')
LE = re.compile(r'le="([^"]+)"')


def buckets(text):
    """family -> {upper bound in seconds: cumulative count}, label sets summed."""
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        le = LE.search(m.group(2))
        if not le:
            continue
        bound = float("inf") if le.group(1) == "+Inf" else float(le.group(1))
        fam = out.setdefault(m.group(1), {})
        fam[bound] = fam.get(bound, 0.0) + float(m.group(3))
    return out


def quantile(bounds, counts, q):
    """bounds ascending, counts cumulative: the q-quantile in µs, linear inside its bucket."""
    total = counts[-1]
    if total <= 0:
        return None
    want = q * total
    lo_b, lo_c = 0.0, 0.0
    for b, c in zip(bounds, counts):
        if c >= want:
            if b == float("inf"):
                return round(lo_b * 1e6)  # past the last bound: say the last bound
            frac = 0.0 if c == lo_c else (want - lo_c) / (c - lo_c)
            return round((lo_b + (b - lo_b) * frac) * 1e6)
        lo_b, lo_c = b, c
    return None


def main():
    if sys.argv[1] == "--scrape":
        port, path = sys.argv[2], sys.argv[3]
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        except OSError:
            body = b""
        open(path, "wb").write(body)
        return
    before = buckets(open(sys.argv[1]).read())
    after = buckets(open(sys.argv[2]).read())
    res = {}
    for key, fam in FAMILIES.items():
        a = after.get(fam)
        if not a:
            continue
        b = before.get(fam, {})
        bounds = sorted(a)
        counts = [a[x] - b.get(x, 0.0) for x in bounds]
        n = counts[-1]
        res[key] = {"n": int(n), "p50_us": quantile(bounds, counts, 0.5),
                    "p99_us": quantile(bounds, counts, 0.99),
                    "p999_us": quantile(bounds, counts, 0.999)}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
