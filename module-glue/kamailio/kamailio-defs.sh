#!/bin/sh
# Prints the C defines a module must be compiled with to match an installed Kamailio binary.
#
# A Kamailio module shares structs and inline code (locks, memory-manager macros, sockets,
# DNS cache) with the core, and their layout depends on compile-time defines. The binary
# prints the ones that matter on its `flags:` line (src/core/ver_defs.h), plus version,
# architecture, compiler, size constants and poll methods; this turns that into -D flags.
# Defines the binary does not print are the per-OS ones of src/Makefile.defs, added here for
# Linux the same way Makefile.defs does.
#
# usage: kamailio-defs.sh [KAMAILIO_BINARY]      -> one line of flags on stdout
#        kamailio-defs.sh --version [BINARY]     -> "5.6.3"
set -eu
mode=defs
if [ "${1:-}" = "--version" ]; then mode=version; shift; fi
bin=${1:-kamailio}
out=$("$bin" -v 2>&1) || { echo "kamailio-defs.sh: '$bin -v' failed" >&2; exit 1; }

# version: kamailio 5.6.3 (x86_64/linux) 8a4f7e  -> name, release, arch, os
set -- $(printf '%s\n' "$out" | sed -n 's/^version: \([^ ]*\) \([^ ]*\) (\([^/]*\)\/\([^)]*\)).*/\1 \2 \3 \4/p')
[ $# -eq 4 ] || { echo "kamailio-defs.sh: cannot parse version line of '$bin -v'" >&2; exit 1; }
name=$1 release=$2 arch=$3 os=$4
if [ "$mode" = version ]; then echo "$release"; exit 0; fi

maj=$(echo "$release" | cut -d. -f1); min=$(echo "$release" | cut -d. -f2)
pat=$(echo "$release" | cut -d. -f3 | sed 's/[^0-9].*//'); pat=${pat:-0}
versionval=$((maj * 1000000 + min * 1000 + pat))

flags=$(printf '%s\n' "$out" | sed -n 's/^flags: //p')
[ -n "$flags" ] || { echo "kamailio-defs.sh: no flags line in '$bin -v'" >&2; exit 1; }
compiler=$(printf '%s\n' "$out" | sed -n 's/^compiled with //p')
consts=$(printf '%s\n' "$out" | grep -E '^ADAPTIVE_WAIT_LOOPS' || true)
polls=$(printf '%s\n' "$out" | sed -n 's/^poll method support: //p')

d="-DNAME='\"$name\"' -DVERSION='\"$release\"' -DARCH='\"$arch\"' -DOS='${os}_' -DOS_QUOTED='\"$os\"'"
d="$d -DCOMPILER='\"$compiler\"' -D__CPU_$arch -D__OS_$os -DVERSIONVAL=$versionval"

# flags: USE_TCP, USE_TLS, ..., FAST_LOCK-ADAPTIVE_WAIT, ...   (FAST_LOCK may carry -NOSMP)
for f in $(printf '%s\n' "$flags" | tr ',' ' '); do
  case "$f" in
    FAST_LOCK-*) d="$d -DFAST_LOCK"
                 for part in $(echo "${f#FAST_LOCK-}" | tr '-' ' '); do d="$d -D$part"; done ;;
    # printed under another name than its define (src/core/ver_defs.h, Makefile.defs)
    TLS_PTHREAD_MUTEX_SHARED) d="$d -DKSR_PTHREAD_MUTEX_SHARED -pthread" ;;
    *[!A-Za-z0-9_]*) echo "kamailio-defs.sh: unexpected flag '$f'" >&2; exit 1 ;;
    *) d="$d -D$f" ;;
  esac
done

# "ADAPTIVE_WAIT_LOOPS 1024, MAX_RECV_BUFFER_SIZE 262144, MAX_URI_SIZE 1024, BUF_SIZE 65535, ..."
# Only ADAPTIVE_WAIT_LOOPS is a build define; the others are constants of the headers.
loops=$(printf '%s\n' "$consts" | sed -n 's/^ADAPTIVE_WAIT_LOOPS \([0-9][0-9]*\).*/\1/p')
[ -n "$loops" ] && d="$d -DADAPTIVE_WAIT_LOOPS=$loops"

# poll methods the core was built with (io_wait.h's struct layout depends on them)
case " $polls" in *epoll*) d="$d -DHAVE_EPOLL" ;; esac
case " $polls" in *sigio_rt*) d="$d -DHAVE_SIGIO_RT -DSIGINFO64_WORKARROUND" ;; esac
case " $polls" in *select*) d="$d -DHAVE_SELECT" ;; esac
case " $polls" in *kqueue*) d="$d -DHAVE_KQUEUE" ;; esac
case " $polls" in *devpoll*) d="$d -DHAVE_DEVPOLL" ;; esac

case "$compiler" in gcc*|clang*|icc*) d="$d -DCC_GCC_LIKE_ASM" ;; esac
if [ "$os" = linux ]; then
  d="$d -DHAVE_GETHOSTBYNAME2 -DHAVE_UNION_SEMUN -DHAVE_SCHED_YIELD -DHAVE_MSG_NOSIGNAL"
  d="$d -DHAVE_MSGHDR_MSG_CONTROL -DHAVE_ALLOCA_H -DHAVE_TIMEGM -DHAVE_SCHED_SETSCHEDULER"
  d="$d -DHAVE_IP_MREQN"
fi
echo "$d"
