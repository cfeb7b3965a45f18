#!/usr/bin/env python3
"""Every exported script function of the Kamailio module, in every arity and parameter kind,
in every route kind Kamailio allows it in, native and KEMI (Lua), with and without a bridge
(issue 16). The list of functions and arities is read from the module's own export tables
(cmds[] and the KEMI exports in the C source): a function or arity without rows here fails
the test.

For each row the generated script calls the function once and logs "CASE <id> rc=<rc>";
async rows log "FIN <id> result=<$dm(result)>" from the route they resume in. The test sends
one SIP request per row (X-Case, X-Where) and checks the logged value, and after each phase
that Kamailio is still running with no crash in its log. Route kinds: request route, failure
route and onreply route (the request is relayed to a small UAS here that answers 486 or 200),
the event route of an incoming Diameter request (injected by the reference bridge; bridge
runs only) and the route an async request resumes in.

Also (issue 16 item 3): a function used where Kamailio does not allow it makes `kamailio -c`
fail; bad literal arguments stop Kamailio's start with a clear message (the module's fixups run
then: `kamailio -c` runs none); values only known at run time give an error return and a log
line.

usage: module-glue/kamailio/tests/functions.py [--valgrind]    ("N passed, N failed")
Loopback only, free ports, bounded waits; every process started here is stopped by PID.
"""
import glob
import os
import re
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(here, "../../common/tests"))
import fnmatrix as fm  # noqa: E402

VALGRIND = "--valgrind" in sys.argv
top = fm.repo_top(here)
so = os.path.join(top, "build/kamailio/dmbridge.so")
report = fm.Report()

# --- the module's export tables ------------------------------------------------------------
ROUTE_FLAGS = {"req": "REQUEST_ROUTE", "resume": "REQUEST_ROUTE", "fail": "FAILURE_ROUTE",
               "reply": "ONREPLY_ROUTE", "event": "EVENT_ROUTE"}


def exports():
    """(name, arity) -> route flags from cmds[]; KEMI name -> number of parameters."""
    src = "".join(open(f).read() for f in sorted(glob.glob(os.path.join(here, "../*.c"))))
    native = {}
    for m in re.finditer(r'\{\s*"(\w+)",\s*\(cmd_function\)\w+,\s*(\d+),\s*\w+,\s*\w+,\s*'
                         r'([\w|\s]+)\}', src):
        native[(m.group(1), int(m.group(2)))] = set(re.findall(r"\w+_ROUTE", m.group(3)))
    kemi = {}
    for m in re.finditer(r'str_init\("dmbridge"\),\s*str_init\("(\w+)"\),\s*SR_KEMIP_\w+,\s*'
                         r'\w+,\s*\{([^}]*)\}', src):
        kemi[m.group(1)] = len([t for t in re.findall(r"SR_KEMIP_\w+", m.group(2))
                                if t != "SR_KEMIP_NONE"])
    return native, kemi


# --- the rows: how each function is called, per arity and parameter kind -------------------
J = '[{"User-Name":"alice"}]'
NATIVE = {
    "dm_send_reply": {
        1: {"literal": "dm_send_reply('[{\"Result-Code\":2001}]')",
            "variable": 'dm_send_reply("$var(rjson)")',
            "format": "dm_send_reply('[{\"Result-Code\":$var(code)}]')"},
        2: {"literal": "dm_send_reply('[{\"Result-Code\":2001}]', 0)",
            "variable": 'dm_send_reply("$var(rjson)", "$var(iserr)")',
            "format": "dm_send_reply('[{\"Result-Code\":$var(code)}]', \"$var(iserr)\")"},
    },
    "dm_send_request": {
        3: {"literal": f"dm_send_request(16777216, 301, '{J}')",
            "variable": 'dm_send_request("$var(app)", "$var(cmd)", "$var(json)")',
            # the form: numbers as strings, JSON printed from a variable
            "format": "dm_send_request(\"16777216\", \"301\", '[{\"User-Name\":\"$var(user)\"}]')"},
        4: {"literal": f"dm_send_request(16777216, 301, '{J}', \"$var(r)\")",
            "variable": 'dm_send_request("$var(app)", "$var(cmd)", "$var(json)", "$var(r)")',
            "format": "dm_send_request(\"16777216\", \"301\", "
                      "'[{\"User-Name\":\"$var(user)\"}]', \"$var(r)\")"},
    },
    "dm_send_request_async": {
        4: {"literal": f"dm_send_request_async(16777216, 301, '{J}', \"FIN\")",
            "variable": 'dm_send_request_async("$var(app)", "$var(cmd)", "$var(json)", '
                        '"$var(fin)")',
            "format": "dm_send_request_async(\"16777216\", \"301\", "
                      "'[{\"User-Name\":\"$var(user)\"}]', \"F$var(in)\")"},
    },
}
NATIVE["dm_send_answer"] = {n: {k: c.replace("dm_send_reply", "dm_send_answer")
                                for k, c in v.items()} for n, v in NATIVE["dm_send_reply"].items()}

