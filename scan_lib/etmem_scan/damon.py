"""The ``damon`` tracker: DAMON ``vaddr`` monitoring of many processes through ONE kdamond.

One :class:`DamonMonitor` per DAMON sysfs tree and process owns the kdamond it created: one
context, ``vaddr`` operations, one target per monitored pid ("slot") and, per slot, a ``stat``
scheme over every region with a ``target`` filter, so the scheme's ``tried_regions`` are that
target's regions only (DAMON lists tried regions per scheme, with no target index).
:class:`DamonTracker` is a handle on one slot: opening it adds a target, :meth:`close` frees it,
a pass reads its scheme's regions.

Changing targets on a running kdamond (Linux 6.12, the test bed's kernel): rewrite the sysfs
inputs and write ``commit`` to ``state``.  Writing ``nr_targets`` or ``nr_schemes`` rebuilds
every target or scheme directory with defaults, so every slot is written again; the kernel
then matches targets by index and keeps a target's regions (its learned access history) when
the commit carries no initial regions.  So a slot never shifts: a freed slot in the middle is
*parked* on our own pid (a live process, cheap to watch) and reused by the next pid, and only
trailing free slots are dropped.  A commit naming a pid that no longer exists fails inside
the kdamond and stops it (the ``commit`` write itself succeeds), so every slot's pid is
checked right before a commit, dead ones are parked, and a kdamond found stopped after a
commit is started again (its targets then relearn their regions).

Safety: a kdamond is created only when DAMON has none (writing ``nr_kdamonds`` rebuilds all),
and before every change and the tear-down the monitor checks that there is still exactly one
kdamond, with our thread pid and the very targets we wrote; otherwise it leaves it alone.
When the last handle closes, the kdamond is turned off and removed.

Two kinds of handle share the kdamond: the ``damon`` tracker (:class:`DamonTracker`) and the
``damon`` engine's DAMOS targets (:class:`DamosTarget`).  Every slot owns TWO schemes, so a
slot's scheme indices never move: ``2*slot`` is the ``stat`` scheme over every region (the
tracker's view, the engine's ``showstats``), ``2*slot + 1`` the slot's DAMOS scheme
(:class:`DamosScheme`: an action with its access pattern, quotas, goal, watermarks) or, for a
tracker slot and for every parked slot, a ``stat`` scheme that matches no region -- a parked
slot watches our own pid, so its action must never be one that acts.  The monitoring
attributes belong to the kdamond: whoever creates it sets them, and a later handle asking for
others is refused with the name of the user that set them (stop that one first).  DAMOS
statistics live in the kernel's scheme at an index and survive commits, so a slot reused by a
new target reads its counts relative to a baseline taken when it got the target.

DAMON reports each region's accesses over one aggregation window; under TCG the hot range is
reported erratically from window to window, so a pass ORs ``windows`` consecutive windows
(each ``update_schemes_tried_regions`` request collects one).  Windows are shared: a request
made while another thread's request is under way uses that one's result.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from . import damon_record
from .errors import TargetGone
from .kconfig import kernel_config, option_off
from .pagemap import open_pagemap, present_pages
from .pagerefs import PTE, PassRefs
from .tracker_interface import ScanError, Tracker, TrackerUnavailable, VmaRange

log = logging.getLogger(__name__)

__all__ = [
    "DAMOS_ACTIONS",
    "DamonBusy",
    "DamonMonitor",
    "DamonTracker",
    "DamosScheme",
    "DamosTarget",
    "DamosUnsupported",
    "check_damon_free",
    "damon_refusal",
    "damos_unsupported",
    "kernel_release",
    "monitor_for",
    "ours",
    "shutdown_all",
]

U64_MAX = str(2**64 - 1)
#: DAMON keeps access counts and ages in 32 bits: no region ever has this many accesses.
U32_MAX = 2**32 - 1
T = TypeVar("T")
#: Schemes per slot: the stat scheme over every region, then the slot's DAMOS scheme.
SCHEMES_PER_SLOT = 2

#: DAMOS actions the ``vaddr`` operations carry out, with the first kernel that has them
#: (``lru_prio``/``lru_deprio`` are ``paddr`` only; ``vaddr`` migrates since 6.17).
DAMOS_ACTIONS: dict[str, tuple[int, int]] = {
    "willneed": (5, 18),
    "cold": (5, 18),
    "pageout": (5, 18),
    "hugepage": (5, 18),
    "nohugepage": (5, 18),
    "stat": (5, 18),
    "migrate_hot": (6, 17),
    "migrate_cold": (6, 17),
}
#: First kernel with each optional DAMOS knob in sysfs (quotas and watermarks came with it).
_KNOB_SINCE: dict[str, tuple[int, int]] = {
    "quota_ms": (5, 18),
    "quota_bytes": (5, 18),
    "quota_reset_ms": (5, 18),
    "wmarks": (5, 18),
    "psi_goal_us": (6, 9),  # quotas/goals (6.8) with the some_mem_psi_us metric (6.9)
    "target_nid": (6, 11),
}


class DamosUnsupported(TrackerUnavailable):
    """The running kernel's DAMON lacks a knob a :class:`DamosScheme` uses; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"damon: {reason}")
        self.field = field


