#!/usr/bin/env python3
"""Every exported script function of the OpenSIPS module, in every arity and parameter kind,
in every route kind OpenSIPS allows it in, sync and async(), with and without a bridge
(issue 16). The list of functions and arities is read from the module's own export tables
(cmds[] and acmds[] in the C source, optional parameters giving the shorter arities): a
function or arity without rows here fails the test.

For each row the generated script calls the function once and logs "CASE <id> rc=<rc>";
async() rows log "FIN <id> result=<$rc>" from their resume route. One SIP request per row
(X-Case, X-Where). Route kinds: request route, failure route and onreply route (the request is
relayed to a small UAS here that answers 486 or 200), the event route of an incoming Diameter
request (injected by the reference bridge; bridge runs only) and an async() resume route.

Also (issue 16 item 3): a function used where OpenSIPS does not allow it makes `opensips -C`
fail; bad literal arguments stop the start with a clear message (fixups run then, `-C` runs
none); values only known at run time give an error return and a log line.

Needs OPENSIPS_SRC: a built OpenSIPS source tree (as tests/opensips/run.sh); skipped without.
usage: OPENSIPS_SRC=... module-glue/opensips/tests/functions.py [--valgrind]
Loopback only, free ports, bounded waits; every process started here is stopped by PID.
"""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(here, "../../common/tests"))
import fnmatrix as fm  # noqa: E402

VALGRIND = "--valgrind" in sys.argv
top = fm.repo_top(here)
report = fm.Report()
src = os.environ.get("OPENSIPS_SRC", "")
if not src or not os.access(os.path.join(src, "opensips"), os.X_OK):
    print("module-glue/opensips/tests/functions.py: SKIPPED - set OPENSIPS_SRC to a built "
          "OpenSIPS source tree")
    sys.exit(0)
src = os.path.abspath(src)
osips = os.path.join(src, "opensips")

ROUTE_FLAGS = {"req": "REQUEST_ROUTE", "resume": "REQUEST_ROUTE", "fail": "FAILURE_ROUTE",
               "reply": "ONREPLY_ROUTE", "event": "EVENT_ROUTE"}


def exports():
    """(name, arity) -> route flags from cmds[]; async (name, arity) from acmds[]."""
    text = "".join(open(f).read() for f in sorted(glob.glob(os.path.join(here, "../*.c"))))

    def arities(body):
        params = re.findall(r"\{(CMD_PARAM_[\w|\s]+),", body)
        req = len([p for p in params if "CMD_PARAM_OPT" not in p])
        return range(req, len(params) + 1)

    native = {}
    for m in re.finditer(r'\{"(\w+)",\s*\(cmd_function\)\w+,\s*\{(.*?)\{0,\s*0,\s*0\}\},'
                         r'\s*([\w|\s]+)\}', text, re.S):
        for a in arities(m.group(2)):
            native[(m.group(1), a)] = set(re.findall(r"\w+_ROUTES?", m.group(3)))
    asyn = set()
    for m in re.finditer(r'\{"(\w+)",\s*\(acmd_function\)\w+,\s*\{(.*?)\{0,\s*0,\s*0\}\}\}',
                         text, re.S):
        for a in arities(m.group(2)):
            asyn.add((m.group(1), a))
    return native, asyn


J = '"[{\\"User-Name\\":\\"alice\\"}]"'
JF = '"[{\\"User-Name\\":\\"$var(user)\\"}]"'
RJ = '"[{\\"Result-Code\\":2001}]"'
RJF = '"[{\\"Result-Code\\":$var(code)}]"'
SYNC = {
    "dm_send_reply": {
        1: {"literal": f"dm_send_reply({RJ})", "variable": "dm_send_reply($var(rjson))",
            "format": f"dm_send_reply({RJF})"},
        2: {"literal": f"dm_send_reply({RJ}, 0)",
            "variable": "dm_send_reply($var(rjson), $var(iserr))",
            "format": f"dm_send_reply({RJF}, $var(iserr))"},
    },
    "dm_send_request": {
        3: {"literal": f"dm_send_request(16777216, 301, {J})",
            "variable": "dm_send_request($var(app), $var(cmd), $var(json))",
            "format": f"dm_send_request(16777216, 301, {JF})"},
        4: {"literal": f"dm_send_request(16777216, 301, {J}, $var(r))",
            "variable": "dm_send_request($var(app), $var(cmd), $var(json), $var(r))",
            "format": f"dm_send_request(16777216, 301, {JF}, $var(r))"},
        5: {"literal": f"dm_send_request(16777216, 301, {J}, $var(r), $var(p))",
            "variable": "dm_send_request($var(app), $var(cmd), $var(json), $var(r), $var(p))",
            "format": f"dm_send_request(16777216, 301, {JF}, $var(r), $var(p))"},
        6: {"literal": f"dm_send_request(16777216, 301, {J}, $var(r), $var(p), $var(w))",
            "variable": "dm_send_request($var(app), $var(cmd), $var(json), $var(r), $var(p), "
                        "$var(w))",
            "format": f"dm_send_request(16777216, 301, {JF}, $var(r), $var(p), $var(w))"},
    },
}
SYNC["dm_send_answer"] = {n: {k: c.replace("dm_send_reply", "dm_send_answer")
                              for k, c in v.items()} for n, v in SYNC["dm_send_reply"].items()}
