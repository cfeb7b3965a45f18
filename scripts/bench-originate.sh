#!/usr/bin/env bash
# The originate path raced in one run: SIP MESSAGE requests from sipp make the SIP server's
# script send a Diameter request and wait for (sync) or resume on (async) its answer; the SIP
# reply carries the answer's Result-Code ("X-Result:"; sipp fails any call without a 200 and a
# 2xxx there). The Diameter peers answer at once:
#   ta  freeDiameter 1.2.1 test_app server (../shared/peers/freediameter/run.sh), Test-Request;
#       with TA_PEER=echo a `dmbridge run --echo --threads 1` answers them instead (a peer that
#       answers at once: freeDiameter's own turnaround is ~75 us of the sync round trip)
#   ro  an Erlang/OTP diameter online charging server (tests/peers/ro_ocs.escript), Ro
#       CCR-Initial with Subscription-Ids, MSCC, User-Equipment-Info and IMS-Information
# Sides (all started once, then taking turns, so every figure of a round shares one load):
#   sip-only     Kamailio, the same route and JSON building without the Diameter request
#                (`none`: sl reply, the sync ceiling; `none-tm`: t_newtran + t_reply, async's)
#   dmb-sync     Kamailio + dmbridge.so + dmbridge run, dm_send_request
#   dmb-async    the same, dm_send_request_async (tm suspends, the module's worker sends)
#   ims-sync     Kamailio cdp + ims_diameter_server, diameter_request
#   ims-async    the same, t_suspend + diameter_request_async + t_continue from
#                event_route[diameter:response]
#   opensips-sip-only  OpenSIPS, the same route without Diameter (`none` sl / `none-tm` tm)
#   opensips-dmb-sync  OpenSIPS + dmbridge.so + a dmbridge run of its own, dm_send_request
#   opensips-dmb-async the same, async(dm_send_request(...), ROUTE)
#   opensips-aaa-sync  OpenSIPS + its stock aaa_diameter (freeDiameter inside OpenSIPS, a
#                      client config written here), dm_send_request
#   opensips-aaa-async the same, async()
#   The opensips-* sides run only when OPENSIPS_SRC names a built OpenSIPS tree (./opensips
#   and the modules signaling sl tm sipmsgops json; aaa_diameter for the aaa sides);
#   the dmbridge module is built in that tree as tests/opensips/run.sh does (nothing of
#   OpenSIPS is built here or part of this project). Without it they are skipped, saying so.
# All Kamailio sides run tests/kamailio/bench-originate.cfg (4 SIP workers, SHM_MB of shared
# memory for the transactions the tm sides keep), so the routes are the same text; all
# OpenSIPS sides run tests/opensips/bench-originate.cfg (4 UDP workers, SHM_MB too).
#
# usage: scripts/bench-originate.sh [SECONDS (10)] [ROUNDS (1)]
# environment:
#   APPS="ta ro"            Diameter requests to race
#   SIDES="sip-only dmb-sync ims-sync dmb-async ims-async"  (+ "opensips-sip-only
#                           opensips-dmb-sync opensips-aaa-sync opensips-dmb-async
#                           opensips-aaa-async" when OPENSIPS_SRC is usable)
#   OPENSIPS_SRC=DIR        a built OpenSIPS source tree (3.6 here), for the opensips-* sides
#   CONCURRENCY=400         closed loop: calls in flight, over all sipp clients (400: at 100 the
#                           sipp clients bound the loop, 1.25 of 2 cores used; BENCHMARKS
#                           "Session 10: the quiet-machine race")
#   CLIENTS=4               sipp instances per run (each CONCURRENCY/CLIENTS in flight)
#   LOW=1                   also LOW_CALLS (2000) calls one at a time per side from a plain
#                           UDP socket: the round trip at low load, in microseconds
#   LOADS="0.2 0.5 0.8"     also fixed-rate runs at these fractions of each side's closed-loop
#                           rate of the same round (empty: none)
#   MAX_FROM=FILE           LOADS are fractions of the closed-loop rate of the same side and
#                           app in FILE (another run's RESULTS) instead of this run's: two
#                           configurations (e.g. SCHED_FIFO and not) at equal absolute rates
#   RESULTS=FILE            append one JSON line per run
#   SETTLE_MAX=30           before each measured run, wait (at most this long) until the SIP
#                           server has no transaction left from the run before (Kamailio: tm.stats
#                           over ctl; others: SETTLE_S=6 s); 0: no wait (see settle() below)
#   WARMUP=10               seconds of closed loop per side and app before the first round,
#                           not reported (0: none). A fresh SIP server is slower: tm keeps each
#                           transaction for its 5 s wait timer, and the first pass through its
#                           shared memory pays a page fault per 4 KiB touched (Kamailio's
#                           SIP-only route ran 28k, 40k, 45k, 47k calls/s in four rounds, at 110k,
#                           80k, 40k, 30k minor faults/s; BENCHMARKS "Session 12: the ceiling's
#                           two modes"). Every row's "flt/call" is its SIP server's minor faults
#                           per call, to show a run that still paid them; each JSON line
#                           also has "sip_ctxsw_per_call", the SIP server's voluntary
#                           (wake-ups) and involuntary context switches per call, and
#                           "sip_syscalls_per_call", its read- and write-class system calls
#                           (/proc/PID/io syscr, syscw) per call.
#   DMBRIDGE_BIN, DMB_LIBDIR  another dmbridge binary / libdmbridge.a (A/B runs)
#   DMB_SO                  a Kamailio dmbridge.so built elsewhere (A/B runs of module-glue/;
#                           nothing is built then)
#   SYNC_SPIN_US=N          the Kamailio module's sync_spin_us (unset: its default)
#   ASYNC_DIRECT=0|1        the Kamailio module's async_direct (unset: its default): 1, the
#                           SIP worker sends dm_send_request_async's request itself and the
#                           module's worker only resumes; 0, the worker sends it (the
#                           hand-over of sessions 13-15). A/B: alternate runs, e.g.
#                           for d in 0 1 0 1; do ASYNC_DIRECT=$d SIDES=dmb-async ...; done
#   DMB_WORKERS=N           the Kamailio module's workers (dmbridge worker processes; unset:
#                           tests/kamailio/bench-originate.cfg's 2)
#   BRIDGE_THREADS=N        dmbridge run --threads N
#   QUICK_ACK=false         the bridges' [limits] quick_ack (default true: ACK each read at
#                           once; false: the kernel's delayed ACKs, BENCHMARKS "Session 12")
#   BRIDGE_METRICS=1        the bridges serve [metrics] on a free port, scraped before and after
#                           each dmbridge run (scripts/prom-delta.py): the run's line gets
#                           "bridge_us", the bridge's histograms over that run (its round trip,
#                           its own part per answered request, the peer's answer latency, and
#                           the workers' round trip and its part outside the bridge),
#                           p50/p99/p99.9 in µs; the summary prints them under the run
#   SHM_MB=4096             shared memory of every Kamailio and OpenSIPS (-m), the same on all
#                           sides: tm keeps each answered transaction for its wait timer (5 s,
#                           ~13 KB each in Kamailio 5.6: 79,072 waiting held 1.0 GB), so 16k
#                           calls/s need ~1.1 GB; at 1024 MB the SIP-only tm side lost ~20% of
#                           its calls (`new_t(): out of mem`, BENCHMARKS "Session 8")
#   SCHED_FIFO=P            the bridges' [scheduling] fifo_priority and the modules'
#                           sched_fifo_priority (Kamailio: its SIP workers and the module's
#                           workers; OpenSIPS: its SIP workers): SCHED_FIFO at priority P for
#                           the bridge and the SIP server's Diameter processes (root)
#   SCHED_FIFO_TIERS="B M S"  SCHED_FIFO priorities along the answer path, set with chrt once
#                           every side answers (no product setting does this): the bridge's
#                           threads at B, the Kamailio module's workers at M, Kamailio's SIP
#                           workers at S (0: SCHED_OTHER), e.g. "30 20 10". With one priority
#                           for all (SCHED_FIFO) a woken bridge or module worker waits behind a
#                           SIP worker draining its socket; here it preempts it. BENCHMARKS
#                           "Session 20": it cuts the added time, but the bridge, woken for
#                           every message, costs 3-5x the CPU per call and the maximum falls
#                           (ta by about half); above that the SIP intake starves (see
#                           sipp_retransmissions, udp_rcvbuf_errors)
#   SCHED_SLICE_US=N        the same for [scheduling] slice_us / sched_slice_us (EEVDF slice)
#   NICE=N                  the same for [scheduling] nice / Kamailio's sched_nice (-20..19;
#                           OpenSIPS's processes are reniced): weight instead of a real-time
#                           class, so the kernel can still let a busy process take several
#                           messages per wake-up (BENCHMARKS "Session 15")
#                           The peers (freeDiameter's test_app server, the echo peer, the
#                           Erlang OCS), cdp/ims_diameter_server and aaa_diameter keep the
#                           kernel's defaults: the anchors have no such knob, the peers are
#                           not what is measured
#   SCHED=1                 `perf sched record -a` over each fixed-rate run of a side with a
#                           bridge, then the run-queue delay per process (scripts/
#                           sched-delays.py; the bridge, the peer and the SIP server's
#                           processes by role); root, and the tracer costs CPU of its own
#   RT_US=1                 sipp keeps every reply's X-Rt-Us (bench-originate.cfg: the script's
#                           round trip, dm_send_request's or dm_send_request_async -> its resume
#                           route's, per call, in us); each line gets "rt_us" p50/p99/p99.9
#                           (one log line per call more for sipp, and for async a transaction
#                           AVP more in Kamailio, -A RT_ASYNC: off by default, so the other
#                           figures and bench-instructions.sh's counts stay comparable).
#                           The dmbridge sides also put X-Peer-Us in the reply: the bridge's
#                           wait for the Diameter peer for that request ($dm(peer_us), OpenSIPS
#                           dm_send_request's peer_us_pv); each line then also gets "peer_us"
#                           and "added_us" = rt - peer per call (what the module, libdmbridge,
#                           the bridge and the hand-overs between them added to that request,
#                           issue 15 item 3), p50/p99/p99.9 each. The Kamailio dmbridge
#                           sides also put X-Worker-Us ($dm(worker_us): libdmbridge's round
#                           trip, its send call entered -> the answer taken, the peer
#                           included); their lines then also split added per call into
#                           "script_side_us" = rt - worker (suspend, hand-over, t_continue, the
#                           resume route's start) and "bridge_side_us" = worker - peer (the library,
#                           the rings, the doorbells and the bridge), and "tail_split": for the
#                           calls at or above added's p99 the mean of each side, and the share
#                           of calls whose added time / each side alone is >= 1 ms. Sides
#                           without the header (OpenSIPS, ims) get none of these
#   TA_PEER=fd|echo         who answers the test_app requests: freeDiameter's test_app server
#                           (fd, default) or `ECHO_BIN run --echo --threads 1` (echo; ECHO_BIN
#                           defaults to this tree's release binary, so an A/B run with
#                           DMBRIDGE_BIN swaps the bridge under test, not the peer)
#   CPUS_SERVER=L CPUS_LOAD=L  (taskset -c lists, e.g. CPUS_SERVER=1 CPUS_LOAD=0) the SIP
#                           servers (all their forked processes, cdp/ims_diameter_server and
#                           aaa_diameter inside them) and the bridges on CPUS_SERVER; this script
#                           and so everything else it starts (sipp, the Diameter peers, perf) on
#                           CPUS_LOAD: an operator's arrangement, where the SIP clients and the
#                           peers are other machines (BENCHMARKS "Session 19"). CPUS_BRIDGE=L
#                           puts the bridges on L instead. Every run logs what each process got
#                           (all its threads' CPU lists) and its line gets "cpus" (as asked),
#                           "affinity" (per role, as got) and "cpu_busy" (each CPU's busy share
#                           over the run, /proc/stat), printed under the run. Unset: no
#                           pinning, as before (the line still gets affinity and cpu_busy)
#   CPUS_KAM_OTHERS=L       (with CPUS_SERVER) Kamailio + dmbridge.so's processes other than
#                           its SIP workers and the module's workers (main, timers, ctl) moved
#                           to L once every side answers (taskset), to see what their bursts
#                           on the server's core cost the call path
#   SIP_CHILDREN=N          both Kamailio instances' SIP workers (bench-originate.cfg's 4)
#   ARRIVALS=sipp|even|poisson  who sends the fixed-rate runs' requests: sipp (default; it
#                           opens the calls due once per turn of its ~1 ms loop, so each client's
#                           requests leave in bursts every millisecond), or scripts/sip-paced.py
#                           from CLIENTS processes, each at rate/CLIENTS: even (evenly spaced,
#                           the processes interleaved) or poisson (exponential gaps, as many
#                           independent clients would send). sip-paced.py never resends (a loss
#                           is a failure) and writes sipp's file names, so every figure of the
#                           line is computed the same way (BENCHMARKS "Session 21")
#   SIP_MAXBUFFER=BYTES     Kamailio + dmbridge.so's largest UDP receive buffer (core maxbuffer,
#                           default 256 KiB; capped by net.core.rmem_max): how many requests can
#                           wait in its socket before the kernel drops them (udp_rcvbuf_errors)
# Loopback only, free ports, every process bounded and stopped by PID on exit.
set -euo pipefail
exec </dev/null
secs=${1:-10}
rounds=${2:-1}
apps=${APPS:-ta ro}
kam_sides="sip-only dmb-sync ims-sync dmb-async ims-async"
os_sides="opensips-sip-only opensips-dmb-sync opensips-aaa-sync opensips-dmb-async opensips-aaa-async"
sides=${SIDES:-$kam_sides $os_sides}
conc=${CONCURRENCY:-400}
clients=${CLIENTS:-4}
low=${LOW:-1}
low_calls=${LOW_CALLS:-2000}
loads=${LOADS-0.2 0.5 0.8}
shm_mb=${SHM_MB:-4096}
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
shared=${DMBRIDGE_SHARED:-$top/../shared}
dmb=${DMBRIDGE_BIN:-$top/target/release/dmbridge}
libdir=${DMB_LIBDIR:-$top/target/release}
kmod="$top/target/kamailio-module"
so=${DMB_SO:-$kmod/dmbridge.so}
cfg="$top/tests/kamailio/bench-originate.cfg"
scen="$top/tests/kamailio/bench-originate.xml"
work=$(mktemp -d /tmp/dmb-bench-orig.XXXXXX)
results=${RESULTS:-$work/results.jsonl}
bench_name=bench-originate
shm_name="dmb-bench-orig-$$"
. "$top/scripts/bench-lib.sh"
# the OpenSIPS sides' bridge has a segment of its own
trap 'bench_cleanup; rm -f "/dev/shm/$shm_name-os"' EXIT
pin_setup
os_bridge_pid="" os_dmb="" os_aaa=""
# CPU time (clock ticks) of a process and its children: "pid utime+stime" per line.
tree() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }
faults() { # pids... -> total minor page faults (field 10 of /proc/PID/stat)
  local p t=0 f
  for p in "$@"; do
    f=$(awk '{print $10}' "/proc/$p/stat" 2>/dev/null) || f=0
    t=$((t + ${f:-0}))
  done
  echo "$t"
}
ctxsw() { # pids... -> "voluntary involuntary syscr syscw", summed: context switches
  # (/proc/PID/status) and read- and write-class system calls (/proc/PID/io), read untraced
  local p v=0 i=0 r=0 w=0 a b c d
  for p in "$@"; do
    read -r a b < <(awk '/^voluntary_ctxt_switches/{v=$2} /^nonvoluntary_ctxt_switches/{n=$2}
      END{print v+0, n+0}' "/proc/$p/status" 2>/dev/null || echo "0 0")
    read -r c d < <(awk '/^syscr/{r=$2} /^syscw/{w=$2} END{print r+0, w+0}' "/proc/$p/io" \
      2>/dev/null || echo "0 0")
    v=$((v + a)); i=$((i + b)); r=$((r + c)); w=$((w + d))
  done
  echo "$v $i $r $w"
}
udp_rcvbuf_errors() { # the kernel's UDP RcvbufErrors (/proc/net/snmp), all sockets
  awk '/^Udp:/{if (n++) {for (i = 1; i <= NF; i++) if (h[i] == "RcvbufErrors") print $i}
    else for (i = 1; i <= NF; i++) h[i] = $i}' /proc/net/snmp
}
ticks() { # pids... -> total utime+stime
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

if [ ! -x "$dmb" ] || [ ! -f "$libdir/libdmbridge.a" ]; then
  log "building dmbridge and libdmbridge (release)"
  (cd "$top" && cargo build --release -q -p dmbridge-bridge -p dmbridge-cabi)
fi
# the module goes to this worktree's target/, next to the libdmbridge it links
[ -n "${DMB_SO:-}" ] || make -s -C "$top/module-glue/kamailio" OUT="$kmod" DMB_LIBDIR="$libdir" >/dev/null

# --- Diameter peers ----------------------------------------------------------------------
fd_port=$(free_port)
mkdir -p "$work/fd"
ta_peer=${TA_PEER:-fd}
export TA_PEER=$ta_peer
case $ta_peer in
  fd)
    cp "$top/build/deps/fd/test_app.fdx" "$top/build/deps/fd/bind_lo.so" "$work/fd/"
    sh "$shared/peers/freediameter/run.sh" server "$work/fd" "$fd_port"
    fd_pid=$(cat "$work/fd/server.pid"); pids+=("$fd_pid")
    ;;
  echo)
    # the test_app server's identity (the bridges' peer entry), answering 2001 in process;
    # any client may connect (cdp is not configured as its peer)
    cat >"$work/fd/echo.toml" <<EOF