@dataclass(frozen=True)
class DamosScheme:
    """One DAMOS scheme: act on the regions whose size (bytes), ``nr_accesses`` (per
    aggregation window) and age (aggregation windows) are within the inclusive ranges.

    Zero quotas, ``psi_goal_us`` and ``wmarks`` mean "none".  ``psi_goal_us`` is a quota
    auto-tuning goal: the system's ``some`` memory pressure stall (microseconds per quota
    reset interval) DAMON steers the effective quota towards.  ``wmarks`` is ``(interval_us,
    high, mid, low)`` over the free memory rate (per mille): the scheme runs only while free
    memory is below ``mid`` and above ``low``.  ``target_nid`` is the node ``migrate_*`` moves
    to.
    """

    action: str
    sz: tuple[int, int] = (0, 2**64 - 1)
    nr_accesses: tuple[int, int] = (0, U32_MAX)
    age: tuple[int, int] = (0, U32_MAX)
    quota_ms: int = 0
    quota_bytes: int = 0
    quota_reset_ms: int = 0
    psi_goal_us: int = 0
    wmarks: tuple[int, int, int, int] | None = None
    target_nid: int | None = None


#: What a tracker slot and a parked slot carry as their second scheme: it matches nothing.
IDLE_SCHEME = DamosScheme("stat", nr_accesses=(U32_MAX, U32_MAX))


def kernel_release(proc_root: str | os.PathLike[str] = "/proc") -> tuple[int, int] | None:
    """``(major, minor)`` of the running kernel from ``sys/kernel/osrelease``; ``None`` when
    the tree has no such file (a fake /proc)."""
    try:
        text = (Path(proc_root) / "sys/kernel/osrelease").read_text()
    except OSError:
        return None
    parts = text.strip().split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return None


def damos_unsupported(
    scheme: DamosScheme, release: tuple[int, int] | None
) -> list[tuple[str, str]]:
    """``(field, reason)`` for each part of ``scheme`` that a kernel ``release`` lacks (an
    unknown release is trusted; the sysfs files are checked again when written)."""
    out = []
    since = DAMOS_ACTIONS.get(scheme.action)
    if since is None:
        return [("action", f"action {scheme.action!r} is not one of {', '.join(DAMOS_ACTIONS)}")]
    have = release or (99, 0)
    if have < since:
        out.append(("action", f"action {scheme.action} on vaddr needs Linux {since[0]}.{since[1]}"
                    f" or later (this is {have[0]}.{have[1]})"))  # fmt: skip
    used = {
        "quota_ms": scheme.quota_ms,
        "quota_bytes": scheme.quota_bytes,
        "quota_reset_ms": scheme.quota_reset_ms,
        "psi_goal_us": scheme.psi_goal_us,
        "wmarks": scheme.wmarks,
        "target_nid": scheme.target_nid,
    }
    for field, value in used.items():
        since = _KNOB_SINCE[field]
        if value and have < since:
            out.append((field, f"DAMOS {field} needs Linux {since[0]}.{since[1]} or later "
                        f"(this is {have[0]}.{have[1]})"))  # fmt: skip
    return out


def damon_refusal(
    sys_root: str | os.PathLike[str], proc_root: str | os.PathLike[str] = "/proc"
) -> str | None:
    """Why this machine can never run a ``vaddr`` kdamond (no DAMON sysfs, or a kernel built
    without vaddr), or ``None``.  Reads only; a busy DAMON is :func:`check_damon_free`'s."""
    root = Path(sys_root) / "kernel/mm/damon/admin/kdamonds"
    cfg = kernel_config(Path(proc_root))
    if not root.is_dir():
        if option_off(cfg, "CONFIG_DAMON"):
            return "no DAMON (CONFIG_DAMON is off)"
        return "no DAMON sysfs (CONFIG_DAMON_SYSFS off)"
    if option_off(cfg, "CONFIG_DAMON_VADDR"):
        return "no vaddr operations (CONFIG_DAMON_VADDR is off)"
    return None


class DamonBusy(TrackerUnavailable):
    """DAMON is in use by someone else; the tracker refused to touch it."""


# DAMON's sysfs handlers take their lock with a trylock and answer EBUSY while the kdamond
# (or another writer) holds it, e.g. for a moment after every aggregation window: retry.
BUSY_RETRY_S = 2.0


def _unbusy(op: Callable[[], T]) -> T:
    deadline = time.monotonic() + BUSY_RETRY_S
    delay = 0.005
    while True:
        try:
            return op()
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _read_once(path: Path) -> str:
    with open(path) as f:
        return f.read().strip()