KEMI = {
    "dm_send_reply": {"literal": "KSR.dmbridge.dm_send_reply('[{\"Result-Code\":2001}]')",
                      "variable": "KSR.dmbridge.dm_send_reply(RJSON)",
                      "format": "KSR.dmbridge.dm_send_reply('[{\"Result-Code\":' .. CODE .. '}]')"},
    "dm_send_reply_ex": {
        "literal": "KSR.dmbridge.dm_send_reply_ex('[{\"Result-Code\":2001}]', 0)",
        "variable": "KSR.dmbridge.dm_send_reply_ex(RJSON, ISERR)",
        "format": "KSR.dmbridge.dm_send_reply_ex('[{\"Result-Code\":' .. CODE .. '}]', ISERR)"},
    "dm_send_request": {
        "literal": f"KSR.dmbridge.dm_send_request(16777216, 301, '{J}')",
        "variable": "KSR.dmbridge.dm_send_request(APP, CMD, JSON)",
        "format": "KSR.dmbridge.dm_send_request(APP, CMD, '[{\"User-Name\":\"' .. USER .. '\"}]')"},
    "dm_send_request_async": {
        "literal": f"KSR.dmbridge.dm_send_request_async(16777216, 301, '{J}', 'ksr_fin')",
        "variable": "KSR.dmbridge.dm_send_request_async(APP, CMD, JSON, FIN)",
        "format": "KSR.dmbridge.dm_send_request_async(APP, CMD, "
                  "'[{\"User-Name\":\"' .. USER .. '\"}]', 'ksr_' .. 'fin')"},
}
KEMI["dm_send_answer"] = {k: c.replace("dm_send_reply", "dm_send_answer")
                          for k, c in KEMI["dm_send_reply"].items()}


def kind_of(name):
    if "reply" in name or "answer" in name:
        return "reply"
    return "async" if name.endswith("_async") else "sync"


def expected(fkind, where, bridge):
    """The return code ("CASE") or resumed outcome ("FIN") a row must log."""
    if fkind == "reply":
        return "1" if where == "event" else "-1"  # only an event route has a request to answer
    return "1" if bridge else "-3"  # the reference bridge echoes command 301


def rows(native, kemi):
    """The test rows; also checks that the tables cover the export tables exactly."""
    out = []
    for (name, arity), flags in sorted(native.items()):
        calls = NATIVE.get(name, {}).get(arity)
        report.check(f"native {name}/{arity} (from cmds[]) has a row for every parameter kind",
                     calls is not None and set(calls) == set(fm.KINDS), f"rows: {calls}")
        if calls is None:
            continue
        where_ok = [w for w, f in ROUTE_FLAGS.items() if "ANY_ROUTE" in flags or f in flags]
        for kind in fm.KINDS:
            for where in where_ok:
                out.append(dict(api="native", name=name, arity=arity, kind=kind, where=where,
                                call=calls[kind], fkind=kind_of(name)))
    for (name, arity) in sorted((n, a) for n, v in NATIVE.items() for a in v):
        report.check(f"native row {name}/{arity} names an exported function",
                     (name, arity) in native)
    for name, n in sorted(kemi.items()):
        calls = KEMI.get(name)
        report.check(f"KEMI {name}({n} params, from the KEMI exports) has a row for every kind",
                     calls is not None and set(calls) == set(fm.KINDS))
        if calls is None:
            continue
        # KEMI has no route flags: the native function's rule applies (async in request-type
        # routes only; tm suspends only a request's transaction)
        wheres = ["req", "resume"] if kind_of(name) == "async" else list(ROUTE_FLAGS)
        for kind in fm.KINDS:
            for where in wheres:
                out.append(dict(api="kemi", name=name, arity=n, kind=kind, where=where,
                                call=calls[kind], fkind=kind_of(name)))
    for name in sorted(KEMI):
        report.check(f"KEMI row {name} names an exported function", name in kemi)
    for i, r in enumerate(out, 1):
        r["id"] = i
    return out


