"""Workload for the cslide tests: two mappings of N x 2 MiB, the first placed on HOT_START's node
and written continuously (hot), the second placed on COLD_START's node and written once (cold).
Hugetlb pages by default, ordinary 4 KiB pages with ``normal``. Prints the two start addresses,
then works until killed.

    python cslide_workload.py N HOT_START_NODE COLD_START_NODE [huge|normal]
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
    huge = sys.argv[4:5] != ["normal"]
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | (MAP_HUGETLB if huge else 0)
    page = HUGE if huge else mmap.PAGESIZE
    size = n * HUGE
    # One mapping, [hot | guard | cold]: the inaccessible guard splits it into two VMAs that can
    # never merge (two adjacent anonymous mmaps would become one VMA).
    m = mmap.mmap(-1, 2 * size + HUGE, flags=flags)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mprotect(ctypes.c_void_p(base + size), ctypes.c_size_t(HUGE), 0) != 0:
        sys.exit(f"mprotect: {os.strerror(ctypes.get_errno())}")
    if not huge:
        m.madvise(mmap.MADV_NOHUGEPAGE)  # stay 4 KiB pages, whatever THP is set to
    offsets = (0, size + HUGE)
    for off in offsets:
        m[off : off + size] = b"\x5a" * size  # fault every page in
    for off, node in zip(offsets, (hot_node, cold_node), strict=True):
        addrs = base + off + np.arange(size // page, dtype=np.uint64) * np.uint64(page)
        status = actuators.move_pages(os.getpid(), addrs, node, actuators.MPOL_MF_MOVE_ALL)
        if not (status == node).all():
            sys.exit(f"initial placement on node {node} failed: {status}")
    print(hex(base), hex(base + size + HUGE), flush=True)
    # Keep the hot half hot: a write into every page of it (every 4 KiB page of normal memory,
    # so per-page and region trackers see it hot too, not just a per-mapping one), every few ms.
    n = 0
    while True:
        n = (n + 1) & 0xFF or 1
        m[0:size:page] = bytes([n]) * (size // page)
        time.sleep(0.002)


if __name__ == "__main__":
    main()
