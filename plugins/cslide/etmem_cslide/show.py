"""Text of the private commands ``showhostpages`` and ``showtaskpages`` (the original's layout).

Sizes are KiB. The header starts with the time of the last statistics in ``asctime`` form
(``[Wed Nov 25 19:28:54 2026] ``); before the first cycle that time is the epoch, as in C.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

#: per node: (hot KiB, cold KiB)
NodePages = Mapping[int, tuple[int, int]]


def stamp(stat_time: float) -> str:
    """``[<asctime>] `` for ``stat_time`` in local time, or ``""`` if it cannot be converted."""
    try:
        return f"[{time.asctime(time.localtime(stat_time))}] "
    except (OverflowError, OSError, ValueError):
        return ""


def host_pages_text(
    stat_time: float, nodes: Iterable[int], totals_kb: Mapping[int, int], pages: NodePages
) -> str:
    """``showhostpages``: per node the pool size and the hot/cold KiB summed over every pid."""
    lines = [
        f"{stamp(stat_time)}host pages info (KB):\n",
        f"{'node':>5} {'total':>10} {'used':>10} {'hot':>10} {'cold':>10}\n",
    ]
    for n in nodes:
        hot, cold = pages.get(n, (0, 0))
        lines.append(f"{n:5d} {totals_kb.get(n, 0):10d} {hot + cold:10d} {hot:10d} {cold:10d}\n")
    return "".join(lines)


def task_pages_text(stat_time: float, pid: int, nodes: Iterable[int], pages: NodePages) -> str:
    """``showtaskpages -t TASK``: per node the hot/cold KiB of the task's first pid."""
    lines = [
        f"{stamp(stat_time)}task {pid} pages info (KB):\n",
        f"{'node':>5} {'used':>10} {'hot':>10} {'cold':>10}\n",
    ]
    for n in nodes:
        hot, cold = pages.get(n, (0, 0))
        lines.append(f"{n:5d} {hot + cold:10d} {hot:10d} {cold:10d}\n")
    return "".join(lines)
