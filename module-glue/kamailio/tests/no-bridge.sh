#!/usr/bin/env bash
# The real kamailio binary with dmbridge.so and no bridge running: the module must load, pass
# Kamailio's own compile-flags check, keep SIP served, and make every Diameter call fail fast
# (-3) with a clear reason. Runs the example cfg and a small test cfg. Loopback only, free
# ports, bounded waits; every process started here is stopped by PID, also on failure.
#
# usage: module-glue/kamailio/tests/no-bridge.sh     (prints "N passed, N failed")
set -uo pipefail
exec </dev/null
here=$(cd "$(dirname "$0")" && pwd)
top=$(git -C "$here" rev-parse --show-toplevel)
so="$top/build/kamailio/dmbridge.so"
work=$(mktemp -d /tmp/dmk-nobridge.XXXXXX)
pids=()
passed=0 failed=0

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok - $1"; }
bad() { failed=$((failed + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && tail -n 30 "$2" | sed 's/^/    /'; }
check() { if eval "$2"; then ok "$1"; else bad "$1" "${3:-}"; fi; }

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_log() { # file pattern seconds
  for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

make -s -C "$top/module-glue/kamailio" >"$work/build.log" 2>&1 || { cat "$work/build.log"; echo "0 passed, 1 failed"; exit 1; }

start_kamailio() { # name cfg port  -> pid in $kpid, log $work/name.log
  mkdir -p "$work/$1"
  kamailio -DD -E -Y "$work/$1" -f "$2" -A "SIP_PORT=$3" -A "DMB_SO=\"$so\"" \
    -A "DMB_SOCKET=\"$work/no-such-bridge.sock\"" -A "KEMI_LUA=\"$here/kemi.lua\"" \
    >"$work/$1.log" 2>&1 &
  kpid=$!
  pids+=("$kpid")
}

# 1. check mode: parses the cfg, loads the module (Kamailio compares its compile flags)
for cfg in "$top/cfg-examples/kamailio.cfg" "$here/no-bridge.cfg" "$here/kemi.cfg"; do
  port=$(free_port)
  kamailio -c -f "$cfg" -A "SIP_PORT=$port" -A "DMB_SO=\"$so\"" -A 'DMB_SOCKET="/nonexistent"' \
    -A "KEMI_LUA=\"$here/kemi.lua\"" >"$work/check.log" 2>&1
  check "kamailio -c $(basename "$cfg")" "grep -q 'config file ok' '$work/check.log'" "$work/check.log"
done
check "no compile-flags mismatch" "! grep -q 'compile flags mismatch' '$work/check.log'"

# 2. the S-CSCF example without a bridge: REGISTER -> async SAR not sent -> 504, SIP keeps working
port=$(free_port)
start_kamailio scscf "$top/cfg-examples/kamailio.cfg" "$port"
scscf_pid=$kpid
log="$work/scscf.log"
check "example: module workers start" "wait_log '$log' 'dmbridge worker 2 started' 10" "$log"
check "example: 2 handled commands declared from event routes" "grep -q '2 handled command name' '$log'" "$log"
check "example: they are PPR and RTR" "grep -q 'handles command \[PPR\]' '$log' && grep -q 'handles command \[RTR\]' '$log'" "$log"
check "example: clear attach failure logged" "wait_log '$log' 'cannot attach to bridge at .*no-such-bridge.sock' 5" "$log"
r=$("$here/sipsend.py" "$port" REGISTER 2>&1)
check "example: REGISTER answered 504 when the SAR cannot be sent (got '$r')" "[ '$r' = 'SIP/2.0 504 HSS Timeout' ]" "$log"
check "example: SAR_DONE ran with \$dm(result) = -3" "wait_log '$log' 'SAA for sip:alice@test.local: result -3' 3" "$log"
r=$("$here/sipsend.py" "$port" OPTIONS 2>&1)
check "example: SIP still served (OPTIONS -> 200, got '$r')" "[ '$r' = 'SIP/2.0 200 OK' ]" "$log"
st=$(kamcmd -s "unix:$work/scscf/kamailio_ctl" dmbridge.status 2>&1)
check "example: dmbridge.status says not attached" "printf '%s' \"\$st\" | grep -q 'attached: no'"
check "example: dmbridge.status counts the async request as not sent" \
  "printf '%s' \"\$st\" | grep -q 'sent_async: 1' && printf '%s' \"\$st\" | grep -q 'not_sent: 1'"
pe=$(kamcmd -s "unix:$work/scscf/kamailio_ctl" dmbridge.peers 2>&1)
check "example: dmbridge.peers without a bridge -> 503 with the reason (got '$pe')" \
  "printf '%s' \"\$pe\" | grep -q '503 - bridge not attached: .*no-such-bridge.sock'"
check "example: kamailio still running" "kill -0 $scscf_pid"

# 3. synchronous dm_send_request: invalid JSON and no bridge both give -3, with the reason
port=$(free_port)
start_kamailio sync "$here/no-bridge.cfg" "$port"
log="$work/sync.log"
check "sync: module worker started" "wait_log '$log' 'dmbridge worker 1 started' 10" "$log"
check "sync: E_DM_REQUEST declared as '*', ASR as ASR" "grep -q 'handles command \[\*\]' '$log' && grep -q 'handles command \[ASR\]' '$log'" "$log"
r=$("$here/sipsend.py" "$port" OPTIONS 'X-Json: [{"User-Name":"alice"' 2>&1)
check "sync: invalid JSON -> -3 (got '$r')" "printf '%s' \"\$r\" | grep -q '^SIP/2.0 299 rc=-3 err=invalid JSON'" "$log"
check "sync: invalid JSON log line names the offset" "wait_log '$log' 'invalid AVP JSON at offset 21' 3" "$log"
r=$("$here/sipsend.py" "$port" OPTIONS 'X-Json: [{"User-Name":"alice"}]' 2>&1)
check "sync: no bridge -> -3 'bridge not attached', reply var reset to null (0 for a var) (got '$r')" "printf '%s' \"\$r\" | grep -q '^SIP/2.0 299 rc=-3 err=bridge not attached var=0'" "$log"
sip_pid=$kpid
for i in 1 2 3; do
  r=$("$here/sipsend.py" "$port" INFO 2>&1)
  check "sync: 3-parameter dm_send_request -> -3, no reply variable touched (call $i, got '$r')" \
    "[ '$r' = 'SIP/2.0 299 rc=-3 err=bridge not attached' ]" "$log"
done
check "sync: kamailio still running after the 3-parameter form" "kill -0 $sip_pid"
check "sync: no crash" "! grep -qiE 'segfault|signal 11|CRITICAL: <core> \\[core/pass_fd' '$log'"

# 4. KEMI (Lua): the same functions from KSR.dmbridge, async resumes in a Lua function
port=$(free_port)
start_kamailio kemi "$here/kemi.cfg" "$port"
log="$work/kemi.log"
check "kemi: module worker started, every command declared (event_callback)" \
  "wait_log '$log' 'dmbridge worker 1 started' 10 && grep -q '1 handled command name' '$log'" "$log"
r=$("$here/sipsend.py" "$port" OPTIONS 2>&1)
check "kemi: dm_send_request -> -3 (got '$r')" "[ '$r' = 'SIP/2.0 299 rc=-3 err=bridge not attached' ]" "$log"
r=$("$here/sipsend.py" "$port" REGISTER 2>&1)
check "kemi: dm_send_request_async resumes in the Lua callback (got '$r')" "[ '$r' = 'SIP/2.0 504 result -3' ]" "$log"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