def _write_once(path: Path, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _read(path: Path) -> str:
    return _unbusy(lambda: _read_once(path))


def _write(path: Path, value: str | int) -> None:
    _unbusy(lambda: _write_once(path, value))


def _alive(pid: int, proc_root: str | os.PathLike[str]) -> bool:
    """The process exists and is not a zombie (a zombie's pid may vanish at any moment)."""
    try:
        with open(os.path.join(os.fspath(proc_root), str(pid), "stat"), "rb") as f:
            raw = f.read()
    except OSError:
        return False
    state = raw[raw.rfind(b")") + 1 :].split()[:1]
    return state not in ([b"Z"], [b"X"])


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


class DamonMonitor:
    """The one kdamond this process made under one DAMON sysfs tree (see module docs).

    Thread-safe: every sysfs access happens under :attr:`lock`.  Made by :func:`monitor_for`.
    """

    def __init__(self, sys_root: str | os.PathLike[str], proc_root: str | os.PathLike[str]) -> None:
        self.root = Path(sys_root) / "kernel/mm/damon/admin/kdamonds"
        self.proc_root = proc_root
        self._record_failed = False
        self.attrs: dict[str, int] = {}
        #: who set :attr:`attrs` (named when someone else asks for other ones)
        self.attrs_owner = ""
        self.lock = threading.Lock()
        self.park_pid = os.getpid()
        #: per slot: the handle's pid, or None when the slot is free (parked)
        self.slots: list[int | None] = []
        #: per slot: the pid last written to sysfs (a parked slot: park_pid)
        self.written: list[int] = []
        #: per slot: its DAMOS scheme (None: a tracker slot, or free)
        self.schemes: list[DamosScheme | None] = []
        #: per slot: the DAMOS scheme last written to sysfs (None: unknown, write it again)
        self.written_damos: list[DamosScheme | None] = []
        #: per slot: scheme statistics when the slot got its target (the kernel's counts
        #: belong to the scheme index and survive commits)
        self._stats_base: dict[int, dict[str, int]] = {}
        self.kd: Path | None = None
        self.kd_pid = ""
        self.per_target_schemes = True
        #: counts update requests; ``_valid`` is False while the sysfs regions predate a change
        self.gen = 0
        #: counts kdamonds made: a handle from an earlier one must not read a new one's slots
        self.epoch = 0
        self._valid = False
        self._cache: dict[int, np.ndarray] = {}
        self._added_at: dict[int, float] = {}

    # ------------------------------------------------------------ slots

    def add(
        self,
        pid: int,
        attrs: dict[str, int],
        scheme: DamosScheme | None = None,
        owner: str = "the damon tracker",
    ) -> int:
        """Start monitoring ``pid``; return its slot.  Other targets keep their history.

        ``attrs`` (intervals, nr_regions) belong to the kdamond: the first handle sets them,
        and a handle asking for others while it runs gets :class:`TrackerUnavailable` naming
        the ``owner`` that set them.  ``scheme``: the slot's DAMOS scheme (the engine's).
        """
        with self.lock:
            if self.kd is None:
                self.attrs = dict(attrs)
                self.attrs_owner = owner
                self.epoch += 1
                self._create(pid, scheme)
                return 0
            if attrs != self.attrs:
                raise TrackerUnavailable(
                    f"damon: the shared kdamond runs with the monitoring attributes of "
                    f"{self.attrs_owner} ({_fmt_attrs(self.attrs)}); {owner} asks for "
                    f"{_fmt_attrs(attrs)}, and one kdamond has one set: give both the same "
                    f"or stop {self.attrs_owner} first"
                )
            state = self._check_ours()
            if scheme is not None:
                self._check_knobs(scheme)
            if not self.per_target_schemes and any(p is not None for p in self.slots):
                raise TrackerUnavailable(
                    "damon: this kernel's DAMON has no target filter (Linux < 6.6), so it "
                    "cannot tell targets' regions apart: one process at a time"
                )
            free = [i for i, p in enumerate(self.slots) if p is None]
            slot = free[0] if free else len(self.slots)
            reused = slot < len(self.slots)
            slots, schemes = list(self.slots), list(self.schemes)
            if slot == len(slots):
                slots.append(pid)
                schemes.append(scheme)
            else:
                slots[slot] = pid
                schemes[slot] = scheme
            try:
                self._apply(slots, schemes, restart=state != "on")
            except OSError as e:
                if slot < len(self.slots):
                    self.slots[slot] = None  # parked by the next change that works
                    self.schemes[slot] = None
                    self.written_damos[slot : slot + 1] = [None]
                raise TrackerUnavailable(f"damon: cannot add pid {pid}: {e}") from e
            self._added_at[slot] = time.monotonic()
            self._stats_base.pop(slot, None)
            if scheme is not None and reused and self._on():
                # a reused index: its kernel scheme still counts what the last target got
                self._stats_base[slot] = self._fresh_stats(slot)
            return slot

    def remove(self, slot: int, epoch: int) -> None:
        """Stop watching the pid of ``slot``; the last one turns the kdamond off and removes it."""
        with self.lock:
            if self.kd is None or epoch != self.epoch:
                return
            if slot >= len(self.slots) or self.slots[slot] is None:
                return
            slots, schemes = list(self.slots), list(self.schemes)
            slots[slot] = schemes[slot] = None
            while slots and slots[-1] is None:
                slots.pop()
                schemes.pop()
            try:
                state = self._check_ours()
            except DamonBusy:
                self._forget()
                return
            if not slots:
                self._teardown(state)
                return
            if state == "on":
                self._apply(slots, schemes, restart=False)
            else:
                # stopped by itself: rewritten when it is started again
                self.slots, self.schemes = slots, schemes

    # ------------------------------------------------------------ regions

    def regions(self, slot: int, after_gen: int, epoch: int) -> tuple[int, np.ndarray]:
        """``(gen, rows)``: the slot's regions from an update newer than ``after_gen``.

        Rows are ``(start, end, nr_accesses, age)`` as uint64, sorted by start.  One update
        request serves every caller that waited for it.  ``epoch`` is the handle's (see
        :attr:`epoch`).
        """
        with self.lock:
            if self.kd is None or epoch != self.epoch:
                raise ScanError("damon: the kdamond of this tracker is gone")
            if self.gen <= after_gen or not self._valid:
                state = self._check_ours()
                if state != "on":
                    self._apply(list(self.slots), list(self.schemes), restart=True)
                try:
                    _write(self.kd / "state", "update_schemes_tried_regions")
                except OSError as e:
                    raise ScanError(f"damon: updating tried regions failed: {e}") from e
                self.gen += 1
                self._valid = True
                self._cache.clear()
            if slot not in self._cache:
                self._cache[slot] = self._parse(slot)
            return self.gen, self._cache[slot]

    def added_at(self, slot: int) -> float:
        """``time.monotonic()`` when ``slot`` got its current pid."""
        with self.lock:
            return self._added_at.get(slot, 0.0)

    def _parse(self, slot: int) -> np.ndarray:
        assert self.kd is not None
        d = self.kd / f"contexts/0/schemes/{self._stat_index(slot)}/tried_regions"
        rows = []
        try:
            for r in d.iterdir():
                if r.is_dir() and r.name.isdigit():
                    rows.append(
                        tuple(int(_read(r / k)) for k in ("start", "end", "nr_accesses", "age"))
                    )
        except (OSError, ValueError) as e:
            raise ScanError(f"damon: reading tried regions failed: {e}") from e
        return np.array(sorted(rows), dtype=np.uint64).reshape(-1, 4)

    def _stat_index(self, slot: int) -> int:
        return SCHEMES_PER_SLOT * slot if self.per_target_schemes else 0

    def scheme_stats(self, slot: int, epoch: int) -> dict[str, int]:
        """The DAMOS statistics of ``slot``'s scheme since it got its target: ``nr_tried``,
        ``sz_tried``, ``nr_applied``, ``sz_applied`` (regions, bytes), ``qt_exceeds``."""
        with self.lock:
            if self.kd is None or epoch != self.epoch:
                raise ScanError("damon: the kdamond of this target is gone")
            if self._check_ours() != "on":
                raise ScanError("damon: the kdamond is off (it stops when a commit fails)")
            now = self._fresh_stats(slot)
            base = self._stats_base.get(slot, {})
            return {k: v - base.get(k, 0) for k, v in now.items()}

    def describe(self) -> dict[str, object]:
        """The kdamond as ``showstats`` reports it: thread pid, attributes and who set them."""
        with self.lock:
            return {
                "kdamond_pid": int(self.kd_pid) if self.kd is not None and self.kd_pid else None,
                "attrs": dict(self.attrs) if self.kd is not None else {},
                "attrs_owner": self.attrs_owner if self.kd is not None else "",
                "targets": sum(p is not None for p in self.slots),
            }

    def _on(self) -> bool:
        assert self.kd is not None
        return _read(self.kd / "state") == "on"

    def _fresh_stats(self, slot: int) -> dict[str, int]:
        assert self.kd is not None
        try:
            _write(self.kd / "state", "update_schemes_stats")
            d = self.kd / f"contexts/0/schemes/{self._stat_index(slot) + 1}/stats"
            return {k: int(_read(d / k)) for k in STAT_FILES}
        except (OSError, ValueError) as e:
            raise ScanError(f"damon: reading scheme statistics failed: {e}") from e

    def _check_knobs(self, scheme: DamosScheme) -> None:
        """Refuse (reading only) a scheme this kernel's DAMON cannot carry, before any write
        to a running kdamond could leave its inputs half changed."""
        for field, reason in damos_unsupported(scheme, kernel_release(self.proc_root)):
            raise DamosUnsupported(field, reason)
        assert self.kd is not None
        some = self.kd / "contexts/0/schemes/1"
        for field, rel in _KNOB_FILES.items():
            if getattr(scheme, field) and not (some / rel).exists():
                raise DamosUnsupported(field, f"this kernel's DAMON has no scheme file {rel}")

    # ------------------------------------------------------------ the kdamond

    def _create(self, pid: int, scheme: DamosScheme | None) -> None:
        if not self.root.is_dir():
            raise TrackerUnavailable("damon: no DAMON sysfs (CONFIG_DAMON_SYSFS off)")
        try:
            check_damon_free(self.root)
        except DamonBusy as busy:
            why_not = self._take_back_leftover()
            if why_not:
                raise DamonBusy(f"{busy}; {why_not}") from None
            check_damon_free(self.root)
        # Creating a kdamond is a write, and DAMON shows its operations only inside one: rule
        # out a kernel built without vaddr from its configuration first, writing nothing.
        if option_off(kernel_config(Path(self.proc_root)), "CONFIG_DAMON_VADDR"):
            raise TrackerUnavailable("damon: no vaddr operations (CONFIG_DAMON_VADDR is off)")
        if scheme is not None:
            for field, reason in damos_unsupported(scheme, kernel_release(self.proc_root)):
                raise DamosUnsupported(field, reason)
        _write(self.root / "nr_kdamonds", 1)
        self.kd = self.root / "0"
        try:
            ctx = self.kd / "contexts"
            _write(ctx / "nr_contexts", 1)
            avail = _read(ctx / "0/avail_operations").split()
            if "vaddr" not in avail:
                raise TrackerUnavailable(
                    f"damon: no vaddr operations (CONFIG_DAMON_VADDR off; have {' '.join(avail)})"
                )
            _write(ctx / "0/operations", "vaddr")
            attrs = ctx / "0/monitoring_attrs"
            for key in ("sample_us", "aggr_us", "update_us"):
                _write(attrs / "intervals" / key, self.attrs[key])
            _write(attrs / "nr_regions/min", self.attrs["min_nr_regions"])
            _write(attrs / "nr_regions/max", self.attrs["max_nr_regions"])
            self._write_slots([pid], [scheme], resize=True)
            self.slots, self.schemes = [pid], [scheme]
            _write(self.kd / "state", "on")
            self.kd_pid = _read(self.kd / "pid")
            self._record()
            self._invalidate()
            self._added_at = {0: time.monotonic()}
        except BaseException:
            self._teardown_new()
            raise

    @property
    def record(self) -> Path:
        """Where this process writes down the kdamond it made (see damon_record); looked up
        at each use, as ``$ETMEM_RUN_DIR`` may change over a monitor's life (tests do)."""
        return damon_record.record_path(self.root)

    def _record(self) -> None:
        """Write down our kdamond as it is now (see damon_record); DAMON works without it."""
        rec = damon_record.this_process(self.kd_pid, self.written, self.proc_root)
        try:
            damon_record.write(self.record, rec)
        except OSError as e:
            if not self._record_failed:  # once: this runs at every change of targets
                log.warning("damon: cannot keep a record of our kdamond (%s): a successor of "
                            "this process could not remove it after a crash", e)  # fmt: skip
            self._record_failed = True

    def _take_back_leftover(self) -> str:
        """Remove a kdamond left by a dead process that recorded it, if it is still exactly
        as recorded; "" when it did, else why not (for the refusal)."""
        rec = damon_record.read(self.record)
        if rec is None:
            return f"no record of ours about it in {self.record.parent}"
        if damon_record.maker_alive(rec, self.proc_root):
            return f"process {rec.maker_pid}, which made it, still runs"
        kd = self.root / "0"
        try:
            nr = _read(self.root / "nr_kdamonds")
            state = _read(kd / "state")
            pid = _read(kd / "pid")
            targets = kd / "contexts/0/targets"
            pids = tuple(int(_read(targets / str(i) / "pid_target"))
                         for i in range(int(_read(targets / "nr_targets"))))  # fmt: skip
        except (OSError, ValueError) as e:
            return f"it cannot be compared with our record ({e})"
        # a maker that died between starting it and writing down its thread left "" there
        same_thread = state != "on" or rec.kdamond_pid in ("", pid)
        if nr != "1" or pids != rec.targets or not same_thread:
            damon_record.remove(self.record)  # its maker is dead and someone changed it since
            return f"it was changed since process {rec.maker_pid} made it"
        log.warning("damon: removing the kdamond left by process %d, which made it and has "
                    "exited without removing it", rec.maker_pid)  # fmt: skip
        if state == "on":
            _write(kd / "state", "off")
        _write(self.root / "nr_kdamonds", 0)
        damon_record.remove(self.record)
        return ""

    def _teardown_new(self) -> None:
        """Undo a half-made kdamond of ours (nothing else can have it yet)."""
        kd, self.kd = self.kd, None
        self.slots, self.written, self.schemes, self.written_damos = [], [], [], []
        try:
            if kd is not None and _read(kd / "state") == "on":
                _write(kd / "state", "off")
            _write(self.root / "nr_kdamonds", 0)
        except OSError:
            pass
        damon_record.remove(self.record)

    def _check_ours(self) -> str:
        """The kdamond's state (``on``/``off``) if it is still ours; else :class:`DamonBusy`."""
        assert self.kd is not None
        try:
            nr = _read(self.root / "nr_kdamonds")
            state = _read(self.kd / "state")
            pid = _read(self.kd / "pid")
            targets = self.kd / "contexts/0/targets"
            nr_targets = int(_read(targets / "nr_targets"))
            pids = [int(_read(targets / str(i) / "pid_target")) for i in range(nr_targets)]
        except (OSError, ValueError) as e:
            raise DamonBusy(f"damon: our kdamond is unreadable now ({e}); leaving it") from e
        if nr != "1" or pids != self.written:
            raise DamonBusy("damon: our kdamond was reconfigured by someone else; leaving it")
        if state == "on" and pid != self.kd_pid:
            raise DamonBusy("damon: kdamond 0 now runs a thread we did not start; leaving it")
        return state

    def _apply(
        self, slots: list[int | None], schemes: list[DamosScheme | None], *, restart: bool
    ) -> None:
        """Write ``slots`` (with their ``schemes``) and commit them (or start the kdamond
        again when ``restart``)."""
        assert self.kd is not None
        resize = len(slots) != len(self.written)
        pids = self._live_pids(slots)
        self._invalidate()
        self._write_slots(pids, schemes, resize=resize)
        self.slots, self.schemes = slots, schemes
        if restart:
            self._start()
            return
        _write(self.kd / "state", "commit")
        # A commit that names a vanished pid (reaped between our check and the commit) stops
        # the kdamond; start it again on live pids.
        if _read(self.kd / "state") != "on" or _read(self.kd / "pid") != self.kd_pid:
            if _read(self.kd / "state") == "on":
                raise DamonBusy("damon: kdamond 0 now runs a thread we did not start; leaving it")
            self._write_slots(self._live_pids(slots), schemes, resize=False)
            self._start()

    def _start(self) -> None:
        assert self.kd is not None
        _write(self.kd / "state", "on")
        self.kd_pid = _read(self.kd / "pid")
        self._record()
        self._stats_base = {}  # a started kdamond has new schemes, counting from zero
        self._invalidate()

    def _invalidate(self) -> None:
        """Regions read before a restart or a change of schemes are stale."""
        self._valid = False
        self._cache.clear()

    def _live_pids(self, slots: list[int | None]) -> list[int]:
        return [p if p is not None and _alive(p, self.proc_root) else self.park_pid for p in slots]

    def _write_slots(
        self, pids: list[int], schemes: list[DamosScheme | None], *, resize: bool
    ) -> None:
        assert self.kd is not None
        ctx = self.kd / "contexts/0"
        if resize:
            _write(ctx / "targets/nr_targets", len(pids))
        for i, p in enumerate(pids):
            if resize or i >= len(self.written) or self.written[i] != p:
                _write(ctx / f"targets/{i}/pid_target", p)
        if resize:
            self.written_damos = [None] * len(pids)
            self._write_schemes(ctx, len(pids))
        self.written = list(pids)
        self._record()
        for i, p in enumerate(pids):
            # A parked slot watches our own pid: never with an action that acts.
            want = schemes[i] if p != self.park_pid else None
            want = want or IDLE_SCHEME
            if resize or self.written_damos[i] != want:
                self.written_damos[i] = None  # unknown until the write is through
                self._write_damos(ctx / f"schemes/{self._stat_index(i) + 1}", i, want)
                self.written_damos[i] = want

    def _write_schemes(self, ctx: Path, n: int) -> None:
        """``nr_schemes`` and each slot's stat scheme over every region."""
        n_slots = n if self.per_target_schemes else 1
        _write(ctx / "schemes/nr_schemes", SCHEMES_PER_SLOT * n_slots)
        for i in range(n_slots):
            scheme = ctx / f"schemes/{SCHEMES_PER_SLOT * i}"
            for key in ("sz", "nr_accesses", "age"):
                _write(scheme / "access_pattern" / key / "min", 0)
                _write(scheme / "access_pattern" / key / "max", U64_MAX)
            _write(scheme / "action", "stat")
            if self.per_target_schemes:
                try:
                    self._target_filter(scheme, i)
                except OSError:
                    if n > 1:
                        raise
                    self.per_target_schemes = False  # alone, no filter is needed

    def _write_damos(self, d: Path, idx: int, spec: DamosScheme) -> None:
        """Every input of a slot's DAMOS scheme (a rewrite must not keep an old quota)."""
        for key, (lo, hi) in (("sz", spec.sz), ("nr_accesses", spec.nr_accesses),
                              ("age", spec.age)):  # fmt: skip
            _write(d / "access_pattern" / key / "min", lo)
            _write(d / "access_pattern" / key / "max", hi)
        _write(d / "action", spec.action)
        if spec.target_nid is not None:
            self._knob(d, "target_nid", spec.target_nid)
        self._knob(d, "quota_ms", spec.quota_ms)
        self._knob(d, "quota_bytes", spec.quota_bytes)
        self._knob(d, "quota_reset_ms", spec.quota_reset_ms)
        goals = d / "quotas/goals"
        if spec.psi_goal_us:
            self._knob(d, "psi_goal_us", 1)
            _write(goals / "0/target_metric", "some_mem_psi_us")
            _write(goals / "0/target_value", spec.psi_goal_us)
        elif (goals / "nr_goals").exists():
            _write(goals / "nr_goals", 0)
        wm = d / "watermarks"
        if spec.wmarks is not None:
            self._knob(d, "wmarks", "free_mem_rate")
            for name, value in zip(("interval_us", "high", "mid", "low"), spec.wmarks,
                                   strict=True):  # fmt: skip
                _write(wm / name, value)
        elif (wm / "metric").exists():
            _write(wm / "metric", "none")
        if self.per_target_schemes:
            self._target_filter(d, idx)

    @staticmethod
    def _knob(d: Path, field: str, value: str | int) -> None:
        """Write an optional scheme knob; one the kernel lacks is fine only while unused."""
        path = d / _KNOB_FILES[field]
        if not path.exists():
            if value:
                raise DamosUnsupported(
                    field, f"this kernel's DAMON has no scheme file {_KNOB_FILES[field]}"
                )
            return
        _write(path, value)

    @staticmethod
    def _target_filter(scheme: Path, idx: int) -> None:
        # "matching N": what does NOT match target idx is filtered out of this scheme.
        filters = scheme / "filters"
        _write(filters / "nr_filters", 1)
        _write(filters / "0/type", "target")
        _write(filters / "0/damon_target_idx", idx)
        _write(filters / "0/matching", "N")

    def shutdown(self, wait: float = 3.0) -> None:
        """Turn our kdamond off and remove it, whatever handles are still open (the process
        is ending: a handle left open by a worker stuck past its stop would otherwise leave
        the kdamond behind, and the next user would find DAMON busy).  Never raises; open
        handles become no-ops.  Waits ``wait`` seconds for a sysfs call under way."""
        got = self.lock.acquire(timeout=wait)
        try:
            if self.kd is None:
                return
            try:
                state = self._check_ours()
            except DamonBusy:
                self._forget()  # not ours any more: leave it
                return
            self._teardown(state)
        except Exception:
            self._forget()
        finally:
            if got:
                self.lock.release()

    def _teardown(self, state: str) -> None:
        assert self.kd is not None
        try:
            if state == "on":
                _write(self.kd / "state", "off")
            _write(self.root / "nr_kdamonds", 0)
        except OSError:
            pass  # nothing more we can safely do
        self._forget()

    def _forget(self) -> None:
        damon_record.remove(self.record)  # ours no more, whether removed or taken over
        self._invalidate()
        self.kd = None
        self.slots, self.written, self.schemes, self.written_damos = [], [], [], []
        self._added_at = {}
        self._stats_base = {}


def _fmt_attrs(attrs: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in attrs.items())


#: The sysfs file (under a scheme directory) of each optional :class:`DamosScheme` field.
_KNOB_FILES = {
    "quota_ms": "quotas/ms",
    "quota_bytes": "quotas/bytes",
    "quota_reset_ms": "quotas/reset_interval_ms",
    "psi_goal_us": "quotas/goals/nr_goals",
    "wmarks": "watermarks/metric",
    "target_nid": "target_nid",
}
#: A scheme's statistics files (``update_schemes_stats`` refreshes them).
STAT_FILES = ("nr_tried", "sz_tried", "nr_applied", "sz_applied", "qt_exceeds")

_monitors: dict[str, DamonMonitor] = {}
_monitors_lock = threading.Lock()


def monitor_for(
    sys_root: str | os.PathLike[str], proc_root: str | os.PathLike[str] = "/proc"
) -> DamonMonitor:
    """The process-wide monitor of the DAMON sysfs under ``sys_root`` (made on first use, kept:
    it holds no kdamond while no handle is open)."""
    key = os.path.realpath(os.fspath(sys_root))
    with _monitors_lock:
        mon = _monitors.get(key)
        if mon is None:
            mon = _monitors[key] = DamonMonitor(sys_root, proc_root)
        return mon


def shutdown_all() -> None:
    """:meth:`DamonMonitor.shutdown` for every monitor of this process (daemon exit)."""
    with _monitors_lock:
        monitors = list(_monitors.values())
    for mon in monitors:
        mon.shutdown()


def ours(sys_root: str | os.PathLike[str]) -> bool:
    """Whether this process runs the DAMON sysfs tree's kdamond (the probe's "busy" test)."""
    with _monitors_lock:
        mon = _monitors.get(os.path.realpath(os.fspath(sys_root)))
    return mon is not None and mon.kd is not None


class DamonTracker(Tracker):
    """A handle on one target of the shared kdamond (see module docs).

    A page counts as accessed when its DAMON region saw accesses (``nr_accesses > 0``) in any
    of the pass's ``windows`` aggregation windows.  ``min_nr_regions`` defaults to 100: DAMON
    never merges a region beyond 1/min_nr_regions of the target's monitored space, and with
    10 a merged hot neighbour carried 10 % of a 128 MiB cold mapping along in the test bed.
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
        min_nr_regions: int = 100,
        max_nr_regions: int = 1000,
        windows: int = 3,
    ) -> None:
        self.pid = int(pid)
        self.proc_root = proc_root
        self.aggr_us = aggr_us
        self.update_us = update_us
        self.windows = max(1, windows)
        attrs = {
            "sample_us": sample_us,
            "aggr_us": aggr_us,
            "update_us": update_us,
            "min_nr_regions": min_nr_regions,
            "max_nr_regions": max_nr_regions,
        }
        if not (Path(sys_root) / "kernel/mm/damon/admin/kdamonds").is_dir():
            raise TrackerUnavailable("damon: no DAMON sysfs (CONFIG_DAMON_SYSFS off)")
        mon = monitor_for(sys_root, proc_root)
        self.slot = mon.add(self.pid, attrs)
        self._epoch = mon.epoch
        self._monitor: DamonMonitor | None = mon
        self._gen = mon.gen  # only windows collected after this target was added

    def _windows(self) -> list[np.ndarray]:
        mon = self._monitor
        if mon is None:
            raise ScanError("damon: tracker is closed")
        got: list[np.ndarray] = []
        # A target added to a running kdamond gets regions only at the kernel's next
        # operations update (update_us, counted in samples, which run late under TCG), and so
        # does every target of a kdamond restarted meanwhile: wait for them rather than call
        # everything idle -- counted from this pass too, as a restart can come at any time.
        grace = (5 * self.update_us + 10 * self.aggr_us) / 1e6
        deadline = max(mon.added_at(self.slot), time.monotonic()) + grace
        while len(got) < self.windows:
            self._gen, rows = mon.regions(self.slot, self._gen, self._epoch)
            if rows.size:
                got.append(rows)
            elif time.monotonic() > deadline:
                break
        if not got:
            if not _alive(self.pid, self.proc_root):
                raise TargetGone(f"process {self.pid} is gone (damon)")
            raise ScanError(f"damon: no regions for pid {self.pid} yet")
        return got

    def regions(self) -> np.ndarray:
        """This target's DAMON regions from one fresh aggregation window: rows of
        ``(start, end, nr_accesses, age)`` (uint64), sorted by start."""
        mon = self._monitor
        if mon is None:
            raise ScanError("damon: tracker is closed")
        self._gen, rows = mon.regions(self.slot, self._gen, self._epoch)
        return rows

    def scan_pass(self, vmas: Sequence[VmaRange]) -> PassRefs:
        if not _alive(self.pid, self.proc_root):
            raise TargetGone(f"process {self.pid} is gone (damon)")
        windows = self._windows()
        try:
            fd = open_pagemap(self.pid, self.proc_root)
        except (FileNotFoundError, ProcessLookupError) as e:
            raise TargetGone(f"process {self.pid} is gone (damon)") from e
        try:
            addr = present_pages(self.pid, vmas, fd=fd)
        finally:
            os.close(fd)
        weight = np.zeros(addr.size, dtype=np.uint8)
        for reg in windows:
            # Only nr_accesses says "accessed": a region's age also restarts when DAMON splits
            # or merges it, which happens to idle regions all the time (seen in the test bed).
            hot = reg[:, 2] > 0
            i = np.searchsorted(reg[:, 0], addr, side="right") - 1
            inside = (i >= 0) & (addr < reg[np.maximum(i, 0), 1])
            weight[inside] |= hot[i[inside]].astype(np.uint8)
        return PassRefs(addr, np.full(addr.size, PTE, np.uint8), weight)

    def close(self) -> None:
        mon, self._monitor = self._monitor, None
        if mon is not None:
            mon.remove(self.slot, self._epoch)


class DamosTarget:
    """The ``damon`` engine's handle on one target of the shared kdamond: ``pid`` monitored
    with ``attrs`` and acted on by ``scheme`` (see module docs).  ``owner`` names the user in
    a refusal (``project P``).  :meth:`close` frees the slot; the last one removes the
    kdamond."""

    def __init__(
        self,
        pid: int,
        scheme: DamosScheme,
        *,
        attrs: dict[str, int],
        owner: str,
        proc_root: str | os.PathLike[str] = "/proc",
        sys_root: str | os.PathLike[str] = "/sys",
    ) -> None:
        self.pid = int(pid)
        self.scheme = scheme
        why = damon_refusal(sys_root, proc_root)
        if why is not None:
            raise TrackerUnavailable(f"damon: {why}")
        mon = monitor_for(sys_root, proc_root)
        self.slot = mon.add(self.pid, dict(attrs), scheme=scheme, owner=owner)
        self._epoch = mon.epoch
        self._monitor: DamonMonitor | None = mon
        self._gen = mon.gen

    def _mon(self) -> DamonMonitor:
        if self._monitor is None:
            raise ScanError("damon: target is closed")
        return self._monitor

    def regions(self, tries: int = 3) -> np.ndarray:
        """All of this target's regions from a fresh aggregation window: rows of
        ``(start, end, nr_accesses, age)`` (uint64), sorted by start.

        An update now and then lists no region for a target (seen in the test bed under TCG
        on a target monitored for minutes), so up to ``tries`` updates are asked for; empty
        still means DAMON has made no regions for it yet."""
        rows = np.empty((0, 4), dtype=np.uint64)
        for _ in range(max(1, tries)):
            self._gen, rows = self._mon().regions(self.slot, self._gen, self._epoch)
            if rows.size:
                break
        return rows

    def stats(self) -> dict[str, int]:
        """The scheme's DAMOS statistics for this target (see :meth:`DamonMonitor.scheme_stats`)."""
        return self._mon().scheme_stats(self.slot, self._epoch)

    def kdamond(self) -> dict[str, object]:
        """The shared kdamond (:meth:`DamonMonitor.describe`)."""
        return self._mon().describe()

    def close(self) -> None:
        """Stop acting on and watching the pid (idempotent)."""
        mon, self._monitor = self._monitor, None
        if mon is not None:
            mon.remove(self.slot, self._epoch)
