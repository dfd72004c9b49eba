"""The scan facade: everything a policy needs from ``etmem_scan``, in one import.

::

    from etmem_sdk import scan

    tracker_name = scan.choose_tracker(cfg.tracker)          # config, daemon default, or probe
    actuator = scan.open_actuator(scan.choose_actuator(cfg.actuator))
    with scan.open_tracker(tracker_name, pid) as tracker:
        vmas = scan.read_vmas(pid)
        refs = scan.sample(tracker, vmas, passes=2, sleep=sleep, interval=1)
    idle = refs.addr[refs.count == 0]
    actuator.apply(pid, idle, scan.page_bytes(refs.type[refs.count == 0]))

Four groups of names:

* **process views** -- :func:`read_vmas` (the original's maps/smaps rules), :func:`read_status`
  (``VmRSS``, ``VmSwap`` in kB), :func:`read_meminfo`, :func:`present_pages`;
* **page arrays** -- :class:`PassRefs` (one pass), :class:`PageRefs` (accumulated, sorted by
  address), both as :class:`PageRuns` plus a small counter per page, :func:`accumulate`,
  :func:`merge`, :func:`cold_mask`, :func:`cold_runs`, :func:`carry` (line up values
  kept from the previous cycle with the pages seen now; :func:`carry_runs` does it on runs,
  never building an address per page), :func:`page_bytes`;
* **trackers and actuators** -- :func:`open_tracker`, :func:`open_actuator` (by name, bound to the
  current roots), :func:`sample` (several passes with stoppable sleeps between them),
  :class:`TokenBucket` (the ``probe`` tracker's budget, shared by a task's pids);
* **DAMOS** (the ``damon`` engine) -- :class:`DamosScheme`, :func:`open_damos` (a target of the
  one kdamond etmemd shares with the ``damon`` tracker), :func:`damon_refusal`,
  :func:`damos_unsupported`, :data:`DAMOS_ACTIONS`;
* **the capability probe** -- :func:`capabilities`, :func:`choose_tracker`,
  :func:`choose_actuator`, and the process-wide :class:`ScanDefaults` (the daemon's
  ``etmemd.toml`` ``[scan]`` table sets them; the test fixtures point them at a fake /proc);
* **captured idle_pages streams** (``etmem scan --decode``) -- :func:`cold_text_chunks`,
  :func:`refs_text_chunks`.

Every reader here uses the current defaults' ``proc_root`` / ``sys_root`` unless given one, so a
policy written against this module runs unchanged on a fake tree under
``etmem_sdk.testing``'s fixtures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from etmem_scan import actuators as _actuators
from etmem_scan import damon as _damon
from etmem_scan import machine as _machine
from etmem_scan import pagemap as _pagemap
from etmem_scan import probe as _probe
from etmem_scan import procfs as _procfs
from etmem_scan import trackers as _trackers
from etmem_scan.actuators import (
    ACTUATORS,
    MPOL_MF_MOVE_ALL,
    Actuator,
    ActuatorError,
    NoSwap,
    move_pages,
    query_nodes,
)
from etmem_scan.damon import DAMOS_ACTIONS, DamosScheme, DamosTarget, DamosUnsupported
from etmem_scan.idle_text import cold_text_chunks, refs_text_chunks
from etmem_scan.names import ACTUATORS_FOR
from etmem_scan.pageout_probe import DEFAULT_COOLDOWN as PROBE_COOLDOWN
from etmem_scan.pageout_probe import DEFAULT_RATE_MIB as PROBE_RATE_MIB
from etmem_scan.pageout_probe import TokenBucket
from etmem_scan.pagerefs import (
    PMD,
    PTE,
    PUD,
    PageRefs,
    PageRuns,
    PassRefs,
    accumulate,
    carry_runs,
    cold_mask,
    cold_runs,
    dram_percent_mask,
    dram_percent_target,
    merge,
    page_sizes,
)
from etmem_scan.pids import alive
from etmem_scan.probe import (
    GRANULARITY,
    MAPPING_ONLY,
    Capabilities,
    NothingUsable,
    Verdict,
    parse_node_list,
)
from etmem_scan.procfs import Vma
from etmem_scan.tracker_interface import ScanError, Tracker
from etmem_scan.trackers import TRACKERS, TrackerUnavailable

from .errors import EngineError

__all__ = [
    "ACTUATORS",
    "ACTUATORS_FOR",
    "DAMOS_ACTIONS",
    "DamosScheme",
    "DamosTarget",
    "DamosUnsupported",
    "damon_refusal",
    "damos_unsupported",
    "open_damos",
    "shutdown",
    "MPOL_MF_MOVE_ALL",
    "GRANULARITY",
    "MAPPING_ONLY",
    "PAGE_SIZE",
    "PROBE_COOLDOWN",
    "PROBE_RATE_MIB",
    "PMD",
    "PTE",
    "PUD",
    "TRACKERS",
    "TokenBucket",
    "Actuator",
    "ActuatorError",
    "Capabilities",
    "NoSwap",
    "NothingUsable",
    "PageRefs",
    "PageRuns",
    "PassRefs",
    "ScanDefaults",
    "ScanError",
    "Tracker",
    "TrackerUnavailable",
    "Verdict",
    "Vma",
    "accumulate",
    "alive",
    "capabilities",
    "carry",
    "carry_runs",
    "choose_actuator",
    "choose_tracker",
    "cold_mask",
    "cold_runs",
    "cold_text_chunks",
    "defaults",
    "dram_percent_mask",
    "dram_percent_target",
    "merge",
    "move_pages",
    "parse_node_list",
    "query_nodes",
    "reclaim_swapcache_on",
    "set_swapcache_wmark",
    "open_actuator",
    "open_tracker",
    "page_bytes",
    "present_pages",
    "read_meminfo",
    "read_status",
    "read_vmas",
    "refs_text_chunks",
    "register_actuator",
    "register_tracker",
    "sample",
    "set_defaults",
    "unregister",
    "using_defaults",
]

#: A /proc or /sys root, as every reader here takes it.
Root = str | os.PathLike[str]

#: The base page size of this machine, in bytes.
PAGE_SIZE = _machine.PAGE_SIZE

#: Bytes of a page of each type (PTE, PMD, PUD): 4 KiB / 2 MiB / 1 GiB with 4 KiB base pages.
_TYPE_BYTES = page_sizes(PAGE_SIZE)


# --- process-wide defaults ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScanDefaults:
    """Where policies read processes from, and which mechanism they use when a config names none.

    ``tracker`` / ``actuator`` ``None`` means "the best one the capability probe finds". etmemd
    sets them from the ``[scan]`` table of ``etmemd.toml`` at start; the SDK's test fixtures
    point ``proc_root`` / ``sys_root`` at a fake tree. Read them with :func:`defaults` each time
    they are needed (at ``start_task``), never copy them at import.
    """

    tracker: str | None = None
    actuator: str | None = None
    proc_root: str = "/proc"
    sys_root: str = "/sys"


_defaults = ScanDefaults()
_lock = threading.Lock()
#: name -> factory for mechanisms added at run time (test doubles, experiments).
_extra_trackers: dict[str, Callable[..., Tracker]] = {}
_extra_actuators: dict[str, Callable[..., Actuator]] = {}


def defaults() -> ScanDefaults:
    """The current process-wide :class:`ScanDefaults`."""
    return _defaults


def set_defaults(**changes: str | None) -> ScanDefaults:
    """Change some fields of the defaults (``tracker=``, ``actuator=``, ``proc_root=``,
    ``sys_root=``); returns the previous defaults so a caller can put them back."""
    global _defaults
    for root in ("proc_root", "sys_root"):
        if root in changes and changes[root] is None:
            raise TypeError(f"set_defaults: {root} is a path; None has no meaning there")
    with _lock:
        previous = _defaults
        # no root is None (checked above); replace() checks the names
        _defaults = dataclasses.replace(previous, **cast(dict[str, Any], changes))
        return previous


@contextlib.contextmanager
def using_defaults(**changes: str | None) -> Iterator[ScanDefaults]:
    """``with using_defaults(proc_root=fake):`` -- the defaults changed for the block only."""
    global _defaults
    previous = set_defaults(**changes)
    try:
        yield _defaults
    finally:
        with _lock:
            _defaults = previous


def register_tracker(name: str, factory: Callable[..., Tracker]) -> None:
    """Make ``open_tracker(name, pid)`` call ``factory(pid, proc_root=..., sys_root=...)``.

    For test doubles and experimental trackers; a registered name counts as usable for
    :func:`choose_tracker` whatever the probe says.
    """
    with _lock:
        _extra_trackers[name] = factory


def register_actuator(name: str, factory: Callable[..., Actuator]) -> None:
    """Make ``open_actuator(name)`` call ``factory(proc_root=..., sys_root=...)`` (see
    :func:`register_tracker`)."""
    with _lock:
        _extra_actuators[name] = factory


def unregister(name: str) -> None:
    """Forget a tracker and/or actuator added with ``register_*``."""
    with _lock:
        _extra_trackers.pop(name, None)
        _extra_actuators.pop(name, None)


# --- process views ------------------------------------------------------------------------------


def _proc(proc_root: Root | None) -> Root:
    return _defaults.proc_root if proc_root is None else proc_root


def read_vmas(
    pid: int,
    vmflags: Sequence[str] | None = None,
    anon_only: bool = True,
    proc_root: Root | None = None,
) -> list[Vma]:
    """The VMAs of ``pid`` as etmemd scans them: from ``maps`` (or ``smaps`` keeping only VMAs
    carrying every flag in ``vmflags``), anonymous ones only unless ``anon_only=False``.

    Raises :class:`etmem_sdk.TargetGone` when the process has exited.
    """
    return _procfs.read_vmas(pid, vmflags, anon_only, _proc(proc_root))


def read_status(pid: int, proc_root: Root | None = None) -> dict[str, int]:
    """Numeric fields of ``/proc/PID/status`` (``VmRSS``, ``VmSwap`` ... in kB)."""
    return _procfs.read_status(pid, _proc(proc_root))


def read_meminfo(proc_root: Root | None = None) -> dict[str, int]:
    """``/proc/meminfo`` as ``{"MemTotal": kB, "SwapTotal": kB, ...}``."""
    return _procfs.read_meminfo(_proc(proc_root))


def present_pages(
    pid: int, ranges: Iterable[_pagemap.Span], proc_root: Root | None = None
) -> np.ndarray:
    """Addresses (uint64) of the resident base pages of ``pid`` within ``ranges`` (VMAs or
    ``(start, end)`` pairs)."""
    return _pagemap.present_pages(pid, ranges, _proc(proc_root))


def set_swapcache_wmark(pid: int, low: int, high: int, proc_root: Root | None = None) -> None:
    """Hand the swap-cache watermarks (percent) to openEuler's etmem_swap module."""
    from etmem_scan import swap_pages

    swap_pages.set_swapcache_wmark(pid, low, high, proc_root=_proc(proc_root))


