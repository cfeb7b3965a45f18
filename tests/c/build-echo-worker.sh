#!/bin/sh
# Builds tests/c/dmb_echo_worker (the benchmark's C worker, see its header comment)
# against the release libdmbridge through include/dmbridge.h.
# usage: tests/c/build-echo-worker.sh [OUTDIR]   (default: target/release)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:-$top/target/release}
(cd "$top" && cargo build --release -q -p dmbridge-cabi)
lib=$top/target/release
${CC:-cc} -std=c11 -O2 -Wall -Wextra -Werror -I"$top/include" \
  -o "$out/dmb_echo_worker" "$here/dmb_echo_worker.c" \
  -L"$lib" -ldmbridge -Wl,-rpath,"$lib"
echo "$out/dmb_echo_worker"
