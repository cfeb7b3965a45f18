#!/usr/bin/env bash
# The README's test command: sets up a fresh Debian machine (scripts/setup.sh) and runs every
# test of the project — unit, property, model-checking, fuzz-corpus regression, the C library
# under valgrind, and the end-to-end tests against real peers (freeDiameter, Erlang/OTP
# diameter, tshark, Kamailio). `.ci/run` calls exactly this.
set -euo pipefail
exec </dev/null
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$top"

scripts/setup.sh

# Style gates first: they are cheap and a failure here means the rest is moot.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings

# Everything the end-to-end tests run: the bridge binary and the C library (release, as
# deployed), then the SIP-server module built against them.
cargo build --release -q -p dmbridge-bridge -p dmbridge-cabi
if [ -f module-glue/kamailio/Makefile ]; then
  make -s -C module-glue/kamailio
fi

cargo test --workspace --release --no-fail-fast
