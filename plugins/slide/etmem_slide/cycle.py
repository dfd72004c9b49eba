"""One slide cycle for one pid (C ``slide_executor``): gate, ``loop`` scan passes, classify,
swap out, swapcache watermarks.

Everything the cycle touches comes in as an argument: the tracker and actuator factories, the
``sleep`` of the worker and the /proc root, so it runs unchanged against fake trees and fakes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from etmem_sdk import TargetGone, scan
from etmem_sdk.scan import PageRefs, PageRuns, PassRefs, Vma

log = logging.getLogger(__name__)

PAGE_SIZE = scan.PAGE_SIZE


#: Cold pages handed to the actuator at a time. Between chunks the cycle checks whether it is
#: being stopped: swapping out gigabytes in one call would make ``project stop`` wait for it.
#: A multiple of swap_pages' 200-line batches, so those writes stay full (62.5 MiB of 4K pages).
RECLAIM_CHUNK = 16000


class Tracker(Protocol):
    """What the cycle needs from a tracker (``etmem_scan.tracker_interface.Tracker`` fits)."""

    def scan_pass(self, vmas: list[Vma]) -> PassRefs: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ColdPages:
    """One batch for the actuator: a row per page, highest address first (at most
    :data:`RECLAIM_CHUNK` rows, so the batch costs nothing next to the scan)."""

    addr: np.ndarray  # uint64
    type: np.ndarray  # uint8

    def __len__(self) -> int:
        return len(self.addr)


def cold_batches(cold: PageRuns, chunk: int = RECLAIM_CHUNK):
    """``cold`` as :class:`ColdPages` of ``chunk`` pages, highest addresses first."""
    for addr, ptype in cold.chunks(chunk, descending=True):
        yield ColdPages(addr, ptype)


class Actuator(Protocol):
    """What the cycle needs from an actuator (see ``etmem_slide.mechanism``)."""

    def reclaim(self, cold: ColdPages) -> int:
        """Swap out ``cold`` (descending addresses); return the bytes handed to the kernel."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CycleSettings:
    """The project and task settings one cycle uses (a snapshot taken at start)."""

    loop: int
    sleep: int
    T: int
    sysmem_threshold: int = -1
    swap_threshold_kb: int = 0
    dram_percent: int = 0


@dataclass(slots=True)
class CycleResult:
    """What one cycle did for one pid."""

    swapped: bool = False  # False: the gate said no, nothing was scanned
    paused: bool = False  # True: the pressure guard said no (memory pressure too high)
    pressure: float | None = None  # what the pressure guard saw
    pages_scanned: int = 0
    cold_pages: int = 0
    bytes_out: int = 0
    duration: float = 0.0
    reclaim_seconds: float = 0.0  # time spent handing the cold pages to the kernel
    #: what the tracker itself did this cycle (the probe tracker's ``probe_*`` counters)
    tracker_counters: dict[str, int] = field(default_factory=dict)


def check_should_swap(
    sysmem_threshold: int,
    swap_threshold_kb: int,
    meminfo: dict[str, int] | None,
    status: dict[str, int] | None,
) -> bool:
    """The gate (C ``check_should_swap``), integer maths as in the original.

    ``sysmem_threshold == -1`` always proceeds. Otherwise free memory must be below the threshold
    (``MemFree*100/MemTotal < sysmem_threshold``) and then either ``VmRSS`` above
    ``swap_threshold`` or, with no ``swap_threshold``, ``VmSwap`` below the same percentage of
    ``VmRSS+VmSwap``.
    """
    if sysmem_threshold == -1:
        return True
    if meminfo is None or status is None:
        raise ValueError("the gate needs /proc/meminfo and the process status")
    total = meminfo.get("MemTotal", 0)
    if total <= 0:
        return False
    if meminfo.get("MemFree", 0) * 100 // total >= sysmem_threshold:
        return False
    rss = status.get("VmRSS", 0)
    if swap_threshold_kb:
        return rss > swap_threshold_kb
    swap = status.get("VmSwap", 0)
    return (rss + swap) // 100 * sysmem_threshold > swap


def accumulate(passes: list[PassRefs]) -> PageRefs:
    """Sum the weights of every pass per page address (type of the first sighting kept)."""
    return scan.accumulate(passes)


def dram_target_pages(dram_percent: int, status: dict[str, int]) -> int:
    """How many pages to swap so that ``dram_percent`` of the process stays in RAM
    (C ``check_should_migrate``: integer maths, division first)."""
    return scan.dram_percent_target(
        status.get("VmRSS", 0), status.get("VmSwap", 0), dram_percent, PAGE_SIZE
    )


def select_cold(refs: PageRefs, T: int, target_pages: int | None = None) -> np.ndarray:
    """Indices into ``refs`` (address-sorted) of the pages to swap out, descending addresses.

    Without ``target_pages`` every page with ``count < T`` is cold. With it (``dram_percent``),
    pages are taken coldest first (each count in descending address order), only those with
    ``count < T``, at most ``target_pages`` of them.
    """
    if target_pages is None:
        mask = scan.cold_mask(refs, T)
    else:
        mask = scan.dram_percent_mask(refs, T, target_pages)
    return np.flatnonzero(mask)[::-1]


