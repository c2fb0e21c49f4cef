#!/usr/bin/env python3
"""Where a callgrind dump's instructions go, per request (issue #18, the WAF in wasm).

usage: python3 bench/callgrind-split.py DUMP REQUESTS [CWASM] [TOP]

DUMP is a dump of bench/callgrind.sh (KEEP=1: its temp dir/<row>/cg.out.*), REQUESTS the
requests of its row. Prints the self cost per object (the `???` object is JIT code: the
filters' wasm as cranelift compiled it), the calls from JIT code into native code
(hostcalls through `HostFunc::array_call_trampoline`, wasm libcalls such as
`memory_copy`) with their inclusive cost, and the TOP (20) functions by self cost. With
CWASM (the module's cached `.cwasm` in ~/.cache/sluice, an ELF; under valgrind wasmtime
compiles for valgrind's CPU, so it is the file of a different engine hash than a native
run's) JIT addresses are named `wasm[0]::function[N]`; N is the function index of the
module's name section (an unstripped build: CARGO_PROFILE_RELEASE_STRIP=false).
"""
import bisect
import collections
import re
import subprocess
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, reqs = sys.argv[1], float(sys.argv[2])
    cwasm = sys.argv[3] if len(sys.argv) > 3 else None
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    names = {"ob": {}, "fn": {}}

    def name(kind, v):
        m = re.match(r"\((\d+)\)(?: (.*))?", v)
        if not m:
            return v
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
            return m.group(2)
        return names[kind].get(m.group(1), "?")

    def jit(f):
        return f.startswith("0x")

    ob = fn = cfn = "?"
    calls_pending = False
    ncalls = 0
    per_ob = collections.Counter()
    per_fn = collections.Counter()
    out_cost = collections.Counter()
    out_calls = collections.Counter()
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        c = line[0]
        if c.isdigit() or c in "+-*":
            parts = line.split()
            if len(parts) < 2:
                continue
            v = int(parts[1])
            if calls_pending:
                calls_pending = False
                if jit(fn) and not jit(cfn):
                    out_cost[cfn] += v
                    out_calls[cfn] += ncalls
                continue
            per_ob[ob] += v
            per_fn[(ob, fn)] += v
            continue
        k, _, v = line.partition("=")
        if k == "ob":
            ob = name("ob", v)
        elif k == "cob":
            name("ob", v)
        elif k == "fn":
            fn = name("fn", v)
        elif k == "cfn":
            cfn = name("fn", v)
        elif k == "calls":
            ncalls = int(v.split()[0])
            calls_pending = True

    label = symbolizer(cwasm, [f for (_, f) in per_fn if jit(f)]) if cwasm else (lambda f: f)
    total = sum(per_ob.values())
    print(f"total: {total / reqs:,.0f} instructions per request")
    print("self cost per object:")
    for o, v in per_ob.most_common(8):
        print(f"  {v / reqs:>10,.0f}  {100 * v / total:5.1f}%  {o}")
    print(f"calls from JIT code into native code: {sum(out_cost.values()) / reqs:,.0f} (inclusive)")
    for f, v in out_cost.most_common(8):
        print(f"  {v / reqs:>10,.0f}  {out_calls[f] / reqs:7.1f} calls  {f[:100]}")
    print("functions by self cost:")
    for (o, f), v in per_fn.most_common(top):
        print(f"  {v / reqs:>10,.0f}  {100 * v / total:5.1f}%  {label(f)[:100]}  [{o.split('/')[-1]}]")


def symbolizer(cwasm, addrs):
    """Names JIT addresses with the .cwasm's symbols: the load base is the one at which
    the most addresses fall on symbol starts."""
    syms = []
    nm = subprocess.run(["nm", "-n", cwasm], capture_output=True, text=True, check=True)
    for line in nm.stdout.splitlines():
        a, _, n = line.split(" ", 2)
        syms.append((int(a, 16), n))
    starts = [a for a, _ in syms]
    known = set(starts)
    values = sorted(int(f, 16) for f in addrs)
    cands = {a - s for a in values[:3] for s in starts}
    base = max(cands, key=lambda b: sum((a - b) in known for a in values)) if cands else 0

    def label(f):
        if not f.startswith("0x"):
            return f
        a = int(f, 16) - base
        i = bisect.bisect_right(starts, a) - 1
        return syms[i][1] if i >= 0 else f

    return label


if __name__ == "__main__":
    main()
