"""Shared parts of the per-server script-function matrix tests (issue 16).

Each server's test (module-glue/kamailio/tests/functions.py, module-glue/opensips/tests/
functions.py) derives the list of script functions and arities from its module's own export
table (the C source), checks that its table of test rows covers every one of them in every
parameter kind, generates a script with one block per row in every route kind the server
allows, runs the real server (optionally under valgrind) with and without a bridge (shm's
reference bridge, the echo_bridge example), drives each row with one SIP request and checks the
return code the row logged and that the server is still alive.

This file holds what does not depend on the server: processes, ports, the SIP client and the
SIP UAS the failure/onreply routes relay to, the reference bridge, log waiting, the report.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

KINDS = ("literal", "variable", "format")

# What the reference bridge (dmshm::reference) does with the command codes the rows use.
APP = 16777216
CMD_ECHO = 301  # answered 2001 with the AVPs echoed: class 1
CMD_NEVER_ANSWER = 999001  # never answered: the request times out (class -2)
CMD_INJECT = 999003  # makes the bridge dispatch app_id incoming requests of the named command


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print(f"ok - {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL - {name}", flush=True)
            for line in str(detail).splitlines()[-30:]:
                print(f"    {line}")
        return cond

    def done(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 else 1


def free_port(kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Procs:
    """Every process started here, stopped by PID (also on failure: use as a context manager)."""

    def __init__(self):
        self.procs = []

    def start(self, argv, log_path, **kw):
        f = open(log_path, "wb")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, timeout=10):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                # the whole group: kamailio's and opensips's children share it
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        for p in list(self.procs):
            self.stop(p)


def wait_for(path, pattern, timeout, start=0):
    """Waits until the file (from byte offset start) matches the regex; returns the match.

    Only complete lines are searched: a reader can see a line the server is still writing
    (a write that crosses a page boundary becomes visible in parts), and a pattern with an
    optional tail ("CASE 7 rc=1( r=...)?") would then match without it. The likely cause of
    a failure seen once in the Kamailio matrix (session 17): rc 1 read, its reply variable
    not."""
    rx = re.compile(pattern)
    end = time.time() + timeout
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read()
                m = rx.search(data[:data.rfind(b"\n") + 1].decode(errors="replace"))
                if m:
                    return m
        except FileNotFoundError:
            pass
        if time.time() >= end:
            return None
        time.sleep(0.05)


def log_size(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def sip_request(port, method, headers, timeout=5.0):
    """Sends one SIP request over UDP and returns the final reply's status line (or None)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    me = s.getsockname()[1]
    lines = [
        f"{method} sip:bob@test.local SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{me}-{time.monotonic_ns()}",
        "Max-Forwards: 70",
        "From: <sip:alice@test.local>;tag=1",
        "To: <sip:bob@test.local>",
        f"Call-ID: {me}-{time.monotonic_ns()}@test",
        f"CSeq: 1 {method}",
        f"Contact: <sip:alice@127.0.0.1:{me}>",
    ] + headers + ["Content-Length: 0", "", ""]
    s.sendto("\r\n".join(lines).encode(), ("127.0.0.1", port))
    try:
        while True:
            data, _ = s.recvfrom(65535)
            line = data.decode(errors="replace").split("\r\n", 1)[0]
            if not line.startswith("SIP/2.0 1"):
                return line
    except socket.timeout:
        return None
    finally:
        s.close()


