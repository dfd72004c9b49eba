"""Slide statistics per task and per pid, and the ``showstats`` text.

The numbers live in ``task.stats`` / ``task_pid.stats`` (plain JSON-able dicts, so the core can put
them in ``project show --json``); updates from the parallel workers go through one lock per task.
"""

from __future__ import annotations

import threading
from typing import Any

from etmem_sdk import Task, TaskPid

from .cycle import CycleResult

#: Counters kept for a task and for each of its pids.
COUNTERS = ("cycles", "skipped", "pages_scanned", "cold_pages", "bytes_swapped", "errors")
#: The pressure guard's: cycles it paused (they count as skipped too).
GUARD_COUNTERS = ("paused_cycles",)
#: What the ``probe`` tracker moved itself (zero with other trackers): pages it paged out and
#: verified gone, pages that came back (accessed), pages that would not leave, bytes paged out.
PROBE_COUNTERS = ("probe_pages", "probe_returned", "probe_stuck", "probe_bytes_out")


def new_stats() -> dict[str, Any]:
    """A fresh statistics dict (typed like ``Task.stats``: JSON values of several types)."""
    stats: dict[str, Any] = dict.fromkeys(COUNTERS + PROBE_COUNTERS + GUARD_COUNTERS, 0)
    stats["last_cycle_seconds"] = 0.0
    stats["reclaim_seconds"] = 0.0
    stats["last_error"] = ""
    return stats


class StatsKeeper:
    """Folds cycle results and errors into a task's and its pids' stats, thread-safely."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.lock = threading.Lock()
        for key, value in new_stats().items():
            task.stats.setdefault(key, value)

    def record(self, tp: TaskPid, result: CycleResult) -> None:
        """Add one finished cycle of ``tp``."""
        with self.lock:
            for stats in (self.task.stats, self._pid_stats(tp)):
                stats["cycles"] += 1
                if not result.swapped:
                    stats["skipped"] += 1
                if result.pressure is not None:
                    stats["pressure"] = result.pressure
                    stats["paused"] = result.paused
                if result.paused:
                    stats["paused_cycles"] = int(stats.get("paused_cycles", 0)) + 1
                stats["pages_scanned"] += result.pages_scanned
                stats["cold_pages"] += result.cold_pages
                stats["bytes_swapped"] += result.bytes_out
                for key in PROBE_COUNTERS:
                    stats[key] = int(stats.get(key, 0)) + result.tracker_counters.get(key, 0)
                stats["last_cycle_seconds"] = round(result.duration, 6)
                stats["reclaim_seconds"] = round(
                    float(stats.get("reclaim_seconds", 0.0)) + result.reclaim_seconds, 6
                )

    def error(self, tp: TaskPid, exc: BaseException) -> None:
        """Count a failed cycle of ``tp``."""
        text = f"{type(exc).__name__}: {exc}"
        with self.lock:
            for stats in (self.task.stats, self._pid_stats(tp)):
                stats["errors"] += 1
                stats["last_error"] = text

    def _pid_stats(self, tp: TaskPid) -> dict[str, Any]:
        if not tp.stats:
            tp.stats.update(new_stats())
        return tp.stats


_ROW = "{:<10} {:>8} {:>8} {:>14} {:>12} {:>14} {:>10} {:>12} {:>7}\n"


def format_showstats(tasks: list[Task]) -> str:
    """The ``etmem engine showstats`` text for ``tasks``."""
    out: list[str] = []
    for task in tasks:
        s = task.stats
        state = "running" if s.get("running") else "stopped"
        out.append(
            f"task: {task.name}  type: {task.type}  value: {task.value}  state: {state}  "
            f"tracker: {s.get('tracker', '-')}  actuator: {s.get('actuator', '-')}\n"
        )
        out.append(
            _ROW.format(
                "pid",
                "cycles",
                "skipped",
                "pages_scanned",
                "cold_pages",
                "swapped_kb",
                "last_sec",
                "reclaim_sec",
                "errors",
            )
        )
        for tp in list(task.pids):  # a worker may be refreshing the list meanwhile
            out.append(_row(str(tp.pid), tp.stats or new_stats()))
        out.append(_row("total", s))
        if s.get("probe_pages") or s.get("tracker") == "probe":
            out.append(
                f"probe: {s.get('probe_pages', 0)} pages paged out to watch refaults "
                f"({int(s.get('probe_bytes_out', 0)) // 1024} KiB), "
                f"{s.get('probe_returned', 0)} came back, {s.get('probe_stuck', 0)} would not "
                "leave\n"
            )
        if s.get("pressure_guard"):
            paused = [str(tp.pid) for tp in list(task.pids) if tp.stats.get("paused")]
            seen = ", ".join(
                f"{tp.pid}: {float(tp.stats['pressure']):.2f}"
                for tp in list(task.pids)
                if tp.stats.get("pressure") is not None
            )
            out.append(
                f"pressure guard: {s['pressure_guard']}; paused now: "
                f"{' '.join(paused) or 'none'}; {s.get('paused_cycles', 0)} cycles paused; "
                f"pressure seen: {seen or '-'}\n"
            )
        if s.get("last_error"):
            out.append(f"last error: {s['last_error']}\n")
    return "".join(out)


def _row(label: str, s: dict[str, Any]) -> str:
    return _ROW.format(
        label,
        s.get("cycles", 0),
        s.get("skipped", 0),
        s.get("pages_scanned", 0),
        s.get("cold_pages", 0),
        int(s.get("bytes_swapped", 0)) // 1024,
        f"{float(s.get('last_cycle_seconds', 0.0)):.3f}",
        f"{float(s.get('reclaim_seconds', 0.0)):.3f}",
        s.get("errors", 0),
    )
