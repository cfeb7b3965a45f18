#!/usr/bin/env bash
# `cargo test --workspace --no-fail-fast` with the test binaries built with the `release-tests`
# profile (release without LTO, Cargo.toml) and run two at a time, against the release build.
#
# - What the tests run and link is the release build (thin LTO, as deployed): this script
#   builds `cargo build --release -p dmbridge-bridge -p dmbridge-cabi` (a no-op after
#   scripts/test.sh's build phase) and points the harness at it: DMBRIDGE_BIN (the `dmbridge`
#   binary) and DMB_LIBDIR (libdmbridge, for the C echo worker); the SIP-server modules link
#   target/release/libdmbridge.a themselves. The test binaries are built with `--profile
#   release-tests`: the release code generation without the cross-crate LTO and debug info
#   that made linking ~64 test binaries most of the test command's CPU.
# - Most of the end-to-end binaries spend their time waiting (peers starting, watchdog timers,
#   restarts), so while one waits the other can run: on 2 cores two lanes cut the wall time
#   without running anything less. Same binaries, same tests, same arguments as `cargo test`
#   gives them (none), same working directory (the package's root) and the same CARGO*
#   variables; then the doc tests (`cargo test --doc`), as `cargo test` runs them.
#
# - Every binary's output is kept in a file and printed whole when it ends (never interleaved),
#   with one summary line: name, result, wall and CPU time (user+sys of it and its children).
# - --no-fail-fast: every binary runs; the exit status is 101 (cargo's) when any failed, and
#   the failed ones are listed at the end.
# - Binaries that change the machine (SERIAL: ops_packages installs and purges .deb packages)
#   run alone, after the parallel ones.
# - The longest binaries start first (SLOW_FIRST, from the per-binary times in BENCHMARKS.md,
#   "Session 10: the test command's wall time"), so the two lanes end together.
#
# usage: scripts/test-binaries.sh [NAME...]
#   NAME...      only these test binaries (e.g. origin_state peer_lifecycle; `dmproto` for a
#                crate's unit tests), without the doc tests; default every binary + doc tests
#   TEST_JOBS=N  lanes (default 2; 1 runs them one after another like cargo test)
#   DMBRIDGE_BIN, DMB_LIBDIR   other artifacts to test (default: the release build's)
set -euo pipefail
exec </dev/null
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$top"
jobs=${TEST_JOBS:-2}

SERIAL=(ops_packages)
SLOW_FIRST=(origin_state bench_peers peer_lifecycle scale_out roles_as shm_app ops_admin
  roles_scscf roles_ro_client third_party_frames kamailio_e2e)

