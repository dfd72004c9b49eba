#!/usr/bin/env python3
"""What the damon tracker sees of data whose hot and cold pages alternate inside one mapping.

For each pattern a fresh ``interleaved_workload.py`` (tests/vm/guest/) maps 64 MiB as one VMA
and keeps writing into every page of its hot runs; a ``DamonTracker`` watches it (its own
kdamond, the tracker's default intervals: sample 5 ms, aggregation 100 ms, 3 windows a pass;
``--min-regions`` its min_nr_regions, default 100) and, after ``--warmup`` seconds,
``--passes`` passes are taken.  Printed per pattern: the share of hot pages seen hot and of
cold pages seen hot, averaged over the passes, and the number of DAMON regions of the target.

Needs DAMON with vaddr, so run it in the test bed::

    tests/vm/run --nodes 1 --mem 2G .venv/bin/python benchmarks/damon_interleave.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from etmem_scan import procfs
from etmem_scan.damon import DamonTracker

WORKLOAD = Path(__file__).resolve().parents[1] / "tests/vm/guest/interleaved_workload.py"
PAGE = os.sysconf("SC_PAGE_SIZE")
#: (run KiB, period, max_nr_regions): run i is hot when i % period == 0
PATTERNS = [
    (4, 4, 1000),  # every fourth page hot
    (4, 2, 1000),  # every other page
    (64, 2, 1000),
    (64, 2, 10000),
    (1024, 2, 1000),
    (4096, 2, 1000),
]


def measure(run_kib, period, max_nr, mib, warmup, passes, min_nr):
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD), str(mib), str(run_kib), str(period)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        start, end = info["start"], info["end"]
        vmas = [v for v in procfs.read_vmas(proc.pid) if v.start <= start and v.end >= end]
        with DamonTracker(proc.pid, min_nr_regions=min_nr, max_nr_regions=max_nr) as t:
            time.sleep(warmup)
            hot_seen, cold_seen = [], []
            for _ in range(passes):
                refs = t.scan_pass(vmas)
                inside = (refs.addr >= start) & (refs.addr < end)
                off = (refs.addr[inside] - np.uint64(start)).astype(np.int64)
                is_hot = (off // (run_kib << 10)) % period == 0
                w = refs.weight[inside].astype(bool)
                hot_seen.append(w[is_hot].mean())
                cold_seen.append(w[~is_hot].mean())
                time.sleep(0.5)
            nregions = len(t.regions())
        return float(np.mean(hot_seen)), float(np.mean(cold_seen)), nregions
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--passes", type=int, default=6)
    ap.add_argument("--min-regions", type=int, default=100)
    args = ap.parse_args()
    print(f"{'run':>8} {'period':>6} {'max_nr':>6} {'hot seen':>9} {'cold seen':>9} {'regions':>7}")
    for run_kib, period, max_nr in PATTERNS:
        hot, cold, nreg = measure(
            run_kib, period, max_nr, args.mib, args.warmup, args.passes, args.min_regions
        )
        print(f"{run_kib:>6}Ki {period:>6} {max_nr:>6} {hot:>9.0%} {cold:>9.0%} {nreg:>7}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