# --- script generation -----------------------------------------------------------------------
VARS = f"""route[VARS] {{
	$var(app) = 16777216; $var(cmd) = 301; $var(json) = '{J}'; $var(user) = "alice";
	$var(rjson) = '[{{"Result-Code":2001}}]'; $var(code) = 2001; $var(iserr) = 0;
	$var(fin) = "FIN"; $var(in) = "IN";
}}
"""


def native_blocks(rs, where):
    out = []
    for r in rs:
        if r["api"] != "native" or r["where"] != where:
            continue
        out.append(f'\tif ($var(c) == {r["id"]}) {{\n\t\t$var(r) = "unset";\n\t\t{r["call"]};\n'
                   f'\t\t$var(rc) = $rc;\n\t\txlog("L_NOTICE", "CASE {r["id"]} rc=$var(rc) '
                   f'r=$var(r) peer=$dm(peer_us) worker=$dm(worker_us)\\n");\n\t}}\n')
    return "".join(out)


def cfg_head(modules, params):
    """The common start of every generated script: Kamailio on loopback with one SIP worker,
    the given modules (dmbridge.so last) and modparam lines."""
    loads = "".join(f'loadmodule "{m}.so"\n' for m in modules)
    mps = "".join(f"modparam({p})\n" for p in params)
    return ('#!KAMAILIO\ndebug=2\nlog_stderror=yes\nchildren=1\nport=SIP_PORT\n'
            'listen=udp:127.0.0.1\nmpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"\n'
            f"{loads}loadmodule DMB_SO\n{mps}")


WITH_BRIDGE = ['"htable", "htable", "c=>size=4;"', '"dmbridge", "bridge_socket", DMB_SOCKET',
               '"dmbridge", "workers", 1', '"dmbridge", "reconnect_interval", 200',
               '"dmbridge", "request_timeout", 2000', '"dmbridge", "sched_slice_us", 200',
               '"dmbridge", "sched_nice", 3']


DIRECT = '"dmbridge", "async_direct", 1'
HANDOVER = '"dmbridge", "async_direct", 0'