# async(): the same calls as the sync form, resumed in route[FIN]
ASYNC = {"dm_send_request": SYNC["dm_send_request"]}


def kind_of(name, is_async):
    if "reply" in name or "answer" in name:
        return "reply"
    return "async" if is_async else "sync"


def expected(fkind, where, bridge):
    if fkind == "reply":
        return "1"  # only allowed in event routes, where there is a request to answer
    return "1" if bridge else "-3"


def rows(native, asyn):
    out = []
    for (name, arity), flags in sorted(native.items()):
        calls = SYNC.get(name, {}).get(arity)
        report.check(f"{name}/{arity} (from cmds[]) has a row for every parameter kind",
                     calls is not None and set(calls) == set(fm.KINDS), f"rows: {calls}")
        if calls is None:
            continue
        wheres = [w for w, f in ROUTE_FLAGS.items() if "ALL_ROUTES" in flags or f in flags]
        for kind in fm.KINDS:
            for where in wheres:
                out.append(dict(name=name, arity=arity, kind=kind, where=where,
                                call=calls[kind], fkind=kind_of(name, False)))
    for (name, arity) in sorted((n, a) for n, v in SYNC.items() for a in v):
        report.check(f"row {name}/{arity} names an exported function", (name, arity) in native)
    for (name, arity) in sorted(asyn):
        calls = ASYNC.get(name, {}).get(arity)
        report.check(f"async {name}/{arity} (from acmds[]) has a row for every parameter kind",
                     calls is not None and set(calls) == set(fm.KINDS))
        if calls is None:
            continue
        for kind in fm.KINDS:
            for where in ("req", "resume"):  # async() suspends a request's transaction
                out.append(dict(name=name, arity=arity, kind=kind, where=where, async_=True,
                                call=f"async({calls[kind]}, FIN)", fkind="async"))
    for i, r in enumerate(out, 1):
        r["id"] = i
    return out


def blocks(rs, where):
    out = []
    for r in rs:
        if r["where"] != where:
            continue
        out.append(f'\tif ($var(c) == {r["id"]}) {{\n\t\t$var(r) = "unset"; $var(p) = "unset";'
                   f' $var(w) = "unset";\n\t\t{r["call"]};\n'
                   f'\t\t$var(rc) = $rc;\n\t\txlog("L_NOTICE", "CASE {r["id"]} rc=$var(rc) '
                   f'r=$var(r) peer=$var(p) worker=$var(w)\\n");\n\t}}\n')
    return "".join(out)


def cfg_head(port, sock, extra=""):
    er = 'loadmodule "event_route.so"\n' if os.path.isdir(
        os.path.join(src, "modules/event_route")) else ""
    return f"""log_level=3
stderror_enabled=yes
syslog_enabled=no
udp_workers=1
socket=udp:127.0.0.1:{port}
mpath="{src}/modules/"
loadmodule "proto_udp.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "cachedb_local.so"
{er}loadmodule "dmbridge.so"
modparam("cachedb_local", "cachedb_url", "local://")
modparam("dmbridge", "bridge_socket", "{sock}")
modparam("dmbridge", "request_timeout", 2000)
{extra}"""


VARS = f"""route[VARS] {{
	$var(app) = 16777216; $var(cmd) = 301; $var(json) = {J}; $var(user) = "alice";
	$var(rjson) = {RJ}; $var(code) = 2001; $var(iserr) = 0;
}}
"""