class Uas(threading.Thread):
    """A SIP UAS for relayed requests: 486 when the request has X-Fail (failure routes), else
    200; copies X-Case into the reply (onreply routes read it there)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False

    def run(self):
        while not self.stopping:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            text = data.decode(errors="replace")
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")
            if not head or head[0].startswith("SIP/2.0") or head[0].startswith("ACK"):
                continue
            keep = [h for h in head[1:] if re.match(r"(?i)(via|from|to|call-id|cseq|x-case):", h)]
            code = "486 Busy Here" if any(h.lower().startswith("x-fail:") for h in head) \
                else "200 OK"
            to = [h for h in keep if h.lower().startswith("to:")]
            out = [f"SIP/2.0 {code}"] + [h if h not in to else h + ";tag=uas" for h in keep]
            out += ["Content-Length: 0", "", ""]
            self.sock.sendto("\r\n".join(out).encode(), addr)

    def close(self):
        self.stopping = True
        self.sock.close()


def repo_top(here):
    return subprocess.check_output(["git", "-C", here, "rev-parse", "--show-toplevel"],
                                   text=True).strip()


def build_echo_bridge(top, work):
    """Builds shm's reference bridge; returns its path or None (with the log)."""
    exe = os.path.join(top, "target/release/examples/echo_bridge")
    r = subprocess.run(["cargo", "build", "--release", "-q", "-p", "dmbridge-shm", "--example",
                        "echo_bridge"], cwd=top, capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(exe):
        return None, r.stdout + r.stderr
    return exe, ""


def start_echo_bridge(procs, exe, work, tag, slots=16):
    sock = os.path.join(work, f"ref-{slots}.sock")
    seg = f"/dev/shm/dmb-fnmatrix-{tag}-{slots}-{os.getpid()}"
    log = os.path.join(work, f"ref-bridge-{slots}.log")
    p = procs.start([exe, sock, seg, str(slots)], log)
    ok = wait_for(log, "listening on", 10) is not None
    return p, sock, seg, log, ok


def valgrind_prefix(work, name):
    """valgrind for a forking server (forks without exec are followed): every process's report
    in its own file; leaks are reported but not counted as errors (valgrind_summary sorts
    them)."""
    return ["valgrind", "--error-exitcode=0", "--leak-check=full", "--show-leak-kinds=definite",
            "--errors-for-leak-kinds=none", "--track-origins=no", "--num-callers=40",
            "--child-silent-after-fork=no", f"--log-file={work}/vg-{name}.%p"]


OURS = re.compile(r"dmbridge|libdmbridge|\b(dmk|dmo|dmg|dmb)_\w+|dmshm|dmbridge_cabi")


GENERIC = re.compile(r"\b(malloc|calloc|realloc|memalign|posix_memalign|strdup|__rust_\w+|"
                     r"alloc::|core::|std::|hashbrown::|<alloc|<core|<std|<hashbrown)")


def allocated_by_us(record):
    """Whose code allocated a lost block: the first stack frame that is not an allocator or
    Rust's standard library (a leak of another module in a process we forked is not ours)."""
    for frame in re.findall(r"(?:at|by) 0x[0-9A-F]+: (.*)", record):
        if not GENERIC.search(frame):
            return OURS.search(frame) is not None
    return False


def valgrind_summary(work, name):
    """Sums the valgrind reports of one run: errors (invalid reads/writes/frees, uses of
    uninitialised values), bytes definitely lost in blocks allocated under the module or
    libdmbridge, bytes definitely lost elsewhere (the server and its other modules), the
    number of process reports, and the first error or own leak's text."""
    errors = ours = others = files = 0
    first = ""
    for f in sorted(os.listdir(work)):
        if not f.startswith(f"vg-{name}."):
            continue
        files += 1
        text = open(os.path.join(work, f), errors="replace").read()
        m = re.findall(r"ERROR SUMMARY: (\d+) errors", text)
        if m:
            errors += int(m[-1])
        for rec in re.split(r"\n==\d+== \n", text):
            lm = re.search(r"([\d,]+) bytes in [\d,]+ blocks are definitely lost", rec)
            if not lm:
                continue
            n = int(lm.group(1).replace(",", ""))
            if allocated_by_us(rec):
                ours += n
                first = first or f"{f}:\n{rec}"
            else:
                others += n
        if not first:
            e = re.search(r"==\d+== (Invalid (read|write|free)|Conditional jump|Syscall param"
                          r"|Use of uninitialised|Mismatched free)[\s\S]{0,1500}", text)
            if e:
                first = f"{f}:\n{e.group(0)}"
    return errors, ours, others, files, first


def valgrind_check(report, work, tag, requests):
    """One check per valgrind run: no errors, nothing lost under our code; prints the counts."""
    errors, ours, others, files, first = valgrind_summary(work, tag)
    print(f"# valgrind {tag}: {requests} requests, {files} process reports, {errors} errors, "
          f"{ours} bytes definitely lost under the module/libdmbridge, {others} elsewhere")
    report.check(f"{tag}: valgrind: no invalid reads/writes or other errors ({errors}), "
                 f"nothing lost under the module or libdmbridge ({ours} bytes)",
                 errors == 0 and ours == 0, first)


def log_tail(path, n=30):
    try:
        return "".join(open(path, errors="replace").readlines()[-n:])
    except FileNotFoundError:
        return ""


def send_row(port, log, row, slow):
    """Sends a row's SIP request and waits for its log line: (value, reply variable or None,
    SIP status). Sync rows log "CASE <id> rc=<rc>[ r=<var>]", async rows "FIN <id>
    result=<rc>[ r=<var>]"."""
    pos = log_size(log)
    hdrs = [f"X-Case: {row['id']}", f"X-Where: {row['where']}"]
    if row["where"] == "fail":
        hdrs.append("X-Fail: 1")
    status = sip_request(port, "OPTIONS", hdrs, timeout=5 * slow)
    what, key = ("FIN", "result") if row["fkind"] == "async" else ("CASE", "rc")
    m = wait_for(log, rf"{what} {row['id']} {key}=(\S+)(?: r=(\S*))?", 5 * slow, pos)
    return (m.group(1), m.group(2), status) if m else (None, None, status)


def peer_of(log, row, pos, slow):
    """The peer wait (microseconds) a row's log line printed after "peer=": the script's view
    of the bridge's wait for the peer (record version 3); None when the line has none. `pos`:
    the log's size before the row's request was sent."""
    what = "FIN" if row["fkind"] == "async" else "CASE"
    m = wait_for(log, rf"{what} {row['id']} \S+.*? peer=(\S+)", 2 * slow, pos)
    return m.group(1) if m else None


def check_peer(report, label, peer, bridge):
    """An answered request (the reference bridge plays the peer) shows a peer wait > 0; one
    not sent (no bridge) shows 0."""
    ok = peer is not None and peer.isdigit() and (int(peer) > 0 if bridge else peer == "0")
    report.check(f"{label}: peer wait {'> 0' if bridge else '0'} (got {peer})", ok)


def worker_of(log, row, pos, slow):
    """The library's round trip (microseconds) a row's log line printed after "worker=" (the
    script's view of dmb_answer_worker_ns); None when the line has none. `pos`: the log's size
    before the row's request was sent."""
    what = "FIN" if row["fkind"] == "async" else "CASE"
    m = wait_for(log, rf"{what} {row['id']} \S+.*? worker=(\S+)", 2 * slow, pos)
    return m.group(1) if m else None


def check_worker(report, label, peer, worker, bridge):
    """The library's round trip: > 0 for an answered request (the reference bridge plays the
    peer), and at least the peer wait (it includes the bridge's wait for the peer; both are
    rounded up the same way); 0 for one not sent (no bridge: an outcome the module or the
    library made)."""
    ok = worker is not None and worker.isdigit()
    if ok and bridge:
        ok = int(worker) > 0 and peer is not None and peer.isdigit() and int(peer) <= int(worker)
    elif ok:
        ok = worker == "0"
    want = "> 0 and >= peer wait" if bridge else "0"
    report.check(f"{label}: library round trip {want} (got {worker}, peer {peer})", ok)


def check_timeout_workers(report, tag, log, slow, pos, var):
    """After check_timeouts (`pos`: the log's size before it), the "worker=<v>" its two lines
    printed (`var`, the script's library round trip): a timeout the bridge answers is a round
    trip through the library (about the request timeout), one the library makes itself (the
    bridge late) is 0: either is a number."""
    for what in ("TIMEOUT", "TFIN"):
        m = wait_for(log, rf"{what} \S+ peer=\S+ worker=(\S+)", 2 * slow, pos)
        got = m.group(1) if m else None
        report.check(f"{tag}: a request timing out ({what}) -> {var} a number (got {got})",
                     got is not None and got.isdigit(), log_tail(log))


def check_timeouts(report, tag, port, log, slow, var):
    """A request the peer never answers (the scripts' X-Where "timeout": sync, logging "TIMEOUT
    rc=<rc> peer=<v>"; "atimeout": async, its resume route logging "TFIN result=<rc>
    peer=<v>"): -2, and `var` (the script's peer wait) 0, no wait for a peer to show."""
    for where, rx in (("timeout", r"TIMEOUT rc=(\S+) peer=(\S+)"),
                      ("atimeout", r"TFIN result=(\S+) peer=(\S+)")):
        pos = log_size(log)
        sip_request(port, "OPTIONS", [f"X-Where: {where}"], timeout=5 * slow)
        m = wait_for(log, rx, 5 * slow, pos)
        got = m.groups() if m else None
        report.check(f"{tag}: a request timing out ({where}) -> -2, {var} 0 (got {got})",
                     got == ("-2", "0"), log_tail(log))


def run_phases(report, prefix, top, before, phase, refused=None):
    """The skeleton of a matrix test: a work directory, the UAS, `before(procs, work)`, then
    `phase(procs, work, uas, socket, bridge)` without a bridge and with the reference bridge,
    then `refused(procs, work, uas, socket)` with a reference bridge of one slot (a second
    process is refused); everything stopped at the end, also on failure. Exits with the
    report's status."""
    work = tempfile.mkdtemp(prefix=prefix)
    uas = Uas()
    uas.start()
    try:
        with Procs() as procs:
            before(procs, work)
            phase(procs, work, uas, os.path.join(work, "no-such-bridge.sock"), False)
            exe, blog = build_echo_bridge(top, work)
            if report.check("reference bridge (echo_bridge example) builds", exe, blog):
                p, sock, seg, rlog, ok = start_echo_bridge(procs, exe, work, prefix.strip("."))
                if report.check("reference bridge starts", ok, log_tail(rlog)):
                    phase(procs, work, uas, sock, True)
                procs.stop(p)
                for f in (sock, seg):
                    if os.path.exists(f):
                        os.unlink(f)
                if refused is not None:
                    p, sock, seg, rlog, ok = start_echo_bridge(procs, exe, work,
                                                               prefix.strip("."), slots=1)
                    if report.check("reference bridge with one slot starts", ok,
                                    log_tail(rlog)):
                        refused(procs, work, uas, sock)
                    procs.stop(p)
                    for f in (sock, seg):
                        if os.path.exists(f):
                            os.unlink(f)
    finally:
        uas.close()
        code = report.done()
        if code == 0 or not os.environ.get("KEEP_WORK"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    sys.exit(code)


def runtime_cases(report, procs, work, server, proc, port, log, cases, slow, valgrind):
    """Runs (where, value, rc, log regex) cases against a script that calls a function with
    X-V as an argument chosen by X-Where and answers "299 rc=<rc>"; then checks the server is
    alive, stops it and, under valgrind, checks its reports."""
    for where, val, rc, rx in cases:
        pos = log_size(log)
        st = sip_request(port, "OPTIONS", [f"X-Where: {where}", f"X-V: {val}"], 5 * slow)
        ok = st == f"SIP/2.0 299 rc={rc}" and wait_for(log, rx, 3 * slow, pos) is not None
        report.check(f"runtime: {where} = {val!r} -> {rc} and a log line /{rx}/", ok,
                     f"got {st}\n{log_tail(log)}")
    report.check(f"runtime: {server} still running", proc.poll() is None, log_tail(log))
    procs.stop(proc, timeout=60 if valgrind else 10)
    if valgrind:
        valgrind_check(report, work, "rt", len(cases))


def fail_exit(msg):
    print(f"FAIL - {msg}")
    print("0 passed, 1 failed")
    sys.exit(1)


if __name__ == "__main__":
    # python3 module-glue/common/tests/fnmatrix.py DIR: the counts of the valgrind reports a
    # run left in DIR (vg-<name>.<pid> files: DMB_VALGRIND_DIR, OPENSIPS_VALGRIND_DIR)
    if len(sys.argv) != 2:
        print("usage: fnmatrix.py VALGRIND_REPORT_DIR", file=sys.stderr)
        sys.exit(2)
    names = sorted({f.split(".")[0][3:] for f in os.listdir(sys.argv[1]) if f.startswith("vg-")})
    bad = 0
    for n in names:
        errors, ours, others, files, first = valgrind_summary(sys.argv[1], n)
        print(f"{n}: {files} process reports, {errors} errors, {ours} bytes definitely lost "
              f"under the module/libdmbridge, {others} elsewhere")
        if errors or ours:
            bad = 1
            print(first)
    sys.exit(bad)
