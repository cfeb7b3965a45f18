#!/usr/bin/env bash
# Sets up a Debian 12 machine (that already has the Rust toolchain) for building and testing
# dmbridge: Debian packages, Kamailio's source for the installed Kamailio (module headers), and
# freeDiameter's test_app extension (a real Diameter peer for the tests).
#
# Idempotent and non-interactive (runs under CI=true with no stdin): every step checks whether
# its work is already done, so a second run only checks and exits in seconds.
#
# usage: scripts/setup.sh            (as root, or with passwordless sudo)
# Results (all under build/, which is gitignored):
#   build/deps/kamailio-src/kamailio-<ver>/   Kamailio source of the installed binary's version
#   build/deps/fd/test_app.fdx, bind_lo.so     freeDiameter test_app + loopback bind shim
set -euo pipefail
exec </dev/null
export DEBIAN_FRONTEND=noninteractive

top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
shared="$top/../shared"
deps="$top/build/deps"

# Everything the project builds or tests with. Kamailio and its module packages are the
# binaries the module loads into (lua: the module's KEMI test; sqlite: the role scripts' databases, with the sqlite3 tool); the rest: peers (freeDiameter, Erlang diameter), the wire
# oracle (tshark), the SIP client (sipp = sip-tester), memory checking (valgrind, clang's ASan
# runtime), C toolchain and the tools `apt-get source` / test_app's build need; the modules'
# READMEs are generated from their DocBook (xsltproc, docbook-xsl, lynx, pandoc); libjson-c-dev is for
# the json module of an OpenSIPS tree built for tests/opensips (OpenSIPS is not packaged).
# linux-perf profiles the bridge and the SIP server for BENCHMARKS.md.
packages=(
  kamailio kamailio-ims-modules kamailio-extra-modules kamailio-lua-modules kamailio-sqlite-modules
  freediameterd freediameter-extensions libfreediameter-dev
  erlang-base erlang-diameter erlang-dev
  tshark sip-tester valgrind sqlite3 linux-perf
  # strace: the order in which `dmbridge run` opens its sockets (tests/tests/control_socket_first.rs)
  strace
  gcc make pkg-config clang libclang-rt-14-dev python3
  bison flex dpkg-dev
  xsltproc docbook-xsl docbook-xml lynx pandoc libjson-c-dev
  # operations: the metrics end-to-end test's scraper, and the packages test's unit check
  prometheus systemd adduser
)

log() { printf 'setup: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { log "must run as root (or have sudo)"; exit 1; }
  SUDO="sudo -n"
fi

apt_updated=0
apt_update_once() {
  [ "$apt_updated" = 1 ] && return 0
  log "apt-get update"
  $SUDO apt-get update -qq
  apt_updated=1
}

# --- 1. deb-src entry -----------------------------------------------------------------------
# `apt-get source` needs one; Debian's default sources have none. Derived from the existing
# deb822 `Types: deb` stanzas (or legacy `deb` lines) so the mirror and suites stay whatever
# this machine already uses.
has_deb_src() {
  grep -rqsE '^Types:.*\bdeb-src\b' /etc/apt/sources.list.d/ 2>/dev/null && return 0
  grep -qsE '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
}

if ! has_deb_src; then
  src_file=/etc/apt/sources.list.d/dmbridge-src.sources
  tmp=$(mktemp)
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    # Copy each stanza whose Types contains `deb`, with Types replaced by deb-src.
    awk '
      function flush() { if (isdeb && body != "") printf "Types: deb-src\n%s\n", body; body=""; isdeb=0 }
      /^[[:space:]]*$/ { flush(); next }
      /^#/ { next }
      /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb=1; next }
      { body = body $0 "\n" }
      END { flush() }
    ' /etc/apt/sources.list.d/debian.sources > "$tmp"
  elif [ -f /etc/apt/sources.list ]; then
    src_file=/etc/apt/sources.list.d/dmbridge-src.list
    sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' /etc/apt/sources.list > "$tmp"
  fi
  if [ ! -s "$tmp" ]; then
    log "no Debian 'deb' source found to derive a deb-src entry from"; rm -f "$tmp"; exit 1
  fi
  $SUDO install -m 0644 "$tmp" "$src_file"
  rm -f "$tmp"
  log "added $src_file"
  apt_update_once
fi

# --- 2. packages ----------------------------------------------------------------------------
missing=()
for p in "${packages[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$st" = "install ok installed" ] || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  apt_update_once
  # Installing kamailio must not start a system Kamailio on 5060 next to the tests' ones.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  # tshark asks whether non-root users may capture; answer for it.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  log "installing: ${missing[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$made_policy" = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d
fi

# --- 3. Kamailio source for the installed version -------------------------------------------
# The module is compiled against these headers; their version must be the binary's.
kam_src_ver=$(dpkg-query -W -f='${source:Version}' kamailio)
kam_up_ver=${kam_src_ver#*:}; kam_up_ver=${kam_up_ver%-*}
kam_dir="$deps/kamailio-src"
stamp="$kam_dir/.version"
if [ "$(cat "$stamp" 2>/dev/null)" != "$kam_src_ver" ] || [ ! -f "$kam_dir/kamailio-$kam_up_ver/src/core/sr_module.h" ]; then
  rm -rf "$kam_dir"; mkdir -p "$kam_dir"
  log "fetching Kamailio source $kam_src_ver"
  # The package lists may predate the deb-src entry or be stale: update once and retry.
  if ! (cd "$kam_dir" && apt-get source -qq "kamailio=$kam_src_ver" >/dev/null 2>"$kam_dir/apt-source.log"); then
    apt_update_once
    (cd "$kam_dir" && apt-get source -qq "kamailio=$kam_src_ver" >/dev/null 2>"$kam_dir/apt-source.log") \
      || { cat "$kam_dir/apt-source.log" >&2; exit 1; }
  fi
  # dpkg-source names the directory after the upstream version.
  if [ ! -f "$kam_dir/kamailio-$kam_up_ver/src/core/sr_module.h" ]; then
    log "Kamailio source not where expected:"; ls "$kam_dir" >&2; exit 1
  fi
  rm -f "$kam_dir"/*.tar.* "$kam_dir"/*.dsc
  echo "$kam_src_ver" > "$stamp"
fi

# --- 4. freeDiameter test_app ---------------------------------------------------------------
fd_dir="$deps/fd"
if [ ! -s "$fd_dir/test_app.fdx" ] || [ ! -s "$fd_dir/bind_lo.so" ]; then
  if [ ! -x "$shared/peers/freediameter/build-test-app.sh" ] && [ ! -f "$shared/peers/freediameter/build-test-app.sh" ]; then
    log "missing $shared/peers/freediameter/build-test-app.sh"; exit 1
  fi
  log "building freeDiameter test_app into $fd_dir"
  mkdir -p "$deps"
  $SUDO sh "$shared/peers/freediameter/build-test-app.sh" "$fd_dir" >"$deps/fd-build.log" 2>&1 \
    || { cat "$deps/fd-build.log" >&2; exit 1; }
fi

log "ok (kamailio $kam_src_ver source in ${kam_dir#"$top"/}, test_app in ${fd_dir#"$top"/})"
