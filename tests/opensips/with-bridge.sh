# Part 3 of tests/opensips/run.sh (sourced there; uses its helpers and variables): OpenSIPS with
# the real bridge (target/release/dmbridge) and hss.py as the Cx HSS peer.

bridge="$top/target/release/dmbridge"
if [ ! -x "$bridge" ]; then
  (cd "$top" && cargo build --release -q -p dmbridge-bridge) >"$work/cargo-bridge.log" 2>&1
fi
if [ ! -x "$bridge" ]; then
  bad "bridge binary builds" "$work/cargo-bridge.log"
  return 0
fi

dport=$(free_port)
cat >"$work/bridge.toml" <<EOF
[node]
origin_host = "scscf.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:$dport"]

[[applications]]
id = 16777216
vendor = 10415

[[applications]]
id = 16777217
vendor = 10415

[[peers]]
host = "hss.test.local"
mode = "accept"

[default_route]
peers = ["hss.test.local"]

[app]
segment = "/dev/shm/dmo-e2e-$$"
control_socket = "$work/bridge.sock"
reply_timeout = "2s"
EOF
"$bridge" run --config "$work/bridge.toml" >"$work/bridge.log" 2>&1 &
bridge_pid=$!
pids+=("$bridge_pid")
check "bridge starts" "wait_log '$work/bridge.log' 'listening on' 10" "$work/bridge.log"
for _ in $(seq 50); do [ -S "$work/bridge.sock" ] && break; sleep 0.1; done
if [ ! -S "$work/bridge.sock" ]; then
  echo "# with-bridge part: SKIPPED - this dmbridge does not serve SIP-server workers yet" \
    "(no control socket at $work/bridge.sock)"
  return 0
fi

port=$(free_port)
mkcfg "$top/cfg-examples/opensips.cfg" "$work/e2e.cfg" "$port" "$work/bridge.sock" "$work/e2e.fifo"
start_opensips e2e "$work/e2e.cfg"
log="$work/e2e.log"
attached=no
for _ in $(seq 50); do
  st=$(mi "$work/e2e.fifo" dm_status 2>/dev/null)
  if printf '%s' "$st" | grep -q '"attached":true'; then attached=yes; break; fi
  sleep 0.2
done
check "e2e: dm_status says attached" "[ $attached = yes ]" "$log"
check "e2e: workers serve (descriptor in their reactor)" \
  "printf '%s' \"\$st\" | grep -q '\"workers_serving\":[1-9]'"

rm -f "$work/hss.ctl"; mkfifo "$work/hss.ctl"
python3 "$here/hss.py" --port "$dport" --ctl "$work/hss.ctl" --dest-host scscf.test.local \
  --sar bob=e5001,carol=5012 --duration 90 >"$work/hss.log" 2>&1 &
hss_pid=$!
pids+=("$hss_pid")
check "e2e: HSS connected (CEA 2001)" "wait_log '$work/hss.log' 'CEA rc=2001' 10" "$work/hss.log"
hss() { printf '%s\n' "$*" >"$work/hss.ctl"; }
sleep 0.5 # the bridge marks the peer open after its CEA is written
# the HSS's answers, one per request, in order
nth_answer() { grep "^ANSWER $1 " "$work/hss.log" | sed -n "${2}p"; }
wait_answer() { # cmd nth -> the line
  for _ in $(seq 50); do a=$(nth_answer "$1" "$2"); [ -n "$a" ] && { echo "$a"; return; }; sleep 0.1; done
}
# the AVP keys the event route logged for a session, in order
logged_keys() { # prefix sid
  grep -F "$1 $2 from hss.test.local: " "$log" | head -1 | sed 's/.*hss.test.local: //' \
    | python3 -c 'import json,sys; print(",".join(next(iter(o)) for o in json.load(sys.stdin)))'
}
sid_of() { sed -n 's/.* sid=\(.*\)$/\1/p'; }

