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

# CPUS_SERVER / CPUS_LOAD [/ CPUS_BRIDGE] (taskset -c lists, e.g. CPUS_SERVER=1 CPUS_LOAD=0):
# the arrangement of an operator's network, where the SIP clients and the Diameter peers are
# other machines, emulated with CPU affinity. The script itself goes to CPUS_LOAD, so all it
# starts (the load generator, the peers, perf) inherits that set; the SIP server (its forked
# processes inherit, with any Diameter stack inside it) starts under "${on_server[@]}" and
# the bridge under "${on_bridge[@]}": CPUS_SERVER (CPUS_BRIDGE when set). taskset execs the
# command, so $! is still its PID. Unset: nobody is pinned (the kernel places everything).
pin_setup() {
  on_server=() on_bridge=()
  [ -z "${CPUS_LOAD:-}" ] || taskset -cp "$CPUS_LOAD" $$ >/dev/null
  [ -z "${CPUS_SERVER:-}" ] || on_server=(taskset -c "$CPUS_SERVER")
  local b=${CPUS_BRIDGE:-${CPUS_SERVER:-}}
  [ -z "$b" ] || on_bridge=(taskset -c "$b")
  [ -z "${CPUS_SERVER:-}${CPUS_LOAD:-}${CPUS_BRIDGE:-}" ] ||
    log "pinned: SIP server on CPUs ${CPUS_SERVER:-any}, bridge ${b:-any}, load (clients, peers, this script) ${CPUS_LOAD:-any}"
}
# descendants PID...: the PIDs and all their descendants' PIDs
descendants() {
  local p
  for p in "$@"; do
    echo "$p"
    # shellcheck disable=SC2046 # one word per child
    descendants $(pgrep -P "$p" 2>/dev/null || true)
  done
}
# affinity ROLE=PID,PID... ...: what each process got (the CPU lists of all its threads,
# /proc/PID/task/*/status), as "role pid:list ..." on stderr and one JSON object
# {"role": "list[/list...]"} (the distinct lists of the role's threads) on stdout
affinity() {
  python3 - "$@" <<'PY'
import glob, json, sys
out, text = {}, []
for arg in sys.argv[1:]:
    role, _, pids = arg.partition("=")
    seen, each = [], []
    for pid in filter(None, pids.split(",")):
        lists = set()
        for f in glob.glob(f"/proc/{pid}/task/*/status"):
            try:
                for line in open(f):
                    if line.startswith("Cpus_allowed_list:"):
                        lists.add(line.split()[1])
            except OSError:
                pass
        if lists:
            each.append(f"{pid}:{'/'.join(sorted(lists))}")
            seen += [l for l in sorted(lists) if l not in seen]
    if seen:
        out[role] = "/".join(seen)
        text.append(f"{role} " + " ".join(each))
print(json.dumps(out))
sys.stderr.write("affinity (pid:CPUs): " + "; ".join(text) + "\n")
PY
}
# cpu_stat: per CPU "cpuN busy wall" in clock ticks, to take each CPU's busy share over a window:
# wall from /proc/uptime, busy = wall less the CPU's idle and iowait time in /proc/stat. Those two
# are exact (the kernel's idle-time bookkeeping), while /proc/stat's user and system time are
# sampled at the scheduler tick, which an idle CPU stops: work in bursts shorter than a tick
# between idle spells was not counted there (a CPU running 0.27 of a core of Kamailio and the
# bridge at 4.7k calls/s showed 3% busy that way)
cpu_stat() {
  awk -v hz="$(getconf CLK_TCK)" 'NR == FNR {wall = $1 * hz; next}
    /^cpu[0-9]/ {printf "%s %d %d\n", $1, wall - $5 - $6, wall}' /proc/uptime /proc/stat
}
