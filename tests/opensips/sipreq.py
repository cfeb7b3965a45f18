#!/usr/bin/env python3
"""Sends one SIP request for USER@test.local over UDP on loopback and prints the final
response's status line (exit 1 when no final reply in 8 s).

usage: sipreq.py PORT METHOD USER [HEADER: value ...]
"""
import socket
import sys

port, method, user, extra = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(8)
me = s.getsockname()[1]
lines = [
    f"{method} sip:test.local SIP/2.0",
    f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{me}",
    "Max-Forwards: 70",
    f"From: <sip:{user}@test.local>;tag={me}",
    f"To: <sip:{user}@test.local>",
    f"Call-ID: {me}@test",
    f"CSeq: 1 {method}",
    f"Contact: <sip:{user}@127.0.0.1:{me}>",
    "Expires: 600",
] + extra + ["Content-Length: 0", "", ""]
s.sendto("\r\n".join(lines).encode(), ("127.0.0.1", port))
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