def reclaim_swapcache_on(pid: int, proc_root: Root | None = None) -> None:
    """Switch openEuler's swap-cache reclaim on for ``pid``'s memory."""
    from etmem_scan import swap_pages

    swap_pages.reclaim_swapcache_on(pid, proc_root=_proc(proc_root))


# --- page arrays --------------------------------------------------------------------------------


def page_bytes(types: np.ndarray) -> np.ndarray:
    """Size in bytes (uint64) of each page from its type (:data:`PTE`, :data:`PMD`, :data:`PUD`)."""
    return _TYPE_BYTES[np.asarray(types, dtype=np.intp)]


def carry(
    old_addr: np.ndarray, old_values: np.ndarray, new_addr: np.ndarray, fill: int = 0
) -> np.ndarray:
    """Values kept per page last cycle, lined up with the pages seen this cycle.

    ``old_addr`` must be sorted (as :class:`PageRefs` addresses are). Returns an array shaped
    like ``new_addr`` holding ``old_values`` where the page was known, else ``fill``: the one
    step every policy with a memory of past cycles (ages, scores, counts) needs, vectorised.
    """
    out = np.full(len(new_addr), fill, dtype=np.asarray(old_values).dtype)
    if len(old_addr) == 0 or len(new_addr) == 0:
        return out
    idx = np.searchsorted(old_addr, new_addr)
    inside = idx < len(old_addr)
    hit = np.zeros(len(new_addr), dtype=bool)
    hit[inside] = old_addr[idx[inside]] == new_addr[inside]
    out[hit] = old_values[idx[hit]]
    return out


