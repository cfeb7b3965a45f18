#!/usr/bin/env python3
"""Sends one SIP request over UDP on loopback and prints the final response's status line.

usage: sipsend.py [--user NAME] PORT METHOD [HEADER: value ...]
(From/To sip:NAME@test.local, default alice; exit 1 when no final reply in 5 s)
"""
import socket
import sys

args = sys.argv[1:]
user = "alice"
if len(args) >= 2 and args[0] == "--user":
    user, args = args[1], args[2:]
port, method, extra = int(args[0]), args[1], args[2:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(5)
me = s.getsockname()[1]
hdrs = [
    f"{method} sip:test.local SIP/2.0",
    f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{me}",
    "Max-Forwards: 70",
    f"From: <sip:{user}@test.local>;tag=1",
    f"To: <sip:{user}@test.local>",
    f"Call-ID: {me}@test",
    f"CSeq: 1 {method}",
    f"Contact: <sip:{user}@127.0.0.1:{me}>",
    "Expires: 600",
] + extra + ["Content-Length: 0", "", ""]
s.sendto("\r\n".join(hdrs).encode(), ("127.0.0.1", port))
try:
    while True:
        data, _ = s.recvfrom(65535)
        line = data.decode(errors="replace").split("\r\n", 1)[0]
        if not line.startswith("SIP/2.0 1"):
            print(line)
            break
except socket.timeout:
    print("no reply", file=sys.stderr)
    sys.exit(1)
