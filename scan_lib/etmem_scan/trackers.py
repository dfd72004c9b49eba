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
    PM_PFN_MASK,
    PM_PRESENT,
    open_pagemap,
    present_pages,
    read_entries,
)
from .pagerefs import PTE, PassRefs
from .procfs import proc_path, read_smaps_fields
from .tracker_interface import ScanError, Tracker, TrackerUnavailable, VmaRange

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
    """Resident pages of ``vmas`` with the weight of the VMA each belongs to."""
    fd = open_pagemap(pid, proc_root)
    try:
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


def _word_runs(words: np.ndarray, gap: int = 64) -> list[tuple[int, int]]:
    """Split sorted unique word indices into runs worth one read each, as ``(lo, hi)`` slice
    bounds into ``words``: the run covers bitmap words ``words[lo]`` .. ``words[hi - 1]``."""
    if words.size == 0:
        return []
    cut = np.flatnonzero(np.diff(words) > gap) + 1
    bounds = np.concatenate(([0], cut, [words.size])).tolist()
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class PageIdleTracker(Tracker):
    """Mainline idle page tracking: pagemap PFNs + the page_idle bitmap (see module docs)."""

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

    def _resident_pfns(self, vmas: Sequence[VmaRange]) -> tuple[np.ndarray, np.ndarray]:
        fd = open_pagemap(self.pid, self.proc_root)
        addrs, pfns = [], []
        try:
            for v in vmas:
                step = 1 << (16 + PAGE_SHIFT)
                for lo in range(v.start, v.end, step):
                    hi = min(v.end, lo + step)
                    ent = read_entries(fd, lo, hi)
                    idx = np.flatnonzero(ent & PM_PRESENT)
                    addrs.append(np.uint64(lo) + (idx.astype(np.uint64) << np.uint64(PAGE_SHIFT)))
                    pfns.append(ent[idx] & PM_PFN_MASK)
        finally:
            os.close(fd)
        if not addrs:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        return np.concatenate(addrs), np.concatenate(pfns)

    def scan_pass(self, vmas: Sequence[VmaRange]) -> PassRefs:
        addr, pfn = self._resident_pfns(vmas)
        if addr.size and not pfn.any():
            raise TrackerUnavailable("page_idle: pagemap hides PFNs (needs CAP_SYS_ADMIN)")
        word = (pfn >> np.uint64(6)).astype(np.int64)
        bit = (pfn & np.uint64(63)).astype(np.uint64)
        uniq, inverse = np.unique(word, return_inverse=True)
        values = np.zeros(uniq.size, dtype=np.uint64)
        masks = np.zeros(uniq.size, dtype=np.uint64)
        np.bitwise_or.at(masks, inverse, np.uint64(1) << bit)
        # each run is a slice of the sorted ``uniq``: no per-run mask over every word
        runs = _word_runs(uniq)
        try:
            for lo, hi in runs:
                first, last = int(uniq[lo]), int(uniq[hi - 1])
                buf = os.pread(self._bitmap, (last - first + 1) * 8, first * 8)
                block = np.frombuffer(buf, dtype=np.uint64)
                got = uniq[lo:hi] - first
                ok = got < block.size
                vals = np.zeros(got.size, dtype=np.uint64)
                vals[ok] = block[got[ok]]
                values[lo:hi] = vals
            idle = (values[inverse] >> bit) & np.uint64(1)
            # mark every page we saw idle again; 0 bits leave other pages alone
            for lo, hi in runs:
                first, last = int(uniq[lo]), int(uniq[hi - 1])
                block = np.zeros(last - first + 1, dtype=np.uint64)
                block[uniq[lo:hi] - first] = masks[lo:hi]
                os.pwrite(self._bitmap, block.tobytes(), first * 8)
        except OSError as e:
            raise ScanError(f"page_idle: bitmap access failed: {e.strerror}") from e
        weight = (idle == 0).astype(np.uint8)
        return PassRefs(addr, np.full(addr.size, PTE, np.uint8), weight)

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
