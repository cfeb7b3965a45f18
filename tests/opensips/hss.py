#!/usr/bin/env python3
"""A small Cx HSS for the OpenSIPS module's end-to-end test (RFC 6733 over TCP, loopback).

Connects to the bridge, does CER/CEA, answers DWR, answers every SAR (2001 DIAMETER_SUCCESS,
or Experimental-Result 5001 DIAMETER_ERROR_USER_UNKNOWN for users named bob*), and sends the
requests written as lines to the control FIFO:
    ppr USER              Push-Profile-Request with User-Data
    rtr USER [IMPU]       Registration-Termination-Request (Public-Identity IMPU if given)
    udr USER              Sh User-Data-Request (a command the example has no route for)
Every answer is printed as "ANSWER <cmd> rc=<Result-Code|Experimental-Result-Code> e=<0|1>",
every SAR as "SAR user=<User-Name> impu=<Public-Identity>". Stops after --duration seconds or
on EOF from the bridge.

usage: hss.py --port BRIDGE_PORT --ctl FIFO --dest-host ORIGIN_HOST_OF_BRIDGE [--duration S]
"""
import argparse
import os
import socket
import struct
import sys
import threading
import time

VENDOR_3GPP = 10415
CX_APP, SH_APP = 16777216, 16777217
ME, REALM = "hss.test.local", "test.local"

# code, vendor, type: "u32" | "str" | "grp"
AVPS = {
    "User-Name": (1, 0, "str"), "Host-IP-Address": (257, 0, "addr"),
    "Auth-Application-Id": (258, 0, "u32"), "Vendor-Specific-Application-Id": (260, 0, "grp"),
    "Session-Id": (263, 0, "str"), "Origin-Host": (264, 0, "str"), "Vendor-Id": (266, 0, "u32"),
    "Result-Code": (268, 0, "u32"), "Product-Name": (269, 0, "str"),
    "Auth-Session-State": (277, 0, "u32"), "Destination-Realm": (283, 0, "str"),
    "Destination-Host": (293, 0, "str"), "Origin-Realm": (296, 0, "str"),
    "Experimental-Result": (297, 0, "grp"), "Experimental-Result-Code": (298, 0, "u32"),
    "Supported-Vendor-Id": (265, 0, "u32"),
    "Public-Identity": (601, VENDOR_3GPP, "str"), "User-Data": (606, VENDOR_3GPP, "str"),
    "Deregistration-Reason": (615, VENDOR_3GPP, "grp"), "Reason-Code": (616, VENDOR_3GPP, "u32"),
    "User-Identity": (700, VENDOR_3GPP, "grp"), "Data-Reference": (703, VENDOR_3GPP, "u32"),
}
BY_CODE = {(c, v): (n, t) for n, (c, v, t) in AVPS.items()}


def avp(name, value):
    code, vendor, typ = AVPS[name]
    if typ == "u32":
        data = struct.pack("!I", value)
    elif typ == "addr":
        data = struct.pack("!H", 1) + socket.inet_aton(value)
    elif typ == "grp":
        data = b"".join(avp(n, v) for n, v in value)
    else:
        data = value.encode()
    flags = 0x40 | (0x80 if vendor else 0)
    hlen = 12 if vendor else 8
    head = struct.pack("!I", code) + struct.pack("!I", (flags << 24) | (hlen + len(data)))
    if vendor:
        head += struct.pack("!I", vendor)
    return head + data + b"\0" * ((4 - len(data) % 4) % 4)


def message(cmd, app, flags, hbh, e2e, avps):
    body = b"".join(avp(n, v) for n, v in avps)
    return struct.pack("!I", (1 << 24) | (20 + len(body))) + struct.pack(
        "!IIII", (flags << 24) | cmd, app, hbh, e2e) + body


def parse_avps(data):
    out, i = [], 0
    while i + 8 <= len(data):
        code, fl = struct.unpack("!II", data[i:i + 8])
        flags, length = fl >> 24, fl & 0xFFFFFF
        hlen, vendor = 8, 0
        if flags & 0x80:
            vendor, hlen = struct.unpack("!I", data[i + 8:i + 12])[0], 12
        raw = data[i + hlen:i + length]
        name, typ = BY_CODE.get((code, vendor), (f"{code}:{vendor}", "raw"))
        if typ == "u32" and len(raw) == 4:
            val = struct.unpack("!I", raw)[0]
        elif typ == "grp":
            val = parse_avps(raw)
        elif typ == "str":
            val = raw.decode(errors="replace")
        else:
            val = raw
        out.append((name, val))
        i += length + (4 - length % 4) % 4
    return out


def find(avps, name):
    for n, v in avps:
        if n == name:
            return v
    return None