[node]
origin_host = "server.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:$fd_port"]
allow_unknown_peers = true

[[applications]]
id = 16777215
vendor = 999999
EOF
    "${ECHO_BIN:-$top/target/release/dmbridge}" run --echo --threads 1 \
      --config "$work/fd/echo.toml" >"$work/fd/echo.log" 2>&1 &
    fd_pid=$!; pids+=("$fd_pid")
    log "test_app requests go to dmbridge run --echo --threads 1 (TA_PEER=echo)"
    ;;
  *) log "TA_PEER is fd or echo, not $ta_peer"; exit 1 ;;
esac
ocs_port=$(free_port)
escript "$top/tests/peers/ro_ocs.escript" --port "$ocs_port" --duration 3600 >"$work/ocs.log" 2>&1 &
ocs_pid=$!; pids+=("$ocs_pid")
wait_log "$work/ocs.log" listening 30

# --- dmbridge + Kamailio -----------------------------------------------------------------
# bridge_toml FILE ORIGIN_HOST SEGMENT SOCKET [DICTIONARY] [METRICS_PORT]: the same peers and
# routes for every bridge of the race (the test_app server and the OCS)
bridge_toml() {
  local dicts="" metrics=""
  [ -z "${5:-}" ] || dicts="dictionaries = [\"$5\"]"
  [ -z "${6:-}" ] || metrics=$(printf '\n[metrics]\nlisten = "127.0.0.1:%s"' "$6")
  cat >"$1" <<EOF
[node]
origin_host = "$2"
$dicts
origin_realm = "test.local"
listen = ["127.0.0.1:$(free_port)"]

[[applications]]
id = 16777215
vendor = 999999

[[applications]]
id = 4

[[peers]]
host = "server.test.local"
address = "127.0.0.1"
port = $fd_port

[[peers]]
host = "ocs.test.local"
address = "127.0.0.1"
port = $ocs_port

[[routes]]
realm = "test.local"
app_id = 16777215
peers = ["server.test.local"]

[[routes]]
realm = "test.local"
app_id = 4
peers = ["ocs.test.local"]

[limits]
quick_ack = ${QUICK_ACK:-true}

[app]
segment = "/dev/shm/$3"
control_socket = "$4"
$metrics
EOF
  if [ -n "${SCHED_SLICE_US:-}${SCHED_FIFO:-}${NICE:-}" ]; then
    printf '\n[scheduling]\n%s%s%s' "${SCHED_SLICE_US:+slice_us = $SCHED_SLICE_US
}" "${SCHED_FIFO:+fifo_priority = $SCHED_FIFO
}" "${NICE:+nice = $NICE
}" >>"$1"
  fi
}
bridge_mport="" os_bridge_mport=""
if [ "${BRIDGE_METRICS:-0}" = 1 ]; then
  bridge_mport=$(free_port)
  os_bridge_mport=$(free_port)
