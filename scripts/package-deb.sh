#!/usr/bin/env bash
# Builds the project's Debian packages with dpkg-deb (no debhelper tree needed):
#   dmbridge_<ver>_<arch>.deb           /usr/bin/dmbridge, libdmbridge (.so and .a) and
#                                       /usr/include/dmbridge.h, the systemd unit, the example
#                                       configuration as /etc/dmbridge/dmbridge.toml (conffile),
#                                       example drop-ins and the Grafana dashboard in the docs
#   dmbridge-kamailio_<ver>_<arch>.deb  dmbridge.so in Debian's Kamailio module directory,
#                                       built against the installed kamailio (its exact
#                                       version is the dependency: Kamailio checks module ABI)
# Dependencies are computed by dpkg-shlibdeps from the binaries.
#
# usage: scripts/package-deb.sh [OUTDIR=target/debian]
#   DMB_DEB_XZ_LEVEL=0..9 (default 6, dpkg-deb's): the xz level of the packages. The packages
#   test (tests/tests/ops_packages.rs) uses 0: the same xz format and dpkg code path for a
#   sixth of the CPU (about 3 s instead of 20 s for the stripped bridge and library).
# Builds what it packages (cargo release build, make -C module-glue/kamailio into OUTDIR).
# Prints the paths of the two packages, one a line.
set -euo pipefail
exec </dev/null
top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$top"
out=$(realpath -m "${1:-target/debian}")
fail() { echo "package-deb: $*" >&2; exit 1; }
command -v dpkg-deb >/dev/null || fail "dpkg-deb missing (apt-get install dpkg-dev)"
command -v dpkg-shlibdeps >/dev/null || fail "dpkg-shlibdeps missing: run scripts/setup.sh (dpkg-dev)"

ver=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$ver" ] || fail "no workspace version in Cargo.toml"
debver="$ver-1"
arch=$(dpkg --print-architecture)
triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

cargo build --release -q -p dmbridge-bridge -p dmbridge-cabi
rel=target/release
[ -f include/dmbridge.h ] || fail "include/dmbridge.h missing (built with dmbridge-cabi)"
mkdir -p "$out"
# The module into OUTDIR: the shared build/ tree is left alone.
make -s -C module-glue/kamailio OUT="$out/kamailio-build" >&2
modso="$out/kamailio-build/dmbridge.so"
[ -f "$modso" ] || fail "module-glue/kamailio built no dmbridge.so"

# One staged tree: <stage>/DEBIAN/{control,...} + files. $1 package, $2 description,
# $3 extra Depends (may be empty); shlibdeps over every ELF file staged.
build_deb() {
  local pkg=$1 desc=$2 extra=$3 stage=$out/stage/$1
  local elfs=() deps
  while IFS= read -r -d '' f; do
    if [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then elfs+=("$f"); fi
  done < <(find "$stage" -path "$stage/DEBIAN" -prune -o -type f -print0)
  # dpkg-shlibdeps wants a debian/control next to it; a minimal one in a scratch dir.
  local scratch=$out/stage/.shlibdeps-$pkg
  rm -rf "$scratch"; mkdir -p "$scratch/debian"
  printf 'Source: dmbridge\n\nPackage: %s\nArchitecture: any\n' "$pkg" > "$scratch/debian/control"
  deps=$(cd "$scratch" && dpkg-shlibdeps -O --ignore-missing-info \
           -l"$stage/usr/lib/$triplet" "${elfs[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
  rm -rf "$scratch"
  [ -n "$extra" ] && deps="${deps:+$deps, }$extra"
  local size
  size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  cat > "$stage/DEBIAN/control" <<CTRL
Package: $pkg
Version: $debver
Architecture: $arch
Maintainer: dmbridge developers <dmbridge@localhost>
Installed-Size: $size
Depends: $deps
Section: net
Priority: optional
Homepage: https://github.com/dmbridge/dmbridge
Description: $desc
CTRL
  find "$stage" -path "$stage/DEBIAN" -prune -o -type f -print0 | xargs -0 chmod go-w
  dpkg-deb --root-owner-group -Zxz -z"${DMB_DEB_XZ_LEVEL:-6}" --build "$stage" "$out/${pkg}_${debver}_${arch}.deb" >/dev/null
  echo "$out/${pkg}_${debver}_${arch}.deb"
}

rm -rf "$out/stage"

# --- dmbridge ------------------------------------------------------------------------------
s=$out/stage/dmbridge
install -D -m 0755 "$rel/dmbridge" "$s/usr/bin/dmbridge"
install -D -m 0644 "$rel/libdmbridge.so" "$s/usr/lib/$triplet/libdmbridge.so"
install -D -m 0644 "$rel/libdmbridge.a" "$s/usr/lib/$triplet/libdmbridge.a"
install -D -m 0644 include/dmbridge.h "$s/usr/include/dmbridge.h"
install -D -m 0644 packaging/systemd/dmbridge.service "$s/lib/systemd/system/dmbridge.service"
install -D -m 0644 cfg-examples/dmbridge.toml "$s/etc/dmbridge/dmbridge.toml"
doc=$s/usr/share/doc/dmbridge
install -D -m 0644 README.md "$doc/README.md"
install -d "$doc/examples/systemd"
install -m 0644 cfg-examples/systemd/*.conf "$doc/examples/systemd/"
for f in cfg-examples/dmbridge.toml cfg-examples/kamailio.cfg cfg-examples/opensips.cfg cfg-examples/grafana-dmbridge.json; do
  [ -f "$f" ] && install -m 0644 "$f" "$doc/examples/"
done
strip --strip-debug "$s/usr/bin/dmbridge" "$s/usr/lib/$triplet/libdmbridge.so" "$s/usr/lib/$triplet/libdmbridge.a"
install -d "$s/DEBIAN"
install -m 0755 packaging/debian/dmbridge/postinst packaging/debian/dmbridge/prerm \
  packaging/debian/dmbridge/postrm "$s/DEBIAN/"
echo /etc/dmbridge/dmbridge.toml > "$s/DEBIAN/conffiles"
build_deb dmbridge "Diameter node for OpenSIPS and Kamailio scripts
 dmbridge is a Diameter (RFC 6733) node that lets OpenSIPS and Kamailio routing
 scripts serve and originate Diameter requests as JSON, over shared memory.
 This package holds the node (dmbridge run, ctl, check-config, bench, decode),
 libdmbridge and its header for SIP-server modules, and the systemd unit." "adduser"

# --- dmbridge-kamailio ---------------------------------------------------------------------
s=$out/stage/dmbridge-kamailio
kamver=$(dpkg-query -W -f='${Version}' kamailio) || fail "kamailio is not installed"
install -D -m 0644 "$modso" "$s/usr/lib/$triplet/kamailio/modules/dmbridge.so"
strip --strip-debug "$s/usr/lib/$triplet/kamailio/modules/dmbridge.so"
install -D -m 0644 module-glue/kamailio/README "$s/usr/share/doc/dmbridge-kamailio/README"
install -d "$s/DEBIAN"
build_deb dmbridge-kamailio "Kamailio module for the dmbridge Diameter node
 The dmbridge module gives Kamailio routing scripts Diameter: E_DM_<command>
 event routes for incoming requests, dm_send_request (sync and async) for
 outgoing ones. Built for this exact Kamailio version." "kamailio (= $kamver), dmbridge (= $debver)"