def cold_pages(refs: PageRefs, T: int, target_pages: int | None = None) -> PageRuns:
    """The pages :func:`select_cold` picks, as runs (no row per page: what the cycle uses)."""
    if target_pages is None:
        return scan.cold_runs(refs, T)
    return refs.runs.select(scan.dram_percent_mask(refs, T, target_pages))


def take(refs: PageRefs, idx: np.ndarray) -> ColdPages:
    """The rows ``idx`` of ``refs`` (in that order)."""
    return ColdPages(refs.addr[idx], refs.type[idx])


def probe_limit(settings: CycleSettings, pid: int, proc_root: str) -> int | None:
    """Bytes a tracker that moves memory itself (``probe``) may page out per pass: 0 with
    ``T=0`` (nothing is ever cold, so nothing may leave), the ``dram_percent`` target when it is
    set (never below what it keeps in RAM), else no cap but the tracker's own budget."""
    if settings.T == 0:
        return 0
    if settings.dram_percent:
        target = dram_target_pages(settings.dram_percent, scan.read_status(pid, proc_root))
        return target * PAGE_SIZE
    return None


def _counters(tracker: Tracker) -> dict[str, int]:
    counters = getattr(tracker, "counters", None)
    return dict(counters()) if counters is not None else {}


def run_cycle(
    pid: int,
    settings: CycleSettings,
    *,
    make_actuator: Callable[[int], Actuator],
    sleep: Callable[[float], None],
    make_tracker: Callable[[int], Tracker] | None = None,
    tracker: Tracker | None = None,
    proc_root: str = "/proc",
    swapcache: Callable[[int], None] | None = None,
    pressure_guard: Callable[[int], tuple[float, bool]] | None = None,
) -> CycleResult:
    """Run one slide cycle for ``pid`` and say what it did.

    ``tracker`` is the pid's tracker, kept open by the caller across cycles (trackers with
    state -- ``probe``, ``damon`` -- need that); without it, ``make_tracker(pid)`` makes one
    for this cycle only and closes it.

    Raises ``TargetGone`` when the process exits (the caller ends this pid's cycle quietly),
    ``WorkerStopped`` from ``sleep`` when the task is being stopped, ``ScanError`` when a pass
    failed (the whole scan is discarded, as in C). ``swapcache(pid)`` runs after the swap-out.
    ``pressure_guard(pid) -> (pressure, paused)`` is the first gate: paused, nothing is scanned.
    """
    if (tracker is None) == (make_tracker is None):
        raise TypeError("run_cycle needs exactly one of tracker= and make_tracker=")
    began = time.monotonic()
    result = CycleResult()
    if pressure_guard is not None:
        result.pressure, result.paused = pressure_guard(pid)
        if result.paused:
            result.duration = time.monotonic() - began
            return result
    meminfo = status = None
    if settings.sysmem_threshold != -1:
        meminfo = scan.read_meminfo(proc_root)
        status = scan.read_status(pid, proc_root)
    if not check_should_swap(
        settings.sysmem_threshold, settings.swap_threshold_kb, meminfo, status
    ):
        result.duration = time.monotonic() - began
        return result
    result.swapped = True

    vmas = scan.read_vmas(pid, anon_only=True, proc_root=proc_root)
    refs = PageRefs.empty()
    own = tracker is None
    if own:
        assert make_tracker is not None
        tracker = make_tracker(pid)
    assert tracker is not None
    before = _counters(tracker)
    try:
        if getattr(tracker, "moves_memory", False):
            tracker.limit_moves(probe_limit(settings, pid, proc_root))  # type: ignore[attr-defined]
        for i in range(settings.loop):
            # folded as they come: one pass's weights alive at a time, counts added in place
            refs = scan.merge(refs, tracker.scan_pass(vmas), in_place=i > 0 and len(refs) > 0)
            sleep(settings.sleep)  # after every pass, the last one too (as C)
    finally:
        after = _counters(tracker)
        result.tracker_counters = {k: v - before.get(k, 0) for k, v in after.items()}
        if own:
            tracker.close()
    result.pages_scanned = len(refs)

    target = None
    if settings.dram_percent:
        target = dram_target_pages(settings.dram_percent, scan.read_status(pid, proc_root))
    cold = cold_pages(refs, settings.T, target)
    del refs
    result.cold_pages = len(cold)
    present = None
    if len(cold) and getattr(tracker, "moves_memory", False):
        # The probe already put the pages it judged idle in swap: hand the actuator only the
        # cold pages still in RAM, so nothing is paged out (or counted) twice.
        present = scan.present_pages(pid, vmas, proc_root=proc_root)
    try:
        if len(cold):
            actuator = make_actuator(pid)
            t0 = time.monotonic()
            try:
                for n, part in enumerate(cold_batches(cold)):
                    if n:
                        sleep(0)  # raises WorkerStopped if the task is being stopped
                    if present is not None:
                        keep = np.isin(part.addr, present)
                        part = ColdPages(part.addr[keep], part.type[keep])
                        if not len(part):
                            continue
                    result.bytes_out += actuator.reclaim(part)
            finally:
                actuator.close()
                result.reclaim_seconds = time.monotonic() - t0
    finally:
        # C attempts the swapcache step after every swap-out, even a failed one.
        if swapcache is not None:
            try:
                swapcache(pid)
            except TargetGone:
                raise
            except Exception:
                log.exception("pid %d: swapcache reclaim failed", pid)
    result.duration = time.monotonic() - began
    return result