fi
bridge_toml "$work/dmbridge.toml" bridge.test.local "$shm_name" "$work/control.sock" "" "$bridge_mport"
"${on_bridge[@]}" "$dmb" run --config "$work/dmbridge.toml" ${BRIDGE_THREADS:+--threads "$BRIDGE_THREADS"} \
  >"$work/bridge.log" 2>&1 &
bridge_pid=$!; pids+=("$bridge_pid")
wait_log "$work/bridge.log" "serving workers" 10
kam_dmb_port=$(free_udp_port)
mkdir -p "$work/kam-dmb"
"${on_server[@]}" kamailio -m "$shm_mb" -DD -E -Y "$work/kam-dmb" -f "$cfg" -A "SIP_PORT=$kam_dmb_port" \
  ${SIP_CHILDREN:+-A "SIP_CHILDREN=$SIP_CHILDREN"} ${SIP_MAXBUFFER:+-A "SIP_MAXBUFFER=$SIP_MAXBUFFER"} \
  -A "DMB_SO=\"$so\"" -A "DMB_SOCKET=\"$work/control.sock\"" \
  ${SYNC_SPIN_US:+-A "SYNC_SPIN_US=$SYNC_SPIN_US"} ${DMB_WORKERS:+-A "DMB_WORKERS=$DMB_WORKERS"} \
  ${ASYNC_DIRECT:+-A "DMB_ASYNC_DIRECT=$ASYNC_DIRECT"} \
  ${SCHED_SLICE_US:+-A "DMB_SCHED_SLICE_US=$SCHED_SLICE_US"} \
  ${SCHED_FIFO:+-A "DMB_SCHED_FIFO=$SCHED_FIFO"} ${NICE:+-A "DMB_SCHED_NICE=$NICE"} $([ "${RT_US:-0}" != 1 ] || echo "-A RT_ASYNC") \
  >"$work/kam-dmb.log" 2>&1 &
kam_dmb=$!; pids+=("$kam_dmb")

# --- Kamailio cdp + ims_diameter_server ----------------------------------------------------
kam_ims_port=$(free_udp_port)
mkdir -p "$work/kam-ims"
cat >"$work/cdp.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<DiameterPeer FQDN="cdp.test.local" Realm="test.local" Vendor_Id="10415"
	Product_Name="CDiameterPeer" AcceptUnknownPeers="1" DropUnknownOnDisconnect="1"
	Tc="2" Workers="4" QueueLength="1024" TransactionTimeout="5" SessionsHashSize="1024"
	DefaultAuthSessionTimeout="3600" MaxAuthSessionTimeout="3600">
	<!-- cdp connects to a peer's FQDN by name resolution (no address attribute): loopback
	     names that resolve without touching the system's hosts file -->
	<Peer FQDN="127.0.0.1" Realm="test.local" port="$fd_port"/>
	<Peer FQDN="localhost" Realm="test.local" port="$ocs_port"/>
	<Acceptor port="$(free_port)" bind="127.0.0.1"/>
	<Auth id="16777215" vendor="999999"/>
	<Auth id="4" vendor="0"/>
	<SupportedVendor vendor="999999"/>
	<SupportedVendor vendor="10415"/>
	<DefaultRoute FQDN="127.0.0.1" metric="10"/>
</DiameterPeer>
EOF
"${on_server[@]}" kamailio -m "$shm_mb" -DD -E -Y "$work/kam-ims" -f "$cfg" -A "SIP_PORT=$kam_ims_port" -A IMS \
  ${SIP_CHILDREN:+-A "SIP_CHILDREN=$SIP_CHILDREN"} \
  -A "CDP_XML=\"$work/cdp.xml\"" >"$work/kam-ims.log" 2>&1 &
kam_ims=$!; pids+=("$kam_ims")

