#!/usr/bin/env bash
# Instructions per request on the incoming path, per process, counted by valgrind's callgrind:
# a count of executed instructions does not move with the load of a shared machine, so two
# builds (or two stacks) compare where wall-clock rates cannot. Each stack answers the same
# freeDiameter test_app requests from `dmbridge bench` (closed loop, 100 in flight):
#   echo      `dmbridge run --echo` (the node answering in process)
#   kamailio  `dmbridge run` + Kamailio with dmbridge.so running tests/kamailio/bench-echo.cfg
#             (the route of scripts/bench-kamailio.sh)
#   ims       Kamailio cdp + ims_diameter_server (../shared/peers/kamailio-ims, string
#             transformations route), the anchor of the same race
#   originate the originate path instead (issue 15 item 1): sipp sends SIP MESSAGEs (100 in
#             flight, no retransmissions) to Kamailio with dmbridge.so running
#             tests/kamailio/bench-originate.cfg's async route (ORIGINATE_USER, default
#             async-ta: dm_send_request_async of a test_app Test-Request, t_suspend, resumed
#             on the answer); `dmbridge run` sends it to the freeDiameter 1.2.1 test_app
#             server (not under callgrind). Counted per SIP call: bridge and Kamailio.
#   originate-opensips
#             the same with OpenSIPS instead of Kamailio (needs OPENSIPS_SRC, a built
#             OpenSIPS 3.4-4.0 source tree with signaling sl tm sipmsgops json; the dmbridge
#             module is built there as tests/opensips/run.sh does): tests/opensips/
#             bench-originate.cfg's async-ta route, async(dm_send_request(...)) resumed in the
#             SIP worker that sent it (4 UDP workers). Counted per SIP call: bridge and OpenSIPS.
# Every process of a stack runs under callgrind, twice: once answering WARMUP + COUNT requests,
# once answering WARMUP only; each process writes its instruction total when it exits, and
# (first run - second run) / COUNT is the cost of one request, start-up and shut-down
# cancelled out (callgrind_control cannot reach Kamailio's forked children while they sleep
# in poll(2), so the counters are not zeroed in place).
#
# usage: scripts/bench-instructions.sh [COUNT (20000)] [STACKS ("echo kamailio ims")]
# (`originate` is not in the default list: name it, e.g. `scripts/bench-instructions.sh 5000 originate`)
# OPENSIPS_SRC: for originate-opensips (its dmbridge.so is built from this checkout's
# module-glue/opensips, or copied from OS_DMB_SO, a module built elsewhere).
# DMBRIDGE_BIN / DMB_LIBDIR: another dmbridge / libdmbridge.a (before/after comparisons).
# DMB_SO: a Kamailio dmbridge.so built elsewhere (the module's C of another commit, e.g. the
# "before" of a change to module-glue/), instead of building this tree's into target/.
# KAMAILIO_OPTS: more options for the originate stack's Kamailio, e.g. "-x tlsf" (its
# shared-memory allocator; q_malloc by default). OPENSIPS_OPTS: the same for originate-opensips,
# e.g. "-a HP_MALLOC" (its allocator for every memory pool; F_MALLOC by default).
# ASYNC_DIRECT=0|1: the originate stack's async_direct (Kamailio module; unset: its default):
# 1 the SIP workers send the requests themselves, 0 the module's workers do (the hand-over).
# ORIGINATE_USER: the route of the originate stacks (default async-ta; none-tm-ta is the
# SIP-only ceiling's route: t_newtran + t_reply, no Diameter).
# Every line also has "per_role": instructions per request by process role, each role's
# processes together (bridge; dmk: Kamailio's dmbridge workers; sip: the SIP workers; other),
# told apart by a function each role runs (dmk_worker_main, udp_rcv_loop); the callgrind files
# stay in the work directory for callgrind_annotate.
# STRACE=1: count system calls instead (strace -ff on the SIP server only, the bridge untraced):
# per role, each system call's count per request (full run - baseline run) / COUNT. Under
# strace every call is slower, so a process batches differently than untraced: compare two
# builds traced alike, not a traced run with an untraced one.
# BRIDGE_EXTRA_TOML: appended to the bridge's configuration (PORT replaced by a free port),
# e.g. $'[metrics]\nlisten = "127.0.0.1:PORT"' to count with metrics on.
# Slow (valgrind runs everything ~50x slower): about a minute per stack for 20000 requests.
# Loopback only, free ports; stops what it started by PID.
set -euo pipefail
exec </dev/null
count=${1:-20000}
stacks=${2:-echo kamailio ims}
warmup=${WARMUP:-2000}
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
shared=${DMBRIDGE_SHARED:-$top/../shared}
dmb=${DMBRIDGE_BIN:-$top/target/release/dmbridge}
libdir=${DMB_LIBDIR:-$top/target/release}
kmod="$top/target/kamailio-module"
so=${DMB_SO:-$kmod/dmbridge.so}
work=$(mktemp -d /tmp/dmb-bench-instr.XXXXXX)
bench_name=bench-instructions
shm_name="dmb-bench-instr-$$"
. "$top/scripts/bench-lib.sh"

