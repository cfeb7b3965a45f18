#!/usr/bin/env bash
# End-to-end test of the OpenSIPS module (module-glue/opensips) with a real opensips binary.
#
# Runs only when OPENSIPS_SRC points at a BUILT OpenSIPS source tree (3.4 - 4.0: the
# `opensips` binary and the modules the cfgs load — proto_udp signaling sl tm maxfwd sipmsgops
# cachedb_local json mi_fifo — built there); says it is skipped otherwise. It builds the module
# in that tree (copying module-glue/opensips to <tree>/modules/dmbridge, `make modules
# module=dmbridge`) and then:
#   1. `opensips -C` with cfg-examples/opensips.cfg and an aaa_diameter script (aaa-compat.cfg
#      with its dictionary file): the module loads, the function flags check passes;
#   2. without a bridge: SIP keeps being served, REGISTER -> async SAR -> -3 -> 504, sync
#      requests fail with -3 and the reason (invalid JSON with its offset, no bridge), the reply
#      variable is NULL, MI dm_status says not attached and counts the failures;
#   2b. with shm's reference bridge (echo_bridge example): sync and async outcomes 1/-1/-2 with
#      the answer in the variable, 100 async requests in flight at once, injected PPR/RTR/CCR
#      run E_DM_PPR (with every $param), 5012 for a route without reply, E_DM_REQUEST for the
#      rest, each answered exactly once; every refused dm_send_reply (a second reply, invalid
#      JSON, none where no Diameter request is handled: an event route of another event) -1,
#      logged and counted in MI dm_status replies_refused; bridge stopped -> -3 at once,
#      restarted -> re-attached;
#   3. with the bridge (target/release/dmbridge) and hss.py as the Cx HSS peer (what the
#      Kamailio e2e test asserts): PPR for an unregistered user -> 5001, the event route sees
#      every AVP in wire order with grouped/vendor values, REGISTER -> async SAR -> 200 / 403
#      (Experimental-Result 5001, Result-Code 5012), PPR stores the profile (2001), RTR removes
#      the binding and answers Associated-Identities, 5001 again after it, UAR (no route) ->
#      3001 with the E bit from the bridge, dm_status peer state and exact counters; then the
#      aaa_diameter script answers through E_DM_REQUEST with $param()s as aaa_diameter's.
# Loopback only, free ports, bounded waits; every process started here is stopped by PID, also
# on failure.
#
# usage: OPENSIPS_SRC=/path/to/opensips tests/opensips/run.sh     ("N passed, N failed")
set -uo pipefail
exec </dev/null
here=$(cd "$(dirname "$0")" && pwd)
top=$(git -C "$here" rev-parse --show-toplevel)

if [ -z "${OPENSIPS_SRC:-}" ] || [ ! -x "${OPENSIPS_SRC}/opensips" ] \
    || [ ! -f "${OPENSIPS_SRC}/Makefile.modules" ]; then
  echo "tests/opensips: SKIPPED - set OPENSIPS_SRC to a built OpenSIPS source tree" \
    "(with ./opensips and its modules built) to run the OpenSIPS module tests"
  exit 0
fi
src=$(cd "$OPENSIPS_SRC" && pwd)
osips="$src/opensips"
sipsend="$top/module-glue/kamailio/tests/sipsend.py"
work=$(mktemp -d /tmp/dmo-e2e.XXXXXX)
pids=()
passed=0 failed=0

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  rm -f /tmp/dmoe2e_$$_* "/dev/shm/dmo-ref-$$" "/dev/shm/dmo-e2e-$$"
  if [ "$failed" = 0 ] || [ -z "${KEEP_WORK:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok - $1"; }