def script(rs, port, sock, uas_port):
    return cfg_head(port, sock) + VARS + f"""
route {{
	route(VARS);
	$var(c) = $(hdr(X-Case){{s.int}});
	if ($hdr(X-Where) == "req") {{
		t_newtran();
{blocks(rs, "req")}		t_reply(299, "done");
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
		t_newtran();
		async(dm_send_request(16777216, 301, {J}), RESUME);
	}}
	if ($hdr(X-Where) == "timeout") {{
		dm_send_request(16777216, {fm.CMD_NEVER_ANSWER}, "[]", $var(r), $var(p), $var(w));
		$var(rc) = $rc;
		xlog("L_NOTICE", "TIMEOUT rc=$var(rc) peer=$var(p) worker=$var(w)\\n");
		sl_send_reply(299, "timeout");
		exit;
	}}
	if ($hdr(X-Where) == "atimeout") {{
		t_newtran();
		$var(p) = "unset"; $var(w) = "unset";
		async(dm_send_request(16777216, {fm.CMD_NEVER_ANSWER}, "[]", $var(r), $var(p), $var(w)),
		      TFIN);
	}}
	if ($hdr(X-Where) == "event") {{
		cache_store("local", "case", "$var(c)");
		dm_send_request(1, {fm.CMD_INJECT}, "[{{\\"inject\\":\\"PPR\\"}}]", $var(inj));
		sl_send_reply(299, "injected $var(inj)");
		exit;
	}}
	sl_send_reply(404, "no such case");
}}

failure_route[FAIL] {{
	route(VARS);
	$var(c) = $(hdr(X-Case){{s.int}});
	if ($hdr(X-Where) != "fail") exit;
{blocks(rs, "fail")}}}

onreply_route[REPLY] {{
	route(VARS);
	$var(c) = $(hdr(X-Case){{s.int}});
{blocks(rs, "reply")}}}

route[RESUME] {{
	route(VARS);
	$var(c) = $(hdr(X-Case){{s.int}});
{blocks(rs, "resume")}	t_reply(299, "resumed");
}}

route[FIN] {{
	$var(res) = $rc;
	xlog("L_NOTICE", "FIN $hdr(X-Case) result=$var(res) r=$var(r) peer=$var(p) worker=$var(w)\\n");
	t_reply(299, "fin");
}}

route[TFIN] {{
	$var(res) = $rc;
	xlog("L_NOTICE", "TFIN result=$var(res) peer=$var(p) worker=$var(w)\\n");
	t_reply(299, "fin");
}}

event_route[E_DM_PPR] {{
	route(VARS);
	cache_fetch("local", "case", $var(cs));
	$var(c) = $(var(cs){{s.int}});
{blocks(rs, "event")}}}
"""


def start(procs, cfg, work, tag):
    log = os.path.join(work, f"{tag}.log")
    argv = [osips, "-F", "-f", cfg, "-w", work]
    if VALGRIND:
        argv = fm.valgrind_prefix(work, tag) + argv
    return procs.start(argv, log), log


