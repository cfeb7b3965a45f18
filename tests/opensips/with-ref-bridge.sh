# Part 2b of tests/opensips/run.sh (sourced there; uses its helpers and variables): the module
# against shm's reference bridge (the echo_bridge example of dmbridge-shm), which exercises
# every path of libdmbridge the module uses without a Diameter peer: outgoing requests echoed
# (or never answered, or answered with an error), incoming requests injected on demand.

echo_bridge="$top/target/release/examples/echo_bridge"
(cd "$top" && cargo build --release -q -p dmbridge-shm --example echo_bridge) >"$work/cargo-echo.log" 2>&1
if [ ! -x "$echo_bridge" ]; then
  bad "reference bridge (echo_bridge example) builds" "$work/cargo-echo.log"
  return 0
fi
"$echo_bridge" "$work/ref.sock" "/dev/shm/dmo-ref-$$" 16 >"$work/ref-bridge.log" 2>&1 &
ref_pid=$!
pids+=("$ref_pid")
check "reference bridge starts" "wait_log '$work/ref-bridge.log' 'listening on' 10" "$work/ref-bridge.log"

port=$(free_port)
mkcfg "$here/ref-bridge.cfg" "$work/ref.cfg" "$port" "$work/ref.sock" "$work/ref.fifo"
start_opensips ref "$work/ref.cfg"
log="$work/ref.log"
check "ref: the SIP workers attach and declare PPR, RTR and *" \
  "wait_log '$work/ref-bridge.log' 'Handles { slot: [0-9]*, names: \[\"PPR\", \"RTR\", \"\*\"\] }' 10" "$work/ref-bridge.log"
req() { "$here/sipreq.py" "$@" 2>&1; }
H='X-App: 16777216'

r=$(req "$port" OPTIONS alice 'X-Cmd: 301' "$H")
check "ref: sync 2xxx -> 1, answer AVPs in the variable (got '$r')" \
  "[ '$r' = 'SIP/2.0 299 rc=1 rpl=[{\"User-Name\":\"alice\"}]' ]" "$log"
r=$(req "$port" OPTIONS alice 'X-Cmd: 999002' "$H")
check "ref: sync error answer -> -1 (got '$r')" \
  "[ '$r' = 'SIP/2.0 299 rc=-1 rpl=[{\"User-Name\":\"alice\"}]' ]" "$log"
r=$(req "$port" OPTIONS alice 'X-Cmd: 999001' "$H")
check "ref: sync without answer -> -2 after request_timeout, variable NULL (got '$r')" \
  "[ '$r' = 'SIP/2.0 299 rc=-2 rpl=' ]" "$log"
r=$(req "$port" MESSAGE alice 'X-Cmd: 301' "$H")
check "ref: async 2xxx -> resume route with 1 (got '$r')" \
  "[ '$r' = 'SIP/2.0 299 async rc=1 rpl=[{\"User-Name\":\"alice\"}]' ]" "$log"
r=$(req "$port" MESSAGE alice 'X-Cmd: 999002' "$H")
check "ref: async error answer -> -1 (got '$r')" \
  "[ '$r' = 'SIP/2.0 299 async rc=-1 rpl=[{\"User-Name\":\"alice\"}]' ]" "$log"
r=$(req -n 30 "$port" MESSAGE alice 'X-Cmd: 999001' "$H")
check "ref: 30 async requests in flight at once, never answered -> each resumes with -2 (got '$r')" \
  "[ '$r' = '30 x SIP/2.0 299 async rc=-2 rpl=' ]" "$log"
r=$(req -n 100 "$port" MESSAGE alice 'X-Cmd: 301' "$H")
check "ref: 100 async requests at once -> 100 resumed with their own answer (got '$r')" \
  "[ '$r' = '100 x SIP/2.0 299 async rc=1 rpl=[{\"User-Name\":\"alice\"}]' ]" "$log"

# incoming requests, injected by the reference bridge into the workers
r=$(req "$port" OPTIONS alice 'X-Cmd: 999003' 'X-App: 20' 'X-Json: [{"inject":"PPR"}]')
check "ref: 20 PPRs dispatched to the workers (got '$r')" \
  "printf '%s' \"\$r\" | grep -q 'rc=1 rpl=\[{\"sent\":20},{\"busy\":0},{\"unhandled\":0},{\"no_worker\":0}\]'" "$log"
check "ref: E_DM_PPR ran with every \$param()" \
  "wait_log '$log' 'E_DM_PPR ref;[0-9]* app 16777216 cmd 305 name Push-Profile-Request from hss.reference/reference avps \[{\"Session-Id\":\"ref;' 5" "$log"
r=$(req "$port" OPTIONS alice 'X-Cmd: 999003' 'X-App: 3' 'X-Json: [{"inject":"RTR"}]')
check "ref: a route without dm_send_reply -> the module answers 5012" \
  "wait_log '$log' 'E_DM_RTR (session ref;[0-9]*): the script sent no reply, answering 5012' 5" "$log"