# --- trackers and actuators ---------------------------------------------------------------------


def open_tracker(
    name: str, pid: int, *, proc_root: Root | None = None, sys_root: Root | None = None, **kw: Any
) -> Tracker:
    """A tracker called ``name`` (one of :data:`TRACKERS`, or one added with
    :func:`register_tracker`) watching ``pid``; use it as a context manager or ``close()`` it.

    Raises :class:`TrackerUnavailable` when this machine cannot run it, ``ValueError`` for an
    unknown name.
    """
    proc = _proc(proc_root)
    sys_ = _defaults.sys_root if sys_root is None else sys_root
    factory = _extra_trackers.get(name)
    if factory is not None:
        return factory(pid, proc_root=proc, sys_root=sys_, **kw)
    return _trackers.make_tracker(name, pid, proc_root=proc, sys_root=sys_, **kw)


def open_actuator(
    name: str, *, proc_root: Root | None = None, sys_root: Root | None = None, **kw: Any
) -> Actuator:
    """An actuator called ``name`` (one of :data:`ACTUATORS`, or one added with
    :func:`register_actuator`): ``apply(pid, addrs, sizes)`` moves those pages.

    ``pageout`` returns the bytes the kernel accepted and raises :class:`NoSwap` without swap;
    ``cold`` only deactivates pages; ``migrate`` takes ``node=``; ``swap_pages`` needs
    openEuler's etmem_swap module.
    """
    proc = _proc(proc_root)
    sys_ = _defaults.sys_root if sys_root is None else sys_root
    factory = _extra_actuators.get(name)
    if factory is not None:
        return factory(proc_root=proc, sys_root=sys_, **kw)
    return _actuators.make_actuator(name, proc_root=proc, sys_root=sys_, **kw)


