#!/usr/bin/env python3
"""A small Cx HSS for the OpenSIPS module's end-to-end test (RFC 6733 over TCP, loopback).

Connects to the bridge, does CER/CEA, answers DWR, answers every SAR (2001 DIAMETER_SUCCESS,
or what --sar gives for the user), and sends the requests written as lines to the control
FIFO:
    ppr USER              Push-Profile-Request with User-Data
    rtr USER [IMPU]       Registration-Termination-Request (Public-Identity IMPU if given)
    udr USER              Sh User-Data-Request (a command the example has no route for)
    uar USER IMPU         Cx User-Authorization-Request (no route in the example either)
Every answer is printed as "ANSWER <cmd> rc=<Result-Code|Experimental-Result-Code> e=<0|1>
assoc=<Associated-Identities/User-Name> sid=<Session-Id>", every SAR as "SAR user=<User-Name>
impu=<Public-Identity> sat=<Server-Assignment-Type> -> <what it answers>". Stops after --duration seconds or
on EOF from the bridge.

usage: hss.py --port BRIDGE_PORT --ctl FIFO --dest-host ORIGIN_HOST_OF_BRIDGE [--duration S]
              [--sar bob=e5001,carol=5012]
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
    "Server-Name": (602, VENDOR_3GPP, "str"), "Server-Assignment-Type": (614, VENDOR_3GPP, "u32"),
    "Reason-Info": (617, VENDOR_3GPP, "str"), "Charging-Information": (618, VENDOR_3GPP, "grp"),
    "Primary-Event-Charging-Function-Name": (619, VENDOR_3GPP, "str"),
    "Primary-Charging-Collection-Function-Name": (621, VENDOR_3GPP, "str"),
    "Supported-Features": (628, VENDOR_3GPP, "grp"), "Feature-List-ID": (629, VENDOR_3GPP, "u32"),
    "Feature-List": (630, VENDOR_3GPP, "u32"), "Associated-Identities": (632, VENDOR_3GPP, "grp"),
    "Visited-Network-Identifier": (600, VENDOR_3GPP, "str"),
}
# RFC 6733 §4.5: Product-Name MUST NOT have the M bit (the node refuses a CER with it: 3009)
NOT_MANDATORY = {"Supported-Features", "Feature-List-ID", "Feature-List", "Associated-Identities",
                 "Product-Name"}
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
    # the M bit as TS 29.229 wants it (the bridge checks it: 3009 otherwise)
    flags = (0 if name in NOT_MANDATORY else 0x40) | (0x80 if vendor else 0)
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
    def __init__(self, sock, dest_host, sar):
        self.sock, self.dest_host = sock, dest_host
        # user -> ("rc"|"exp", code) for SAR answers; default Result-Code 2001
        self.sar = {}
        for item in filter(None, sar.split(",")):
            user, _, outcome = item.partition("=")
            self.sar[user] = ("exp", int(outcome[1:])) if outcome.startswith("e") else ("rc", int(outcome))
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
                ("Supported-Features", [("Vendor-Id", VENDOR_3GPP), ("Feature-List-ID", 1),
                                        ("Feature-List", 1)]),
                ("User-Data", f"<IMSSubscription><PrivateID>{words[1]}</PrivateID></IMSSubscription>"),
                ("Charging-Information", [
                    ("Primary-Event-Charging-Function-Name", "aaa://ecf.test.local:3868"),
                    ("Primary-Charging-Collection-Function-Name", "aaa://ccf.test.local")])])
        elif words[0] == "rtr" and len(words) >= 2:
            avps = self.common(CX_APP) + [("User-Name", words[1])]
            if len(words) >= 3:
                avps.append(("Public-Identity", words[2]))
            avps.append(("Deregistration-Reason", [("Reason-Code", 0),
                                                   ("Reason-Info", "subscription ended")]))
            self.request("rtr", 304, CX_APP, avps)
        elif words[0] == "uar" and len(words) >= 3:
            self.request("uar", 300, CX_APP, self.common(CX_APP)[:1] + [
                ("Vendor-Specific-Application-Id", [("Vendor-Id", VENDOR_3GPP),
                                                    ("Auth-Application-Id", CX_APP)]),
                ("Auth-Session-State", 1), ("Origin-Host", ME), ("Origin-Realm", REALM),
                ("Destination-Host", self.dest_host), ("Destination-Realm", REALM),
                ("User-Name", words[1]), ("Public-Identity", words[2]),
                ("Visited-Network-Identifier", REALM)])
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
                kind, code = self.sar.get(user.split("@")[0], ("rc", 2001))
                print(f"SAR user={user} impu={find(avps, 'Public-Identity')} "
                      f"sat={find(avps, 'Server-Assignment-Type')} -> "
                      f"{'Result-Code' if kind == 'rc' else 'Experimental-Result-Code'} {code}",
                      flush=True)
                if kind == "exp":
                    self.answer(hdr, avps, [("Experimental-Result", [
                        ("Vendor-Id", VENDOR_3GPP), ("Experimental-Result-Code", code)])])
                else:
                    self.answer(hdr, avps, [("Result-Code", code)])
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
        assoc = find(find(avps, "Associated-Identities") or [], "User-Name") or ""
        print(f"ANSWER {label} rc={rc} e={1 if flags & 0x20 else 0} assoc={assoc} "
              f"sid={find(avps, 'Session-Id')}", flush=True)


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
    ap.add_argument("--sar", default="", help="SAR outcomes: user=CODE (Result-Code) or "
                    "user=eCODE (Experimental-Result-Code), comma-separated; else 2001")
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
    hss = Hss(sock, a.dest_host, a.sar)
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
