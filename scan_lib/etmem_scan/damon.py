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

DAMON reports each region's accesses over one aggregation window; under TCG the hot range is
reported erratically from window to window, so a pass ORs ``windows`` consecutive windows
(each ``update_schemes_tried_regions`` request collects one).  Windows are shared: a request
made while another thread's request is under way uses that one's result.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from .errors import TargetGone
from .kconfig import kernel_config, option_off
from .pagemap import open_pagemap, present_pages
from .pagerefs import PTE, PassRefs
from .tracker import ScanError, Tracker, TrackerUnavailable, VmaRange

__all__ = ["DamonBusy", "DamonMonitor", "DamonTracker", "check_damon_free", "monitor_for", "ours"]

U64_MAX = str(2**64 - 1)
T = TypeVar("T")


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
        self.attrs: dict[str, int] = {}
        self.lock = threading.Lock()
        self.park_pid = os.getpid()
        #: per slot: the handle's pid, or None when the slot is free (parked)
        self.slots: list[int | None] = []
        #: per slot: the pid last written to sysfs (a parked slot: park_pid)
        self.written: list[int] = []
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

    def add(self, pid: int, attrs: dict[str, int]) -> int:
        """Start monitoring ``pid``; return its slot.  Other targets keep their history.

        ``attrs`` (intervals, nr_regions) belong to the kdamond: the first handle sets them,
        and a handle asking for others while it runs gets :class:`TrackerUnavailable`.
        """
        with self.lock:
            if self.kd is None:
                self.attrs = dict(attrs)
                self.epoch += 1
                self._create(pid)
                return 0
            if attrs != self.attrs:
                raise TrackerUnavailable(
                    f"damon: the shared kdamond runs with {self.attrs}; cannot also use {attrs}"
                )
            state = self._check_ours()
            if not self.per_target_schemes and any(p is not None for p in self.slots):
                raise TrackerUnavailable(
                    "damon: this kernel's DAMON has no target filter (Linux < 6.6), so it "
                    "cannot tell targets' regions apart: one process at a time"
                )
            free = [i for i, p in enumerate(self.slots) if p is None]
            slot = free[0] if free else len(self.slots)
            slots = list(self.slots)
            if slot == len(slots):
                slots.append(pid)
            else:
                slots[slot] = pid
            try:
                self._apply(slots, restart=state != "on")
            except OSError as e:
                if slot < len(self.slots):
                    self.slots[slot] = None  # parked by the next change that works
                raise TrackerUnavailable(f"damon: cannot add pid {pid}: {e}") from e
            self._added_at[slot] = time.monotonic()
            return slot

    def remove(self, slot: int, epoch: int) -> None:
        """Stop watching the pid of ``slot``; the last one turns the kdamond off and removes it."""
        with self.lock:
            if self.kd is None or epoch != self.epoch:
                return
            if slot >= len(self.slots) or self.slots[slot] is None:
                return
            slots = list(self.slots)
            slots[slot] = None
            while slots and slots[-1] is None:
                slots.pop()
            try:
                state = self._check_ours()
            except DamonBusy:
                self._forget()
                return
            if not slots:
                self._teardown(state)
                return
            if state == "on":
                self._apply(slots, restart=False)
            else:
                self.slots = slots  # stopped by itself: rewritten when it is started again

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
                    self._apply(list(self.slots), restart=True)
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
        scheme = slot if self.per_target_schemes else 0
        d = self.kd / f"contexts/0/schemes/{scheme}/tried_regions"
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

    # ------------------------------------------------------------ the kdamond

    def _create(self, pid: int) -> None:
        if not self.root.is_dir():
            raise TrackerUnavailable("damon: no DAMON sysfs (CONFIG_DAMON_SYSFS off)")
        check_damon_free(self.root)
        # Creating a kdamond is a write, and DAMON shows its operations only inside one: rule
        # out a kernel built without vaddr from its configuration first, writing nothing.
        if option_off(kernel_config(Path(self.proc_root)), "CONFIG_DAMON_VADDR"):
            raise TrackerUnavailable("damon: no vaddr operations (CONFIG_DAMON_VADDR is off)")
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
            self._write_slots([pid], resize=True)
            self.slots = [pid]
            _write(self.kd / "state", "on")
            self.kd_pid = _read(self.kd / "pid")
            self._invalidate()
            self._added_at = {0: time.monotonic()}
        except BaseException:
            self._teardown_new()
            raise

    def _teardown_new(self) -> None:
        """Undo a half-made kdamond of ours (nothing else can have it yet)."""
        kd, self.kd = self.kd, None
        self.slots, self.written = [], []
        try:
            if kd is not None and _read(kd / "state") == "on":
                _write(kd / "state", "off")
            _write(self.root / "nr_kdamonds", 0)
        except OSError:
            pass

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

    def _apply(self, slots: list[int | None], *, restart: bool) -> None:
        """Write ``slots`` and commit them (or start the kdamond again when ``restart``)."""
        assert self.kd is not None
        resize = len(slots) != len(self.written)
        pids = self._live_pids(slots)
        self._invalidate()
        self._write_slots(pids, resize=resize)
        self.slots = slots
        if restart:
            self._start()
            return
        _write(self.kd / "state", "commit")
        # A commit that names a vanished pid (reaped between our check and the commit) stops
        # the kdamond; start it again on live pids.
        if _read(self.kd / "state") != "on" or _read(self.kd / "pid") != self.kd_pid:
            if _read(self.kd / "state") == "on":
                raise DamonBusy("damon: kdamond 0 now runs a thread we did not start; leaving it")
            self._write_slots(self._live_pids(slots), resize=False)
            self._start()

    def _start(self) -> None:
        assert self.kd is not None
        _write(self.kd / "state", "on")
        self.kd_pid = _read(self.kd / "pid")
        self._invalidate()

    def _invalidate(self) -> None:
        """Regions read before a restart or a change of schemes are stale."""
        self._valid = False
        self._cache.clear()

    def _live_pids(self, slots: list[int | None]) -> list[int]:
        return [p if p is not None and _alive(p, self.proc_root) else self.park_pid for p in slots]

    def _write_slots(self, pids: list[int], *, resize: bool) -> None:
        assert self.kd is not None
        ctx = self.kd / "contexts/0"
        if resize:
            _write(ctx / "targets/nr_targets", len(pids))
        for i, p in enumerate(pids):
            if resize or i >= len(self.written) or self.written[i] != p:
                _write(ctx / f"targets/{i}/pid_target", p)
        if resize:
            self._write_schemes(ctx, len(pids))
        self.written = list(pids)

    def _write_schemes(self, ctx: Path, n: int) -> None:
        n_schemes = n if self.per_target_schemes else 1
        _write(ctx / "schemes/nr_schemes", n_schemes)
        for i in range(n_schemes):
            scheme = ctx / f"schemes/{i}"
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

    @staticmethod
    def _target_filter(scheme: Path, idx: int) -> None:
        # "matching N": what does NOT match target idx is filtered out of this scheme.
        filters = scheme / "filters"
        _write(filters / "nr_filters", 1)
        _write(filters / "0/type", "target")
        _write(filters / "0/damon_target_idx", idx)
        _write(filters / "0/matching", "N")

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
        self._invalidate()
        self.kd = None
        self.slots, self.written = [], []
        self._added_at = {}


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
        got = []
        # A target added to a running kdamond gets regions only at the kernel's next
        # operations update (update_us, counted in samples, which run late under TCG): wait
        # for them rather than call everything idle.
        deadline = mon.added_at(self.slot) + (5 * self.update_us + 10 * self.aggr_us) / 1e6
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
