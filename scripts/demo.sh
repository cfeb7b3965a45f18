#!/usr/bin/env bash
# The demo: an S-CSCF-like Kamailio (cfg-examples/kamailio.cfg) serving and originating Cx
# through dmbridge, against a Cx HSS on Erlang/OTP diameter (tests/peers/cx_hss.escript).
#
#   HSS --PPR/RTR/UAR--> dmbridge run --shm--> Kamailio event_route[dmbridge:E_DM_*] --> answers
#   SIP REGISTER --> Kamailio --async SAR--> dmbridge --> HSS --SAA--> 200 / 403
#
# Sets up (scripts/setup.sh), builds (cargo, make), starts everything on 127.0.0.1 with free
# ports, prints what happened, runs a short `dmbridge bench` of PPRs into the script, and
# stops everything it started (by PID, on any exit). Bounded: about a minute after the build.
# Non-interactive (CI=true, no stdin). Logs stay in the printed work directory.
#
# usage: scripts/demo.sh
set -euo pipefail
exec </dev/null
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$top"
work=$(mktemp -d /tmp/dmbridge-demo.XXXXXX)
pids=()

cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -f "/dev/shm/dmbridge-demo-$$"
  [ "$rc" = 0 ] || echo "demo: FAILED (exit $rc); logs in $work" >&2
  exit "$rc"
}
trap cleanup EXIT

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
info() { printf '   %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_log() { # file pattern seconds
  for _ in $(seq $(($3 * 10))); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  tail -n 20 "$1" >&2; die "timed out waiting for '$2' in $1"
}

# --- set up and build ------------------------------------------------------------------------
say "setup and build"
scripts/setup.sh
cargo build --release -q -p dmbridge-bridge -p dmbridge-cabi
make -s -C module-glue/kamailio
dmb="$top/target/release/dmbridge"

# a watchdog bounds the rest: whatever hangs, the demo ends (and cleans up) within 2 minutes
(
  trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  sleep 120 & sp=$!
  wait "$sp" && { echo "demo: took more than 120 s, stopping" >&2; kill -TERM $$; }
) &
pids+=($!)

# --- start: HSS, bridge, Kamailio -----------------------------------------------------------
hss_port=$(free_port); ctl_port=$(free_port); bport=$(free_port); sip_port=$(free_port)
say "start: Cx HSS (Erlang/OTP diameter) :$hss_port, dmbridge :$bport, Kamailio SIP udp :$sip_port"
timeout 120 escript tests/peers/cx_hss.escript --port "$hss_port" --ctl-port "$ctl_port" \
  --sar "bob=e5001" --duration 100 >"$work/hss.log" 2>&1 &
pids+=($!)
wait_log "$work/hss.log" "listening 127.0.0.1:" 30
info "HSS hss.test.local: answers SAR with 2001 (bob: Experimental-Result 5001 USER_UNKNOWN)"

cat >"$work/dmbridge.toml" <<EOF
[node]
origin_host = "scscf.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:$bport"]
allow_unknown_peers = true          # lets the bench at the end connect

[[applications]]
id = 16777216                       # Cx
vendor = 10415

[[peers]]
host = "hss.test.local"
address = "127.0.0.1"
port = $hss_port

[default_route]
peers = ["hss.test.local"]

[timers]
tc = "1s"

[app]
segment = "/dev/shm/dmbridge-demo-$$"
control_socket = "$work/dmbridge.sock"
reply_timeout = "2s"
EOF
"$dmb" run --config "$work/dmbridge.toml" >"$work/dmbridge.log" 2>&1 &
pids+=($!)
wait_log "$work/dmbridge.log" "serving workers" 10
info "dmbridge run --config $work/dmbridge.toml  (Origin-Host scscf.test.local)"

mkdir -p "$work/kamailio-run"
kamailio -DD -E -Y "$work/kamailio-run" -f cfg-examples/kamailio.cfg -A "SIP_PORT=$sip_port" \
  -A "DMB_SO=\"$top/build/kamailio/dmbridge.so\"" -A "DMB_SOCKET=\"$work/dmbridge.sock\"" \
  >"$work/kamailio.log" 2>&1 &
pids+=($!)
wait_log "$work/kamailio.log" "dmbridge worker 2 started" 20
info "kamailio -f cfg-examples/kamailio.cfg (module workers: 2; routes: E_DM_PPR, E_DM_RTR)"