class Hss:
    def __init__(self, sock, dest_host):
        self.sock, self.dest_host = sock, dest_host
        self.lock = threading.Lock()
        self.hbh = 0x1000
        self.pending = {}  # hop-by-hop -> command label
        self.sessions = 0

    def send(self, msg):
        with self.lock:
            self.sock.sendall(msg)

    def next_ids(self):
        with self.lock:
            self.hbh += 1
            return self.hbh, self.hbh

    def request(self, label, cmd, app, avps):
        hbh, e2e = self.next_ids()
        self.pending[hbh] = label
        self.send(message(cmd, app, 0xC0, hbh, e2e, avps))

    def session(self):
        self.sessions += 1
        return f"{ME};{int(time.time())};{self.sessions}"

    def common(self, app):
        return [("Session-Id", self.session()),
                ("Vendor-Specific-Application-Id", [("Vendor-Id", VENDOR_3GPP),
                                                    ("Auth-Application-Id", app)]),
                ("Auth-Session-State", 1), ("Origin-Host", ME), ("Origin-Realm", REALM),
                ("Destination-Host", self.dest_host), ("Destination-Realm", REALM)]

    def command(self, line):
        words = line.split()
        if not words:
            return
        if words[0] == "ppr" and len(words) >= 2:
            self.request("ppr", 305, CX_APP, self.common(CX_APP) + [
                ("User-Name", words[1]),
                ("User-Data", f"<IMSSubscription><PrivateID>{words[1]}</PrivateID></IMSSubscription>")])
        elif words[0] == "rtr" and len(words) >= 2:
            avps = self.common(CX_APP) + [("User-Name", words[1])]
            if len(words) >= 3:
                avps.append(("Public-Identity", words[2]))
            avps.append(("Deregistration-Reason", [("Reason-Code", 0)]))
            self.request("rtr", 304, CX_APP, avps)
        elif words[0] == "udr" and len(words) >= 2:
            self.request("udr", 306, SH_APP, self.common(SH_APP) + [
                ("User-Identity", [("Public-Identity", words[1])]), ("Data-Reference", 0)])
        else:
            print(f"unknown command: {line}", flush=True)

    def answer(self, hdr, avps, result):
        _, cmd, app, hbh, e2e = hdr
        out = [("Session-Id", find(avps, "Session-Id") or "none"),
               ("Vendor-Specific-Application-Id", [("Vendor-Id", VENDOR_3GPP),
                                                   ("Auth-Application-Id", app)]),
               ("Auth-Session-State", 1), ("Origin-Host", ME), ("Origin-Realm", REALM)] + result
        self.send(message(cmd, app, 0x40, hbh, e2e, out))

    def on_message(self, hdr, avps):
        flags, cmd, app, hbh, e2e = hdr
        if flags & 0x80:  # request
            if cmd == 280:  # DWR
                self.send(message(280, 0, 0x00, hbh, e2e, [
                    ("Origin-Host", ME), ("Origin-Realm", REALM), ("Result-Code", 2001)]))
            elif cmd == 301:
                user = find(avps, "User-Name") or ""
                print(f"SAR user={user} impu={find(avps, 'Public-Identity')}", flush=True)
                if user.startswith("bob"):
                    self.answer(hdr, avps, [("Experimental-Result", [
                        ("Vendor-Id", VENDOR_3GPP), ("Experimental-Result-Code", 5001)])])
                else:
                    self.answer(hdr, avps, [("Result-Code", 2001)])
            elif cmd == 282:  # DPR
                self.send(message(282, 0, 0x00, hbh, e2e, [
                    ("Origin-Host", ME), ("Origin-Realm", REALM), ("Result-Code", 2001)]))
            else:
                print(f"REQUEST {cmd} unexpected", flush=True)
            return
        label = self.pending.pop(hbh, f"cmd{cmd}")
        rc = find(avps, "Result-Code")
        if rc is None:
            er = find(avps, "Experimental-Result") or []
            rc = find(er, "Experimental-Result-Code")
        print(f"ANSWER {label} rc={rc} e={1 if flags & 0x20 else 0}", flush=True)


def read_msg(sock, buf):
    """One message from sock; `buf` (a bytearray) keeps partial data across timeouts."""
    while len(buf) < 4 or len(buf) < (struct.unpack("!I", buf[:4])[0] & 0xFFFFFF):
        chunk = sock.recv(65536)  # socket.timeout propagates, buf keeps what came
        if not chunk:
            return None
        buf += chunk
    n = struct.unpack("!I", buf[:4])[0] & 0xFFFFFF
    m = bytes(buf[:n])
    del buf[:n]
    fc, app, hbh, e2e = struct.unpack("!IIII", m[4:20])
    return (fc >> 24, fc & 0xFFFFFF, app, hbh, e2e), parse_avps(m[20:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ctl", required=True)
    ap.add_argument("--dest-host", required=True)
    ap.add_argument("--duration", type=float, default=60)
    a = ap.parse_args()

    deadline = time.time() + a.duration
    sock = None
    while time.time() < deadline:
        try:
            sock = socket.create_connection(("127.0.0.1", a.port), timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    if sock is None:
        print("cannot connect", flush=True)
        return 1
    sock.settimeout(None)
    hss = Hss(sock, a.dest_host)
    hss.send(message(257, 0, 0x80, 1, 1, [
        ("Origin-Host", ME), ("Origin-Realm", REALM), ("Host-IP-Address", "127.0.0.1"),
        ("Vendor-Id", VENDOR_3GPP), ("Product-Name", "dmbridge-test-hss"),
        ("Supported-Vendor-Id", VENDOR_3GPP),
        ("Vendor-Specific-Application-Id", [("Vendor-Id", VENDOR_3GPP), ("Auth-Application-Id", CX_APP)]),
        ("Vendor-Specific-Application-Id", [("Vendor-Id", VENDOR_3GPP), ("Auth-Application-Id", SH_APP)])]))
    buf = bytearray()
    msg = read_msg(sock, buf)
    if msg is None or msg[0][1] != 257:
        print("no CEA", flush=True)
        return 1
    print(f"CEA rc={find(msg[1], 'Result-Code')}", flush=True)

    def control():
        while time.time() < deadline:
            with open(a.ctl) as f:  # blocks until a writer opens it
                for line in f:
                    hss.command(line)
    threading.Thread(target=control, daemon=True).start()

    sock.settimeout(0.5)
    while time.time() < deadline:
        try:
            msg = read_msg(sock, buf)
        except socket.timeout:
            continue
        if msg is None:
            print("EOF from the bridge", flush=True)
            return 0
        hss.on_message(*msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
