"""Memory and time of one ``refs`` tracker pass (its PassRefs) on a real workload, against the
old way of building it (a uint64 address per resident page, then rows folded into runs), and of
one ``damon`` pass on the same workload.

    .venv/bin/python benchmarks/refs_pass.py              # 1 GiB cold + 16 MiB hot
    .venv/bin/python benchmarks/refs_pass.py --mib 4096

This kernel has no DAMON ``vaddr`` (and its DAMON sysfs belongs to the platform), so the damon
pass reads a stand-in kdamond: three aggregation windows of 1,000 regions over the workload's
VMAs, every other one accessed.  Everything after the regions (pagemap's present runs, the
region lookup 64 Ki pages at a time, the weight bytes) is the tracker's own code on the real
process.

*peak* is ``tracemalloc``'s peak while the pass is built (numpy reports its arrays to it), per
resident page; *kept* is what the finished pass holds.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="cold mapping of the workload (MiB)")
    args = ap.parse_args()

    from etmem_scan import trackers
    from etmem_scan.pagemap import present_pages
    from etmem_scan.pagerefs import PTE, PassRefs
    from etmem_scan.procfs import read_vmas
    from etmem_sdk.testing import spawn_workload

    def by_rows(pid, vmas, weight):
        parts = [present_pages(pid, [v]) for v in vmas]
        counts = np.array([len(p) for p in parts], dtype=np.int64)
        addr = np.concatenate(parts)
        del parts
        return PassRefs(addr, np.full(addr.size, PTE, np.uint8), np.repeat(weight, counts))

    class StandInKdamond:
        """What DamonTracker asks of the shared kdamond: fresh windows of regions."""

        def __init__(self, vmas) -> None:
            lo, hi = min(v.start for v in vmas), max(v.end for v in vmas)
            edges = np.linspace(lo, hi, 1001).astype(np.uint64) & ~np.uint64(4095)
            self.rows = np.zeros((1000, 4), np.uint64)
            self.rows[:, 0], self.rows[:, 1] = edges[:-1], edges[1:]
            self.rows[::2, 2] = 5

        def regions(self, slot, after_gen, epoch):
            return after_gen + 1, self.rows.copy()

        def added_at(self, slot):
            return 0.0

    def damon_pass(pid, vmas):
        t = object.__new__(trackers.DamonTracker)
        t.pid, t.proc_root, t.windows, t.slot, t._epoch, t._gen = pid, "/proc", 3, 0, 0, 0
        t.aggr_us, t.update_us, t._monitor = 100_000, 1_000_000, StandInKdamond(vmas)
        return t.scan_pass(vmas)

    with spawn_workload(hot_mib=16, cold_mib=args.mib) as w:
        try:
            vmas = read_vmas(w.pid)
            weight = np.ones(len(vmas), np.uint8)
            for name, build in (
                ("page rows (before)", lambda: by_rows(w.pid, vmas, weight)),
                ("runs (after)", lambda: trackers._pages_and_weights(w.pid, vmas, weight, "/proc")),
                ("damon pass", lambda: damon_pass(w.pid, vmas)),
            ):
                tracemalloc.start()
                t0 = time.perf_counter()
                p = build()
                dt = time.perf_counter() - t0
                kept, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                n = len(p)
                print(f"{name:19} {n:,} pages: peak {peak / n:.2f} B/page, kept {kept / n:.2f} "
                      f"B/page, {dt * 1000:.0f} ms, {len(p.runs.start)} runs")  # fmt: skip
                del p
        finally:
            w.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