# --- OpenSIPS sides (optional) -------------------------------------------------------------
# drop_sides PATTERN REASON: remove the sides matching PATTERN from the race, saying why
drop_sides() {
  local kept="" sd dropped=""
  for sd in $sides; do
    # shellcheck disable=SC2254 # PATTERN is a glob on purpose
    case $sd in $1) dropped="$dropped $sd" ;; *) kept="$kept $sd" ;; esac
  done
  [ -z "$dropped" ] || log "SKIPPED$dropped: $2"
  sides=$kept
}
os_cfg="$top/tests/opensips/bench-originate.cfg"
os_src=""
case " $sides " in
  *" opensips-"*)
    if [ -z "${OPENSIPS_SRC:-}" ] || [ ! -x "${OPENSIPS_SRC}/opensips" ] \
        || [ ! -f "${OPENSIPS_SRC}/Makefile.modules" ]; then
      drop_sides 'opensips-*' "set OPENSIPS_SRC to a built OpenSIPS source tree (./opensips and its modules)"
    else
      os_src=$(cd "$OPENSIPS_SRC" && pwd)
      missing=""
      for m in signaling sl tm sipmsgops json; do # proto_udp is in the core (3.6)
        [ -f "$os_src/modules/$m/$m.so" ] || missing="$missing $m"
      done
      if [ -n "$missing" ]; then
        drop_sides 'opensips-*' "modules not built in $os_src:$missing"
        os_src=""
      elif [ ! -f "$os_src/modules/aaa_diameter/aaa_diameter.so" ]; then
        drop_sides 'opensips-aaa-*' "aaa_diameter is not built in $os_src"
      fi
    fi
    ;;
