#!/usr/bin/env python3
"""How often this CPU stops running us: spin reading the clock for SECS seconds and list the
gaps longer than MIN_US (a VM's vCPU descheduled by its host, an interrupt storm, ...).

    taskset -c 0 scripts/cpu-stalls.py [SECS] [MIN_US]

Run one per CPU at the same time to see what a benchmark on those CPUs competes with.
"""
import sys
import time

secs = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
min_ns = int(float(sys.argv[2]) * 1000) if len(sys.argv) > 2 else 200_000
clock = time.perf_counter_ns
start = last = clock()
end = start + int(secs * 1e9)
gaps = []
while last < end:
    now = clock()
    if now - last > min_ns:
        gaps.append((now - start, now - last))
    last = now
stalled = sum(g for _, g in gaps)
print(f"{len(gaps)} gaps > {min_ns / 1000:.0f} µs in {secs:g} s, {stalled / 1e6:.1f} ms in all "
      f"({100 * stalled / (secs * 1e9):.2f} % of the time)")
for at, gap in gaps[:20]:
    print(f"  at {at / 1e9:7.3f} s: {gap / 1000:8.1f} µs")
