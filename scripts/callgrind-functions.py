#!/usr/bin/env python3
"""Instructions and calls per request, by function, from scripts/bench-instructions.sh's files.

usage: scripts/callgrind-functions.py DIR STACK COUNT [PATTERN...]
  DIR      the work directory bench-instructions.sh printed (it keeps cg-STACK-full.* and
           cg-STACK-base.*: the run of WARMUP + COUNT requests and the run of WARMUP alone)
  STACK    the stack it ran (echo, kamailio, originate, ...)
  COUNT    the COUNT it was given
  PATTERN  (regular expressions) print the calls per request into the functions whose
           names match, instead of the instructions per function
  PROC     (environment) which processes: those whose callgrind command line contains it
           (default 'dmbridge run', the bridge; 'kamailio' for the SIP server)
  INCLUSIVE=1  (environment) instructions including callees (default: self only)
  TOP=N    (environment) rows printed (default 40)

Everything is per request, (full - base) / COUNT, so the warm-up and start-up cancel out. A
count, comparable between runs on a loaded machine: where a change's instructions went, or
how many wake-ups (epoll_wait, the driver task's polls) a request costs (BENCHMARKS.md,
"Session 17: the bridge with more rings")."""
import collections
import glob
import os
import re
import subprocess
import sys

if len(sys.argv) < 4:
    sys.exit(__doc__)
d, stack, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
patterns = [re.compile(p) for p in sys.argv[4:]]
PAT = os.environ.get('PROC', 'dmbridge run')
INCLUSIVE = os.environ.get('INCLUSIVE') == '1'
TOP = int(os.environ.get('TOP', '40'))


def files(part):
    """The callgrind files of the chosen processes for one run (full or base)."""
    out = []
    for f in glob.glob(f'{d}/cg-{stack}-{part}.*'):
        if f.endswith('.log'):
            continue
        with open(f, errors='replace') as h:
            head = h.read(4000)
        if PAT in head:
            out.append(f)
    if not out:
        sys.exit(f'no callgrind file of {PAT!r} for cg-{stack}-{part} in {d}')
    return out


def instructions(part):
    """Instructions by function name (callgrind_annotate's table), summed over the files."""
    total = collections.Counter()
    for f in files(part):
        text = subprocess.run(['callgrind_annotate', f'--inclusive={"yes" if INCLUSIVE else "no"}',
                               '--threshold=100', '--auto=no', f],
                              capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            m = re.match(r'^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$', line)
            if m:
                total[m.group(2)] += int(m.group(1).replace(',', ''))
    return total


def calls(part):
    """Calls by callee name (the files' calls= lines), summed over the files."""
    total = collections.Counter()
    for f in files(part):
        names = {}
        callee = None
        for line in open(f, errors='replace'):
            line = line.rstrip('\n')
            for key in ('fn=', 'cfn='):
                if line.startswith(key):
                    m = re.match(r'\((\d+)\)(?: (.*))?', line[len(key):])
                    if m:
                        if m.group(2):
                            names[m.group(1)] = m.group(2)
                        if key == 'cfn=':
                            callee = names.get(m.group(1))
            if line.startswith('calls=') and callee:
                total[callee] += int(line[6:].split()[0])
    return total


if patterns:
    full, base = calls('full'), calls('base')
    for name in sorted(set(full) | set(base)):
        if any(p.search(name) for p in patterns):
            per = (full[name] - base[name]) / count
            if abs(per) > 0.005:
                print(f'{per:9.3f}  {name[:160]}')
else:
    full, base = instructions('full'), instructions('base')
    rows = sorted(((full[k] - base[k]) / count, k) for k in set(full) | set(base))
    print(f'instructions per request ({"inclusive" if INCLUSIVE else "self"}), {PAT}:')
    for per, name in reversed(rows[-TOP:]):
        print(f'{per:10.1f}  {name[:150]}')