def native_cfg(rs, uas_port, extra=()):
    return cfg_head(["tm", "sl", "pv", "xlog", "textops", "htable"],
                    WITH_BRIDGE + list(extra)) + f"""
{VARS}
request_route {{
	route(VARS);
	$var(c) = $(hdr(X-Case){{s.int}});
	if ($hdr(X-Where) == "req") {{
{native_blocks(rs, "req")}		sl_send_reply("299", "done");
		exit;
	}}
	if ($hdr(X-Where) == "fail" || $hdr(X-Where) == "reply") {{
		t_on_failure("FAIL");
		t_on_reply("REPLY");
		$du = "sip:127.0.0.1:{uas_port}";
		t_relay();
		exit;
	}}
	if ($hdr(X-Where) == "resume") {{
		dm_send_request_async(16777216, 301, '{J}', "RESUME");
		sl_send_reply("500", "not suspended");
		exit;
	}}
	if ($hdr(X-Where) == "timeout") {{
		dm_send_request(16777216, {fm.CMD_NEVER_ANSWER}, '[]');
		$var(rc) = $rc;
		xlog("L_NOTICE", "TIMEOUT rc=$var(rc) peer=$dm(peer_us) worker=$dm(worker_us)\\n");
		sl_send_reply("299", "timeout");
		exit;
	}}
	if ($hdr(X-Where) == "atimeout") {{
		dm_send_request_async(16777216, {fm.CMD_NEVER_ANSWER}, '[]', "TFIN");
		sl_send_reply("500", "not suspended");
		exit;
	}}
	if ($hdr(X-Where) == "event") {{
		$sht(c=>case) = $var(c);
		dm_send_request(1, {fm.CMD_INJECT}, '[{{"inject":"PPR"}}]', "$var(inj)");
		sl_send_reply("299", "injected $var(inj)");
		exit;
	}}
	sl_send_reply("404", "no such case");
}}

failure_route[FAIL] {{
	route(VARS);
	$var(c) = $(hdr(X-Case){{s.int}});
	if ($hdr(X-Where) != "fail") exit;
{native_blocks(rs, "fail")}}}

onreply_route[REPLY] {{
	route(VARS);
	$var(c) = $(hdr(X-Case){{s.int}});
{native_blocks(rs, "reply")}}}

route[RESUME] {{
	route(VARS);
	$var(c) = $(hdr(X-Case){{s.int}});
{native_blocks(rs, "resume")}	t_reply("299", "resumed");
}}

route[FIN] {{
	xlog("L_NOTICE", "FIN $hdr(X-Case) result=$dm(result) peer=$dm(peer_us) worker=$dm(worker_us)\\n");
	t_reply("299", "fin");
}}

route[TFIN] {{
	xlog("L_NOTICE", "TFIN result=$dm(result) peer=$dm(peer_us) worker=$dm(worker_us)\\n");
	t_reply("299", "fin");
}}

event_route[dmbridge:E_DM_PPR] {{
	route(VARS);
	$var(c) = $sht(c=>case);
{native_blocks(rs, "event")}}}
"""


def kemi_files(rs, uas_port, lua_path):
    cfg = cfg_head(["tm", "sl", "pv", "xlog", "htable", "app_lua"], WITH_BRIDGE + [
        DIRECT, '"dmbridge", "event_callback", "ksr_dm_event"',
        f'"app_lua", "load", "{lua_path}"'])
    cfg += 'cfgengine "lua"\n'
    cases = []
    for r in rs:
        if r["api"] != "kemi":
            continue
        cases.append(f'  [{r["id"]}] = {{where = "{r["where"]}", async = '
                     f'{"true" if r["fkind"] == "async" else "false"}, '
                     f'call = function() return {r["call"]} end}},')
    lua = f"""-- generated by module-glue/kamailio/tests/functions.py
APP = 16777216; CMD = 301; JSON = '{J}'; USER = "alice"
RJSON = '[{{"Result-Code":2001}}]'; CODE = 2001; ISERR = 0; FIN = "ksr_fin"
CASES = {{
{chr(10).join(cases)}
}}
local function case_no()
  return tonumber(KSR.hdr.get("X-Case") or "0")
end
local function run(where, c)
  local k = CASES[c]
  if k == nil or k.where ~= where then return end
  local rc = k.call()
  if k.async and rc == 0 then KSR.x.exit() end
  KSR.notice("CASE " .. c .. " rc=" .. tostring(rc) .. " peer="
             .. tostring(KSR.pv.get("$dm(peer_us)")) .. " worker="
             .. tostring(KSR.pv.get("$dm(worker_us)")) .. "\\n")
end
function ksr_request_route()
  local w = KSR.hdr.get("X-Where")
  local c = case_no()
  if w == "req" then
    run("req", c)
    KSR.sl.sl_send_reply(299, "done")
  elseif w == "fail" or w == "reply" then
    KSR.tm.t_on_failure("ksr_fail")
    KSR.tm.t_on_reply("ksr_reply")
    KSR.setdsturi("sip:127.0.0.1:{uas_port}")
    KSR.tm.t_relay()
  elseif w == "resume" then
    local rc = KSR.dmbridge.dm_send_request_async(APP, CMD, JSON, "ksr_resume")
    if rc == 0 then KSR.x.exit() end
    KSR.sl.sl_send_reply(500, "not suspended")
  elseif w == "event" then
    KSR.pv.seti("$sht(c=>case)", c)
    KSR.dmbridge.dm_send_request(1, {fm.CMD_INJECT}, '[{{"inject":"PPR"}}]')
    KSR.sl.sl_send_reply(299, "injected")
  else
    KSR.sl.sl_send_reply(404, "no such case")
  end
end
function ksr_fail()
  if KSR.hdr.get("X-Where") == "fail" then run("fail", case_no()) end
end
function ksr_reply()
  run("reply", case_no())
end
function ksr_resume(ev)
  run("resume", case_no())
  KSR.tm.t_reply(299, "resumed")
end
function ksr_fin(ev)
  KSR.notice("FIN " .. case_no() .. " result=" .. tostring(KSR.pv.get("$dm(result)"))
             .. " peer=" .. tostring(KSR.pv.get("$dm(peer_us)"))
             .. " worker=" .. tostring(KSR.pv.get("$dm(worker_us)")) .. "\\n")
  KSR.tm.t_reply(299, "fin")
end
function ksr_dm_event(ev)
  run("event", tonumber(KSR.pv.get("$sht(c=>case)") or 0))
end
"""
    return cfg, lua


