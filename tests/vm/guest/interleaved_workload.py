"""One anonymous mapping whose hot and cold pages alternate in runs (guest tests, measurements).

    python interleaved_workload.py TOTAL_MIB RUN_KIB PERIOD [--touch S]

Maps TOTAL_MIB as one VMA, fills every page with non-zero bytes (zero pages never reach swap),
prints ``{"start": A, "end": B, "run": RUN_BYTES, "period": PERIOD}`` and then, every S seconds
(default 0.05), writes one byte into every page of each run ``i`` with ``i % PERIOD == 0``: with
RUN_KIB=4096 and PERIOD=2 hot and cold 4 MiB runs alternate; RUN_KIB=4, PERIOD=4 makes every
fourth page hot.  Numpy-free, so it starts fast under TCG.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import sys
import time

PAGE = mmap.PAGESIZE


def main() -> None:
    total = int(sys.argv[1]) << 20
    run = int(sys.argv[2]) << 10
    period = int(sys.argv[3])
    touch = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--touch" else 0.05
    m = mmap.mmap(-1, total, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    ctypes.memset(base, 0x5A, total)
    info = {"start": base, "end": base + total, "run": run, "period": period}
    print(json.dumps(info), flush=True)
    view = memoryview(m)
    hot = [(lo, min(lo + run, total)) for lo in range(0, total, run * period)]
    n = 0
    while True:
        n = (n + 1) & 0xFF or 1
        for lo, hi in hot:
            view[lo:hi:PAGE] = bytes([n]) * ((hi - lo + PAGE - 1) // PAGE)
        time.sleep(touch)


if __name__ == "__main__":
    main()