def run_rows(procs, rs, cfg_text, bridge, work, tag):
    cfg = os.path.join(work, f"{tag}.cfg")
    open(cfg, "w").write(cfg_text)
    chk = subprocess.run([osips, "-C", "-f", cfg], capture_output=True, text=True)
    if not report.check(f"{tag}: opensips -C accepts the generated script",
                        "config file ok" in chk.stdout + chk.stderr, chk.stdout + chk.stderr):
        return
    k, log = start(procs, cfg, work, tag)
    slow = 10 if VALGRIND else 1
    port = int(re.search(r"socket=udp:127.0.0.1:(\d+)", cfg_text).group(1))
    if not report.check(f"{tag}: opensips started, E_DM_PPR declared",
                        fm.wait_for(log, r"handles command \[PPR\]", 20 * slow), fm.log_tail(log)):
        return
    # the SIP worker is ready when it answers
    for _ in range(50 * slow):
        if fm.sip_request(port, "OPTIONS", ["X-Case: 0", "X-Where: none"], 0.2):
            break
    n = 0
    for r in rs:
        if r["where"] == "event" and not bridge:
            continue
        n += 1
        pos = fm.log_size(log)
        got, var, status = fm.send_row(port, log, r, slow)
        exp = expected(r["fkind"], r["where"], bridge)
        label = (f"{tag}: {'async ' if r['fkind'] == 'async' else ''}{r['name']}/{r['arity']} "
                 f"{r['kind']} in {r['where']} route -> {exp}")
        ok = got == exp
        detail = f"got {got}, SIP reply {status}\n{fm.log_tail(log)}"
        # the reply variable: the answer's AVPs, NULL (printed empty) when not sent, untouched
        # ("unset") by the 3-parameter form
        if ok and r["name"] == "dm_send_request":
            want_r = "unset" if r["arity"] == 3 else ('[{"User-Name":"alice"}]' if bridge
                                                     else "")
            ok = var == want_r
            detail = f"reply variable {var!r}, expected {want_r!r}\n" + detail
            label += f", reply variable {want_r}"
        report.check(label, ok, detail)
        if ok and r["name"] == "dm_send_request":
            # peer_us_pv: the bridge's wait for the peer, after the call and in the resume route
            peer = fm.peer_of(log, r, pos, slow)
            if r["arity"] >= 5:
                fm.check_peer(report, label, peer, bridge)
            else:
                report.check(f"{label}: no peer variable, untouched (got {peer})",
                             peer == "unset")
            # worker_us_pv: libdmbridge's round trip, > 0 and >= the peer wait when answered
            worker = fm.worker_of(log, r, pos, slow)
            if r["arity"] == 6:
                fm.check_worker(report, label, peer, worker, bridge)
            else:
                report.check(f"{label}: no library round trip variable, untouched (got "
                             f"{worker})", worker == "unset")
    if bridge:
        pos = fm.log_size(log)
        fm.check_timeouts(report, tag, port, log, slow, "peer_us_pv")
        fm.check_timeout_workers(report, tag, log, slow, pos, "worker_us_pv")
    alive = k.poll() is None
    text = open(log, errors="replace").read()
    crash = re.search(r"(?i)segfault|signal 11|core dump|exited by a signal|"
                      r"child process \d+ exited", text)
    report.check(f"{tag}: {n} rows run, opensips still running, no crash in its log",
                 alive and not crash, crash.group(0) if crash else fm.log_tail(log))
    procs.stop(k, timeout=60 if VALGRIND else 10)
    if VALGRIND:
        fm.valgrind_check(report, work, tag, n)


BAD_AT_START = [
    ("app id text that is not a number", f'dm_send_request("abc", 301, {J});',
     r"(?i)param \[?1\]?|expected.*int|not a number|abc"),
    ("reply variable not writable", f"dm_send_request(16777216, 301, {J}, $ci);",
     r"dm_send_request: reply variable.*read-only"),
    ("request JSON literal that is not an array",
     'dm_send_request(16777216, 301, "{\\"User-Name\\":\\"a\\"}");',
     r"dm_send_request: invalid AVP JSON at offset 0"),
    # OpenSIPS itself starts with it, and a worker died resuming into it
    ("async resume route that does not exist",
     f"t_newtran(); async(dm_send_request(16777216, 301, {J}), NO_SUCH_ROUTE);",
     r"async\(dm_send_request\(\.\.\.\), NO_SUCH_ROUTE\) in .* route\[NO_SUCH_ROUTE\] does "
     r"not exist"),
]


