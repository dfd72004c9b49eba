"""Page trackers of stock Linux — ``refs``, ``page_idle``, ``damon`` — and :func:`make_tracker`.

All of them answer the same question as openEuler's ``idle_pages`` (in :mod:`.idle_pages`):
which resident pages of the process were accessed since the previous pass?  Each pass reports
the resident base pages of the given VMAs (from pagemap) with weight 1 (accessed) or 0 (idle).

- ``refs``: ``/proc/PID/clear_refs`` + smaps ``Referenced:``.  Works on every kernel, costs one
  smaps read and one write a pass, but only knows *per VMA* whether something was touched: every
  resident page of a VMA with ``Referenced > 0`` counts as accessed.  That errs towards hot (a
  VMA is swapped only when nothing in it was touched).  The exact per-page alternative —
  page out a range and watch which pages fault back — costs swap writes on every pass, so it is
  not used here.  Like idle_pages' test-and-clear, a pass reports what was referenced since the
  last clear; the first pass therefore reports everything referenced so far.
- ``page_idle``: mainline idle page tracking.  PFNs from ``/proc/PID/pagemap`` (needs
  CAP_SYS_ADMIN), idle bits from ``/sys/kernel/mm/page_idle/bitmap``; a page whose idle bit was
  cleared since the previous pass was accessed; after reading, the pass sets the bits again.
- ``damon``: DAMON sysfs with ``vaddr`` operations, in :mod:`.damon`: one kdamond of ours
  watches every monitored process (one target each); a tracker is a handle on one target.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from .damon import DamonBusy, DamonTracker, check_damon_free
from .errors import TargetGone
from .names import TRACKERS
from .pagemap import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PM_PFN_MASK,
    PM_PRESENT,
    open_pagemap,
    present_pages,
    read_entries,
    resident_runs,
)
from .pagerefs import PTE, PageRuns, PassRefs
from .procfs import proc_path, read_smaps_fields
from .tracker_interface import ScanError, Tracker, TrackerUnavailable, VmaRange

_SHIFT = np.uint64(PAGE_SHIFT)

__all__ = [
    "TRACKERS",
    "DamonBusy",
    "DamonTracker",
    "PageIdleTracker",
    "RefsTracker",
    "TrackerUnavailable",
    "check_damon_free",
    "make_tracker",
]


def _pages_and_weights(
    pid: int | str, vmas: Sequence[VmaRange], vma_weight: np.ndarray, proc_root
) -> PassRefs:
    """Resident pages of ``vmas`` with the weight of the VMA each belongs to: runs from
    pagemap and a weight byte per page, no address per page."""
    fd = open_pagemap(pid, proc_root)
    try:
        got = resident_runs(pid, vmas, fd=fd)
        if got is not None:
            pages, counts, order = got
            return PassRefs.from_runs(pages, np.repeat(vma_weight.astype(np.uint8)[order], counts))
        # overlapping ranges: page rows, which fold repeats as merge() would
        parts = [present_pages(pid, [v], fd=fd) for v in vmas]
    finally:
        os.close(fd)
    counts = np.array([len(p) for p in parts], dtype=np.int64)
    addr = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    weight = np.repeat(vma_weight.astype(np.uint8), counts)
    return PassRefs(addr, np.full(addr.size, PTE, np.uint8), weight)


class RefsTracker(Tracker):
    """Per-VMA accessed bits through clear_refs and smaps ``Referenced`` (see module docs)."""

    name = "refs"
    capability = "tracker.refs"

    def __init__(
        self,
        pid: int | str,
        *,
        proc_root: str | os.PathLike[str] = "/proc",
        sys_root: str | os.PathLike[str] = "/sys",
        flags: int = 0,
    ) -> None:
        self.pid = pid
        self.proc_root = proc_root
        self._clear_refs = proc_path(pid, "clear_refs", proc_root)

    def scan_pass(self, vmas: Sequence[VmaRange]) -> PassRefs:
        smaps = read_smaps_fields(self.pid, ["Referenced"], self.proc_root)
        self._clear()
        starts, ends, refs = smaps["start"], smaps["end"], smaps["Referenced"]
        # A VMA found earlier may have been split or merged since: sum what overlaps it.
        weight = np.zeros(len(vmas), dtype=np.uint8)
        for i, v in enumerate(vmas):
            lo = np.searchsorted(ends, np.uint64(v.start), side="right")
            hi = np.searchsorted(starts, np.uint64(v.end), side="left")
            weight[i] = refs[lo:hi].sum() > 0
        return _pages_and_weights(self.pid, vmas, weight, self.proc_root)

    def _clear(self) -> None:
        try:
            with open(self._clear_refs, "w") as f:
                f.write("1")
        except (FileNotFoundError, ProcessLookupError) as e:
            raise TargetGone(f"process {self.pid} is gone (clear_refs)") from e
        except PermissionError as e:
            raise TrackerUnavailable(f"refs: cannot write {self._clear_refs}: {e}") from e


_BLOCK_PAGES = 1 << 16  # pagemap entries read, and PFNs looked up, at a time (512 KiB)
# Bitmap words between two looked-up words that still share one read: a gap costs 8 bytes a
# word, a syscall more (~1 µs), and bounds a block's buffer at 4 MiB however PFNs scatter.
_WORD_GAP = 8


def _ranges(vmas: Sequence[VmaRange]) -> list[tuple[int, int]]:
    """The union of the VMAs' ranges, ascending: each page is looked at once, even where a VMA
    found earlier has since been split or merged into overlapping ones."""
    out: list[tuple[int, int]] = []
    for v in sorted(vmas, key=lambda v: v.start):
        if out and v.start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], v.end))
        else:
            out.append((v.start, v.end))
    return out


class PageIdleTracker(Tracker):
    """Mainline idle page tracking: pagemap PFNs + the page_idle bitmap (see module docs).

    A pass walks the VMAs a block of pagemap at a time: the block's PFNs are looked up in the
    bitmap and marked idle again before the next block is read, so what a pass keeps per page
    is its weight byte (the pages themselves are runs), whatever the size of the process.
    """

    name = "page_idle"
    capability = "tracker.page_idle"

    def __init__(
        self,
        pid: int | str,
        *,
        proc_root: str | os.PathLike[str] = "/proc",
        sys_root: str | os.PathLike[str] = "/sys",
        flags: int = 0,
    ) -> None:
        self.pid = pid
        self.proc_root = proc_root
        path = os.path.join(os.fspath(sys_root), "kernel/mm/page_idle/bitmap")
        try:
            self._bitmap = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise TrackerUnavailable(
                "page_idle: no /sys/kernel/mm/page_idle/bitmap (CONFIG_IDLE_PAGE_TRACKING off)"
            ) from e
        except PermissionError as e:
            raise TrackerUnavailable(f"page_idle: cannot open {path}: {e.strerror}") from e

    def scan_pass(self, vmas: Sequence[VmaRange]) -> PassRefs:
        starts: list[np.ndarray] = []
        npages: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        fd = open_pagemap(self.pid, self.proc_root)
        try:
            for lo, hi in _ranges(vmas):
                for blo in range(lo, hi, _BLOCK_PAGES << PAGE_SHIFT):
                    ent = read_entries(fd, blo, min(hi, blo + (_BLOCK_PAGES << PAGE_SHIFT)))
                    idx = np.flatnonzero(ent & PM_PRESENT)
                    if idx.size == 0:
                        continue
                    pfn = ent[idx] & PM_PFN_MASK
                    del ent
                    if not pfn.any():  # PFN 0 is never a process's page
                        raise TrackerUnavailable(
                            "page_idle: pagemap hides PFNs (needs CAP_SYS_ADMIN)"
                        )
                    weights.append(self._accessed_then_idle(pfn))
                    head = np.flatnonzero(np.r_[True, np.diff(idx) != 1])
                    npages.append(np.diff(np.r_[head, idx.size]))
                    starts.append(np.uint64(blo) + (idx[head].astype(np.uint64) << _SHIFT))
        finally:
            os.close(fd)
        if not starts:
            return PassRefs.empty()
        n = np.concatenate(npages)
        runs = PageRuns.coalesce(
            np.concatenate(starts), n, np.full(n.size, PTE, np.uint8),
            np.full(n.size, PAGE_SIZE, np.uint64),
        )  # fmt: skip
        return PassRefs.from_runs(runs, np.concatenate(weights))

    def _accessed_then_idle(self, pfn: np.ndarray) -> np.ndarray:
        """Weight per PFN (1: its idle bit was cleared, i.e. accessed), then mark them idle."""
        word = (pfn >> np.uint64(6)).astype(np.int64)
        bit = np.uint64(1) << (pfn & np.uint64(63))
        order = np.argsort(word, kind="stable")
        sorted_words = word[order]
        head = np.flatnonzero(np.r_[True, np.diff(sorted_words) != 0])
        uniq = sorted_words[head]
        masks = np.bitwise_or.reduceat(bit[order], head)
        # one read (and one write) per run of nearby words, all runs laid out in one buffer
        cut = np.flatnonzero(np.diff(uniq) > _WORD_GAP) + 1
        first = uniq[np.r_[0, cut]]
        length = uniq[np.r_[cut - 1, uniq.size - 1]] - first + 1
        at = np.r_[0, np.cumsum(length)]  # each run's first word in the buffer
        pos = np.repeat(at[:-1] - first, np.diff(np.r_[0, cut, uniq.size])) + uniq
        spans = list(
            zip((first * 8).tolist(), (at[:-1] * 8).tolist(), (at[1:] * 8).tolist(), strict=True)
        )
        words = np.zeros(int(at[-1]), dtype=np.uint64)
        view = words.data.cast("B")
        try:
            for off, lo, hi in spans:
                os.preadv(self._bitmap, [view[lo:hi]], off)  # short read: zeros, i.e. accessed
            values = words[pos]
            # mark every page we saw idle again; a 0 bit leaves its page alone
            words[:] = 0
            words[pos] = masks
            for off, lo, hi in spans:
                self._set_idle(view[lo:hi], off)
        except OSError as e:
            raise ScanError(f"page_idle: bitmap access failed: {e.strerror}") from e
        idle_word = np.empty(word.size, dtype=np.uint64)
        idle_word[order] = np.repeat(values, np.diff(np.r_[head, word.size]))
        return ((idle_word & bit) == 0).astype(np.uint8)

    def _set_idle(self, words: memoryview, offset: int) -> None:
        """Write bitmap ``words`` at byte ``offset``: the kernel marks idle the pages of the 1
        bits and ignores the 0 bits (the tests' fake bitmap follows the same rule)."""
        os.pwrite(self._bitmap, words, offset)

    def close(self) -> None:
        if self._bitmap >= 0:
            os.close(self._bitmap)
            self._bitmap = -1


def make_tracker(
    name: str,
    pid: int | str,
    *,
    proc_root: str | os.PathLike[str] = "/proc",
    sys_root: str | os.PathLike[str] = "/sys",
    flags: int = 0,
    **kw,
) -> Tracker:
    """Build the tracker called ``name`` (one of :data:`TRACKERS`) for ``pid``.

    ``flags`` are idle_pages scan flags (SCAN_AS_HUGE, SCAN_IGN_HOST, VMA_SCAN_FLAG); the
    other trackers ignore them.  Extra keywords go to the tracker (e.g. DAMON intervals).
    Raises :class:`TrackerUnavailable` when the machine cannot run it, ``ValueError`` for an
    unknown name.
    """
    classes: dict[str, Callable[..., Tracker]] = {
        "page_idle": PageIdleTracker,
        "refs": RefsTracker,
        "damon": DamonTracker,
    }
    if name == "idle_pages":
        from . import idle_pages

        classes[name] = idle_pages.IdlePagesTracker
    elif name == "probe":
        from . import pageout_probe

        classes[name] = pageout_probe.ProbeTracker
    elif name not in classes:
        raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")
    return classes[name](pid, proc_root=proc_root, sys_root=sys_root, flags=flags, **kw)