# PPR for a user this S-CSCF does not know: the script's Experimental-Result 5001
hss ppr alice@test.local
a=$(wait_answer ppr 1)
check "e2e: PPR for an unknown user -> 5001 (got '$a')" "printf '%s' '$a' | grep -q 'rc=5001 e=0'" "$log"
check "e2e: ... logged by the script" "wait_log '$log' 'PPR for unknown user \[alice@test.local\]: 5001' 3" "$log"
sid=$(printf '%s' "$a" | sid_of)
keys=$(logged_keys PPR "$sid" 2>&1)
check "e2e: E_DM_PPR saw every AVP in wire order, grouped and vendor ones included (got $keys)" \
  "[ '$keys' = 'Session-Id,Vendor-Specific-Application-Id,Auth-Session-State,Origin-Host,Origin-Realm,Destination-Host,Destination-Realm,User-Name,Supported-Features,User-Data,Charging-Information' ]" "$log"
check "e2e: ... with their values (grouped as arrays)" \
  "grep -F 'PPR $sid from hss.test.local:' '$log' | grep -qF '{\"Supported-Features\":[{\"Vendor-Id\":10415},{\"Feature-List-ID\":1},{\"Feature-List\":1}]}'" "$log"

# REGISTER -> async SAR; 200 or 403 after the HSS's answer
r=$("$here/sipreq.py" "$port" REGISTER alice 2>&1)
check "e2e: REGISTER alice -> SAR -> SAA 2001 -> 200 (got '$r')" "[ '$r' = 'SIP/2.0 200 OK' ]" "$log"
check "e2e: the HSS saw alice's SAR" \
  "grep -q 'SAR user=alice@test.local impu=sip:alice@test.local sat=1 -> Result-Code 2001' '$work/hss.log'" "$work/hss.log"
check "e2e: SAR_DONE ran with \$rc = 1" "wait_log '$log' 'SAA for sip:alice@test.local: result 1 code 2001' 3" "$log"
check "e2e: SAR_DONE got the HSS's time in peer_us_pv (> 0)" "wait_log '$log' 'SAA for sip:alice@test.local: result 1 code 2001 in [1-9][0-9]* us' 3" "$log"
r=$("$here/sipreq.py" "$port" REGISTER bob 2>&1)
check "e2e: REGISTER bob -> Experimental-Result 5001 -> 403 (got '$r')" "[ '$r' = 'SIP/2.0 403 Forbidden' ]" "$log"
check "e2e: SAR_DONE saw -1 and the experimental code" "wait_log '$log' 'SAA for sip:bob@test.local: result -1 code 5001' 3" "$log"
r=$("$here/sipreq.py" "$port" REGISTER carol 2>&1)
check "e2e: REGISTER carol -> Result-Code 5012 -> 403 (got '$r')" "[ '$r' = 'SIP/2.0 403 Forbidden' ]" "$log"
check "e2e: SAR_DONE saw -1 code 5012" "wait_log '$log' 'SAA for sip:carol@test.local: result -1 code 5012' 3" "$log"

# PPR for the registered user: stored, 2001
hss ppr alice@test.local
a=$(wait_answer ppr 2)
check "e2e: PPR for the registered user -> 2001 (got '$a')" "printf '%s' '$a' | grep -q 'rc=2001 e=0'" "$log"
check "e2e: E_DM_PPR stored the profile" "wait_log '$log' 'PPR stored the profile of alice@test.local' 3" "$log"

# RTR: the binding goes; the RTA carries the script's Associated-Identities
hss rtr alice@test.local sip:alice@test.local
a=$(wait_answer rtr 1)
check "e2e: RTR -> 2001 with Associated-Identities alice@test.local (got '$a')" \
  "printf '%s' '$a' | grep -q 'rc=2001 e=0 assoc=alice@test.local '" "$log"
