"""Which tracker and actuator a slide task uses, and the glue to build them per pid.

The choice is the SDK's (:func:`etmem_sdk.scan.choose_tracker`, one place for every engine):
the task's ``tracker=`` / ``actuator=``, else etmemd.toml's ``[scan]`` defaults, else the most
precise tracker for swapping that works here (``idle_pages`` > ``page_idle`` > ``probe`` >
``damon`` > ``refs``) and ``swap_pages`` > ``pageout``. Trackers and actuators are built through
:func:`etmem_sdk.scan.open_tracker` / :func:`~etmem_sdk.scan.open_actuator`, so a test double
registered with the SDK (the ``etmem_fake_proc`` fixture's ``fake`` actuator) works here too.
A forced mechanism that does not work here fails the start, naming what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from etmem_sdk import EngineError, Project, scan
from etmem_sdk.scan import Capabilities, page_bytes

from .config import SlideTaskConfig
from .cycle import Actuator, ColdPages, Tracker

log = logging.getLogger(__name__)

#: idle_pages VMA_SCAN_FLAG: only scan VMAs marked for swap (madvise 203 on openEuler).
VMA_SCAN_FLAG = 0x1000


@dataclass(frozen=True)
class Mechanism:
    """The chosen tracker/actuator pair of a task, with factories bound to its roots."""

    tracker: str
    actuator: str
    make_tracker: Callable[[int], Tracker]
    make_actuator: Callable[[int], Actuator]
    #: ``swapcache(project, pid)``: the watermark step, or None when the actuator has no swapcache.
    swapcache: Callable[[Project, int], None] | None


def resolve(
    cfg: SlideTaskConfig,
    *,
    swap_flag: bool,
    proc_root: str = "/proc",
    sys_root: str = "/sys",
    caps: Capabilities | None = None,
) -> Mechanism:
    """Choose and bind the tracker and actuator for a task; raise ``EngineError`` saying what is
    missing when nothing usable exists (the task then fails to start).
    """
    if caps is None:
        caps = scan.capabilities(proc_root, sys_root)
    tracker = scan.choose_tracker(cfg.tracker, purpose="swap", caps=caps)
    if swap_flag and tracker != "idle_pages":
        # Only etmem_scan knows which VMAs carry the swap mark; scanning everything would
        # swap out memory the user asked to keep.
        raise EngineError(
            f"swap_flag=yes needs the idle_pages tracker (openEuler etmem_scan module); "
            f"this task would use {tracker}"
        )
    actuator = scan.choose_actuator(cfg.actuator, purpose="swap", caps=caps)
    return Mechanism(
        tracker=tracker,
        actuator=actuator,
        make_tracker=_tracker_factory(tracker, swap_flag, proc_root, sys_root, cfg),
        make_actuator=_actuator_factory(actuator, proc_root, sys_root),
        swapcache=_swapcache_step(proc_root) if actuator == "swap_pages" else None,
    )


def _tracker_factory(
    name: str,
    swap_flag: bool,
    proc_root: str,
    sys_root: str,
    cfg: SlideTaskConfig | None = None,
) -> Callable[[int], Tracker]:
    options: dict[str, object] = {}
    if name == "idle_pages":
        options["vma_flags"] = VMA_SCAN_FLAG if swap_flag else 0
    elif name == "probe":
        rate = cfg.probe_rate_mib if cfg is not None else scan.PROBE_RATE_MIB
        # One budget for the whole task: a type=name task's children share it.
        options["bucket"] = scan.TokenBucket(rate << 20)
        options["cooldown"] = cfg.probe_cooldown if cfg is not None else scan.PROBE_COOLDOWN

    def make(pid: int) -> Tracker:
        return scan.open_tracker(name, pid, proc_root=proc_root, sys_root=sys_root, **options)

    return make


class _BoundActuator:
    """An actuator (``apply(pid, addrs, sizes)``) bound to one pid for a cycle."""

    def __init__(self, impl: object, pid: int) -> None:
        self._impl = impl
        self._pid = pid

    def reclaim(self, cold: ColdPages) -> int:
        sizes = page_bytes(cold.type)
        got = self._impl.apply(self._pid, cold.addr, sizes)  # type: ignore[attr-defined]
        # swap_pages reports nothing useful back (the kernel returns the length written).
        return int(got) if isinstance(got, int) and got >= 0 else int(sizes.sum())

    def close(self) -> None:
        """The actuator is shared by the task's cycles; it is closed with the task."""


def _actuator_factory(name: str, proc_root: str, sys_root: str) -> Callable[[int], Actuator]:
    impl = scan.open_actuator(name, proc_root=proc_root, sys_root=sys_root)
    return lambda pid: _BoundActuator(impl, pid)


def _swapcache_step(proc_root: str) -> Callable[[Project, int], None]:
    def step(project: Project, pid: int) -> None:
        reclaim_swapcache(project, pid, proc_root=proc_root)

    return step


def swapcache_over_high(meminfo: dict[str, int], high: int) -> bool:
    """C's test: SwapCached non-zero and ``MemTotal/SwapCached < 100/high`` (integer divisions)."""
    cached = meminfo.get("SwapCached", 0)
    if cached == 0 or high <= 0:
        return False
    return meminfo.get("MemTotal", 0) // cached < 100 // high


def reclaim_swapcache(project: Project, pid: int, *, proc_root: str = "/proc") -> bool:
    """The swapcache step (C ``etmemd_reclaim_swapcache``); True if the reclaim ioctl was sent.

    Skipped unless both watermarks are set and swap cache use is above the high one. The first
    time per project the watermarks are handed to the kernel (``wmark_set``, never reset, as C);
    then reclaim is switched on. It is never switched off (C never sends RECLAIM_SWAPCACHE_OFF).
    """
    high, low = project.swapcache_high_wmark, project.swapcache_low_wmark
    if high == -1 or low == -1:
        return False
    if not swapcache_over_high(scan.read_meminfo(proc_root), high):
        return False
    with project.lock:
        if not project.wmark_set:
            scan.set_swapcache_wmark(pid, low, high, proc_root=proc_root)
            project.wmark_set = True
    scan.reclaim_swapcache_on(pid, proc_root=proc_root)
    return True