esac
if [ -n "$os_src" ]; then
  # the dmbridge module, built in the tree against this checkout's libdmbridge (as
  # tests/opensips/run.sh does); OpenSIPS itself is never built here
  mkdir -p "$os_src/modules/dmbridge"
  rm -f "$os_src"/modules/dmbridge/*.[chod]
  cp "$top"/module-glue/opensips/{Makefile,*.c,*.h,README.md} "$os_src/modules/dmbridge/"
  echo "DMB_TOP := $top" >"$os_src/modules/dmbridge/dmbridge-top.mk"
  make -C "$os_src" modules module=dmbridge DMB_LIB="$libdir/libdmbridge.a" \
    >"$work/os-module-build.log" 2>&1 \
    || { log "building the dmbridge module in $os_src failed"; tail -n 20 "$work/os-module-build.log" >&2; exit 1; }
  # start_opensips NAME MODULE(DMB|AAA) SIP_PORT [ENV...]: a copy of the cfg with the lines of
  # one Diameter module uncommented and this run's paths
  start_opensips() {
    local name=$1 mod=$2 port=$3
    shift 3
    mkdir -p "$work/$name"
    sed -e "s|^#$mod ||" -e "s|@MPATH@|$os_src/modules/|" -e "s|@SIP_PORT@|$port|" \
      -e "s|@DMB_SOCKET@|$work/os-control.sock|" -e "s|@FD_CONF@|$work/$name/fd.conf|" \
      -e "s|@DICT@|$work/$name/bench.dict|" "$os_cfg" >"$work/$name.cfg"
    # RT_US=1: the script's round trip (and the peer's part) in the reply, as on Kamailio
    [ "${RT_US:-0}" != 1 ] || sed -i -e "s|^#RT ||" -e "/# NORT$/d" "$work/$name.cfg"
    # SCHED_FIFO / SCHED_SLICE_US: the module's scheduling of the SIP workers
    if [ "$mod" = DMB ] && [ -n "${SCHED_SLICE_US:-}${SCHED_FIFO:-}" ]; then
      sed -i "/^modparam(\"dmbridge\", \"bridge_socket\"/a\\
modparam(\"dmbridge\", \"sched_fifo_priority\", ${SCHED_FIFO:-0})\\
modparam(\"dmbridge\", \"sched_slice_us\", ${SCHED_SLICE_US:-0})" "$work/$name.cfg"
    fi
    # NICE: the OpenSIPS module has no sched_nice; its processes are reniced once they answer
    "${on_server[@]}" env "$@" "$os_src/opensips" -F -m "$shm_mb" -M 32 -f "$work/$name.cfg" -w "$work/$name" \
      >>"$work/$name.log" 2>&1 &
    os_started=$!
  }
  # OpenSIPS + dmbridge: a bridge of its own (the same peers and routes as the Kamailio
  # sides' bridge), with test_app's dictionary: the script names Test-AVP, as aaa_diameter
  # must
  bridge_toml "$work/os-bridge.toml" osbridge.test.local "$shm_name-os" "$work/os-control.sock" \
    "$top/tests/opensips/bench/dictionary.bench" "$os_bridge_mport"
  "${on_bridge[@]}" "$dmb" run --config "$work/os-bridge.toml" ${BRIDGE_THREADS:+--threads "$BRIDGE_THREADS"} \
    >"$work/os-bridge.log" 2>&1 &
  os_bridge_pid=$!; pids+=("$os_bridge_pid")
  wait_log "$work/os-bridge.log" "serving workers" 10
  os_dmb_port=$(free_udp_port)
  start_opensips os-dmb DMB "$os_dmb_port"
  os_dmb=$os_started; pids+=("$os_dmb")
  case " $sides " in
    *" opensips-aaa-"*)
      # OpenSIPS + aaa_diameter: freeDiameter 1.2.1 inside OpenSIPS as client
      # opensips.test.local, connected to both peers (no extension: freeDiameter's own
      # Credit-Control dictionaries collide with aaa_diameter's, see bench-originate-ro.dict).
      # Its extra-avps-file: Ro, then test_app from the file the bridge loads (that order:
      # the layout rule in bench-originate-ro.dict). aaa_diameter advertises (CER) and takes
      # answers for (fd_disp_register) only the applications of that file
      # (modules/aaa_diameter/dm_impl.c dm_register_callbacks).
      os_aaa_port=$(free_udp_port)
      mkdir -p "$work/os-aaa"
      { cat "$top/tests/opensips/bench-originate-ro.dict"
        echo
        cat "$top/tests/opensips/bench/dictionary.bench"
      } >"$work/os-aaa/bench.dict"
      {
        echo "Identity = \"opensips.test.local\"; Realm = \"test.local\"; Port = $(free_port); SecPort = 0; No_SCTP; No_IPv6;"
        echo "ConnectPeer = \"server.test.local\" { ConnectTo = \"127.0.0.1\"; No_TLS; No_SCTP; Port = $fd_port; };"
        echo "ConnectPeer = \"ocs.test.local\" { ConnectTo = \"127.0.0.1\"; No_TLS; No_SCTP; Port = $ocs_port; };"
      } >"$work/os-aaa/fd.conf"
      # freeDiameter 1.2.1 binds 0.0.0.0 whatever ListenOn says: bind_lo.so keeps it on loopback
      start_opensips os-aaa AAA "$os_aaa_port" "LD_PRELOAD=$work/fd/bind_lo.so"
      os_aaa=$os_started; pids+=("$os_aaa")
      ;;
  esac
fi

# --- runs ----------------------------------------------------------------------------------
# RT_US=1: the same scenario, also keeping each reply's X-Rt-Us, X-Peer-Us and X-Worker-Us
# (not checked: the sides without them log an empty field) with a <log> action, one line
# "rt peer worker" per call in rtN.log
scen_run=$scen
if [ "${RT_US:-0}" = 1 ]; then
  scen_run="$work/bench-originate-rt.xml"
  sed -e 's|^\(.*assign_to="rc"/>\)$|\1\n      <ereg regexp="-?[0-9]+" search_in="hdr" header="X-Rt-Us:" assign_to="rt"/>\n      <ereg regexp="[0-9]+" search_in="hdr" header="X-Peer-Us:" assign_to="peer"/>\n      <ereg regexp="[0-9]+" search_in="hdr" header="X-Worker-Us:" assign_to="worker"/>\n      <log message="[$rt] [$peer] [$worker]"/>|' \
    -e 's|<Reference variables="rc"/>|<Reference variables="rc,rt,peer,worker"/>|' "$scen" >"$scen_run"
  grep -q 'X-Rt-Us' "$scen_run" || { log "RT_US=1: could not extend $scen"; exit 1; }
fi
# sched_labels SIDE: PID=label arguments for scripts/sched-delays.py: the bridge, the peers,
# and the SIP server's processes by role (Kamailio: core.psx over its ctl socket)
sched_labels() {
  local b srv
  b=$(bridge_of "$1"); srv=$(server_of "$1")
  [ -z "$b" ] || echo "$b=bridge"
  echo "$fd_pid=peer-$ta_peer" "$ocs_pid=ocs"
  case $(instance_of "$1") in
    kam_*)
      kamcmd -s "unix:$work/$(instance_of "$1" | tr _ -)/kamailio_ctl" core.psx 2>/dev/null \
        | awk '/PID:/{p=$2} /DSC:/{sub(/.*DSC: /, "");
            r = /^udp receiver/ ? "sip-worker" : /^DMBRIDGE WORKER/ ? "dmb-worker" : "kam-other";
            print p "=" r "#" (++n[r])}'
      ;;
    *) for p in $(pgrep -P "$srv"); do echo "$p=sip-server#$p"; done ;;
  esac
}
instance_of() { # side -> the SIP server it runs on: the variable holding its main PID (and
  # NAME_port its SIP port)
  case $1 in
    sip-only*|dmb-*) echo kam_dmb ;;
    ims-*) echo kam_ims ;;
    opensips-sip-only*|opensips-dmb-*) echo os_dmb ;;
    opensips-aaa-*) echo os_aaa ;;
    *) log "unknown side $1"; exit 1 ;;
  esac
}
port_of() { local v; v="$(instance_of "$1")_port"; echo "${!v}"; }
server_of() { local v; v=$(instance_of "$1"); echo "${!v}"; }
bridge_of() { # side -> the bridge it sends through (none: nothing)
  case $1 in
    dmb-*) echo "$bridge_pid" ;;
    opensips-dmb-*) echo "$os_bridge_pid" ;;
  esac
}
# scrape_before / scrape_after PORT DIR: the bridge's histograms over one run into
# DIR/bridge_us.json (nothing when PORT is empty: a side without a bridge)
scrape_before() { [ -z "$1" ] || python3 "$top/scripts/prom-delta.py" --scrape "$1" "$2/metrics0.txt"; }
scrape_after() {
  [ -n "$1" ] || return 0
  python3 "$top/scripts/prom-delta.py" --scrape "$1" "$2/metrics1.txt"
  python3 "$top/scripts/prom-delta.py" "$2/metrics0.txt" "$2/metrics1.txt" >"$2/bridge_us.json"
}
mport_of() { # side -> the metrics port of its bridge (none: nothing)
  case $1 in
    dmb-*) echo "$bridge_mport" ;;
    opensips-dmb-*) echo "$os_bridge_mport" ;;
  esac
}
user_of() { # side app -> Request-URI user
  case $1 in
    *sip-only) echo "none-$2" ;;
    *sip-only-tm) echo "none-tm-$2" ;;
    *-sync) echo "sync-$2" ;;
    *-async) echo "async-$2" ;;
  esac
}
# one sipp run: side app mode(closed|rate) value(in flight | calls/s) seconds tag
run_sipp() {
  local side=$1 app=$2 mode=$3 value=$4 s=$5 tag=$6 i n dir
  local port user
  port=$(port_of "$side"); user=$(user_of "$side" "$app")
  dir="$work/runs/$tag"; mkdir -p "$dir"
  n=$clients
  [ "$mode" = closed ] && [ "$value" -lt "$n" ] && n=$value
  local cpids=()
  local procs_srv bridge
  procs_srv=$(tree "$(server_of "$side")")
  bridge=$(bridge_of "$side")
  local b0 k0 f0 o0 t0 l0
  local mport
  mport=$(mport_of "$side")
  scrape_before "$mport" "$dir"
  b0=$(ticks $bridge); k0=$(ticks $procs_srv); f0=$(ticks "$fd_pid"); o0=$(ticks $(tree "$ocs_pid"))
  local m0 m1
  m0=$(faults $procs_srv)
  local cv0 ci0 cv1 ci1 cr0 cw0 cr1 cw1
  read -r cv0 ci0 cr0 cw0 < <(ctxsw $procs_srv)
  l0=$(cut -d' ' -f1 /proc/loadavg)
  u0=$(udp_rcvbuf_errors)
  # SCHED=1: the run queues over SCHED_SECS (3) of the run, from its second second (the
  # capture of a whole run at 20k calls/s is hundreds of MB, and its reading takes minutes)
  local sched_pid=""
  if [ "${SCHED:-0}" = 1 ] && [ "$mode" = rate ] && [ -n "$bridge" ]; then
    (sleep 1; exec perf sched record -a -o "$dir/sched.data" -- sleep "${SCHED_SECS:-3}") \
      >"$dir/perf.log" 2>&1 &
    sched_pid=$!; pids+=("$sched_pid")
  fi
  cpu_stat >"$dir/cpustat0"
  t0=$(date +%s.%N)
  for i in $(seq "$n"); do
    local opts
    if [ "$mode" = closed ]; then
      opts="-l $(( (value + i - 1) / n )) -r 1000000"
    else
      # open loop: a fixed rate per client, no cap on calls in flight below sipp's own
      opts="-r $(python3 -c "print(max(1, round($value / $n)))") -l 100000"
    fi
    if [ "$mode" = rate ] && [ "${ARRIVALS:-sipp}" != sipp ]; then
      # ARRIVALS=even|poisson: scripts/sip-paced.py instead of sipp, the same files written
      (python3 "$top/scripts/sip-paced.py" "$port" "$user" \
        "$(python3 -c "print($value / $n)")" "$s" "$ARRIVALS" \
        "$(python3 -c "print(($i - 1) / $n)")" "$dir" "$i" >"$dir/out$i.txt" 2>&1
        times >"$dir/cpu$i.txt") &
      cpids+=($!)
      continue
    fi
    # `times`: the CPU the sipp child used, written when it has exited
    [ "$scen_run" = "$scen" ] || opts="$opts -trace_logs -log_file rt$i.log"
    (cd "$dir" && timeout $((s + 30)) sipp -sf "$scen_run" -s "$user" "127.0.0.1:$port" \
      -i 127.0.0.1 -p "$(free_udp_port)" $opts -timeout "$s" -nostdin \
      -trace_stat -stf "stat$i.csv" -fd 1 -trace_rtt -rtt_freq 200 \
      -trace_err -error_file "err$i.log" >"out$i.txt" 2>&1; times >"cpu$i.txt") &
    cpids+=($!)
  done
  # what every process got, once per run (sipp's processes exist only now)
  sleep 0.3
  affinity "sip_server=$(echo $procs_srv | tr ' ' ,)" "bridge=$bridge" \
    "peer=$(descendants "$fd_pid" | paste -sd,)" "ocs=$(descendants "$ocs_pid" | paste -sd,)" \
    "sipp=$(descendants "${cpids[@]}" | paste -sd,)" "script=$$" >"$dir/affinity.json"
  local c
  for c in "${cpids[@]}"; do wait "$c" || true; done
  cpu_stat >"$dir/cpustat1"
  if [ -n "$sched_pid" ]; then
    wait "$sched_pid" || true
    # shellcheck disable=SC2046 # one word per label
    python3 "$top/scripts/sched-delays.py" --json "$dir/sched.json" "$dir/sched.data" \
      $(sched_labels "$side") >"$dir/sched.txt" 2>&1 || true
    rm -f "$dir/sched.data" "$dir/sched.data.old"
    log "$side $app @$value/s: run-queue delays (perf sched, ${SCHED_SECS:-3} s of the run)"
    cat "$dir/sched.txt" >&2
  fi
  local t1 b1 k1 f1 o1 l1
  t1=$(date +%s.%N)
  b1=$(ticks $bridge); k1=$(ticks $procs_srv); f1=$(ticks "$fd_pid"); o1=$(ticks $(tree "$ocs_pid"))
  m1=$(faults $procs_srv)
  read -r cv1 ci1 cr1 cw1 < <(ctxsw $procs_srv)
  l1=$(cut -d' ' -f1 /proc/loadavg)
  u1=$(udp_rcvbuf_errors)
  scrape_after "$mport" "$dir"
  python3 - "$dir" "$side" "$app" "$mode" "$value" "$s" "$tag" \
    "$((b1 - b0))" "$((k1 - k0))" "$((f1 - f0))" "$((o1 - o0))" \
    "$(python3 -c "print($t1 - $t0)")" "$l0" "$l1" "$((m1 - m0))" \
    "$((cv1 - cv0))" "$((ci1 - ci0))" "$((cr1 - cr0))" "$((cw1 - cw0))" "$((u1 - u0))" \
    >>"$results" <<'EOF'
import csv, glob, json, os, sys
(d, side, app, mode, value, secs, tag, bt, kt, ft, ot, wall, l0, l1, mf, cv, ci, cr,
 cw, udp_drops) = sys.argv[1:]
def times_cpu(path):
    # bash `times`: second line "XmY.YYYs XmY.YYYs" = children's user and system time
    try:
        line = open(path).read().splitlines()[1]
    except (OSError, IndexError):
        return 0.0
    total = 0.0
    for t in line.split():
        m, sec = t.rstrip("s").split("m")
        total += int(m) * 60 + float(sec)
    return total
sipp_cpu = sum(times_cpu(f) for f in glob.glob(os.path.join(d, "cpu*.txt")))
ok = failed = retrans = 0
elapsed = 0.0
for f in glob.glob(os.path.join(d, "stat*.csv")):
    rows = list(csv.reader(open(f), delimiter=";"))
    if len(rows) < 2:
        continue
    h, last = rows[0], rows[-1]
    col = {k: i for i, k in enumerate(h)}
    ok += int(last[col["SuccessfulCall(C)"]])
    failed += int(last[col["FailedCall(C)"]])
    retrans += int(last[col["Retransmissions(C)"]])
    e = last[col["ElapsedTime(C)"]]           # hh:mm:ss
    hh, mm, ss = (int(x) for x in e.split(":")[:3])
    elapsed = max(elapsed, hh * 3600 + mm * 60 + ss)
lat = []
for f in glob.glob(os.path.join(d, "*_rtt.csv")):
    for line in open(f):
        p = line.strip().split(";")
        if len(p) >= 2 and p[0] != "Date_ms":
            lat.append(float(p[1]))
lat.sort()
def pct(q, v=None):
    v = lat if v is None else v
    return v[min(len(v) - 1, int(q * len(v)))] if v else None
# RT_US=1: the script's round trip per call (X-Rt-Us) and, on the dmbridge sides, the bridge's
# wait for the peer for that call (X-Peer-Us), logged by sipp as "rt peer worker" lines; added =
# rt - peer per call (the module's, libdmbridge's and the bridge's time with the hand-overs);
# on the Kamailio dmbridge sides also libdmbridge's round trip (X-Worker-Us), which splits
# added into the script's side (rt - worker) and the library's and bridge's (worker - peer).
# A worker of 0 (the library knew no round trip) splits nothing: such calls are counted apart
rts, peers, added = [], [], []
script_side, bridge_side, no_worker = [], [], 0
split = []  # (added, script side, bridge side) per call with a worker
for f in glob.glob(os.path.join(d, "rt*.log")):
    for line in open(f):
        v = [int(x) for x in line.split() if x.lstrip("-").isdigit()]
        if not v:
            continue
        rts.append(v[0])
        if len(v) > 1:
            peers.append(v[1])
            added.append(v[0] - v[1])
        if len(v) > 2:
            if v[2] > 0:
                script_side.append(v[0] - v[2])
                bridge_side.append(v[2] - v[1])
                split.append((v[0] - v[1], v[0] - v[2], v[2] - v[1]))
            else:
                no_worker += 1
rts.sort(); peers.sort(); added.sort(); script_side.sort(); bridge_side.sort()
def dist(v):
    return {"samples": len(v), "p50": pct(0.5, v), "p99": pct(0.99, v), "p999": pct(0.999, v),
            "max": v[-1]}
def tail_split(calls):
    """Where the tail of the added time lives, per call: the calls at or above added's p99,
    their mean script side and bridge side (us); and the share of all calls (%) whose added
    time, script side, bridge side alone is >= 1 ms (issue 15 item 3's bound)."""
    calls.sort()
    p99 = calls[min(len(calls) - 1, int(0.99 * len(calls)))][0]
    tail = [c for c in calls if c[0] >= p99]
    over = lambda i: round(100 * sum(1 for c in calls if c[i] >= 1000) / len(calls), 2)
    return {"added_p99": p99, "calls": len(tail),
            "script_mean_us": sum(c[1] for c in tail) // len(tail),
            "bridge_mean_us": sum(c[2] for c in tail) // len(tail),
            "over_1ms_pct": {"added": over(0), "script_side": over(1), "bridge_side": over(2)}}
sched_file = os.path.join(d, "sched.json")
def cpu_busy():
    """Each CPU's busy share over the run (/proc/stat before and after the load ran)."""
    try:
        a, b = ({l.split()[0]: [int(x) for x in l.split()[1:]] for l in open(os.path.join(d, f))}
                for f in ("cpustat0", "cpustat1"))
    except OSError:
        return None
    return {c: round((b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]), 3) for c in sorted(b) if c in a}
def affinity():
    try:
        return json.load(open(os.path.join(d, "affinity.json")))
    except (OSError, ValueError):
        return None
secs = float(secs)
hz = os.sysconf("SC_CLK_TCK")
cpu = lambda t: round(int(t) / hz / secs, 3)
print(json.dumps({
    "tag": tag, "side": side, "app": app, "ta_peer": os.environ.get("TA_PEER", "fd"),
    "mode": mode,
    ("in_flight" if mode == "closed" else "rate"): float(value),
    "seconds": secs, "ok": ok, "failed": failed,
    # requests sipp sent again (no reply within its 500 ms T1), and datagrams the kernel
    # dropped for a full UDP receive buffer (all sockets): a request that waits in the SIP
    # server's socket is not in the script's round trip, these show it
    "sipp_retransmissions": retrans, "udp_rcvbuf_errors": int(udp_drops),
    "calls_per_s": round(ok / secs, 1),
    "latency_ms": {"samples": len(lat), "p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999),
                   "max": lat[-1] if lat else None},
    "cpu_cores": {"sip_server": cpu(kt), "bridge": cpu(bt),
                  "fd_server": cpu(ft), "erlang_ocs": cpu(ot),
                  "sipp": round(sipp_cpu / secs, 3)},
    "loadavg": [float(l0), float(l1)],
    # CPUS_SERVER / CPUS_LOAD / CPUS_BRIDGE as asked (null: not pinned), what each role's
    # processes got, and each CPU's busy share over the run
    "cpus": ({"server": os.environ.get("CPUS_SERVER") or None,
              "bridge": os.environ.get("CPUS_BRIDGE") or os.environ.get("CPUS_SERVER") or None,
              "load": os.environ.get("CPUS_LOAD") or None}
             if any(os.environ.get(k) for k in ("CPUS_SERVER", "CPUS_LOAD", "CPUS_BRIDGE"))
             else None),
    "affinity": affinity(), "cpu_busy": cpu_busy(),
    "sip_children": int(os.environ.get("SIP_CHILDREN") or 4),
    "arrivals": os.environ.get("ARRIVALS") or "sipp",
    # the scheduling asked for the bridge and the SIP server's Diameter processes
    "sched": {"fifo_priority": int(os.environ.get("SCHED_FIFO") or 0),
              "fifo_tiers": os.environ.get("SCHED_FIFO_TIERS") or None,
              "slice_us": int(os.environ.get("SCHED_SLICE_US") or 0),
              "nice": int(os.environ.get("NICE") or 0)},
    **({"rt_us": dist(rts)} if rts else {}),
    **({"peer_us": dist(peers), "added_us": dist(added)} if peers else {}),
    **({"script_side_us": dist(script_side), "bridge_side_us": dist(bridge_side),
        "no_worker_us": no_worker, "tail_split": tail_split(split)} if script_side else {}),
    **({"sched_delays": json.load(open(sched_file))} if os.path.exists(sched_file) else {}),
    "sip_minflt_per_call": round(int(mf) / ok, 2) if ok else None,
    # the SIP server's processes' context switches per call: voluntary ones are its sleeps
    # (each a wake-up), involuntary ones preemptions
    "sip_ctxsw_per_call": ({"voluntary": round(int(cv) / ok, 2),
                            "involuntary": round(int(ci) / ok, 2)} if ok else None),
    # its read-class (read, recv*) and write-class (write, send*) system calls per call
    "sip_syscalls_per_call": ({"read": round(int(cr) / ok, 2),
                               "write": round(int(cw) / ok, 2)} if ok else None),
    **({"bridge_us": json.load(open(os.path.join(d, "bridge_us.json")))}
       if os.path.exists(os.path.join(d, "bridge_us.json")) else {}),
}))
EOF
  tail -n1 "$results"
}

# Latency at low load: one MESSAGE at a time (scripts/sip-one-at-a-time.py), timed from send
# to the final reply, which must be the 200 with a 2xxx or "answered" X-Result.
low_latency() { # side app calls tag
  local port user extra mport d="$work/runs/$4"
  port=$(port_of "$1"); user=$(user_of "$1" "$2"); mport=$(mport_of "$1")
  mkdir -p "$d"
  scrape_before "$mport" "$d"
  extra=$(python3 -c 'import json, os, sys; print(json.dumps({"tag": sys.argv[1], "side": sys.argv[2], "app": sys.argv[3], "ta_peer": os.environ.get("TA_PEER", "fd"), "calls_per_s": None, "cpu_cores": None, "loadavg_start": open("/proc/loadavg").read().split()[0]}))' "$4" "$1" "$2")
  if [ -z "$mport" ]; then
    python3 "$top/scripts/sip-one-at-a-time.py" "$port" "$user" "$3" 0 "$extra" >>"$results"
  else
    python3 "$top/scripts/sip-one-at-a-time.py" "$port" "$user" "$3" 0 "$extra" >"$d/line.json"
    scrape_after "$mport" "$d"
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); r["bridge_us"] = json.load(open(sys.argv[2])); print(json.dumps(r))' \
      "$d/line.json" "$d/bridge_us.json" >>"$results"
  fi
  tail -n1 "$results"
}

# --- warm-up: every side answers (peers up, cdp past its start-up) -------------------------
wait_log "$work/bridge.log" 'kamailio' 20 || true
# one sync side per SIP server the chosen sides use
warm=""
for side in $sides; do
  i=$(instance_of "$side") || exit 1
  case $i in kam_*) w=${i#kam_}-sync ;; *) w=opensips-${i#os_}-sync ;; esac
  case " $warm " in *" $w "*) ;; *) warm="$warm $w" ;; esac
done
answers() { # side app: three calls one after the other, all 200 with a 2xxx
  local u p
  u=$(user_of "$1" "$2"); p=$(port_of "$1")
  (cd "$work" && timeout 10 sipp -sf "$scen" -s "$u" "127.0.0.1:$p" -i 127.0.0.1 \
    -p "$(free_udp_port)" -m 3 -l 1 -recv_timeout 2000 -nostdin >/dev/null 2>&1)
}
# wait_answering TRIES SIDE...: every side answers every app (failing: those that do not)
wait_answering() {
  local tries=$1 n p side app
  shift
  for n in $(seq "$tries"); do
    for p in "${pids[@]}"; do
      kill -0 "$p" 2>/dev/null || { log "process $p exited; logs in $work"; exit 1; }
    done
    failing=""
    for app in $apps; do
      for side in "$@"; do
        answers "$side" "$app" || failing="$failing $side/$app"
      done
    done
    [ -z "$failing" ] && return 0
    [ "$n" = "$tries" ] || sleep 1
  done
  return 1
}
# shellcheck disable=SC2086 # one word per side
wait_answering 60 $warm || { log "not answering after 60 tries:$failing; logs in $work"; exit 1; }
log "all sides answer; results in $results (one JSON line per run)"
if [ -n "${NICE:-}" ] && [ -n "$os_dmb" ]; then
  for p in $(pgrep -P "$os_dmb"); do renice -n "$NICE" -p "$p" >/dev/null; done
fi
# Kamailio + dmbridge.so's processes by role, from core.psx: "PID m" for the module's workers
# ("DMBRIDGE WORKER"), "PID s" for its SIP workers ("udp receiver"), "PID o" for the others.
kam_roles() {
  kamcmd -s "unix:$work/kam-dmb/kamailio_ctl" core.psx | awk '/PID:/{p=$2} /DSC:/{sub(/.*DSC: /, "");
      if (/^DMBRIDGE WORKER/) print p, "m"; else if (/^udp receiver/) print p, "s"; else print p, "o"}'
}
# SCHED_FIFO_TIERS="B M S": SCHED_FIFO priorities along the answer path, set with chrt once
# every side answers: the bridge's threads at B, Kamailio + dmbridge.so's module workers
# (core.psx "DMBRIDGE WORKER") at M, its SIP workers ("udp receiver") at S (0: SCHED_OTHER).
# Then a woken bridge or module worker preempts a SIP worker draining new requests.
if [ -n "${SCHED_FIFO_TIERS:-}" ]; then
  read -r tier_b tier_m tier_s <<<"$SCHED_FIFO_TIERS"
  [ -n "$tier_s" ] || { log "SCHED_FIFO_TIERS needs three priorities: bridge module sip"; exit 1; }
  chrt -f -a -p "$tier_b" "$bridge_pid" >/dev/null
  kam_roles | grep -v ' o$' >"$work/tiers.txt"
  while read -r p r; do
    if [ "$r" = m ]; then chrt -f -p "$tier_m" "$p"
    elif [ "$tier_s" = 0 ]; then chrt -o -p 0 "$p"
    else chrt -f -p "$tier_s" "$p"; fi
  done <"$work/tiers.txt"
  log "SCHED_FIFO_TIERS: bridge threads (class prio): $(ps -L -o cls=,rtprio= -p "$bridge_pid" \
    | tr -s ' ' | sort | uniq -c | tr -s ' ' | tr '\n' ';'); Kamailio (pid role class prio):$(
    while read -r p r; do printf ' %s/%s/%s' "$p" "$r" "$(ps -o cls=,rtprio= -p "$p" | tr -s ' ')"
    done <"$work/tiers.txt")"
fi
# CPUS_KAM_OTHERS=L: Kamailio + dmbridge.so's processes other than its SIP workers ("udp
# receiver") and the module's workers ("DMBRIDGE WORKER") — main, timers, ctl — on L
# (taskset), once every side answers: does a timer process's burst on the server's core
# delay a woken worker or the bridge (BENCHMARKS "Session 20: Kamailio's timers")?
if [ -n "${CPUS_KAM_OTHERS:-}" ]; then
  kam_roles | awk '$2 == "o" {print $1}' >"$work/kam-others.txt"
  while read -r p; do taskset -a -p -c "$CPUS_KAM_OTHERS" "$p" >/dev/null; done <"$work/kam-others.txt"
  log "CPUS_KAM_OTHERS: $(while read -r p; do printf '%s:%s:%s ' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-20)" \
    "$(taskset -p "$p" | awk '{print $NF}')"; done <"$work/kam-others.txt")"
fi
if [ -n "${SCHED_SLICE_US:-}${SCHED_FIFO:-}${NICE:-}" ]; then
  log "bridge: $(grep -h -o 'scheduling.*' "$work/bridge.log" | tail -1)"
  log "Kamailio + dmbridge.so's processes (class priority nice/slice ns): $(
    for p in $(pgrep -P "$kam_dmb"); do printf '%s/%s ' "$(ps -o cls=,rtprio=,ni= -p "$p" | tr -s ' ')" \
      "$(sed -n 's/^se\.slice *: *//p' "/proc/$p/sched")"; done)"
  [ -z "$os_dmb" ] || log "OpenSIPS + dmbridge.so's processes (class priority nice): $(
    for p in $(pgrep -P "$os_dmb"); do printf '%s ' "$(ps -o cls=,rtprio=,ni= -p "$p" | tr -s ' ')"; done)"
