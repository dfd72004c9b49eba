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
- ``damon``: DAMON sysfs with ``vaddr`` operations.  The tracker creates its own kdamond and a
  ``stat`` scheme covering every region, and each pass asks the kernel to refresh the scheme's
  ``tried_regions``.  Because writing ``nr_kdamonds`` rebuilds every kdamond directory (and is
  refused while one runs), it only proceeds when there is no kdamond at all, and it removes
  only the kdamond it made (checked by its thread pid and target before tearing down).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from etmem_sdk.errors import EngineError, TargetGone

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
from .tracker import ScanError, Tracker, VmaRange

__all__ = [
    "TRACKERS",
    "DamonBusy",
    "DamonTracker",
    "PageIdleTracker",
    "RefsTracker",
    "TrackerUnavailable",
    "make_tracker",
]

#: Every tracker, most precise first (the default is the first one that works here).
TRACKERS = ("idle_pages", "page_idle", "damon", "probe", "refs")


class TrackerUnavailable(EngineError):
    """This machine cannot run the tracker (feature missing, permission, in use); the message
    says why."""


class DamonBusy(TrackerUnavailable):
    """DAMON is in use by someone else; the tracker refused to touch it."""


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


def _read(path: Path) -> str:
    return path.read_text().strip()


def _write(path: Path, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


class DamonTracker(Tracker):
    """DAMON ``vaddr`` monitoring through a kdamond of its own (see module docs).

    A page counts as accessed when its DAMON region saw accesses in the last aggregation
    interval, or its access pattern last changed (``age``) after the previous pass.
    """

    name = "damon"
    capability = "tracker.damon"

    def __init__(
        self,
        pid: int | str,
        *,
        proc_root: str | os.PathLike[str] = "/proc",
        sys_root: str | os.PathLike[str] = "/sys",
        flags: int = 0,
        sample_us: int = 5_000,
        aggr_us: int = 100_000,
        update_us: int = 1_000_000,
        min_nr_regions: int = 10,
        max_nr_regions: int = 1000,
    ) -> None:
        self.pid = pid
        self.proc_root = proc_root
        self.aggr_us = aggr_us
        self.root = Path(sys_root) / "kernel/mm/damon/admin/kdamonds"
        self._kd: Path | None = None
        self._kd_pid = ""
        if not self.root.is_dir():
            raise TrackerUnavailable("damon: no DAMON sysfs (CONFIG_DAMON_SYSFS off)")
        check_damon_free(self.root)
        _write(self.root / "nr_kdamonds", 1)
        self._kd = self.root / "0"
        try:
            self._configure(sample_us, update_us, min_nr_regions, max_nr_regions)
            _write(self._kd / "state", "on")
            self._kd_pid = _read(self._kd / "pid")
        except BaseException:
            self.close()
            raise

    def _configure(self, sample_us: int, update_us: int, min_nr: int, max_nr: int) -> None:
        kd = self._kd
        assert kd is not None
        _write(kd / "contexts/nr_contexts", 1)
        ctx = kd / "contexts/0"
        avail = _read(ctx / "avail_operations").split()
        if "vaddr" not in avail:
            raise TrackerUnavailable(
                f"damon: no vaddr operations (CONFIG_DAMON_VADDR off; have {' '.join(avail)})"
            )
        _write(ctx / "operations", "vaddr")
        attrs = ctx / "monitoring_attrs"
        _write(attrs / "intervals/sample_us", sample_us)
        _write(attrs / "intervals/aggr_us", self.aggr_us)
        _write(attrs / "intervals/update_us", update_us)
        _write(attrs / "nr_regions/min", min_nr)
        _write(attrs / "nr_regions/max", max_nr)
        _write(ctx / "targets/nr_targets", 1)
        _write(ctx / "targets/0/pid_target", int(self.pid))
        _write(ctx / "schemes/nr_schemes", 1)
        scheme = ctx / "schemes/0"
        pattern = scheme / "access_pattern"
        big = str(2**64 - 1)
        for key, lo, hi in (("sz", 0, big), ("nr_accesses", 0, big), ("age", 0, big)):
            _write(pattern / key / "min", lo)
            _write(pattern / key / "max", hi)
        _write(scheme / "action", "stat")

    def scan_pass(self, vmas: Sequence[VmaRange]) -> PassRefs:
        kd = self._kd
        if kd is None:
            raise ScanError("damon: tracker is closed")
        try:
            _write(kd / "state", "update_schemes_tried_regions")
            regions = kd / "contexts/0/schemes/0/tried_regions"
            rows = []
            for d in regions.iterdir():
                if d.is_dir() and d.name.isdigit():
                    rows.append(
                        tuple(int(_read(d / k)) for k in ("start", "end", "nr_accesses", "age"))
                    )
        except OSError as e:
            if not os.path.exists(proc_path(self.pid, "stat", self.proc_root)):
                raise TargetGone(f"process {self.pid} is gone (damon)") from e
            raise ScanError(f"damon: reading regions failed: {e}") from e
        reg = np.array(sorted(rows), dtype=np.uint64).reshape(-1, 4)
        fd = open_pagemap(self.pid, self.proc_root)
        try:
            addr = present_pages(self.pid, vmas, fd=fd)
        finally:
            os.close(fd)
        weight = np.zeros(addr.size, dtype=np.uint8)
        if reg.size:
            # Only nr_accesses says "accessed": a region's age also restarts when DAMON splits
            # or merges it, which happens to idle regions all the time (seen in the test bed).
            hot = reg[:, 2] > 0
            i = np.searchsorted(reg[:, 0], addr, side="right") - 1
            inside = (i >= 0) & (addr < reg[np.maximum(i, 0), 1])
            weight[inside] = hot[i[inside]]
        return PassRefs(addr, np.full(addr.size, PTE, np.uint8), weight)

    def close(self) -> None:
        kd, self._kd = self._kd, None
        if kd is None:
            return
        # Tear down only what is still ours: one kdamond, our thread (or none yet), our target.
        try:
            if _read(self.root / "nr_kdamonds") != "1":
                return
            if self._kd_pid and _read(kd / "pid") != self._kd_pid:
                return
            target = kd / "contexts/0/targets/0/pid_target"
            if target.exists() and _read(target) not in (str(self.pid), "0"):
                return
            if _read(kd / "state") == "on":
                _write(kd / "state", "off")
            _write(self.root / "nr_kdamonds", 0)
        except OSError:
            pass  # nothing more we can safely do


def check_damon_free(kdamonds: Path) -> None:
    """Raise :class:`DamonBusy` unless DAMON sysfs has no kdamond at all.  Reads only."""
    try:
        nr = int(_read(kdamonds / "nr_kdamonds"))
    except (OSError, ValueError) as e:
        raise TrackerUnavailable(f"damon: cannot read {kdamonds}/nr_kdamonds: {e}") from e
    if nr == 0:
        return
    running = [
        str(i) for i in range(nr) if (kdamonds / str(i) / "state").exists()
        and _read(kdamonds / str(i) / "state") == "on"
    ]  # fmt: skip
    if running:
        raise DamonBusy(f"damon: busy, kdamond {', '.join(running)} is running (not ours)")
    raise DamonBusy(
        f"damon: {nr} kdamond(s) configured by someone else; adding one would rebuild theirs"
    )


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
    classes: dict[str, type[Tracker]] = {
        "page_idle": PageIdleTracker,
        "refs": RefsTracker,
        "damon": DamonTracker,
    }
    if name == "idle_pages":
        from . import idle_pages

        cls = idle_pages.IdlePagesTracker
    elif name == "probe":
        from . import pageout_probe

        cls = pageout_probe.ProbeTracker
    elif name in classes:
        cls = classes[name]
    else:
        raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")
    return cls(pid, proc_root=proc_root, sys_root=sys_root, flags=flags, **kw)
