"""Scan pipeline benchmark: decode 3 idle_pages passes, accumulate, classify (T=2), format the
cold list -- on the synthetic streams of streams.md (beside this file), against the original's
figures measured on the same input.

    python benchmarks/scan_pipeline.py                  # all five streams, fast path
    python benchmarks/scan_pipeline.py --page-level     # also the page-array path engines use
                                                        # (and PASS/FAIL against 8 B/page)
    python benchmarks/scan_pipeline.py --runs 10 --cases 64G-4K

"cpu s" is the process's CPU time per run (median): on a shared machine it says more than the
wall time, which includes waiting for a core.  Each case runs in a fresh interpreter so that
peak memory is its own: "extra" is the peak RSS
above what the interpreter had after importing etmem_scan (streams, arrays, text buffers).
Pipeline time covers reading the three stream files through writing the last line of text
(to /dev/null); the command time is ``etmem scan --decode p1 p2 p3 --cold 2 > /dev/null`` as a
user runs it, interpreter start-up included (its wall time here also includes starting the
small wrapper that reads its peak RSS).  With ``--page-level`` and the 64G-4K case, a line says
PASS or FAIL against issue 12's target for the page path: at most 8 bytes of extra peak RSS
per page.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import streams as S  # noqa: E402

# streams.md: pages in the list, cold pages, and the original's time and peak RSS
ORIGINAL = {
    "1G-4K": (261_632, 208_384, 0.030, 9.6),
    "4G-4K": (1_046_528, 833_536, 0.153, 33.8),
    "16G-4K": (4_186_112, 3_334_144, 0.514, 130.7),
    "64G-4K": (16_744_448, 13_336_576, 2.02, 518.0),
    "64G-2M": (32_704, 26_048, 0.0046, 4.4),
}
T = 2
#: issue 12: etmemd's own memory on the page path the engines use, per scanned page
PAGE_PATH_TARGET_BPP = 8.0


def maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(case: str, runs: int, path: str, directory: Path, workers: int = 1) -> None:
    """Run one case in this process and print one JSON line."""
    from etmem_scan import idle_sweep, idle_text
    from etmem_scan.pagerefs import cold_runs, format_hex_lines

    files = S.paths(case, directory)
    page = 4096  # base page size of the machine the streams model (the 2M case uses PMD records)
    base = maxrss_kib()
    out = open(os.devnull, "wb")  # noqa: SIM115

    def pieces():
        streams = [f.read_bytes() for f in files]
        if path == "fast":
            yield from idle_text.cold_text_chunks(streams, T, page, workers=workers)
            return
        refs = idle_sweep.decode_passes(streams, page)  # PageRefs: runs + a count per page
        del streams
        cold = cold_runs(refs, T)  # what slide's pageout batches are cut from
        del refs
        for addrs in cold.descending_addresses(1 << 16):
            yield format_hex_lines(addrs, order=-1).tobytes()

    # one checked run (not timed): line count and the ends of the list
    lines, first, last = 0, b"", b""
    for piece in pieces():
        lines += piece.count(b"\n")
        first = first or piece[: piece.index(b"\n")]
        last = (
            piece[piece.rindex(b"\n", 0, len(piece) - 1) + 1 : -1]
            if piece.count(b"\n") > 1
            else piece[:-1]
        )
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        for piece in pieces():
            out.write(piece)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(json.dumps({"case": case, "path": path, "times": times, "cpu": cpu, "cold_lines": lines,
                      "first": first.decode(), "last": last.decode(), "base_kib": base,
                      "peak_kib": maxrss_kib()}))  # fmt: skip


def command_time(case: str, directory: Path, runs: int) -> dict:
    """``etmem scan --decode p1 p2 p3 --cold 2 > /dev/null``: wall time and peak RSS."""
    etmem = Path(sys.executable).with_name("etmem")
    files = [str(f) for f in S.paths(case, directory)]
    walls, peaks = [], []
    # a wrapper per run: RUSAGE_CHILDREN of this process would also count the case children
    wrap = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], "
            "stdout=subprocess.DEVNULL, check=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip
    for _ in range(runs):
        t0 = time.perf_counter()
        cmd = [sys.executable, "-c", wrap, str(etmem), "scan", "--decode", *files, "--cold", str(T)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
        peaks.append(int(res.stdout.split()[-1]))
    return {"walls": walls, "peak_kib": max(peaks)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per case (median reported)")
    ap.add_argument("--cases", nargs="*", default=list(S.STREAMS), choices=list(S.STREAMS))
    ap.add_argument("--page-level", action="store_true",
                    help="also time the page-array path (PageRefs; what engines use)")  # fmt: skip
    ap.add_argument("--dir", type=Path, default=S.DEFAULT_DIR, help="stream cache directory")
    ap.add_argument("--workers", type=int, default=1,
                    help="formatting threads of the fast path (default 1)")  # fmt: skip
    ap.add_argument("--child", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.runs, args.child[1], args.dir, args.workers)
        return 0

    load = os.getloadavg()[0]
    print(f"# {os.cpu_count()} CPUs, load average {load:.2f}; T={T}, loop=3; median of "
          f"{args.runs}; {args.workers} formatting thread(s)")  # fmt: skip
    hdr = (f"{'case':8} {'path':5} {'pages':>11} {'cold':>11} {'median s':>9} {'best s':>7} "
           f"{'cpu s':>6} "
           f"{'Mpages/s':>8} {'peak MiB':>8} {'extra B/pg':>10} {'orig s':>7} "
           f"{'orig B/pg':>9}")  # fmt: skip
    print(hdr)
    paths = ["fast"] + (["page"] if args.page_level else [])
    verdicts = []
    for case in args.cases:
        S.paths(case, args.dir)  # build before timing
        pages, cold, orig_s, orig_mib = ORIGINAL[case]
        for path in paths:
            res = subprocess.run(
                [sys.executable, __file__, "--runs", str(args.runs), "--dir", str(args.dir),
                 "--workers", str(args.workers), "--child", case, path],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = json.loads(res.stdout.strip().splitlines()[-1])
            if r["cold_lines"] != cold:
                raise SystemExit(f"{case} {path}: {r['cold_lines']} cold lines, want {cold}")
            med, best = statistics.median(r["times"]), min(r["times"])
            extra = (r["peak_kib"] - r["base_kib"]) * 1024 / pages
            orig_bpp = orig_mib * 1048576 / pages if case.endswith("4K") else float("nan")
            cpu = statistics.median(r["cpu"])
            print(f"{case:8} {path:5} {pages:>11,} {cold:>11,} {med:>9.3f} {best:>7.3f} "
                  f"{cpu:>6.3f} "
                  f"{pages / med / 1e6:>8.1f} {r['peak_kib'] / 1024:>8.1f} {extra:>10.2f} "
                  f"{orig_s:>7.3f} {orig_bpp:>9.1f}")  # fmt: skip
            if path == "page" and case == "64G-4K":  # the measurement (smaller cases
                verdicts.append((case, extra))  # are dominated by a fixed ~5 MiB of buffers)
    for case, extra in verdicts:
        ok = "PASS" if extra <= PAGE_PATH_TARGET_BPP else "FAIL"
        print(f"# {ok}: {case} page path {extra:.2f} B/page extra peak RSS "
              f"(target <= {PAGE_PATH_TARGET_BPP:g} B/page, issue 12)")  # fmt: skip
    if "64G-4K" in args.cases:
        c = command_time("64G-4K", args.dir, args.runs)
        print(f"# etmem scan --decode p1 p2 p3 --cold 2 > /dev/null (64G-4K): median "
              f"{statistics.median(c['walls']):.3f} s, best {min(c['walls']):.3f} s wall incl. "
              f"interpreter start-up; peak RSS {c['peak_kib'] / 1024:.1f} MiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
