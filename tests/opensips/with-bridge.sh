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
  --duration 60 >"$work/hss.log" 2>&1 &
hss_pid=$!
pids+=("$hss_pid")
check "e2e: HSS connected (CEA 2001)" "wait_log '$work/hss.log' 'CEA rc=2001' 10" "$work/hss.log"
hss() { printf '%s\n' "$*" >"$work/hss.ctl"; }
sleep 0.5 # the bridge marks the peer open after its CEA is written

# REGISTER -> async SAR -> 2001 -> 200
r=$("$here/sipreq.py" "$port" REGISTER alice 2>&1)
check "e2e: REGISTER alice -> SAR -> SAA 2001 -> 200 (got '$r')" "[ '$r' = 'SIP/2.0 200 OK' ]" "$log"
check "e2e: the HSS saw the SAR with the user's identities" \
  "grep -q 'SAR user=alice@test.local impu=sip:alice@test.local' '$work/hss.log'" "$work/hss.log"
check "e2e: SAR_DONE ran with \$rc = 1" "wait_log '$log' 'SAA for sip:alice@test.local: result 1' 3" "$log"
# an error answer (Experimental-Result 5001) -> -1 -> 403
r=$("$here/sipreq.py" "$port" REGISTER bob 2>&1)
check "e2e: REGISTER bob -> SAA 5001 -> 403 (got '$r')" "[ '$r' = 'SIP/2.0 403 Forbidden' ]" "$log"

# PPR -> E_DM_PPR -> profile stored, 2001
hss ppr alice@test.local
check "e2e: PPR answered 2001 by the script" "wait_log '$work/hss.log' 'ANSWER ppr rc=2001 e=0' 5" "$work/hss.log"
check "e2e: E_DM_PPR ran with \$param()s" \
  "grep -q 'PPR hss.test.local;[0-9]*;[0-9]* from hss.test.local: \[' '$log' && grep -q 'PPR stored the profile of alice@test.local' '$log'" "$log"
# RTR with the public identity -> binding removed, 2001
hss rtr alice@test.local sip:alice@test.local
check "e2e: RTR answered 2001 by the script" "wait_log '$work/hss.log' 'ANSWER rtr rc=2001 e=0' 5" "$work/hss.log"
check "e2e: E_DM_RTR removed the binding" "wait_log '$log' 'RTR removed 1 binding(s)' 3" "$log"
# a command without an event route -> 3001 from the bridge, E bit
hss udr sip:alice@test.local
check "e2e: UDR (no route) -> 3001 with the E bit" "wait_log '$work/hss.log' 'ANSWER udr rc=3001 e=1' 5" "$work/hss.log"

st=$(mi "$work/e2e.fifo" dm_status)
check "e2e: dm_status counts 2 requests in, 2 replies, 2 async sent" \
  "printf '%s' \"\$st\" | grep -q '\"requests_in\":2,\"replies\":2' && printf '%s' \"\$st\" | grep -q '\"sent_async\":2'"
check "e2e: dm_status shows the bridge's own status" "printf '%s' \"\$st\" | grep -q '\"bridge\":{'"
kill "$opid" 2>/dev/null; for _ in $(seq 50); do kill -0 "$opid" 2>/dev/null || break; sleep 0.1; done

# the aaa_diameter script: its E_DM_REQUEST route answers everything with dm_send_answer
port=$(free_port)
mkcfg "$here/aaa-compat.cfg" "$work/compat2.cfg" "$port" "$work/bridge.sock" "$work/compat2.fifo"
start_opensips compat2 "$work/compat2.cfg"
log="$work/compat2.log"
for _ in $(seq 50); do
  mi "$work/compat2.fifo" dm_status 2>/dev/null | grep -q '"attached":true' && break
  sleep 0.2
done
hss udr sip:alice@test.local
check "aaa_diameter script + bridge: UDR -> E_DM_REQUEST -> dm_send_answer -> 2001" \
  "wait_log '$work/hss.log' 'ANSWER udr rc=2001 e=0' 5" "$work/hss.log"
check "aaa_diameter script + bridge: \$param(app_id)/\$param(cmd_code) as aaa_diameter's" \
  "grep -q 'Req: hss.test.local;[0-9]*;[0-9]* / 16777217 / 306' '$log'" "$log"
check "e2e: no crash" "! grep -qiE 'segfault|signal 11|core dump|BUG' '$work/e2e.log' '$work/compat2.log'"