# --- running ---------------------------------------------------------------------------------
def kamailio_argv(cfg, port, sock, rundir, vg_name=None, work=None):
    argv = ["kamailio", "-DD", "-E", "-Y", rundir, "-f", cfg, "-A", f"SIP_PORT={port}",
            "-A", f'DMB_SO="{so}"', "-A", f'DMB_SOCKET="{sock}"']
    if VALGRIND and vg_name:
        argv = fm.valgrind_prefix(work, vg_name) + argv
    return argv


def run_rows(procs, rs, api, cfg_path, sock, bridge, work, tag, uas):
    port = fm.free_port()
    rundir = os.path.join(work, f"run-{tag}")
    os.makedirs(rundir, exist_ok=True)
    log = os.path.join(work, f"{tag}.log")
    chk = subprocess.run(["kamailio", "-c"] + kamailio_argv(cfg_path, port, sock, rundir)[3:],
                         capture_output=True, text=True)
    if not report.check(f"{tag}: kamailio -c accepts the generated script",
                        "config file ok" in chk.stdout + chk.stderr, chk.stdout + chk.stderr):
        return
    k = procs.start(kamailio_argv(cfg_path, port, sock, rundir, tag, work), log)
    slow = 10 if VALGRIND else 1
    if not report.check(f"{tag}: module worker started",
                        fm.wait_for(log, "dmbridge worker 1 started", 20 * slow), fm.log_tail(log)):
        return
    # sched_slice_us: applied and read back (Linux 6.12+), or refused with the reason; with
    # sched_nice 3 (a higher nice needs no privilege)
    report.check(f"{tag}: sched_slice_us 200 and sched_nice 3 applied to the module worker, "
                 "or refused saying why",
                 fm.wait_for(log, r"DMBRIDGE WORKER 1: (SCHED_OTHER nice 3 slice 200 us"
                             r"|scheduling slice 200 us, nice 3: .*running with the kernel's defaults)",
                             5 * slow), fm.log_tail(log))
    if bridge:
        report.check(f"{tag}: module worker attached to the reference bridge",
                     fm.wait_for(log, "attached to bridge", 10 * slow), fm.log_tail(log))
        # async_direct 1 (the default since session 17; the native phase leaves it unset, the
        # KEMI phase sets it): the module worker publishes its reply address (the reference
        # bridge offers reply-to) and the SIP worker sends the async rows' requests itself;
        # with 0 (the handover phase) it publishes none and the worker sends them
        direct = "handover" not in tag
        published = fm.wait_for(log, "reply address published", (5 if direct else 1) * slow)
        report.check(f"{tag}: reply address {'published' if direct else 'not published'}"
                     f" (async_direct {int(direct)})", bool(published) == direct,
                     fm.log_tail(log))
    n = 0
    for r in rs:
        if r["api"] != api or (r["where"] == "event" and not bridge):
            continue
        n += 1
        pos = fm.log_size(log)
        got, var, status = fm.send_row(port, log, r, slow)
        exp = expected(r["fkind"], r["where"], bridge)
        label = (f"{tag}: {r['name']}/{r['arity']} {r['kind']} in {r['where']} route -> "
                 f"{exp}")
        ok = got == exp
        detail = f"got {got}, SIP reply {status}\n{fm.log_tail(log)}"
        # the reply variable: the answer's AVPs, NULL (printed 0) when not sent, untouched
        # ("unset") by the 3-parameter form
        if ok and api == "native" and r["name"] == "dm_send_request":
            want_r = "unset" if r["arity"] == 3 else (J if bridge else "0")
            ok = var == want_r
            detail = f"reply variable {var!r}, expected {want_r!r}\n" + detail
            label += f", reply variable {want_r}"
        report.check(label, ok, detail)
        if ok and r["fkind"] != "reply":
            # $dm(peer_us) beside $dm(result_code), after the call and in the resume route
            peer = fm.peer_of(log, r, pos, slow)
            fm.check_peer(report, label, peer, bridge)
            fm.check_worker(report, label, peer, fm.worker_of(log, r, pos, slow), bridge)
    if bridge and api == "native":
        pos = fm.log_size(log)
        fm.check_timeouts(report, tag, port, log, slow, "$dm(peer_us)")
        fm.check_timeout_workers(report, tag, log, slow, pos, "$dm(worker_us)")
    alive = k.poll() is None
    text = open(log, errors="replace").read()
    crash = re.search(r"(?i)segfault|signal 11|core dump|child process \d+ exited by a signal",
                      text)
    report.check(f"{tag}: {n} rows run, kamailio still running, no crash in its log",
                 alive and not crash, crash.group(0) if crash else fm.log_tail(log))
    procs.stop(k, timeout=60 if VALGRIND else 10)
    if VALGRIND:
        fm.valgrind_check(report, work, tag, n)


