"""Memory and time of ``page_idle`` tracker passes on a simulated large process.

    .venv/bin/python benchmarks/page_idle_pass.py               # 64 GiB, 4 KiB pages
    .venv/bin/python benchmarks/page_idle_pass.py --gib 4 --passes 3

No kernel here has idle page tracking, so the process is a fake ``/proc/PID/pagemap`` (every
page present, PFNs in shuffled runs of 512 as the buddy allocator and THPs hand them out) and a
fake ``/sys/kernel/mm/page_idle/bitmap`` in a temporary directory on disk; the tracker reads and
writes them exactly as it would the real files.  *peak* is ``tracemalloc``'s peak during a pass
(numpy reports its arrays to it) per page; *kept* is what the finished pass holds.  Target of
issue 12: at most 8 bytes per scanned page.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc

import numpy as np

PID = 4242
PRESENT = np.uint64(1 << 63)
BASE = 0x7F0000000000


def build_tree(root: str, npages: int, seed: int = 1) -> tuple[str, str]:
    """A fake pagemap with ``npages`` present pages from BASE and a bitmap covering their PFNs."""
    rng = np.random.default_rng(seed)
    chunk = 512
    nchunks = -(-npages // chunk)
    order = rng.permutation(nchunks).astype(np.uint64)
    proc = os.path.join(root, "proc")
    os.makedirs(os.path.join(proc, str(PID)))
    with open(os.path.join(proc, str(PID), "stat"), "w") as f:
        f.write(f"{PID} (fake) S\n")
    with open(os.path.join(proc, str(PID), "pagemap"), "wb") as f:
        f.seek(BASE // 4096 * 8)
        step = 1 << 10  # chunks written at a time
        for lo in range(0, nchunks, step):
            first = order[lo : lo + step] * np.uint64(chunk) + np.uint64(chunk)  # PFN 0 unused
            pfn = (first[:, None] + np.arange(chunk, dtype=np.uint64)).ravel()
            f.write((pfn[: npages - lo * chunk] | PRESENT).tobytes())
    sys_root = os.path.join(root, "sys")
    bitmap = os.path.join(sys_root, "kernel/mm/page_idle/bitmap")
    os.makedirs(os.path.dirname(bitmap))
    with open(bitmap, "wb") as f:
        f.truncate(((nchunks + 1) * chunk // 64 + 1) * 8)
    return proc, sys_root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=64, help="size of the simulated process")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--dir", default="/var/tmp", help="where the fake tree goes (not tmpfs)")
    args = ap.parse_args()

    from etmem_scan.trackers import PageIdleTracker

    class V:
        def __init__(self, start: int, end: int) -> None:
            self.start, self.end = start, end

    npages = int(args.gib * (1 << 30)) // 4096
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        t0 = time.perf_counter()
        proc, sys_root = build_tree(root, npages)
        print(f"fake tree: {npages:,} pages in {time.perf_counter() - t0:.1f} s")
        vmas = [V(BASE, BASE + npages * 4096)]
        worst = 0.0
        with PageIdleTracker(PID, proc_root=proc, sys_root=sys_root) as tracker:
            for i in range(args.passes):
                tracemalloc.start()
                t0 = time.perf_counter()
                p = tracker.scan_pass(vmas)
                dt = time.perf_counter() - t0
                kept, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                n = len(p)
                worst = max(worst, peak / n)
                print(
                    f"pass {i + 1}: {n:,} pages, {len(p.runs.start):,} runs, peak "
                    f"{peak / n:.2f} B/page, kept {kept / n:.2f} B/page, {dt:.2f} s"
                )
                del p
    print(f"{'PASS' if worst <= 8 else 'FAIL'}: peak {worst:.2f} B/page (target <= 8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
