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