# --- config-time and run-time argument errors (item 3) --------------------------------------
# Kamailio's `-c` parses the script and checks where each function may be used, but runs no
# module fixup; the module checks its literal arguments in its fixups, which run when Kamailio
# starts, before it serves anything: a bad literal stops the start with a clear message.
BAD_AT_START = [
    ("app id text that is not a number",
     "dm_send_request(\"abc\", 301, '[]')", r"app_id \[abc\] is not a decimal number"),
    ("command code larger than 32 bits",
     "dm_send_request(16777216, \"4294967296\", '[]')",
     r"cmd_code \[4294967296\] is larger than 4294967295"),
    ("reply variable not writable",
     "dm_send_request(16777216, 301, '[]', \"$ci\")", r"reply variable \[\$ci\] is read-only"),
    ("async route that does not exist",
     "dm_send_request_async(16777216, 301, '[]', \"NO_SUCH_ROUTE\")",
     r"route \[NO_SUCH_ROUTE\] does not exist"),
    ("request JSON literal that is not an array",
     "dm_send_request(16777216, 301, '{\"User-Name\":\"a\"}')",
     r"dm_send_request: invalid AVP JSON at offset 0"),
    ("reply JSON literal that is not JSON",
     "dm_send_reply('[{\"Result-Code\":2001')", r"dm_send_reply: invalid AVP JSON at offset"),
]