if [ ! -x "$dmb" ] || [ ! -f "$libdir/libdmbridge.a" ]; then
  log "building dmbridge and libdmbridge (release)"
  (cd "$top" && cargo build --release -q -p dmbridge-bridge -p dmbridge-cabi)
fi
case " $stacks " in
  *" echo "* | *" kamailio "* | *" originate "*)
    [ -n "${DMB_SO:-}" ] || make -s -C "$top/module-glue/kamailio" OUT="$kmod" DMB_LIBDIR="$libdir" >/dev/null ;;
esac
os_src=""
case " $stacks " in
  *" originate-opensips "*)
    if [ -z "${OPENSIPS_SRC:-}" ] || [ ! -x "${OPENSIPS_SRC}/opensips" ] \
        || [ ! -f "${OPENSIPS_SRC}/Makefile.modules" ]; then
      log "originate-opensips needs OPENSIPS_SRC (a built OpenSIPS source tree)"; exit 1
    fi
    os_src=$(cd "$OPENSIPS_SRC" && pwd)
    # the module in that tree, as scripts/bench-originate.sh builds it (OpenSIPS itself never)
    mkdir -p "$os_src/modules/dmbridge"
    rm -f "$os_src"/modules/dmbridge/*.[chod] "$os_src"/modules/dmbridge/dmbridge.so
    cp "$top"/module-glue/opensips/{Makefile,*.c,*.h,README.md} "$os_src/modules/dmbridge/"
    echo "DMB_TOP := $top" >"$os_src/modules/dmbridge/dmbridge-top.mk"
    if [ -n "${OS_DMB_SO:-}" ]; then
      cp "$OS_DMB_SO" "$os_src/modules/dmbridge/dmbridge.so"
    else
      make -C "$os_src" modules module=dmbridge DMB_LIB="$libdir/libdmbridge.a" \
        >"$work/os-module-build.log" 2>&1 \
        || { log "building the dmbridge module in $os_src failed"; tail -n 20 "$work/os-module-build.log" >&2; exit 1; }
    fi
    ;;
esac

cg() { # out-prefix command... : run under callgrind (exec: started with &, $! is its pid)
  if [ "${STRACE:-0}" = 1 ]; then
    exec strace -ff -qq -o "$1.st" "${@:2}"
  fi
  exec valgrind --tool=callgrind --callgrind-out-file="$1.%p" "${@:2}"
}
cgb() { # the same for the bridge: with STRACE=1 it runs untraced (the SIP server is counted)
  if [ "${STRACE:-0}" = 1 ]; then
    exec "${@:2}"
  fi
  cg "$@"
}
bench() { # port origin-host count
  "$dmb" bench --connect "127.0.0.1:$1" --template "$top/cfg-examples/bench/test_app.json" \
    --origin-host "$2" --app-vendor 999999 --concurrency 100 --count "$3" --timeout-ms 60000 \
    --connect-timeout-ms 60000 --json --quiet
}
# instruction totals of the processes whose callgrind files start with prefix: bridge pid ->
# "bridge others"
totals() { # prefix bridge-pid
  local f b=0 o=0 n
  for f in "$1".*; do
    [ -e "$f" ] || continue
    n=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$f" | head -n1)
    [ -n "$n" ] || continue
    if [ "${f##*.}" = "$2" ]; then b=$((b + n)); else o=$((o + n)); fi
  done
  echo "$b $o"
}

# instruction totals per process role of the files starting with prefix, as JSON
# {role: [instructions, processes]}: bridge (bridge-pid), dmk (a Kamailio dmbridge worker:
# dmk_worker_main ran there), sip (a SIP worker: udp_rcv_loop), other (main, timers, ctl, ...)
role_totals() { # prefix bridge-pid
  python3 - "$1" "$2" <<'PY'
import glob, json, re, sys
prefix, bpid = sys.argv[1], sys.argv[2]
out = {}
for f in glob.glob(prefix + ".*"):
    if not re.fullmatch(r"\d+", f.rsplit(".", 1)[1]):
        continue
    text = open(f, errors="replace").read()
    m = re.search(r"^totals: (\d+)", text, re.M)
    if not m:
        continue
    if f.rsplit(".", 1)[1] == bpid:
        role = "bridge"
    elif "dmk_worker_main" in text:
        role = "dmk"
    elif "udp_rcv_loop" in text:
        role = "sip"
    else:
        role = "other"
    n, c = out.get(role, [0, 0])
    out[role] = [n + int(m.group(1)), c + 1]
print(json.dumps(out))
PY
}

stop() { # pids: TERM, then wait until they are gone (callgrind writes its totals on exit)
  local p
  if [ "${STRACE:-0}" = 1 ]; then # the traced program, a child of strace, exits first
    for p in "$@"; do pkill -TERM -P "$p" 2>/dev/null || true; done
    sleep 2
  fi
  kill "$@" 2>/dev/null || true
  for p in "$@"; do
    for _ in $(seq 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
}

# the freeDiameter test_app server the originate stack's bridge sends to (once, not counted)
fd_pid="" fd_port="" sip_port=""
start_fd() {
  [ -z "$fd_pid" ] || return 0
  fd_port=$(free_port)
  mkdir -p "$work/fd"
  cp "$top/build/deps/fd/test_app.fdx" "$top/build/deps/fd/bind_lo.so" "$work/fd/"
  sh "$shared/peers/freediameter/run.sh" server "$work/fd" "$fd_port"
  fd_pid=$(cat "$work/fd/server.pid"); pids+=("$fd_pid")
  for _ in $(seq 100); do
    python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$fd_port)))" && break
    sleep 0.1
  done
}
# sipp_calls COUNT IN_FLIGHT RECV_TIMEOUT_MS: COUNT SIP MESSAGEs through the originate route, every one
# answered 200 with a 2xxx X-Result (tests/kamailio/bench-originate.xml), no retransmissions
# (-nr: under callgrind an answer may take longer than sipp's 500 ms timer, and a retransmission
# would add work to one run only); fails unless every call succeeded
sipp_calls() {
  (cd "$work" && timeout 900 sipp -sf "$top/tests/kamailio/bench-originate.xml" \
    -s "${ORIGINATE_USER:-async-ta}" "127.0.0.1:$sip_port" -i 127.0.0.1 -p "$(free_udp_port)" \
    -m "$1" -l "$2" -r 1000000 -nr -recv_timeout "$3" -nostdin -trace_stat -stf "$work/sipp.csv")
}
# bridge_toml ORIGIN_HOST: the bridge's configuration (test_app, the segment, the control
# socket; BRIDGE_EXTRA_TOML appended), listening on $port
bridge_toml() {
  cat >"$work/bridge.toml" <<EOF
[node]
origin_host = "$1"
origin_realm = "test.local"
listen = ["127.0.0.1:$port"]
allow_unknown_peers = true

[[applications]]
id = 16777215
vendor = 999999

[app]
segment = "/dev/shm/$shm_name"
control_socket = "$work/control.sock"
EOF
  if [ -n "${BRIDGE_EXTRA_TOML:-}" ]; then
    printf '%s\n' "${BRIDGE_EXTRA_TOML//PORT/$(free_port)}" >>"$work/bridge.toml"
  fi
}
# Starts the stack under callgrind with output prefix $1; sets port, host, bpid (the
# bridge, empty for ims) and spid (the SIP server's main process, empty for echo).
start_stack() { # stack prefix
  local stack=$1 prefix=$2
  port=$(free_port) bpid="" spid="" host=bench.test.local
  rm -f "/dev/shm/$shm_name"
  case $stack in
  echo | kamailio)
    bridge_toml server.test.local
    local echo=()
    [ "$stack" = echo ] && echo=(--echo)
    cgb "$prefix" "$dmb" run --config "$work/bridge.toml" "${echo[@]}" >"$prefix.log" 2>&1 &
    bpid=$!; pids+=("$bpid")
    wait_log "$prefix.log" "listening on" 120
    if [ "$stack" = kamailio ]; then
      mkdir -p "$work/kam"
      cg "$prefix" kamailio -DD -E -Y "$work/kam" -f "$top/tests/kamailio/bench-echo.cfg" \
        -A "SIP_PORT=$(free_udp_port)" -A "DMB_SO=\"$so\"" \
        -A "DMB_SOCKET=\"$work/control.sock\"" >"$prefix.kamailio.log" 2>&1 &
      spid=$!; pids+=("$spid")
      wait_log "$prefix.log" 'handles \["16777214"\]' 180
      sleep 2
    fi
    ;;
  originate | originate-opensips)
    start_fd
    bridge_toml bridge.test.local
    [ "$stack" = originate ] || sed -i "s|^\[node\]\$|[node]\ndictionaries = [\"$top/tests/opensips/bench/dictionary.bench\"]|" "$work/bridge.toml"
    cat >>"$work/bridge.toml" <<EOF

[[peers]]
host = "server.test.local"
address = "127.0.0.1"
port = $fd_port

[[routes]]
realm = "test.local"
app_id = 16777215
peers = ["server.test.local"]
EOF
    cgb "$prefix" "$dmb" run --config "$work/bridge.toml" >"$prefix.log" 2>&1 &
    bpid=$!; pids+=("$bpid")
    wait_log "$prefix.log" "serving workers" 120
    sip_port=$(free_udp_port)
    if [ "$stack" = originate-opensips ]; then
      mkdir -p "$work/os"
      sed -e "s|^#DMB ||" -e "s|@MPATH@|$os_src/modules/|" -e "s|@SIP_PORT@|$sip_port|" \
        -e "s|@DMB_SOCKET@|$work/control.sock|" "$top/tests/opensips/bench-originate.cfg" \
        >"$work/os.cfg"
      # shellcheck disable=SC2086 # OPENSIPS_OPTS: words
      cg "$prefix" "$os_src/opensips" -F -m 1024 -M 32 ${OPENSIPS_OPTS:-} -f "$work/os.cfg" \
        -w "$work/os" >"$prefix.opensips.log" 2>&1 &
    else
      mkdir -p "$work/kam"
      # shellcheck disable=SC2086 # KAMAILIO_OPTS: words
      cg "$prefix" kamailio -m 1024 ${KAMAILIO_OPTS:-} -DD -E -Y "$work/kam" \
        -f "$top/tests/kamailio/bench-originate.cfg" \
        -A "SIP_PORT=$sip_port" -A "DMB_SO=\"$so\"" ${ASYNC_DIRECT:+-A "DMB_ASYNC_DIRECT=$ASYNC_DIRECT"} \
        -A "DMB_SOCKET=\"$work/control.sock\"" >"$prefix.kamailio.log" 2>&1 &
    fi
    spid=$!; pids+=("$spid")
    # answering: one call at a time until one succeeds (the few probes are in both runs)
    for _ in $(seq 120); do
      sipp_calls 1 1 2000 >/dev/null 2>&1 && break
    done
    ;;
  ims)
    host=client.test.local
    rm -rf "$work/ims"; mkdir -p "$work/ims" "$work/wrap"
    # run.sh starts `kamailio` from PATH: this one runs it under callgrind
    printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s %s "$@"\n' \
      "$prefix.%p" "$(command -v kamailio)" >"$work/wrap/kamailio"
    chmod +x "$work/wrap/kamailio"
    PATH="$work/wrap:$PATH" sh "$shared/peers/kamailio-ims/run.sh" "$work/ims" "$port" \
      "$(free_port)" 4 "$(free_udp_port)"
    spid=$(cat "$work/ims/kamailio.pid"); pids+=("$spid")
    for _ in $(seq 600); do
      python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$port)))" && break
      sleep 0.2
    done
    sleep 5   # cdp accepts the first CER only a few seconds after start
    ;;
  esac
}

# drive STACK COUNT: COUNT requests (Diameter ones from `dmbridge bench`; for originate, SIP
# calls from sipp), a JSON summary with "answered" on stdout
drive() {
  if [ "$1" != originate ] && [ "$1" != originate-opensips ]; then
    bench "$port" "$host" "$2"
    return
  fi
  local rc=0
  rm -f "$work/sipp.csv"
  sipp_calls "$2" 100 60000 >/dev/null 2>&1 || rc=$?
  python3 - "$work/sipp.csv" "$rc" <<'PY'
import csv, json, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=";"))
col = {k: i for i, k in enumerate(rows[0])}
last = rows[-1]
print(json.dumps({"answered": int(last[col["SuccessfulCall(C)"]]),
                  "failed": int(last[col["FailedCall(C)"]]), "sipp_rc": int(sys.argv[2])}))
PY
}

for stack in $stacks; do
  log "$stack: $warmup + $count requests"
  start_stack "$stack" "$work/cg-$stack-full"
  drive "$stack" "$warmup" >"$work/$stack.warmup.json"
  drive "$stack" "$count" >"$work/$stack.json"
  sleep 1
  stop $spid $bpid
  read -r fb fs < <(totals "$work/cg-$stack-full" "$bpid")
  role_totals "$work/cg-$stack-full" "$bpid" >"$work/$stack.roles-full.json"
  log "$stack: $warmup requests (the baseline)"
  start_stack "$stack" "$work/cg-$stack-base"
  drive "$stack" "$warmup" >"$work/$stack.base.json"
  sleep 1
  stop $spid $bpid
  read -r bb bs < <(totals "$work/cg-$stack-base" "$bpid")
  role_totals "$work/cg-$stack-base" "$bpid" >"$work/$stack.roles-base.json"
  if [ "${STRACE:-0}" = 1 ]; then
    python3 - "$stack" "$count" "$work/cg-$stack-full.st" "$work/cg-$stack-base.st" \
      "$work/$stack.json" <<'EOF' | tee -a "$work/results.jsonl"
import collections, glob, json, re, sys
stack, n, full, base = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def roles(prefix):
    out = collections.defaultdict(collections.Counter)
    for f in glob.glob(prefix + ".*"):
        text = open(f, errors="replace").read()
        if re.search(r"^poll\(\[\{fd=\d+, events=POLLIN\}, \{fd=", text, re.M):
            role = "dmk"      # the dmbridge worker: its pipe and the library's fd
        elif re.search(r"^recvfrom\(", text, re.M):
            role = "sip"      # a UDP SIP worker
        else:
            role = "other"
        for m in re.finditer(r"^([a-z_0-9]+)\(", text, re.M):
            out[role][m.group(1)] += 1
    return out
rf, rb = roles(full), roles(base)
res = {}
for r in sorted(rf):
    d = {k: round((v - rb[r].get(k, 0)) / n, 3) for k, v in rf[r].items()}
    d = {k: v for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if abs(v) >= 0.005}
    res[r] = {"total": round(sum(d.values()), 3), "calls": d}
b = json.load(open(sys.argv[5]))
print(json.dumps({"stack": stack, "requests": n, "answered": b.get("answered"),
                  "syscalls_per_request": res}))
EOF
    continue
  fi
  python3 - "$stack" "$count" "$fb" "$fs" "$bb" "$bs" "$work/$stack.json" \
    "$work/$stack.roles-full.json" "$work/$stack.roles-base.json" <<'EOF' | tee -a "$work/results.jsonl"
import json, sys
stack, n = sys.argv[1], int(sys.argv[2])
fb, fs, bb, bs = (int(x) for x in sys.argv[3:7])
b = json.load(open(sys.argv[7]))
rf, rb = json.load(open(sys.argv[8])), json.load(open(sys.argv[9]))
bi, si = (fb - bb) / n, (fs - bs) / n
# per role: instructions per request over all its processes (the SIP workers together)
roles = {r: round((rf[r][0] - rb.get(r, [0, 0])[0]) / n) for r in sorted(rf)}
print(json.dumps({"stack": stack, "requests": n, "answered": b.get("answered"),
                  "result_codes": b.get("result_codes"),
                  "bridge_instructions_per_request": round(bi),
                  "sip_server_instructions_per_request": round(si),
                  "total_per_request": round(bi + si),
                  "per_role": roles}))
EOF
done
log "callgrind files and bench summaries in $work"
