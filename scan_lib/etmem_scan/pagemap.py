"""Which pages of a process are resident, and their page frame numbers (/proc/PID/pagemap).

Presence comes from the ``PAGEMAP_SCAN`` ioctl (one call returns whole runs of present pages,
about five times faster than reading pagemap) and falls back to reading the pagemap entries
(8 bytes per page) where the ioctl is missing — older kernels and the fake trees of the tests.
PFNs always come from the entries (the ioctl does not report them; they read as 0 without
CAP_SYS_ADMIN).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import TargetGone
from .machine import PAGE_SHIFT, PAGE_SIZE
from .pagerefs import PTE, PageRuns
from .procfs import proc_path
from .tracker_interface import VmaRange

__all__ = [
    "PAGE_SIZE",
    "PM_FILE",
    "PM_PFN_MASK",
    "PM_PRESENT",
    "PM_SWAP",
    "open_pagemap",
    "page_states",
    "present_pages",
    "present_runs",
    "read_entries",
    "resident_runs",
]


# pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst)
PM_PRESENT = np.uint64(1 << 63)
PM_SWAP = np.uint64(1 << 62)
PM_FILE = np.uint64(1 << 61)
PM_PFN_MASK = np.uint64((1 << 55) - 1)

# _IOWR('f', 16, struct pm_scan_arg) with sizeof(struct pm_scan_arg) == 96
PAGEMAP_SCAN = 0xC0606610
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4
_SCAN_VEC_LEN = 4096  # regions per ioctl; runs of present pages, so usually one call per VMA
_ENTRIES_CHUNK = 1 << 16  # pagemap entries per read (512 KiB)

#: What the readers take as a range: a VMA (anything with ``.start``/``.end``) or a pair.
Span = VmaRange | tuple[int, int]


def _bounds(r: Span) -> tuple[int, int]:
    """``(start, end)`` of a VMA-like object or of a ``(start, end)`` pair."""
    if isinstance(r, VmaRange):
        return r.start, r.end
    start, end = r
    return start, end


def open_pagemap(pid: int | str, proc_root: str | os.PathLike[str] = "/proc") -> int:
    """Open ``/proc/PID/pagemap`` read-only; :class:`TargetGone` if the process is gone."""
    path = proc_path(pid, "pagemap", proc_root)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError) as e:
        raise TargetGone(f"process {pid} is gone ({path})") from e


def read_entries(fd: int, start: int, end: int) -> np.ndarray:
    """The raw uint64 pagemap entries of pages ``[start, end)`` (page-aligned addresses).

    A short read (a fake tree's file ending early) leaves the missing entries 0: not present.
    """
    n = (end - start) >> PAGE_SHIFT
    out = np.zeros(n, dtype=np.uint64)
    view = out.data.cast("B")
    pos, off = (start >> PAGE_SHIFT) * 8, 0
    while off < n * 8:
        try:
            got = os.preadv(fd, [view[off:]], pos + off)
        except ProcessLookupError as e:
            raise TargetGone("process is gone (pagemap)") from e
        if got <= 0:
            break
        off += got
    return out


def _scan_runs(fd: int, start: int, end: int, categories: int) -> np.ndarray | None:
    """Runs of ``[start, end)`` having any of ``categories`` (PAGE_IS_* bits), as an (n, 3)
    array of [start, end, categories] -- or ``None`` when the kernel (or the file) has no
    PAGEMAP_SCAN."""
    vec = np.zeros((_SCAN_VEC_LEN, 3), dtype=np.uint64)
    arg = np.zeros(12, dtype=np.uint64)
    runs: list[np.ndarray] = []
    pos = start
    while pos < end:
        # size, flags, start, end, walk_end, vec, vec_len, max_pages,
        # category_inverted, category_mask, category_anyof_mask, return_mask
        arg[:] = (96, 0, pos, end, 0, vec.ctypes.data, _SCAN_VEC_LEN, 0, 0,
                  0, categories, categories)  # fmt: skip
        try:
            # the kernel writes walk_end back into arg: a mutable buffer, filled in place
            n: int = fcntl.ioctl(fd, PAGEMAP_SCAN, arg.data, True)
        except OSError as e:
            if e.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP) and not runs:
                return None
            if e.errno == errno.ESRCH:
                raise TargetGone("process is gone (pagemap scan)") from e
            raise
        walk_end = int(arg[4])
        if n:
            runs.append(vec[:n].copy())
            # 6.18 can report walk_end short of regions it already returned: never rescan them
            walk_end = max(walk_end, int(vec[n - 1, 1]))
        if walk_end <= pos:
            break
        pos = walk_end
    if not runs:
        return np.zeros((0, 3), dtype=np.uint64)
    return np.concatenate(runs)


def _scan_present(fd: int, start: int, end: int) -> np.ndarray | None:
    """Present runs of ``[start, end)`` as an (n, 2) array of [start, end) — or ``None`` when
    the kernel (or the file) has no PAGEMAP_SCAN."""
    runs = _scan_runs(fd, start, end, PAGE_IS_PRESENT)
    return None if runs is None else runs[:, :2]


def _runs_to_pages(runs: np.ndarray) -> np.ndarray:
    """Expand [start, end) runs into page addresses, vectorised."""
    if len(runs) == 0:
        return np.zeros(0, dtype=np.uint64)
    npages = ((runs[:, 1] - runs[:, 0]) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    total = int(npages.sum())
    base = np.repeat(runs[:, 0], npages)
    # position of each page inside its run: global index minus the run's first index
    firsts = np.repeat(np.cumsum(npages) - npages, npages)
    idx = np.arange(total, dtype=np.int64) - firsts
    return base + (idx.astype(np.uint64) << np.uint64(PAGE_SHIFT))


def present_pages(
    pid: int | str,
    ranges: Iterable[Span],
    proc_root: str | os.PathLike[str] = "/proc",
    *,
    fd: int | None = None,
) -> np.ndarray:
    """Addresses (uint64, ascending within each range) of the resident base pages of ``pid`` in
    ``ranges`` — ``(start, end)`` pairs or objects with ``.start``/``.end`` (VMAs).

    A huge page counts as its base pages.  Swapped-out pages are not resident.
    """
    runs = present_runs(pid, ranges, proc_root, fd=fd)
    return _runs_to_pages(np.concatenate(runs)) if runs else np.zeros(0, dtype=np.uint64)


def present_runs(
    pid: int | str,
    ranges: Iterable[Span],
    proc_root: str | os.PathLike[str] = "/proc",
    *,
    fd: int | None = None,
) -> list[np.ndarray]:
    """:func:`present_pages` without a row per page: for each of ``ranges``, its resident base
    pages as an (n, 2) uint64 array of ascending ``[start, end)`` runs (neighbouring runs may
    touch)."""
    pm = open_pagemap(pid, proc_root) if fd is None else fd
    try:
        out: list[np.ndarray] = []
        use_scan = True
        for r in ranges:
            start, end = _bounds(r)
            runs = _scan_present(pm, start, end) if use_scan and end > start else None
            if runs is None and end > start:
                use_scan = False
                parts: list[np.ndarray] = []
                for lo in range(start, end, _ENTRIES_CHUNK << PAGE_SHIFT):
                    hi = min(end, lo + (_ENTRIES_CHUNK << PAGE_SHIFT))
                    present = (read_entries(pm, lo, hi) & PM_PRESENT) != 0
                    m = np.concatenate((np.zeros(1, bool), present, np.zeros(1, bool)))
                    edges = np.flatnonzero(m[1:] != m[:-1]).astype(np.uint64)
                    parts.append(np.uint64(lo) + (edges.reshape(-1, 2) << np.uint64(PAGE_SHIFT)))
                runs = np.concatenate(parts) if parts else None
            out.append(np.zeros((0, 2), np.uint64) if runs is None else runs)
        return out
    finally:
        if fd is None:
            os.close(pm)


def resident_runs(
    pid: int | str,
    vmas: Sequence[VmaRange],
    proc_root: str | os.PathLike[str] = "/proc",
    *,
    fd: int | None = None,
) -> tuple[PageRuns, np.ndarray, list[int]] | None:
    """The resident base pages of ``vmas`` as :class:`PageRuns` (ascending), how many of them
    each VMA holds, and the VMAs' order (indices, by start) the pages follow; ``None`` when the
    VMAs overlap (then only page rows, which fold repeats, are right)."""
    order = sorted(range(len(vmas)), key=lambda i: vmas[i].start)
    for a, b in zip(order, order[1:], strict=False):
        if vmas[b].start < vmas[a].end:
            return None
    runs = present_runs(pid, [vmas[i] for i in order], proc_root, fd=fd)
    start = np.concatenate([r[:, 0] for r in runs]) if runs else np.zeros(0, np.uint64)
    npages = [((r[:, 1] - r[:, 0]) >> np.uint64(PAGE_SHIFT)).astype(np.int64) for r in runs]
    counts = np.array([int(n.sum()) for n in npages], dtype=np.int64)
    n = np.concatenate(npages) if npages else np.zeros(0, np.int64)
    pages = PageRuns.coalesce(
        start, n, np.full(n.size, PTE, np.uint8), np.full(n.size, PAGE_SIZE, np.uint64)
    )
    return pages, counts, order


def page_states(
    pid: int | str,
    ranges: Iterable[Span],
    proc_root: str | os.PathLike[str] = "/proc",
    *,
    fd: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(present, swapped)``: addresses (uint64, ascending within each range) of the resident
    base pages and of the swapped-out ones of ``pid`` in ``ranges``.

    A page in neither array is not mapped, or was never touched. One PAGEMAP_SCAN walk gives
    both where the kernel has it; otherwise the pagemap entries (present bit 63, swap bit 62).
    """
    pm = open_pagemap(pid, proc_root) if fd is None else fd
    try:
        present: list[np.ndarray] = []
        swapped: list[np.ndarray] = []
        use_scan = True
        for r in ranges:
            start, end = _bounds(r)
            if end <= start:
                continue
            runs = (
                _scan_runs(pm, start, end, PAGE_IS_PRESENT | PAGE_IS_SWAPPED) if use_scan else None
            )
            if runs is None:
                use_scan = False
                for lo in range(start, end, _ENTRIES_CHUNK << PAGE_SHIFT):
                    hi = min(end, lo + (_ENTRIES_CHUNK << PAGE_SHIFT))
                    ent = read_entries(pm, lo, hi)
                    base = np.uint64(lo)
                    for out, bit in ((present, PM_PRESENT), (swapped, PM_SWAP)):
                        idx = np.flatnonzero(ent & bit).astype(np.uint64)
                        out.append(base + (idx << np.uint64(PAGE_SHIFT)))
            else:
                is_present = (runs[:, 2] & np.uint64(PAGE_IS_PRESENT)) != 0
                present.append(_runs_to_pages(runs[is_present, :2]))
                present_or_not = runs[~is_present]
                is_swapped = (present_or_not[:, 2] & np.uint64(PAGE_IS_SWAPPED)) != 0
                swapped.append(_runs_to_pages(present_or_not[is_swapped, :2]))
        empty = np.zeros(0, dtype=np.uint64)
        return (
            np.concatenate(present) if present else empty,
            np.concatenate(swapped) if swapped else empty,
        )
    finally:
        if fd is None:
            os.close(pm)