def sample(
    tracker: Tracker,
    vmas: Sequence[Vma],
    passes: int = 1,
    sleep: Callable[[float], None] | None = None,
    interval: float = 0.0,
) -> PageRefs:
    """Run ``passes`` scan passes over ``vmas`` and accumulate them into one :class:`PageRefs`.

    Between passes (not after the last) it calls ``sleep(interval)``: pass the
    :class:`etmem_sdk.worker.Sleep` a worker gives the policy, so a stop interrupts the wait.
    ``count`` of a page is then the number of passes that saw it accessed (3 per pass for a dirty
    page under ``idle_pages``). A failed pass raises :class:`ScanError`.
    """
    refs = PageRefs.empty()
    for i in range(passes):
        if i and interval > 0 and sleep is not None:
            sleep(interval)
        # refs is ours after the first pass: add the next ones into its counts
        refs = merge(refs, tracker.scan_pass(vmas), in_place=i > 0 and len(refs) > 0)
    return refs


# --- DAMOS ---------------------------------------------------------------------------------------


def open_damos(
    pid: int,
    scheme: DamosScheme,
    *,
    attrs: dict[str, int],
    owner: str,
    proc_root: Root | None = None,
    sys_root: Root | None = None,
) -> DamosTarget:
    """Monitor ``pid`` with DAMON and apply ``scheme`` to it, as one target of the kdamond
    etmemd creates and shares with the ``damon`` tracker; ``close()`` it.

    ``attrs`` are the kdamond's monitoring attributes (``sample_us``, ``aggr_us``,
    ``update_us``, ``min_nr_regions``, ``max_nr_regions``): the first user sets them, a later
    one asking for others is refused naming ``owner`` of the first.  Raises
    :class:`TrackerUnavailable` (:class:`DamosUnsupported` names the scheme field the kernel
    lacks) and never writes to a kdamond etmemd did not create.
    """
    return DamosTarget(
        pid,
        scheme,
        attrs=attrs,
        owner=owner,
        proc_root=_proc(proc_root),
        sys_root=_defaults.sys_root if sys_root is None else sys_root,
    )


def shutdown() -> None:
    """Give back what the mechanism holds for this process -- the kdamond etmemd created, with
    any target still on it -- for the daemon's exit, after its projects were stopped (a worker
    stuck past its stop may have left a handle open).  Never raises."""
    _damon.shutdown_all()


def damon_refusal(proc_root: Root | None = None, sys_root: Root | None = None) -> str | None:
    """Why this machine can never run the ``damon`` engine (no DAMON sysfs, no ``vaddr``), or
    ``None``; reads only.  A DAMON busy with someone else's kdamond shows at ``open_damos``."""
    return _damon.damon_refusal(
        _defaults.sys_root if sys_root is None else sys_root, _proc(proc_root)
    )


