#!/usr/bin/env bash
# The README's test command: sets up a fresh Debian machine (scripts/setup.sh) and runs every
# test of the project — unit, property, model-checking, fuzz-corpus regression, the C library
# under valgrind, and the end-to-end tests against real peers (freeDiameter, Erlang/OTP
# diameter, tshark, Kamailio). `.ci/run` calls exactly this.
set -euo pipefail
exec </dev/null
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$top"

# One line per phase on stderr: wall time, CPU (user+sys of the phase's processes, waited for,
# from /proc/$$/stat's cutime+cstime) and the 1-minute load average at its start and end. On
# a shared machine the wall time of a CPU-bound phase grows with the load; its CPU time does not.
tick=$(getconf CLK_TCK)
cpu_ticks() { local f; read -r -a f < /proc/$$/stat; echo $((f[15] + f[16])); }
load1() { cut -d' ' -f1 /proc/loadavg; }
t_all=$EPOCHREALTIME c_all=$(cpu_ticks) l_all=$(load1)
phase_name=""
phase() {
  phase_end
  phase_name=$1 t_ph=$EPOCHREALTIME c_ph=$(cpu_ticks) l_ph=$(load1)
}
report() { # name t0 c0 l0
  awk -v n="$1" -v t0="$2" -v t1="$EPOCHREALTIME" -v c0="$3" -v c1="$(cpu_ticks)" -v hz="$tick" \
      -v l0="$4" -v l1="$(load1)" 'BEGIN { printf "test.sh: %-10s wall %7.1f s  cpu %7.1f s  load %s -> %s\n",
      n, t1 - t0, (c1 - c0) / hz, l0, l1 }' >&2
}
phase_end() { [ -z "$phase_name" ] || report "$phase_name" "$t_ph" "$c_ph" "$l_ph"; phase_name=""; }
finish() {
  local rc=$?
  [ -z "$phase_name" ] || { [ "$rc" = 0 ] || echo "test.sh: phase $phase_name failed (exit $rc)" >&2; }
  phase_end
  report total "$t_all" "$c_all" "$l_all"
}
trap finish EXIT

phase setup
scripts/setup.sh

# Style gates first: they are cheap and a failure here means the rest is moot.
phase fmt
cargo fmt --all -- --check
phase clippy
cargo clippy --workspace --all-targets -q -- -D warnings

# Everything the end-to-end tests run: the bridge binary and the C library (release, as
# deployed), then the SIP-server module built against them.
phase build
cargo build --release -q -p dmbridge-bridge -p dmbridge-cabi
# The modules' SIP-server independent helpers (ASan + UBSan unit test).
phase common
make -s -C module-glue/common test
# The Kamailio module needs cbindgen's include/dmbridge.h; until cabi generates it the module
# cannot be built, and saying so beats failing every run on a missing file.
if [ -f include/dmbridge.h ]; then
  phase kam-module
  make -s -C module-glue/kamailio
  # the real kamailio binary with the module and no bridge: loads, fails fast, keeps serving
  phase no-bridge
  module-glue/kamailio/tests/no-bridge.sh
  # every script function in every arity, parameter kind and route kind, native and KEMI,
  # with and without the reference bridge; bad arguments refused at start or at run time
  phase kam-funcs
  module-glue/kamailio/tests/functions.py
else
  echo "test.sh: include/dmbridge.h not generated yet: Kamailio module build and tests skipped" >&2
fi

# = `cargo test --workspace --no-fail-fast`, the test binaries built with the release-tests
# profile (release without LTO) and run two at a time (most of them wait on peers and timers)
# against the release build above; each one's output whole, every failure counted.
phase cargo-test
scripts/test-binaries.sh

# The OpenSIPS module's end-to-end test: needs a built OpenSIPS source tree in OPENSIPS_SRC
# (OpenSIPS is not packaged by Debian); without it the script says it is skipped.
phase opensips
tests/opensips/run.sh
# every script function of the OpenSIPS module in every arity, kind and route (same condition)
module-glue/opensips/tests/functions.py

# The shared-memory ring protocol under the loom model checker (every interleaving of the
# publication and sleep/wake-up protocol, bounded): dmbridge-shm's `loom` feature, in the test
# profile, so only shm and loom's own dependencies are compiled here.
phase loom
cargo test -q -p dmbridge-shm --lib --profile release-tests --features loom -- loom
