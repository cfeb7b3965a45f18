#!/usr/bin/env python3
"""Sends SIP requests for USER@test.local over UDP on loopback and prints the final responses'
status lines (exit 1 when a final reply is missing after 8 s).

usage: sipreq.py [-n N] PORT METHOD USER [HEADER: value ...]
  -n N   send N requests at once (distinct Call-IDs), then print each distinct status line
         prefixed by how many requests got it ("N x SIP/2.0 200 OK"), sorted
"""
import collections
import socket
import sys
import time

args = sys.argv[1:]
count = 1
if args[:1] == ["-n"]:
    count, args = int(args[1]), args[2:]
port, method, user, extra = int(args[0]), args[1], args[2], args[3:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
me = s.getsockname()[1]
for i in range(count):
    lines = [
        f"{method} sip:test.local SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{me}-{i}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@test.local>;tag={me}",
        f"To: <sip:{user}@test.local>",
        f"Call-ID: {me}-{i}@test",
        f"CSeq: 1 {method}",
        f"Contact: <sip:{user}@127.0.0.1:{me}>",
        "Expires: 600",
    ] + extra + ["Content-Length: 0", "", ""]
    s.sendto("\r\n".join(lines).encode(), ("127.0.0.1", port))
finals, seen = collections.Counter(), set()
deadline = time.time() + 8
while len(seen) < count and time.time() < deadline:
    s.settimeout(max(0.01, deadline - time.time()))
    try:
        data, _ = s.recvfrom(65535)
    except socket.timeout:
        break
    text = data.decode(errors="replace")
    line = text.split("\r\n", 1)[0]
    if line.startswith("SIP/2.0 1"):
        continue
    callid = next((h.split(":", 1)[1].strip() for h in text.split("\r\n")
                   if h.lower().startswith("call-id:")), None)
    if callid in seen:
        continue  # a retransmitted final reply
    seen.add(callid)
    finals[line] += 1
if count == 1:
    for line in finals:
        print(line)
else:
    for line, n in sorted(finals.items()):
        print(f"{n} x {line}")
if len(seen) < count:
    print(f"no reply for {count - len(seen)} request(s)", file=sys.stderr)
    sys.exit(1)
