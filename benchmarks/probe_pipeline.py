"""The ``probe`` tracker's page path on a synthetic 64 GiB process: memory per scanned page and
time per pass, with no real process (issue 12's "<= 8 bytes per scanned page").

    .venv/bin/python benchmarks/probe_pipeline.py                 # 64 GiB, 9 passes
    .venv/bin/python benchmarks/probe_pipeline.py --gib 4 --passes 6

A simulated kernel (present and swapped bits, one bool each per page, allocated before the
baseline so they are not counted) stands behind the tracker's injectable ``page_states``,
``pageout``, ``meminfo`` and ``clock``. Every page is resident at the start; a tenth of them is
hot (``--hot-run`` pages every ten times that) and comes straight back after a page-out. Each
pass is what slide's cycle does with it, through the cycle's own functions: ``scan_pass``,
folded into a ``PageRefs`` with ``merge`` (``loop`` passes per cycle), then the cold pages
(``count < T``) in 16,000-page batches, checked against the simulated pagemap for the pages
still resident (per batch, or -- in versions before that -- every present page at once).

*extra B/page* is the peak RSS above the baseline over the VMA's pages; the last line says
PASS or FAIL against the 8 B/page target.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import numpy as np

PAGE = 4096
BASE = 0x7F0000000000
TARGET_BPP = 8.0


def maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Vma:
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end


class Kernel:
    """One anonymous VMA's pages: present / swapped bits; hot pages refault at once."""

    def __init__(self, npages: int, hot_run: int) -> None:
        self.n = npages
        # np.full, not np.zeros: calloc'd pages would be faulted in during the run and
        # counted as the tracker's
        self.present = np.full(npages, True)
        self.swapped = np.full(npages, False)
        # built without page-sized temporaries: the baseline is a high-water mark
        pattern = np.arange(10 * hot_run) < hot_run
        self.hot = np.tile(pattern, -(-npages // pattern.size))[:npages]
        self.swap_total_kb = 2 * npages * PAGE // 1024
        self._back = np.full(npages, False)  # scratch, so the simulation adds nothing per pass

    def _span(self, start: int, end: int) -> tuple[int, int]:
        lo = max(0, (start - BASE) // PAGE)
        return lo, min(self.n, max(lo, (end - BASE) // PAGE))

    def page_states(self, pid, ranges):
        present, swapped = [], []
        for r in ranges:
            start, end = (r.start, r.end) if hasattr(r, "start") else r
            lo, hi = self._span(int(start), int(end))
            for bits, out in ((self.present, present), (self.swapped, swapped)):
                idx = np.flatnonzero(bits[lo:hi]).view(np.uint64)
                idx += np.uint64(lo)
                idx <<= np.uint64(12)
                idx += np.uint64(BASE)
                out.append(idx)
        empty = np.zeros(0, np.uint64)
        return (
            np.concatenate(present) if present else empty,
            np.concatenate(swapped) if swapped else empty,
        )

    def pageout(self, pidfd, addrs) -> int:
        idx = ((np.asarray(addrs, np.uint64) - np.uint64(BASE)) >> np.uint64(12)).astype(np.intp)
        idx = idx[self.present[idx]]
        self.present[idx] = False
        self.swapped[idx] = True
        return int(len(addrs)) * PAGE

    def refault_hot(self) -> None:
        back = np.logical_and(self.hot, self.swapped, out=self._back)
        self.present |= back
        self.swapped ^= back

    def meminfo(self) -> dict[str, int]:
        used = int(np.count_nonzero(self.swapped)) * PAGE // 1024
        return {"SwapTotal": self.swap_total_kb, "SwapFree": self.swap_total_kb - used}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=64, help="size of the process (GiB)")
    ap.add_argument("--passes", type=int, default=9, help="scan passes (default 9)")
    ap.add_argument("--loop", type=int, default=3, help="passes per slide cycle (default 3)")
    ap.add_argument("--T", type=int, default=2, help="slide's T: cold is count < T")
    ap.add_argument("--rate", type=int, default=1024,
                    help="probe_rate, MiB/s (default 1024: the most a config allows)")  # fmt: skip
    ap.add_argument("--step", type=float, default=4.0, help="seconds between passes")
    ap.add_argument("--hot-run", type=int, default=16,
                    help="hot pages come in runs of this many, one run in ten")  # fmt: skip
    ap.add_argument("--no-check", action="store_true",
                    help="skip the cold batches' pagemap check (it took hours before per-batch "
                    "checks: np.isin of each batch against every present page)")  # fmt: skip
    args = ap.parse_args()

    from etmem_scan import pagerefs
    from etmem_scan.pageout_probe import ProbeTracker
    from etmem_sdk import scan
    from etmem_slide import cycle

    npages = args.gib << 18
    k = Kernel(npages, args.hot_run)
    vmas = [Vma(BASE, BASE + npages * PAGE)]
    now = [1000.0]
    tracker = ProbeTracker(
        1, rate_mib=args.rate, clock=lambda: now[0], pageout=k.pageout,
        page_states=k.page_states, meminfo=k.meminfo, pidfd=-1, seed=1,
    )  # fmt: skip
    # the cycle's check of cold batches against pagemap, on the simulated kernel
    scan.present_pages = lambda pid, ranges, proc_root=None: k.page_states(pid, ranges)[0]
    per_batch = getattr(cycle, "resident_part", None)  # before it: every present page at once
    base = maxrss_kib()
    times, cold_total, handed = [], 0, 0
    refs = pagerefs.PageRefs.empty()
    for i in range(args.passes):
        t0 = time.perf_counter()
        p = tracker.scan_pass(vmas)
        times.append(time.perf_counter() - t0)
        first = i % args.loop == 0
        refs = pagerefs.merge(refs, p, in_place=not first and len(refs) > 0)
        del p
        if i % args.loop == args.loop - 1:
            cold = cycle.cold_pages(refs, args.T)
            refs = pagerefs.PageRefs.empty()
            cold_total += len(cold)
            present = None if per_batch or args.no_check else scan.present_pages(1, vmas)
            for part in cycle.cold_batches(cold):
                if args.no_check:
                    pass
                elif per_batch:
                    part = per_batch(1, part, "/proc")
                else:
                    keep = np.isin(part.addr, present)
                    part = cycle.ColdPages(part.addr[keep], part.type[keep])
                handed += len(part)
            del cold, present
        k.refault_hot()
        now[0] += args.step
    peak = maxrss_kib()
    c = tracker.counters()
    extra = (peak - base) * 1024 / npages
    print(f"# {args.gib} GiB, {npages:,} pages, {args.passes} passes (loop={args.loop}, "
          f"T={args.T}), probe_rate {args.rate} MiB/s, {args.step:g} s between passes")  # fmt: skip
    print(f"probed {c['probe_pages']:,}  came back {c['probe_returned']:,}  judged idle "
          f"{c['probe_idle']:,}  cold {cold_total:,} ({handed:,} to the actuator)")  # fmt: skip
    print(f"time per pass: median {statistics.median(times):.3f} s, max {max(times):.3f} s, "
          f"first {times[0]:.3f} s")  # fmt: skip
    print(f"peak RSS {peak / 1024:.1f} MiB, baseline {base / 1024:.1f} MiB, "
          f"extra {extra:.2f} B/page")  # fmt: skip
    ok = "PASS" if extra <= TARGET_BPP else "FAIL"
    print(f"# {ok}: probe page path {extra:.2f} B/page extra peak RSS (target <= "
          f"{TARGET_BPP:g} B/page, issue 12)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