def config_errors(work):
    cfg = os.path.join(work, "bad.cfg")
    head = cfg_head(fm.free_port(), "/nonexistent") + "route[FIN] { exit; }\n"
    open(cfg, "w").write(head + f"route {{\n\tdm_send_reply({RJ});\n}}\n")
    r = subprocess.run([osips, "-C", "-f", cfg], capture_output=True, text=True)
    out = r.stdout + r.stderr
    report.check("opensips -C refuses dm_send_reply outside an event route",
                 r.returncode != 0 and "config file ok" not in out, out)
    log = os.path.join(work, "bad.log")
    for what, call, rx in BAD_AT_START:
        open(cfg, "w").write(head + f"route {{\n\t{call}\n}}\n")
        with open(log, "wb") as f:
            p = subprocess.Popen([osips, "-F", "-f", cfg, "-w", work], stdout=f,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        # Waits for the main process only, not for the end of its output: OpenSIPS 3.6.8 may
        # leave its time_keeper and timer processes running after a child_init failure. When
        # the failed child's status code reaches the main process before its SIGCHLD, main()'s
        # error path sends them SIGTERM without marking the core as terminating, and children
        # ignore SIGTERM outside that state (signals.c): they never exit. (When SIGCHLD comes
        # first, shutdown_opensips() stops them and the status is 0.) Those leftovers are
        # killed below with the rest of the process group.
        try:
            rc = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            rc = None
        try:
            os.killpg(p.pid, 0)
            os.killpg(p.pid, signal.SIGKILL)
            print(f"# {what}: OpenSIPS's main process {'exited' if rc is not None else 'ran'}"
                  " with processes of its group still running (killed)", flush=True)
        except ProcessLookupError:
            pass
        if rc is None:
            p.wait()
        out = open(log, errors="replace").read()
        if rc is None:
            out = "still running after 20 s\n" + out
        # stopped by itself, saying why
        report.check(f"opensips refuses to start with {what}, saying why",
                     rc is not None and re.search(rx, out) is not None
                     and not re.search(r"(?i)segfault|signal 11", out), out)


def runtime_errors(procs, work):
    port = fm.free_port()
    cfg = os.path.join(work, "rt.cfg")
    open(cfg, "w").write(cfg_head(port, os.path.join(work, "none.sock")) + """
route {
	$var(v) = $hdr(X-V);
	if ($hdr(X-Where) == "app") {
		$var(a) = $(var(v){s.int});
		dm_send_request($var(a), 301, "[]");
	} else if ($hdr(X-Where) == "json") dm_send_request(16777216, 301, $var(v));
	$var(rc) = $rc;
	xlog("L_NOTICE", "RT rc=$var(rc)\\n");
	sl_send_reply(299, "rc=$var(rc)");
}
""")
    k, log = start(procs, cfg, work, "rt")
    slow = 10 if VALGRIND else 1
    for _ in range(50 * slow):
        if fm.sip_request(port, "OPTIONS", ["X-Where: none"], 0.2):
            break
    cases = [
        ("app", "-5", "-3", r"app_id and cmd_code must be"),
        ("json", '{"User-Name":"a"}', "-3", r"invalid AVP JSON at offset 0"),
        ("json", "[{", "-3", r"invalid AVP JSON at offset"),
    ]
    fm.runtime_cases(report, procs, work, "opensips", k, port, log, cases, slow, VALGRIND)


def build_module():
    if not os.path.exists(os.path.join(top, "target/release/libdmbridge.a")):
        r = subprocess.run(["cargo", "build", "--release", "-q", "-p", "dmbridge-cabi"],
                           cwd=top, capture_output=True, text=True)
        if r.returncode != 0:
            fm.fail_exit(f"libdmbridge build\n{r.stderr}")
    dst = os.path.join(src, "modules/dmbridge")
    os.makedirs(dst, exist_ok=True)
    for f in glob.glob(os.path.join(dst, "*.[chod]")):  # an older module version, its deps
        os.unlink(f)
    for f in glob.glob(os.path.join(top, "module-glue/opensips/*")):
        if os.path.isfile(f):
            shutil.copy(f, dst)
    open(os.path.join(dst, "dmbridge-top.mk"), "w").write(f"DMB_TOP := {top}\n")
    r = subprocess.run(["make", "-C", src, "modules", "module=dmbridge"], capture_output=True,
                       text=True)
    if r.returncode != 0:
        fm.fail_exit(f"module build\n{r.stdout[-3000:]}{r.stderr[-3000:]}")


def main():
    build_module()
    native, asyn = exports()
    report.check(f"export tables parsed: {len(native)} sync (name, arity), {len(asyn)} async",
                 len(native) >= 6 and len(asyn) >= 2, f"{native} {asyn}")
    rs = rows(native, asyn)

    def before(procs, work):
        config_errors(work)
        runtime_errors(procs, work)

    def phase(procs, work, uas, sock, bridge):
        run_rows(procs, rs, script(rs, fm.free_port(), sock, uas.port), bridge, work,
                 "bridge" if bridge else "nobridge")

    def refused(procs, work, uas, sock):
        # two SIP workers, one slot: one of them is refused in child_init; the log says the
        # library retries with backoff, and OpenSIPS keeps serving SIP
        port = fm.free_port()
        cfg = os.path.join(work, "refused.cfg")
        open(cfg, "w").write(script(rs, port, sock, uas.port).replace("udp_workers=1",
                                                                     "udp_workers=2"))
        k, log = start(procs, cfg, work, "refused")
        report.check("refused: the log says the bridge refused a worker and the library backs "
                     "off", fm.wait_for(log, r"refused by the bridge: .*retrying with backoff",
                                        20), fm.log_tail(log))
        st = None
        for _ in range(50):
            st = fm.sip_request(port, "OPTIONS", ["X-Case: 0", "X-Where: none"], 0.2)
            if st:
                break
        report.check(f"refused: SIP still served (got {st})", st is not None, fm.log_tail(log))
        report.check("refused: opensips still running", k.poll() is None, fm.log_tail(log))
        procs.stop(k)

    fm.run_phases(report, "dmo-functions.", top, before, phase, refused)


if __name__ == "__main__":
    main()