# the HSS's control port: one command line, one answer line
hss() {
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$ctl_port"
  printf '%s\n' "$*" >&3
  IFS= read -r -t 20 line <&3 || line="ERROR no reply from the HSS control port"
  exec 3>&-
  printf '%s' "$line"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
answer() { # "ANSWER ..." -> readable
  local a=$1
  case "$a" in ANSWER*) ;; *) info "!! $a"; return 0 ;; esac
  local rc exp e assoc
  rc=$(field rc "$a"); exp=$(field exp "$a"); e=$(field e "$a"); assoc=$(field assoc "$a")
  local what="Result-Code $rc"
  [ "$rc" = 0 ] && what="Experimental-Result-Code $exp"
  [ "$e" = 1 ] && what="$what (E bit)"
  [ -n "$assoc" ] && what="$what, Associated-Identities: $assoc"
  info "<- answer: $what"
}
script_saw() { # the event route's log line for the last request of kind $1
  local json
  json=$(grep -E "<script>: $1 [^ ]+ from [^ ]+: \[" "$work/kamailio.log" | tail -n 1 \
    | sed 's/.* from [^ ]*: //')
  [ -n "$json" ] || return 0
  info "   the script's \$dm(avps_json):"
  python3 -c 'import json,sys
for a in json.loads(sys.argv[1]): print("     ", json.dumps(a))' "$json" || info "   $json"
}
sip() { # user -> status line
  python3 module-glue/kamailio/tests/sipsend.py --user "$1" "$sip_port" REGISTER 2>&1 || true
}

up=$(hss up 15)
[[ "$up" == UP* ]] || die "the bridge did not connect to the HSS: $up"
for _ in $(seq 50); do
  kamcmd -s "unix:$work/kamailio-run/kamailio_ctl" dmbridge.status 2>/dev/null | grep -q "attached: yes" && break
  sleep 0.2
done
info "HSS <-> dmbridge: CER/CEA done; Kamailio attached to the bridge"

# --- the story ------------------------------------------------------------------------------
say "1. HSS -> S-CSCF: Push-Profile-Request for alice (not registered yet)"
answer "$(hss ppr alice@test.local)"
script_saw PPR
info "(the script answered Experimental-Result 5001 DIAMETER_ERROR_USER_UNKNOWN itself)"

say "2. SIP REGISTER alice -> async Cx SAR to the HSS"
r=$(sip alice)
info "HSS: $(grep '^SAR user=alice' "$work/hss.log" | tail -n 1)"
info "SIP response: $r"

say "3. SIP REGISTER bob (the HSS answers Experimental-Result 5001)"
r=$(sip bob)
info "HSS: $(grep '^SAR user=bob' "$work/hss.log" | tail -n 1)"
info "SIP response: $r"

say "4. HSS -> S-CSCF: Push-Profile-Request for alice (registered now)"
answer "$(hss ppr alice@test.local)"
info "stored profile (kamcmd htable.get profile alice@test.local):"
kamcmd -s "unix:$work/kamailio-run/kamailio_ctl" htable.get profile alice@test.local 2>&1 \
  | grep -o '<IMSSubscription>.*</IMSSubscription>' | sed 's/^/      /' || true

say "5. HSS -> S-CSCF: Registration-Termination-Request for alice"
answer "$(hss rtr alice@test.local sip:alice@test.local)"
script_saw RTR
info "script: $(grep -o 'RTR removed .*' "$work/kamailio.log" | tail -n 1)"

say "6. HSS -> S-CSCF: User-Authorization-Request (the script has no route for UAR)"
answer "$(hss uar alice@test.local sip:alice@test.local)"
info "(3001 DIAMETER_COMMAND_UNSUPPORTED from the bridge: the peer is never left waiting)"

say "7. kamcmd dmbridge.status (the module's view; 'bridge' is the bridge's own status)"
kamcmd -s "unix:$work/kamailio-run/kamailio_ctl" dmbridge.status >"$work/status.txt" 2>&1 || true
python3 - "$work/status.txt" <<'EOF'
import json, sys
for line in open(sys.argv[1]).read().splitlines():
    k, _, v = line.strip().partition(": ")
    if k == "bridge":
        try:
            b = json.loads(v)
        except ValueError:
            print("   bridge:", v[:200])
            continue
        core = b.get("bridge", b)
        for p in core.get("peers", []):
            print(f"   peer {p.get('host')}: state {p.get('state')}, watchdog {p.get('watchdog')}, "
                  f"usable {p.get('usable')}, apps {p.get('apps')}")
        print(f"   bridge: handles {core.get('handled')}, {len(core.get('workers', []))} workers attached")
    elif k and k not in ("{", "}"):
        print(f"   {k}: {v}")
EOF

say "8. short bench: dmbridge bench -> 3 s of PPRs (50 in flight) answered by the script"
if timeout 30 "$dmb" bench --connect "127.0.0.1:$bport" --template cfg-examples/bench/cx_ppr.json \
    --origin-host bench-hss.test.local --app-vendor 10415 --concurrency 50 --duration 3 \
    --json --quiet >"$work/bench.json" 2>"$work/bench.log"; then
  python3 - "$work/bench.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
lat = d.get("latency_us", {})
print(f"   {d.get('answered')} answered in {d.get('active_s', 0):.1f} s: "
      f"{d.get('answers_per_sec', 0):,.0f} answers/s, p50 {lat.get('p50')} us, p99 {lat.get('p99')} us")
print(f"   codes {json.dumps(d.get('result_codes'))} (bench users are not registered: the script's"
      f" 5001), timeouts {d.get('timeouts')}, unanswered {d.get('unanswered')}")
EOF
else
  info "bench failed: $(tail -n 3 "$work/bench.log")"
fi

say "done; stopping everything (logs: $work)"