fi

# aaa_diameter's sender wedges for good once requests queue up in it (BENCHMARKS.md, issue
# 15 OpenSIPS section: a lost wake-up in its freeDiameter sending thread), and then answers
# nothing in time: every opensips-aaa-* run gets an OpenSIPS of its own, started afresh and
# answering, so no row measures what an earlier run broke. Its log keeps every instance's lines.
fresh() { # side
  case $1 in
    opensips-aaa-*) ;;
    *) return 0 ;;
  esac
  local kids p
  kids=$(pgrep -P "$os_aaa" 2>/dev/null || true)
  kill "$os_aaa" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$os_aaa" 2>/dev/null || break; sleep 0.1; done
  for p in $os_aaa $kids; do kill -9 "$p" 2>/dev/null || true; done
  local kept=()
  for p in "${pids[@]}"; do [ "$p" = "$os_aaa" ] || kept+=("$p"); done
  pids=("${kept[@]}")
  start_opensips os-aaa AAA "$os_aaa_port" "LD_PRELOAD=$work/fd/bind_lo.so"
  os_aaa=$os_started; pids+=("$os_aaa")
  wait_answering 30 opensips-aaa-sync \
    || { log "a fresh OpenSIPS + aaa_diameter does not answer:$failing; logs in $work"; exit 1; }
}