def config_errors(work):
    base = cfg_head(["tm", "sl", "pv"], ['"dmbridge", "bridge_socket", "/nonexistent"',
                                          '"dmbridge", "workers", 0'])
    base += 'route[FIN] { t_reply("200", "ok"); }\n'
    cfg = os.path.join(work, "bad.cfg")
    # where a function may be used: kamailio -c already knows
    open(cfg, "w").write(base + "request_route { t_on_failure(\"F\"); t_relay(); }\n"
                         "failure_route[F] {\n\tdm_send_request_async(16777216, 301, "
                         f"'{J}', \"FIN\");\n}}\n")
    r = subprocess.run(["kamailio", "-c", "-f", cfg, "-A", f"SIP_PORT={fm.free_port()}",
                        "-A", f'DMB_SO="{so}"'], capture_output=True, text=True)
    out = r.stdout + r.stderr
    report.check("kamailio -c refuses dm_send_request_async in a failure route",
                 r.returncode != 0 and "config file ok" not in out
                 and "dm_send_request_async" in out, out)
    def start(text):
        # Kamailio in the foreground with this script: (its output, its exit code or None
        # when it was still running after 20 s).
        open(cfg, "w").write(text)
        argv = ["kamailio", "-DD", "-E", "-Y", work, "-f", cfg, "-A",
                f"SIP_PORT={fm.free_port()}", "-A", f'DMB_SO="{so}"']
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            return r.stdout + r.stderr, r.returncode
        except subprocess.TimeoutExpired as e:
            return f"still running after 20 s\n{e.stdout}{e.stderr}", None
    for what, call, rx in BAD_AT_START:
        out, rc = start(base + f"request_route {{\n\t{call};\n}}\n")
        report.check(f"kamailio refuses to start with {what}, saying why",
                     rc not in (None, 0) and re.search(rx, out) is not None
                     and not re.search(r"(?i)segfault|signal 11", out), out)
    for param, rx in (('"sched_slice_us", 50', r"sched_slice_us must be 0 .* or 100\.\.100000"),
                      ('"sched_nice", -21', r"sched_nice must be -20\.\.19"),
                      ('"sched_fifo_priority", 100',
                       r"sched_fifo_priority must be 0 \(SCHED_OTHER\) or 1\.\.99"),
                      ('"async_queue", 0', r"async_queue must be 1\.\.1048576"),
                      ('"async_direct", 2', r"async_direct must be 0 .* or 1 ")):
        out, rc = start(base + f'modparam("dmbridge", {param})\nrequest_route {{ drop; }}\n')
        report.check(f"kamailio refuses to start with modparam {param}, saying why",
                     rc not in (None, 0) and re.search(rx, out) is not None, out)


def runtime_errors(procs, work):
    """Values only known at run time: an error return (-3 / -1) and a log line, no crash."""
    cfg = os.path.join(work, "rt.cfg")
    head = cfg_head(["tm", "sl", "pv", "xlog", "jsonrpcs"],
                    ['"dmbridge", "bridge_socket", DMB_SOCKET', '"dmbridge", "workers", 1'])
    open(cfg, "w").write(head + """request_route {
	$var(v) = $hdr(X-V);
	if ($hdr(X-Where) == "app") dm_send_request("$var(v)", 301, '[]');
	else if ($hdr(X-Where) == "json") dm_send_request(16777216, 301, "$var(v)");
	else if ($hdr(X-Where) == "ajson") dm_send_request_async(16777216, 301, "$var(v)", "FIN");
	else if ($hdr(X-Where) == "route") {
		dm_send_request_async(16777216, 301, '[]', "$var(v)");
	} else if ($hdr(X-Where) == "reply") dm_send_reply("$var(v)");
	else if ($hdr(X-Where) == "status") {
		jsonrpc_exec('{"jsonrpc":"2.0","method":"dmbridge.status","id":1}');
		xlog("L_NOTICE", "RT status $jsonrpl(body)\n");
	}
	$var(rc) = $rc;
	xlog("L_NOTICE", "RT rc=$var(rc)\\n");
	sl_send_reply("299", "rc=$var(rc)");
}
route[FIN] { t_reply("299", "fin"); }
""")
    port = fm.free_port()
    rundir = os.path.join(work, "run-rt")
    os.makedirs(rundir)
    log = os.path.join(work, "rt.log")
    k = procs.start(kamailio_argv(cfg, port, os.path.join(work, "none.sock"), rundir, "rt",
                                  work), log)
    slow = 10 if VALGRIND else 1
    if not report.check("runtime: kamailio started",
                        fm.wait_for(log, "dmbridge worker 1 started", 20 * slow), fm.log_tail(log)):
        return
    cases = [
        ("app", "abc", "-3", r"app_id \[abc\] is not a decimal number"),
        ("app", "-5", "-3", r"app_id \[-5\] is not a decimal number"),
        ("json", '{"User-Name":"a"}', "-3", r"invalid AVP JSON at offset 0"),
        ("json", "[{", "-3", r"invalid AVP JSON at offset"),
        # the SIP worker's check is the only one before the bridge (the module worker sends
        # with dmb_send_request_async_checked): the script gets -3 and the offset
        ("ajson", '[{"User-Name":"a"}] x', "-3",
         r"dm_send_request_async: invalid AVP JSON at offset 20: trailing"),
        ("route", "NO_SUCH_ROUTE", "-1", r"route \[NO_SUCH_ROUTE\] does not exist"),
        ("reply", "[]", "-1", r"no Diameter request is being handled here"),
        # ... and counted: the RPC dmbridge.status's module counter (no other reply was
        # refused here)
        ("status", "-", "1", r'"replies_refused":\s*1,'),
    ]
    fm.runtime_cases(report, procs, work, "kamailio", k, port, log, cases, slow, VALGRIND)