r=$(req "$port" OPTIONS alice 'X-Cmd: 999003' 'X-App: 2' 'X-Json: [{"inject":"CCR"}]')
check "ref: a command without its own route -> E_DM_REQUEST answers it" \
  "wait_log '$log' 'E_DM_REQUEST [A-Z_]* ref;[0-9]*' 5" "$log"
sleep 0.5
n_ok=$(grep -c 'Reply { slot: [0-9]*, token: [0-9]*, status: Ok' "$work/ref-bridge.log")
check "ref: every one of the 25 injected requests answered exactly once (saw $n_ok)" "[ '$n_ok' = 25 ]" "$work/ref-bridge.log"
check "ref: no reply to an unknown or already answered token" \
  "! grep -q 'unknown or already answered token' '$work/ref-bridge.log'" "$work/ref-bridge.log"

# dm_send_reply in the event route of an event that is not Diameter's: no request to answer
r=$(req "$port" INFO alice)
check "ref: dm_send_reply where no Diameter request is handled -> -1 (got '$r')" \
  "[ '$r' = 'SIP/2.0 299 raised' ] && wait_log '$log' 'E_TEST_NOT_DIAMETER reply without a request: rc=-1' 5" "$log"
check "ref: ... with a log line saying so" \
  "[ \$(grep -c 'dm_send_reply: no Diameter request is being handled here' '$log') = 1 ]" "$log"

# replies_refused: 2 second replies, 3 invalid ones, 1 without a request
st=$(mi "$work/ref.fifo" dm_status)
check "ref: dm_status attached, counters add up" \
  "printf '%s' \"\$st\" | grep -q '\"attached\":true' && printf '%s' \"\$st\" | grep -q '\"requests_in\":25,\"replies\":22,\"replies_refused\":6,\"auto_replies\":3'" "$log"
check "ref: the 2 second replies refused with a log line each" \
  "[ \$(grep -c 'E_DM_REQUEST ref;[0-9]* second reply: rc=-1' '$log') = 2 ] && [ \$(grep -c 'dm_send_reply: this request was already answered' '$log') = 2 ]" "$log"
check "ref: the 3 invalid replies refused with a log line each, naming the offset" \
  "[ \$(grep -c 'E_DM_RTR ref;[0-9]* invalid reply: rc=-1' '$log') = 3 ] && [ \$(grep -c 'dm_send_reply: invalid AVP JSON at offset' '$log') = 3 ]" "$log"
check "ref: no crash" "! grep -qiE 'segfault|signal 11|core dump|BUG' '$log'"

# the bridge goes away: calls fail fast and SIP goes on; it comes back: the workers re-attach
# by themselves and declare their commands again
kill "$ref_pid"
for _ in $(seq 50); do kill -0 "$ref_pid" 2>/dev/null || break; sleep 0.1; done
t0=$(date +%s%N)
r=$(req "$port" OPTIONS alice 'X-Cmd: 301' "$H")
t1=$(date +%s%N)
# -3 (not sent), not -2: the call did not wait for the answer timeout
check "ref: bridge stopped -> -3 at once (got '$r' in $(( (t1 - t0) / 1000000 )) ms)" \
  "printf '%s' \"\$r\" | grep -q '^SIP/2.0 299 rc=-3 '" "$log"
r=$(req "$port" OPTIONS alice 2>&1)
check "ref: SIP still served with the bridge gone" "printf '%s' \"\$r\" | grep -q '^SIP/2.0 299'" "$log"
"$echo_bridge" "$work/ref.sock" "/dev/shm/dmo-ref-$$" 16 >"$work/ref-bridge2.log" 2>&1 &
ref_pid=$!
pids+=("$ref_pid")
back=no
for _ in $(seq 60); do
  r=$(req "$port" OPTIONS alice 'X-Cmd: 301' "$H")
  if [ "$r" = 'SIP/2.0 299 rc=1 rpl=[{"User-Name":"alice"}]' ]; then back=yes; break; fi
  sleep 0.2
done
check "ref: bridge restarted -> requests succeed again without restarting OpenSIPS" "[ $back = yes ]" "$log"
check "ref: the workers re-declared their commands to the new bridge" \
  "wait_log '$work/ref-bridge2.log' 'Handles { slot: [0-9]*, names: \[\"PPR\", \"RTR\", \"\*\"\] }' 5" "$work/ref-bridge2.log"
r=$(req "$port" OPTIONS alice 'X-Cmd: 999003' 'X-App: 4' 'X-Json: [{"inject":"PPR"}]')
check "ref: after the restart incoming requests reach the script again" \
  "printf '%s' \"\$r\" | grep -q '\"sent\":4' && sleep 0.5 && [ \$(grep -c 'status: Ok' '$work/ref-bridge2.log') -ge 4 ]" "$work/ref-bridge2.log"