# settle SIDE: before a measured run, wait until the SIP server has no transaction left from
# the run before. After a closed loop of 400 in flight a Kamailio holds ~100k+ transactions in
# tm's wait timer (5 s) and its timer process spends seconds deleting them under tm's locks:
# the next run's async calls then waited for those locks (outside-the-bridge p99 of 14-89 ms
# at 20% right after the closed loop, against 1-1.4 ms at 50%; with the order 0.5 then 0.2 the
# 50% run got it instead: BENCHMARKS "Session 14: the quiet repeat"). Kamailio: tm.stats over
# its ctl socket until `current` is 0 (at most SETTLE_MAX s, default 30); other servers: tm's
# wait timer and a margin (SETTLE_S, default 6 s). SETTLE_MAX=0: no wait (the old behaviour).
settle() { # side
  local max=${SETTLE_MAX:-30} t0=$SECONDS cur
  [ "$max" -gt 0 ] || return 0
  case $(instance_of "$1") in
    kam_*)
      while [ $((SECONDS - t0)) -lt "$max" ]; do
        cur=$(kamcmd -s "unix:$work/$(instance_of "$1" | tr _ -)/kamailio_ctl" tm.stats \
          2>/dev/null | awk '/current:/{print $2; exit}')
        [ "${cur:-1}" = 0 ] && break
        sleep 0.5
      done
      [ "${cur:-1}" = 0 ] || log "settle: $1 still has ${cur:-?} transactions after ${max}s"
      ;;
    *) sleep "${SETTLE_S:-6}" ;;
  esac
}

