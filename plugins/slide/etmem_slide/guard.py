"""slide's pressure guard: no swap-out for a process while memory pressure is high.

Swapping out more of a process whose cgroup (or the whole system) already stalls on memory
pushes it into thrashing. With ``pressure_limit`` set, each cycle first reads the PSI ``some``
average over ``pressure_window`` -- of the process's own cgroup (``pressure_scope=cgroup``,
falling back to ``/proc/pressure/memory`` when the cgroup has no ``memory.pressure``) or of
the system -- and skips the cycle while it is at or above the limit. Pause and resume are
logged once per change.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from etmem_sdk import cgroup as cg

log = logging.getLogger(__name__)

SCOPES = ("cgroup", "system")


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """What the guard saw for one pid: the pressure, where it came from, and the decision."""

    pressure: float
    source: str
    paused: bool


class PressureGuard:
    """Decides per pid and cycle whether slide may swap out (one guard per task)."""

    def __init__(
        self,
        limit: float,
        window: str = "avg10",
        scope: str = "cgroup",
        *,
        task_name: str = "",
        sys_root: str | None = None,
        proc_root: str | None = None,
    ) -> None:
        self.limit, self.window, self.scope = limit, window, scope
        self.task_name = task_name
        self.sys_root, self.proc_root = sys_root, proc_root
        self._paused: dict[int, bool] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        """``some avg10 >= 5 (cgroup)`` for showstats."""
        return f"pauses at some {self.window} >= {self.limit:g} % ({self.scope})"

    def _source(self, pid: int) -> str:
        if self.scope == "cgroup":
            path = cg.pid_pressure_path(pid, self.sys_root, self.proc_root)
            if path is not None:
                return path
        return cg.system_pressure_path(self.proc_root)

    def check(self, pid: int) -> GuardVerdict:
        """Read the pressure that covers ``pid`` and decide; logs a pause or a resume."""
        source = self._source(pid)
        try:
            psi = cg.read_psi(source)
        except cg.CgroupGone:  # the cgroup went away (or the process moved) since the lookup
            source = cg.system_pressure_path(self.proc_root)
            psi = cg.read_psi(source)
        pressure = psi["some"].window(self.window)
        paused = pressure >= self.limit
        with self._lock:
            was = self._paused.get(pid, False)
            self._paused[pid] = paused
        if paused != was:
            log.info(
                "slide: task %s pid %d: %s swap-out, memory pressure some %s %.2f %s %g (%s)",
                self.task_name,
                pid,
                "pausing" if paused else "resuming",
                self.window,
                pressure,
                ">=" if paused else "<",
                self.limit,
                source,
            )
        return GuardVerdict(pressure, source, paused)

    def forget(self, pid: int) -> None:
        """Drop the state of a pid that left the task."""
        with self._lock:
            self._paused.pop(pid, None)