check "e2e: E_DM_RTR removed the binding" "wait_log '$log' 'RTR removed 1 binding(s) of alice@test.local' 3" "$log"
sid=$(printf '%s' "$a" | sid_of)
check "e2e: E_DM_RTR saw the Public-Identity and the grouped Deregistration-Reason" \
  "grep -F 'RTR $sid from' '$log' | grep -qF '{\"Public-Identity\":\"sip:alice@test.local\"}' && grep -F 'RTR $sid from' '$log' | grep -qF '{\"Deregistration-Reason\":[{\"Reason-Code\":0},{\"Reason-Info\":\"subscription ended\"}]}'" "$log"
# ... so the next PPR finds no registration
hss ppr alice@test.local
a=$(wait_answer ppr 3)
check "e2e: PPR after the RTR -> 5001 again (got '$a')" "printf '%s' '$a' | grep -q 'rc=5001 e=0'" "$log"

# a command the script has no route for: 3001 with the E bit, from the bridge
hss uar alice@test.local sip:alice@test.local
a=$(wait_answer uar 1)
check "e2e: UAR (no route) -> 3001 with the E bit (got '$a')" "printf '%s' '$a' | grep -q 'rc=3001 e=1'" "$work/hss.log"

# dm_status: attached, the HSS peer and its state, the counters
st=$(mi "$work/e2e.fifo" dm_status)
check "e2e: dm_status names the HSS peer and its state" \
  "printf '%s' \"\$st\" | grep -q 'hss.test.local' && printf '%s' \"\$st\" | grep -qi 'open'"
check "e2e: dm_status counters (4 in, 4 replies, none refused, 3 async: 1 ok, 2 error answers)" \
  "printf '%s' \"\$st\" | grep -q '\"requests_in\":4,\"replies\":4,\"replies_refused\":0,\"auto_replies\":0,\"sent_sync\":0,\"sent_async\":3,\"answers_ok\":1,\"answers_error\":2,\"timeouts\":0,\"not_sent\":0'"
# dm_peers: the bridge's peer table
pe=$(mi "$work/e2e.fifo" dm_peers)
# (keys in cJSON's order; the HSS peer advertises Cx and Sh)
check "e2e: MI dm_peers lists the HSS peer, open, watchdog okay, Cx, nothing pending (got $pe)" \
  "printf '%s' \"\$pe\" | grep -q '\"peers\":\[{' && (for f in '\"host\":\"hss.test.local\"' '\"state\":\"[RI]Open\"' '\"watchdog\":\"Okay\"' '\"usable\":true' '\"apps\":\[16777216[],]' '\"pending\":0'; do printf '%s' \"\$pe\" | grep -q \"\$f\" || exit 1; done)"
check "e2e: opensips still running" "kill -0 $opid"
kill "$opid" 2>/dev/null; for _ in $(seq 50); do kill -0 "$opid" 2>/dev/null || break; sleep 0.1; done

# the aaa_diameter script: its E_DM_REQUEST route answers everything with dm_send_answer
port=$(free_port)
mkcfg "$here/aaa-compat.cfg" "$work/compat2.cfg" "$port" "$work/bridge.sock" "$work/compat2.fifo"
n0=$(grep -c 'handles \["\*"\]' "$work/bridge.log")
start_opensips compat2 "$work/compat2.cfg"
log="$work/compat2.log"
# ready when the bridge has the new workers' declaration of "*"
for _ in $(seq 100); do
  [ "$(grep -c 'handles \["\*"\]' "$work/bridge.log")" -gt "$n0" ] && break
  sleep 0.1
done
hss udr sip:alice@test.local
a=$(wait_answer udr 1)
check "aaa_diameter script + bridge: UDR -> E_DM_REQUEST -> dm_send_answer -> 2001 (got '$a')" \
  "printf '%s' '$a' | grep -q 'rc=2001 e=0'" "$work/hss.log"
check "aaa_diameter script + bridge: \$param(app_id)/\$param(cmd_code) as aaa_diameter's" \
  "grep -q 'Req: hss.test.local;[0-9]*;[0-9]* / 16777217 / 306' '$log'" "$log"
check "e2e: no crash" "! grep -qiE 'segfault|signal 11|core dump|BUG' '$work/e2e.log' '$work/compat2.log'"