warmup=${WARMUP:-10}
if [ "$warmup" -gt 0 ]; then
  for app in $apps; do
    for side in $sides; do
      list=$side
      case $side in *sip-only) list="$side $side-tm" ;; esac
      for sd in $list; do
        # aaa_diameter gets a fresh OpenSIPS for every run (fresh() above): nothing to warm
        case $sd in opensips-aaa-*) continue ;; esac
        line=$(results="$work/warmup.jsonl" run_sipp "$sd" "$app" closed "$conc" "$warmup" \
          "warmup-$app-$sd")
        log "warm-up: $sd $app $warmup s, $(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"{r['calls_per_s']:,.0f} calls/s, {r['sip_minflt_per_call']} faults/call\")" "$line")"
      done
    done
  done
fi

for r in $(seq "$rounds"); do
  for app in $apps; do
    for side in $sides; do
      list=$side
      case $side in *sip-only) list="$side $side-tm" ;; esac
      for sd in $list; do
        log "round $r: $sd $app closed loop $conc in flight, ${secs}s"
        fresh "$sd"
        settle "$sd"
        line=$(run_sipp "$sd" "$app" closed "$conc" "$secs" "r$r-$app-$sd-c$conc")
        echo "$line"
        if [ "$low" = 1 ]; then
          log "round $r: $sd $app one call at a time ($low_calls calls)"
          fresh "$sd"
          low_latency "$sd" "$app" "$low_calls" "r$r-$app-$sd-one"
        fi
        if [ -n "$loads" ]; then
          max=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['calls_per_s'])" "$line")
          if [ -n "${MAX_FROM:-}" ]; then
            # another run's closed-loop maximum of this side and app: equal absolute rates
            max=$(python3 - "$MAX_FROM" "$sd" "$app" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print([r for r in rows if r["mode"] == "closed" and r["side"] == sys.argv[2]
       and r["app"] == sys.argv[3]][-1]["calls_per_s"])
EOF
            ) || { log "MAX_FROM=$MAX_FROM has no closed-loop line of $sd $app"; exit 1; }
          fi
          for f in $loads; do
            rate=$(python3 -c "print(int($max * $f))")
            [ "$rate" -ge 1 ] || continue
            log "round $r: $sd $app rate $rate/s ($f of $max)"
            fresh "$sd"
            settle "$sd"
            run_sipp "$sd" "$app" rate "$rate" "$secs" "r$r-$app-$sd-rate$f"
          done
        fi
      done
    done
  done
done

# --- summary -------------------------------------------------------------------------------
[ -s "$results" ] || { log "no run"; exit 0; }
python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'run':<52} {'calls/s':>9} {'ok':>8} {'fail':>5} {'p50':>7} {'p99':>7} {'p999':>7}"
      f"  cpu: {'sip':>5} {'bridge':>6} {'peer':>5} {'sipp':>5}  load       flt/call")
f = lambda v: "-" if v is None else f"{v:g}"
for r in rows:
    l = r["latency_ms"]; c = r["cpu_cores"]
    if r["mode"] == "closed":
        what = f"c{int(r['in_flight'])}"
    elif r["mode"] == "rate":
        what = f"@{int(r['rate'])}/s"
    else:
        what = "one at a time"
        rt = r.get("rt_us")
        if rt:  # the script's time in its request function (bench-originate.cfg's X-Rt-Us)
            what += f" (rt {rt['p50']:g}/{rt['p99']:g}us)"
    what = f"{r['side']} {r['app']} {what}"
    if (r.get("sched") or {}).get("fifo_priority"):
        what += f" fifo{r['sched']['fifo_priority']}"
    if (r.get("sched") or {}).get("fifo_tiers"):
        what += " tiers" + r["sched"]["fifo_tiers"].replace(" ", "/")
    if (r.get("sched") or {}).get("slice_us"):
        what += f" slice{r['sched']['slice_us']}"
    if (r.get("sched") or {}).get("nice"):
        what += f" nice{r['sched']['nice']}"
    if r.get("cpus"):  # pinned: server/bridge/load CPU lists
        p = r["cpus"]
        what += f" pin{p['server'] or '-'}/{p['bridge'] or '-'}/{p['load'] or '-'}"
    if r.get("sip_children", 4) != 4:
        what += f" children{r['sip_children']}"
    if r.get("arrivals", "sipp") != "sipp" and r["mode"] == "rate":
        what += f" {r['arrivals']}"
    rate = "-" if r["calls_per_s"] is None else f"{r['calls_per_s']:,.0f}"
    cpu = "" if c is None else (f"{c['sip_server']:>5} {c['bridge']:>6} "
                                f"{max(c['fd_server'], c['erlang_ocs']):>5} {c['sipp']:>5}")
    print(f"{what:<52} {rate:>9} {r['ok']:>8} {r['failed']:>5} {f(l['p50']):>7} {f(l['p99']):>7}"
          f" {f(l['p999']):>7}       {cpu:<26}  {r['loadavg'][0]}-{r['loadavg'][1]:<6}"
          f" {f(r.get('sip_minflt_per_call'))}")
    if r.get("mode") in ("closed", "rate"):
        if r.get("sipp_retransmissions") or r.get("udp_rcvbuf_errors"):
            print(f"    sipp retransmissions {r.get('sipp_retransmissions', 0)}, UDP receive "
                  f"buffer drops {r.get('udp_rcvbuf_errors', 0)} (the SIP wait before the script)")
        for k, label in (("rt_us", "script round trip (X-Rt-Us)"),
                         ("peer_us", "peer's part (X-Peer-Us)"),
                         ("added_us", "added = rt - peer, per call"),
                         ("script_side_us", "script side = rt - worker"),
                         ("bridge_side_us", "bridge side = worker - peer")):
            h = r.get(k)
            if h:
                print(f"    {label:<28} n {h['samples']:>9}  p50/p99/p99.9 us "
                      f"{h['p50']}/{h['p99']}/{h['p999']}")
        if r.get("cpu_busy"):
            print("    cpu busy " + " ".join(f"{k} {v:.0%}" for k, v in r["cpu_busy"].items())
                  + "  affinity " + " ".join(f"{k} {v}" for k, v in (r.get("affinity") or {}).items()))
        t = r.get("tail_split")
        if t:
            o = t["over_1ms_pct"]
            print(f"    tail: {t['calls']} calls added >= {t['added_p99']} us, mean script side "
                  f"{t['script_mean_us']} us, bridge side {t['bridge_mean_us']} us; >= 1 ms: "
                  f"added {o['added']}%, script side {o['script_side']}%, bridge side "
                  f"{o['bridge_side']}%")
    for k, h in (r.get("bridge_us") or {}).items():
        if h["n"]:
            print(f"    hist {k:<30} n {h['n']:>9}  p50/p99/p99.9 us "
                  f"{f(h['p50_us'])}/{f(h['p99_us'])}/{f(h['p999_us'])}")
EOF
log "work dir $work"