def damos_unsupported(scheme: DamosScheme, proc_root: Root | None = None) -> list[tuple[str, str]]:
    """``(field, reason)`` for each :class:`DamosScheme` field the running kernel's DAMON
    lacks, judged from its release (an unknown release passes; writing checks again)."""
    return _damon.damos_unsupported(scheme, _damon.kernel_release(_proc(proc_root)))


# --- the capability probe -----------------------------------------------------------------------


def capabilities(proc_root: Root | None = None, sys_root: Root | None = None) -> Capabilities:
    """Probe which trackers and actuators work here (reads only; see ``etmem sysinfo``)."""
    return _probe.probe(_proc(proc_root), _defaults.sys_root if sys_root is None else sys_root)


def _choose(
    kind: str,
    requested: str | None,
    fallback: Callable[[Capabilities], str],
    caps: Capabilities | None,
    unfit: Callable[[str], str] = lambda _name: "",
) -> str:
    extra = _extra_trackers if kind == "tracker" else _extra_actuators
    from_task = requested is not None
    name = requested if from_task else getattr(_defaults, kind)
    if name is not None and name in extra:
        return name
    if name is not None and not from_task and unfit(name):
        # The daemon's default serves every engine; one it cannot serve (probe for a
        # migrating engine, a base-page tracker for hugetlb) falls back to the best that fits.
        name = None
    if caps is None:
        caps = capabilities()
    if name is None:
        return fallback(caps)  # raises NothingUsable naming every reason
    table = caps.trackers if kind == "tracker" else caps.actuators
    verdict = table.get(name)
    if verdict is None:
        raise EngineError(f"{kind} {name}: unknown; choose one of {', '.join(table)}")
    source = "the task's config" if from_task else "the daemon's defaults"
    why = unfit(name)
    if why:
        raise EngineError(f"{kind} {name} (from {source}) cannot be used here: {why}")
    if not verdict.usable:
        raise EngineError(f"{kind} {name} (from {source}) is not usable here: {verdict.reason}")
    return name


def choose_tracker(
    requested: str | None = None,
    *,
    purpose: str = "swap",
    memory: str | None = None,
    caps: Capabilities | None = None,
) -> str:
    """The tracker a task should use -- the one place this is decided, for every engine and
    ``etmem scan``: ``requested`` (from its config) if given, else the daemon's default
    (``[scan] tracker`` of etmemd.toml), else the most precise one that works here:
    ``idle_pages`` > ``page_idle`` > ``damon`` > ``probe`` > ``refs``, except that for
    ``"swap"`` the page-exact ``probe`` comes before ``damon``, whose regions cannot split
    page-interleaved data (docs/trackers.md "Default for swap").

    ``purpose`` is ``"swap"`` (slide) or ``"migrate"`` (cslide: never ``probe``, which swaps);
    ``"cold"`` never gets ``probe`` either: a policy whose own rule decides what leaves RAM asks
    for it, since the probe pages its sample out while it watches.
    ``memory="hugetlb"`` keeps only trackers that see hugetlb accesses (``idle_pages``,
    ``damon``). A daemon default that does not fit the purpose is passed over; a task's own
    ``tracker=`` that does not fit is refused.

    Raises :class:`etmem_sdk.EngineError` (``NothingUsable`` is one) saying why when the chosen
    one does not work here -- call it at ``start_task`` so the start fails with that reason.
    """
    hugetlb = memory == "hugetlb"
    return _choose(
        "tracker",
        requested,
        lambda c: _probe.best_tracker(c, purpose, hugetlb=hugetlb),
        caps,
        lambda name: _probe.tracker_unfit(name, purpose, hugetlb=hugetlb),
    )


def choose_actuator(
    requested: str | None = None, *, purpose: str = "swap", caps: Capabilities | None = None
) -> str:
    """The actuator a task should use: ``requested``, else the daemon's default, else the
    probe's best for ``purpose`` (``"swap"``: ``swap_pages`` > ``pageout``; ``"cold"``;
    ``"migrate"``). Raises like :func:`choose_tracker`.
    """
    return _choose("actuator", requested, lambda c: _probe.best_actuator(c, purpose), caps)