work=$(mktemp -d "${TMPDIR:-/tmp}/dmb-test-binaries.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The artifacts under test (release, thin LTO), then every test binary (as `cargo test` would,
# in the release-tests profile); one pass over cargo's JSON lists the test binaries (name,
# kind, package root, package name and version, executable) and the release `dmbridge` and
# libdmbridge directory.
cargo build --release -p dmbridge-bridge -p dmbridge-cabi --message-format=json-render-diagnostics \
  > "$work/release.json"
cargo test --workspace --profile release-tests --no-run --message-format=json-render-diagnostics \
  > "$work/build.json"
python3 - "$work/build.json" "$work/release.json" "$work/all.tsv" > "$work/artifacts" <<'PY'
import json, os, sys
def artifacts(path):
    for line in open(path):
        if line.startswith("{"):
            m = json.loads(line)
            if m.get("reason") == "compiler-artifact":
                yield m
seen = set()
with open(sys.argv[3], "w") as tsv:
    for m in artifacts(sys.argv[1]):
        if not m.get("executable") or not m["profile"]["test"]:
            continue
        exe = m["executable"]
        if exe in seen:
            continue
        seen.add(exe)
        t = m["target"]
        root = os.path.dirname(m["manifest_path"])
        # package_id: "path+file:///.../bridge#dmbridge-bridge@0.1.0" (or "...#0.1.0" when the
        # directory is the package name)
        pid = m["package_id"].rsplit("#", 1)[-1]
        name, _, ver = pid.rpartition("@")
        if not name:
            name = os.path.basename(root)
        print("\t".join([t["name"], ",".join(t["kind"]), root, name, ver, exe]), file=tsv)
bin = libdir = ""
for m in artifacts(sys.argv[2]):
    if m["target"]["kind"] == ["bin"] and m["target"]["name"] == "dmbridge" and m.get("executable"):
        bin = m["executable"]
    for f in m["filenames"]:
        if os.path.basename(f) == "libdmbridge.so":
            libdir = os.path.dirname(f)
print(bin)
print(libdir)
PY
if [ $# -gt 0 ]; then
  for n in "$@"; do
    awk -F'\t' -v n="$n" '$1 == n { found = 1 } END { exit !found }' "$work/all.tsv" \
      || { echo "test-binaries: no test binary named $n" >&2; exit 2; }
  done
  awk -F'\t' 'NR == FNR { want[$0] = 1; next } $1 in want' <(printf '%s\n' "$@") "$work/all.tsv" \
    > "$work/picked.tsv"
  mv "$work/picked.tsv" "$work/all.tsv"
fi

# The end-to-end tests run the `dmbridge` binary of the release build (DMBRIDGE_BIN, as
# tests/README.md documents), instead of each test process running `cargo build -p
# dmbridge-bridge --bin dmbridge` to find it (session 10: such a nested build relinked the LTO
# binary inside the first test that asked for it, 112 s of CPU), and the C echo worker links
# the release libdmbridge (DMB_LIBDIR) instead of building one in the test profile.
{ read -r built_bin; read -r built_libdir; } < "$work/artifacts"
DMBRIDGE_BIN=${DMBRIDGE_BIN:-$built_bin}
DMB_LIBDIR=${DMB_LIBDIR:-$built_libdir}
[ -x "$DMBRIDGE_BIN" ] || { echo "test-binaries: no dmbridge binary (${DMBRIDGE_BIN:-none})" >&2; exit 2; }
[ -f "$DMB_LIBDIR/libdmbridge.so" ] || { echo "test-binaries: no libdmbridge.so in ${DMB_LIBDIR:-none}" >&2; exit 2; }
export DMBRIDGE_BIN DMB_LIBDIR
echo "test-binaries: testing $DMBRIDGE_BIN and $DMB_LIBDIR/libdmbridge.{a,so}; test binaries: release-tests profile"

# The order: SLOW_FIRST, then the rest as cargo lists them; SERIAL apart.
in_list() { local x=$1; shift; local y; for y in "$@"; do [ "$x" = "$y" ] && return 0; done; return 1; }
: > "$work/parallel.tsv"; : > "$work/serial.tsv"
for n in "${SLOW_FIRST[@]}"; do awk -F'\t' -v n="$n" '$1 == n' "$work/all.tsv" >> "$work/parallel.tsv"; done
while IFS=$'\t' read -r name kind rest; do
  if in_list "$name" "${SERIAL[@]}"; then
    printf '%s\t%s\t%s\n' "$name" "$kind" "$rest" >> "$work/serial.tsv"
  elif ! in_list "$name" "${SLOW_FIRST[@]}"; then
    printf '%s\t%s\t%s\n' "$name" "$kind" "$rest" >> "$work/parallel.tsv"
  fi
done < "$work/all.tsv"

# user+sys, in seconds, of the finished children of this shell ($$: also right inside $(...))
children_cpu() {
  local f
  read -r -a f < /proc/$$/stat
  awk -v t=$((f[15] + f[16])) -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz }'
}
# One binary: run it where cargo would, output to a file, then print it whole under a lock.
run_one() {
  local name=$1 kind=$2 root=$3 pkg=$4 ver=$5 exe=$6 out rc t0 t1 c0 cpu
  out="$work/out.$(basename "$exe")"
  t0=$EPOCHREALTIME c0=$(children_cpu)
  rc=0
  (
    cd "$root"
    CARGO_MANIFEST_DIR=$root CARGO_PKG_NAME=$pkg CARGO_PKG_VERSION=$ver CARGO_CRATE_NAME=$name \
      LD_LIBRARY_PATH=$(dirname "$exe"):$(dirname "$(dirname "$exe")"):$libpath \
      "$exe"
  ) > "$out" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  cpu=$(awk -v a="$c0" -v b="$(children_cpu)" 'BEGIN { print b - a }')
  {
    flock 9
    printf '\n===== %s (%s, %s) =====\n' "$name" "$kind" "${exe#"$top"/}"
    cat "$out"
    awk -v n="$name" -v rc="$rc" -v t0="$t0" -v t1="$t1" -v c="$cpu" \
      'BEGIN { printf "test-binaries: %-28s %s  wall %6.1f s  cpu %6.1f s\n", n, rc == 0 ? "ok    " : "FAILED", t1 - t0, c }' \
      | tee -a "$work/summary"
  } 9> "$work/print.lock"
  [ "$rc" = 0 ] || echo "$name ($exe): exit $rc" >> "$work/failed"
  return 0
}
# The library path cargo gives a test: its deps and profile directories (prepended above), the
# toolchain's libraries, then the caller's.
libpath="$(rustc --print sysroot)/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export -f run_one children_cpu
export work top libpath

tr '\n' '\0' < "$work/parallel.tsv" \
  | xargs -0 -r -P "$jobs" -I{} bash -c 'IFS=$'"'"'\t'"'"' read -r -a f <<< "$1"; run_one "${f[@]}"' _ {}
while IFS= read -r line; do
  IFS=$'\t' read -r -a f <<< "$line"
  run_one "${f[@]}"
done < "$work/serial.tsv"

# The doc tests, as `cargo test` runs them after the binaries.
if [ $# -eq 0 ]; then
  echo "===== doc tests ====="
  t0=$EPOCHREALTIME
  if ! cargo test --workspace --profile release-tests --doc; then
    echo "doc tests: failed" >> "$work/failed"
  fi
  awk -v t0="$t0" -v t1="$EPOCHREALTIME" 'BEGIN { printf "test-binaries: %-28s wall %6.1f s\n", "(doc tests)", t1 - t0 }' \
    | tee -a "$work/summary"
fi

echo
echo "test-binaries: $(wc -l < "$work/all.tsv") binaries, $jobs at a time; by wall time:"
awk '{ for (i = 1; i < NF; i++) if ($i == "wall") print $(i + 1) "\t  " $0 }' "$work/summary" \
  | sort -g -r | cut -f2-
if [ -s "$work/failed" ]; then
  echo "test-binaries: FAILED:"
  sed 's/^/  /' "$work/failed"
  exit 101
fi
