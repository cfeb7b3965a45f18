#!/usr/bin/env python3
"""Allocator calls per request, by caller, from scripts/bench-instructions.sh's callgrind files.

usage: scripts/callgrind-allocs.py DIR STACK COUNT
  DIR    the work directory bench-instructions.sh printed (it keeps cg-STACK-full.* and
         cg-STACK-base.*: the run of WARMUP + COUNT requests and the run of WARMUP alone)
  STACK  the stack it ran (echo, kamailio, originate, ...)
  COUNT  the COUNT it was given
  PROC   (environment) which processes: those whose callgrind command line contains it
         (default 'dmbridge run', the bridge; 'kamailio' for the SIP server)

Prints, per request ((full - base) / COUNT), the calls to malloc/calloc/realloc/free of those
processes, in all and by caller, and the instructions those calls cost (inclusive). It is a
count, so it is comparable between runs on a loaded machine (BENCHMARKS.md, "Session 13:
allocation-free seam" and the sections after it)."""
import glob, re, sys, collections
if len(sys.argv) != 4:
    sys.exit(__doc__)
d, stack, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
import os
PAT = os.environ.get('PROC', 'dmbridge run')
alloc = re.compile(r'^(malloc|calloc|realloc|free|__libc_malloc|__libc_free|__libc_realloc|cfree)$')
def parse(path):
    names = {'fn': {}}
    def name(v):
        m = re.match(r'\((\d+)\)(?: (.*))?', v)
        if not m: return v
        i, n = m.group(1), m.group(2)
        if n is not None: names['fn'][i] = n
        return names['fn'].get(i, '?')
    fn = None; cfn = None; pending = None
    calls = collections.Counter(); cost = collections.Counter()
    for line in open(path, errors='replace'):
        line = line.rstrip('\n')
        if pending is not None:
            toks = line.split()
            if alloc.match(cfn or ''):
                calls[(fn, cfn)] += pending
                cost[(fn, cfn)] += int(toks[1]) if len(toks) > 1 else 0
            pending = None
            continue
        if not line or line[0].isdigit() or line[0] in '+-*': continue
        k, _, v = line.partition('=')
        if k == 'fn': fn = name(v)
        elif k == 'cfn': cfn = name(v)
        elif k == 'calls': pending = int(v.split()[0])
    return calls, cost
def bridge(part):
    calls = collections.Counter(); cost = collections.Counter(); n = 0
    for f in glob.glob(f'{d}/cg-{stack}-{part}.*'):
        if f.endswith('.log'): continue
        with open(f, errors='replace') as h:
            head = h.read(4000)
        if PAT in head:
            c, k = parse(f); calls.update(c); cost.update(k); n += 1
    if not n: raise SystemExit(f'no file for {part}')
    return calls, cost
fc, fk = bridge('full'); bc, bk = bridge('base')
tot = collections.Counter(); totk = collections.Counter()
rows = []
for key in set(fc) | set(bc):
    c = (fc[key] - bc[key]) / count; k = (fk[key] - bk[key]) / count
    tot[key[1]] += c; totk[key[1]] += k
    if abs(c) >= 0.005: rows.append((c, k, key))
print(f'{stack}: per request, processes with {PAT!r}')
for f in sorted(tot): print(f'  {f}: {tot[f]:.3f} calls, {totk[f]:.1f} instructions inclusive')
print(f'  all: {sum(tot.values()):.3f} calls, {sum(totk.values()):.1f} instructions')
for c, k, (caller, callee) in sorted(rows, key=lambda r: -abs(r[0])):
    print(f'  {c:7.3f} {k:8.1f}  {callee:8} <- {caller[:150]}')
