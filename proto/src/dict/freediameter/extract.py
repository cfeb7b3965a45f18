#!/usr/bin/env python3
"""Lists the AVP and command names freeDiameter's dictionary extensions define.

Usage: extract.py FREEDIAMETER_SOURCE_DIR  (a checkout of github.com/freeDiameter/freeDiameter)
Its output is the body of names.tsv (keep that file's header comment).
Reads libfdcore/dict_base_proto.c and extensions/dict_*/ (the C that registers each AVP
with fd_dict_new) and prints one line per definition:
  avp <code> <vendor> <type> <M|!M|M?> <file> <name>
  cmd <code> <application> <R|A> - <file> <name>
  app <id> - - - <file> <name>
"""
import os, re, sys

FILES = [
    "libfdcore/dict_base_proto.c",
    "extensions/dict_dcca/dict_dcca.c",
    "extensions/dict_dcca_3gpp/add_avps.c",
    "extensions/dict_dcca_3gpp/dict_dcca_3gpp.c",
    "extensions/dict_nasreq/dict_nasreq.c",
    "extensions/dict_sip/dict_sip.c",
    "extensions/dict_rfc5777/dict_rfc5777.c",
    "extensions/dict_eap/dict_eap.c",
    "extensions/dict_mip6a/dict_mip6a.c",
    "extensions/dict_mip6i/dict_mip6i.c",
    "extensions/dict_nas_mipv6/dict_nas_mipv6.c",
]
BASE = {
    "AVP_TYPE_GROUPED": "Grouped", "AVP_TYPE_OCTETSTRING": "OctetString",
    "AVP_TYPE_INTEGER32": "Integer32", "AVP_TYPE_INTEGER64": "Integer64",
    "AVP_TYPE_UNSIGNED32": "Unsigned32", "AVP_TYPE_UNSIGNED64": "Unsigned64",
    "AVP_TYPE_FLOAT32": "Float32", "AVP_TYPE_FLOAT64": "Float64",
}
DERIVED = {
    "UTF8String_type": "UTF8String", "Time_type": "Time", "Address_type": "Address",
    "DiameterIdentity_type": "DiameterIdentity", "DiameterURI_type": "DiameterURI",
    "IPFilterRule_type": "IPFilterRule", "QoSFilterRule_type": "QoSFilterRule",
}
AVP = re.compile(r"struct\s+dict_avp_data\s+(\w+)\s*=\s*\{(.*?)\};", re.S)
NEW_AVP = re.compile(r"dict_new\(\s*DICT_AVP\s*,\s*&(\w+)\s*,\s*(\w+)\s*,")
CMD = re.compile(r"struct\s+dict_cmd_data\s+\w+\s*=\s*\{(.*?)\};", re.S)
APP = re.compile(r"struct\s+dict_application_data\s+\w+\s*=\s*\{\s*(\d+)\s*,\s*\"([^\"]*)\"", re.S)
COMMENT = re.compile(r"/\*.*?\*/", re.S)

def fields(body):
    body = COMMENT.sub("", body)
    body = "\n".join(l for l in body.splitlines() if not l.strip().startswith("#"))
    out, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            out.append(cur.strip()); cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [f for f in out if f]

root = sys.argv[1]
seen = set()
for rel in FILES:
    text = open(os.path.join(root, rel), encoding="utf-8", errors="replace").read()
    short = os.path.basename(rel)[:-2]
    for m in AVP.finditer(text):
        f = fields(m.group(2))
        code, vendor, name, _fixed, values, base = f[:6]
        name = name.strip('"')
        n = NEW_AVP.search(text, m.end())
        parent = n.group(2) if n else "NULL"
        ty = BASE[base]
        if parent in DERIVED:
            ty = DERIVED[parent]
        elif parent == "type" and base == "AVP_TYPE_INTEGER32":
            # The type object made just before is "Enumerated(...)".
            ty = "Enumerated"
        # The M bit as the dmbridge dictionary format writes it: must, must not, may.
        if "AVP_FLAG_MANDATORY" in values:
            mflag = "M"
        elif "AVP_FLAG_MANDATORY" in _fixed:
            mflag = "!M"
        else:
            mflag = "M?"
        key = ("avp", int(code), int(vendor), name)
        if key in seen:
            continue
        seen.add(key)
        print(f"avp\t{int(code)}\t{int(vendor)}\t{ty}\t{mflag}\t{short}\t{name}")
    app = APP.search(text)
    app_id = int(app.group(1)) if app else 0
    for a in APP.finditer(text):
        key = ("app", int(a.group(1)))
        if key not in seen:
            seen.add(key)
            print(f"app\t{int(a.group(1))}\t-\t-\t-\t{short}\t{a.group(2)}")
    for m in CMD.finditer(text):
        n = re.compile(r"dict_new\(\s*DICT_COMMAND\s*,\s*&\w+\s*,\s*(\w+)").search(text, m.end())
        this_app = 0 if n is None or n.group(1) == "NULL" else app_id
        f = fields(m.group(1))
        code, name, _fixed, values = f[:4]
        name = name.strip('"')
        ra = "R" if "CMD_FLAG_REQUEST" in values else "A"
        key = ("cmd", int(code), this_app, name)
        if key in seen:
            continue
        seen.add(key)
        print(f"cmd\t{int(code)}\t{this_app}\t{ra}\t-\t{short}\t{name}")
