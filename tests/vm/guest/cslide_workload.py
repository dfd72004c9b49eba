"""Guest workload for the cslide test: two hugetlb mappings of N pages, the first placed on
HOT_START's node and written continuously (hot), the second placed on COLD_START's node and
written once (cold). Prints the two start addresses, then works until killed.

    python cslide_workload.py N HOT_START_NODE COLD_START_NODE
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import time

import numpy as np
from etmem_scan import actuators

HUGE = 2 << 20
MAP_HUGETLB = 0x40000


def main() -> None:
    n, hot_node, cold_node = (int(a) for a in sys.argv[1:4])
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB
    hot, cold = (mmap.mmap(-1, n * HUGE, flags=flags) for _ in range(2))
    for m in (hot, cold):
        m.write(b"\x5a" * (n * HUGE))  # fault every hugepage in
    starts = [ctypes.addressof(ctypes.c_char.from_buffer(m)) for m in (hot, cold)]
    for start, node in zip(starts, (hot_node, cold_node), strict=True):
        addrs = start + np.arange(n, dtype=np.uint64) * np.uint64(HUGE)
        status = actuators.move_pages(os.getpid(), addrs, node, actuators.MPOL_MF_MOVE_ALL)
        if not (status == node).all():
            sys.exit(f"initial placement on node {node} failed: {status}")
    print(" ".join(hex(s) for s in starts), flush=True)
    offsets = range(0, n * HUGE, HUGE)
    while True:  # keep every hot hugepage hot: a write to each, every few milliseconds
        for off in offsets:
            hot[off] = (hot[off] + 1) & 0xFF
        time.sleep(0.002)


if __name__ == "__main__":
    main()