def main():
    r = subprocess.run(["make", "-s", "-C", os.path.join(top, "module-glue/kamailio")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fm.fail_exit(f"module build\n{r.stdout}{r.stderr}")
    native, kemi = exports()
    report.check(f"export tables parsed: {len(native)} native (name, arity), {len(kemi)} KEMI",
                 len(native) >= 7 and len(kemi) >= 5, f"{native} {kemi}")
    rs = rows(native, kemi)

    def before(procs, work):
        config_errors(work)
        runtime_errors(procs, work)

    def phase(procs, work, uas, sock, bridge):
        ncfg = os.path.join(work, "native.cfg")
        open(ncfg, "w").write(native_cfg(rs, uas.port))
        kcfg_text, lua = kemi_files(rs, uas.port, os.path.join(work, "cases.lua"))
        kcfg = os.path.join(work, "kemi.cfg")
        open(kcfg, "w").write(kcfg_text)
        open(os.path.join(work, "cases.lua"), "w").write(lua)
        suffix = "bridge" if bridge else "nobridge"
        run_rows(procs, rs, "native", ncfg, sock, bridge, work, f"native-{suffix}", uas)
        run_rows(procs, rs, "kemi", kcfg, sock, bridge, work, f"kemi-{suffix}", uas)
        if bridge:
            # the same native rows with the hand-over (async_direct 0): the same outcomes
            hcfg = os.path.join(work, "native-handover.cfg")
            open(hcfg, "w").write(native_cfg(rs, uas.port, [HANDOVER]))
            run_rows(procs, rs, "native", hcfg, sock, bridge, work, "native-bridge-handover",
                     uas)

    def refused(procs, work, uas, sock):
        # the module worker takes the only slot; the SIP worker's attach is refused: its call
        # fails with -3 and the log says the library retries with backoff
        ncfg = os.path.join(work, "native.cfg")
        port = fm.free_port()
        rundir = os.path.join(work, "run-refused")
        os.makedirs(rundir, exist_ok=True)
        log = os.path.join(work, "refused.log")
        k = procs.start(kamailio_argv(ncfg, port, sock, rundir), log)
        if not report.check("refused: module worker attached (the only slot)",
                            fm.wait_for(log, "attached to bridge", 20), fm.log_tail(log)):
            return
        row = next(r for r in rs if r["api"] == "native" and r["name"] == "dm_send_request"
                   and r["arity"] == 3 and r["kind"] == "literal" and r["where"] == "req")
        got, _, status = fm.send_row(port, log, row, 1)
        report.check(f"refused: a SIP worker's dm_send_request -> -3 (got {got})", got == "-3",
                     fm.log_tail(log))
        report.check("refused: the log says the bridge refused and the library backs off",
                     fm.wait_for(log, r"refused by the bridge: .*retrying with backoff, next "
                                 r"attempt in 250 ms", 5), fm.log_tail(log))
        got, _, status = fm.send_row(port, log, row, 1)
        report.check(f"refused: at once again, within the backoff (got {got})", got == "-3",
                     fm.log_tail(log))
        report.check("refused: kamailio still running", k.poll() is None, fm.log_tail(log))
        procs.stop(k)

    fm.run_phases(report, "dmk-functions.", top, before, phase, refused)


if __name__ == "__main__":
    main()