bad() { failed=$((failed + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && tail -n 30 "$2" | sed 's/^/    /'; }
check() { if eval "$2"; then ok "$1"; else bad "$1" "${3:-}"; fi; }

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET,socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_log() { # file pattern seconds
  for _ in $(seq $(($3 * 10))); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# MI over the FIFO (JSON-RPC); mi_fifo opens the reply FIFO under its reply_dir, /tmp/
mi() { # fifo method -> JSON on stdout
  local name="dmoe2e_$$_$RANDOM" # mi_fifo refuses names with dots
  rm -f "/tmp/$name"; mkfifo -m 600 "/tmp/$name"
  timeout 5 cat "/tmp/$name" &
  local cat_pid=$!
  printf ':%s:{"jsonrpc":"2.0","method":"%s","id":1}\n' "$name" "$2" >"$1"
  wait "$cat_pid"
  rm -f "/tmp/$name"
}

# --- build ---------------------------------------------------------------------------------
version=$("$osips" -V 2>/dev/null | sed -n 's/^version: opensips \([^ ]*\).*/\1/p')
echo "# OpenSIPS $version at $src"
if [ ! -f "$top/target/release/libdmbridge.a" ] || [ ! -f "$top/include/dmbridge.h" ]; then
  (cd "$top" && cargo build --release -q -p dmbridge-cabi) >"$work/cargo.log" 2>&1 \
    || { cat "$work/cargo.log"; echo "0 passed, 1 failed"; exit 1; }
fi
mkdir -p "$src/modules/dmbridge"
rm -f "$src"/modules/dmbridge/*.[chod] # an older version of the module and its deps
cp "$top"/module-glue/opensips/{Makefile,*.c,*.h,README.md} "$src/modules/dmbridge/"
echo "DMB_TOP := $top" >"$src/modules/dmbridge/dmbridge-top.mk"
if make -C "$src" modules module=dmbridge >"$work/build.log" 2>&1; then
  ok "module builds in the OpenSIPS $version tree"
else
  bad "module builds in the OpenSIPS $version tree" "$work/build.log"
  echo "$passed passed, $failed failed"; exit 1
fi
check "module builds without compiler warnings" "! grep -q 'warning:' '$work/build.log'" "$work/build.log"

# a copy of a cfg with this run's paths and port
mkcfg() { # in out port socket fifo
  sed -e "s#^mpath=.*#mpath=\"$src/modules/\"#" -e "s#udp:127.0.0.1:5060#udp:127.0.0.1:$3#" \
    -e "s#/run/opensips/opensips_fifo#$5#" -e "s#/run/dmbridge/control.sock#$4#" \
    -e "s#@MPATH@#$src/modules/#" -e "s#@SIP_PORT@#$3#" -e "s#@DMB_SOCKET@#$4#" \
    -e "s#@FIFO@#$5#" -e "s#@DICT@#$here/dictionary.opensips#" "${er_args[@]}" "$1" >"$2"
}
# 3.4/3.5 run event routes only with the event_route module loaded (3.6 made it core)
er_args=()
if [ -d "$src/modules/event_route" ]; then
  er_args=(-e '/^loadmodule "dmbridge.so"/i loadmodule "event_route.so"')
  [ -f "$src/modules/event_route/event_route.so" ] || make -C "$src" modules module=event_route >>"$work/build.log" 2>&1
fi

# OPENSIPS_VALGRIND_DIR=<dir>: every opensips process under valgrind, one report per process in
# <dir> (the counts in tests/README.md)
vg=()
if [ -n "${OPENSIPS_VALGRIND_DIR:-}" ]; then
  vg=(valgrind --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=none
    --num-callers=40)
fi
start_opensips() { # name cfg -> pid in $opid, log $work/name.log
  if [ "${#vg[@]}" -gt 0 ]; then
    "${vg[@]}" "--log-file=$OPENSIPS_VALGRIND_DIR/vg-$1.%p" "$osips" -F -f "$2" -w "$work" \
      >"$work/$1.log" 2>&1 &
  else
    "$osips" -F -f "$2" -w "$work" >"$work/$1.log" 2>&1 &
  fi
  opid=$!
  pids+=("$opid")
}

# --- 1. check mode ---------------------------------------------------------------------------
for c in "$top/cfg-examples/opensips.cfg" "$here/aaa-compat.cfg"; do
  port=$(free_port)
  mkcfg "$c" "$work/check.cfg" "$port" "$work/none.sock" "$work/check.fifo"
  "$osips" -C -f "$work/check.cfg" >"$work/check.log" 2>&1
  check "opensips -C $(basename "$c")" "grep -q 'config file ok' '$work/check.log'" "$work/check.log"
done

# --- 2. no bridge ----------------------------------------------------------------------------
port=$(free_port)
mkcfg "$top/cfg-examples/opensips.cfg" "$work/scscf.cfg" "$port" "$work/no-such-bridge.sock" "$work/scscf.fifo"
start_opensips scscf "$work/scscf.cfg"
scscf_pid=$opid
log="$work/scscf.log"
check "example: E_DM_PPR and E_DM_RTR declared as handled" \
  "wait_log '$log' 'handles command \[RTR\]' 10 && grep -q 'handles command \[PPR\]' '$log' && grep -q '2 handled command name' '$log'" "$log"
check "example: events of the built-in dictionaries published" \
  "grep -q 'Registered event <E_DM_CCR' '$log' && grep -q 'Registered event <E_DM_REQUEST' '$log'" "$log"
check "example: clear message that the bridge is not there" \
  "wait_log '$log' 'bridge at $work/no-such-bridge.sock not reachable yet' 10" "$log"
r=$("$sipsend" "$port" REGISTER 2>&1)
check "example: REGISTER -> async SAR not sent -> 504 (got '$r')" "[ '$r' = 'SIP/2.0 504 HSS Timeout' ]" "$log"
check "example: SAR_DONE ran with \$rc = -3" "wait_log '$log' 'SAA for sip:alice@test.local: result -3' 3" "$log"
r=$("$sipsend" "$port" OPTIONS 2>&1)
check "example: SIP still served (OPTIONS -> 200, got '$r')" "[ '$r' = 'SIP/2.0 200 OK' ]" "$log"
st=$(mi "$work/scscf.fifo" dm_status)
check "example: MI dm_status says not attached, with the reason" \
  "printf '%s' \"\$st\" | grep -q '\"attached\":false,\"error\":\"[^\"]*no-such-bridge.sock'" "$log"
check "example: MI dm_status counts the async request as not sent" \
  "printf '%s' \"\$st\" | grep -q '\"sent_async\":1' && printf '%s' \"\$st\" | grep -q '\"not_sent\":1'"
check "example: MI dm_status lists the handled commands" "printf '%s' \"\$st\" | grep -q '\"handled\":\[\"PPR\",\"RTR\"\]'"
pe=$(mi "$work/scscf.fifo" dm_peers)
check "example: MI dm_peers without a bridge -> 503 with the reason (got $pe)" \
  "printf '%s' \"\$pe\" | grep -q '\"code\":503,\"message\":\"bridge not attached\".*no-such-bridge.sock'"
check "example: opensips still running" "kill -0 $scscf_pid"

port=$(free_port)
mkcfg "$here/aaa-compat.cfg" "$work/compat.cfg" "$port" "$work/no-such-bridge.sock" "$work/compat.fifo"
start_opensips compat "$work/compat.cfg"
log="$work/compat.log"
check "aaa_diameter script: E_DM_REQUEST declared as '*'" "wait_log '$log' 'handles command \[\*\]' 10" "$log"
check "aaa_diameter script: the dictionary's command published as E_DM_92001" \
  "grep -q 'Registered event <E_DM_92001' '$log' && grep -q '1 request command(s) published' '$log'" "$log"
check "aaa_diameter script: notices for the ignored aaa_diameter parameters" \
  "grep -q 'fd_log_level is aaa_diameter' '$log' && grep -q 'aaa_url is aaa_diameter' '$log'" "$log"
wait_log "$log" 'not reachable yet' 10
r=$("$sipsend" "$port" OPTIONS 'X-Json: [{"User-Name":"alice"' 2>&1)
# the variable was "unset" before the call; NULL prints as nothing
check "aaa_diameter script: invalid JSON -> -3, reply var NULL (got '$r')" \
  "[ '$r' = 'SIP/2.0 299 rc=-3 var=' ]" "$log"
check "aaa_diameter script: the invalid JSON's log line names the offset" \
  "wait_log '$log' 'invalid AVP JSON at offset 21' 3" "$log"
r=$("$sipsend" "$port" OPTIONS 2>&1)
check "aaa_diameter script: no bridge -> -3, reply var NULL (got '$r')" \
  "[ '$r' = 'SIP/2.0 299 rc=-3 var=' ]" "$log"
r=$("$sipsend" "$port" MESSAGE 2>&1)
check "aaa_diameter script: async -> resume route with -3 (got '$r')" \
  "[ '$r' = 'SIP/2.0 299 async rc=-3' ]" "$log"
check "no crash" "! grep -qiE 'segfault|signal 11|core dump|BUG' '$work/scscf.log' '$work/compat.log'"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
for p in "${pids[@]}"; do for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
check "clean shutdown" "grep -q 'Thank you for running opensips' '$work/scscf.log' && grep -q 'Thank you for running opensips' '$work/compat.log'"
pids=()

# --- 2b. with the reference bridge ------------------------------------------------------------
. "$here/with-ref-bridge.sh"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
for p in "${pids[@]}"; do for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
pids=()

# --- 3. with the bridge ----------------------------------------------------------------------
. "$here/with-bridge.sh"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
