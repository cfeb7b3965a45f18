#!/usr/bin/env bash
# OpenSIPS echo benchmark: OpenSIPS + dmbridge (module + `dmbridge run`) vs OpenSIPS + aaa_diameter,
# the same event_route[E_DM_REQUEST] (echo-*.cfg) and the same client (`dmbridge bench`).
# It only runs programs: OpenSIPS (with aaa_diameter and dmbridge built in-tree, see
# module-glue/opensips/README.md) must already be built in OPENSIPS_SRC. Loopback only, free ports,
# every process bounded in time and stopped by PID.
# usage: OPENSIPS_SRC=/path/to/opensips [DURATION=10] [CONCURRENCY=100] [ONLY=dmbridge|aaa_diameter]
#        tests/opensips/bench/run.sh        -> one JSON line per stack from `dmbridge bench --json`
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
if [ -z "${OPENSIPS_SRC:-}" ] || [ ! -x "$OPENSIPS_SRC/opensips" ]; then
  echo "# SKIPPED: set OPENSIPS_SRC to an OpenSIPS source tree with ./opensips built"; exit 0
fi
src=$(cd "$OPENSIPS_SRC" && pwd)
dmb="$top/target/release/dmbridge"
fdx_lo="${BIND_LO:-$top/build/deps/fd/bind_lo.so}"   # freeDiameter 1.2.1 ignores ListenOn
dur=${DURATION:-10}; conc=${CONCURRENCY:-100}
work=$(mktemp -d /tmp/dmo-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  rm -f "/dev/shm/dmo-bench-$$"
  [ -n "${KEEP_WORK:-}" ] && echo "# kept $work" || rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

subst() { # in out
  sed -e "s|@MPATH@|$src/modules/|" -e "s|@SIP_PORT@|$sip_port|" -e "s|@DM_PORT@|$dm_port|" \
      -e "s|@DICT@|$here/dictionary.bench|" -e "s|@FD_CONF@|$work/fd.conf|" \
      -e "s|@DMB_SOCKET@|$work/bridge.sock|" "$1" >"$2"
}
start_opensips() { # name
  subst "$here/echo-$1.cfg" "$work/$1.cfg"
  timeout -k 5 $((dur + 60)) env ${2:-} "$src/opensips" -F -f "$work/$1.cfg" -w "$work" \
    >"$work/opensips-$1.log" 2>&1 &
  os_pid=$!; pids+=("$os_pid")
}
bench() { # name
  timeout -k 5 $((dur + 30)) "$dmb" bench --connect "127.0.0.1:$dm_port" \
    --template "$top/cfg-examples/bench/test_app.json" --concurrency "$conc" --duration "$dur" \
    --timeout-ms 2000 --json >"$work/bench-$1.json" 2>"$work/bench-$1.err"
  echo "{\"stack\":\"opensips+$1\",\"opensips_alive\":$(kill -0 "$os_pid" 2>/dev/null && echo true || echo false),\"bench\":$(cat "$work/bench-$1.json" 2>/dev/null || echo null)}"
  [ -s "$work/bench-$1.json" ] || tail -n 5 "$work/bench-$1.err" "$work/opensips-$1.log" | sed 's/^/# /'
}

if [ "${ONLY:-dmbridge}" = dmbridge ]; then
  sip_port=$(free_port); dm_port=$(free_port)
  cat >"$work/bridge.toml" <<EOT
[node]
origin_host = "server.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:$dm_port"]
allow_unknown_peers = true
dictionaries = ["$here/dictionary.bench"]

[[applications]]
id = 16777215
vendor = 999999

[app]
segment = "/dev/shm/dmo-bench-$$"
control_socket = "$work/bridge.sock"
EOT
  timeout -k 5 $((dur + 90)) "$dmb" run --config "$work/bridge.toml" >"$work/bridge.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 100); do [ -S "$work/bridge.sock" ] && break; sleep 0.1; done
  start_opensips dmbridge
  sleep 3
  wait_port "$dm_port" && bench dmbridge
  kill "$os_pid" 2>/dev/null
fi
if [ "${ONLY:-aaa_diameter}" = aaa_diameter ]; then
  sip_port=$(free_port); dm_port=$(free_port)
  echo 'ALLOW_IPSEC *.test.local' >"$work/acl_wl.conf"
  cat >"$work/fd.conf" <<EOT
Identity = "server.test.local";
Realm = "test.local";
Port = $dm_port;
SecPort = 0;
No_SCTP;
No_IPv6;
LoadExtension = "/usr/lib/freeDiameter/acl_wl.fdx" : "$work/acl_wl.conf";
EOT
  start_opensips aaa_diameter "LD_PRELOAD=$fdx_lo"
  sleep 3
  wait_port "$dm_port" && bench aaa_diameter
fi
