# Helpers shared by the scripts/bench-*.sh race scripts (sourced, not run). The sourcing
# script sets `bench_name` (log prefix) and `shm_name` (a /dev/shm file to remove) first and
# appends every process it starts to `pids`; on exit they are stopped by PID (TERM, then KILL
# after 5 s).
pids=()

bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  [ -z "${shm_name:-}" ] || rm -f "/dev/shm/$shm_name"
}
trap bench_cleanup EXIT

log() { printf '%s: %s\n' "$bench_name" "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_udp_port() { python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_log() { # file pattern seconds
  for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  log "timed out waiting for '$2' in $1"; tail -n 20 "$1" >&2; return 1
}
# start_ta_peer fd|echo DIR PORT: the test_app server at 127.0.0.1:PORT, files in DIR (made):
# freeDiameter's test_app server (needs $top and $shared) or `ECHO_BIN run --echo --threads 1`
# (ECHO_BIN defaults to this tree's release binary) under the identity server.test.local;
# sets peer_pid and appends it to pids. Used by trace-sync.sh and ab-sync.sh.
start_ta_peer() {
  mkdir -p "$2"
  case $1 in
    fd)
      cp "$top/build/deps/fd/test_app.fdx" "$top/build/deps/fd/bind_lo.so" "$2/"
      sh "$shared/peers/freediameter/run.sh" server "$2" "$3"
      peer_pid=$(cat "$2/server.pid")
      ;;
    echo)
      printf '[node]\norigin_host = "server.test.local"\norigin_realm = "test.local"\nlisten = ["127.0.0.1:%s"]\nallow_unknown_peers = true\n[[applications]]\nid = 16777215\nvendor = 999999\n' \
        "$3" >"$2/echo.toml"
      "${ECHO_BIN:-$top/target/release/dmbridge}" run --echo --threads 1 \
        --config "$2/echo.toml" >"$2/echo.log" 2>&1 &
      peer_pid=$!
      ;;
    *) log "the test_app peer is fd or echo, not '$1'"; return 1 ;;
  esac
  pids+=("$peer_pid")
}
