"""Move confirmation: a page moves only after ``confirm`` cycles in a row asked for the same move.

The policy moves a page as soon as one cycle's count says it is on the wrong node, which is
right for a tracker that sees each page (the original's ``idle_pages``). A region tracker
(DAMON) gives a 4 KiB page its region's verdict, and regions split and merge from window to
window: in the test bed a hot half of a workload read as cold for one cycle now and then, and
cslide moved it down and straight back up, a quota each way. Holding a page until the same
verdict comes ``confirm`` cycles running filters out such one-cycle flips; with ``confirm=1``
nothing is held and nothing is remembered.

Only pages that want a move are remembered (address, direction, streak), so the state is as
large as the set of misplaced pages, not the process.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from etmem_sdk.scan import GRANULARITY

from .config import MAX_CONFIRM, NORMAL
from .policy import PidPages

__all__ = ["MoveConfirmation", "default_confirm"]

UP, DOWN = np.int8(1), np.int8(-1)


def default_confirm(tracker: str, memory: str) -> int:
    """Cycles a move waits for by default: 2 for ordinary memory seen by a tracker of regions,
    else 1 (the original's behaviour).  Hugetlb memory keeps 1: a 2 MiB page's verdict is the
    mean of its 512 parts (``fold_hugepages``), which an edge flip rarely turns, and the
    original's cslide configs (hugetlb) must keep placing as they did -- with ``hot_threshold=1``
    a cold hugepage beside a hot one reads hot too often to be confirmed cold twice running."""
    return 2 if memory == NORMAL and GRANULARITY.get(tracker) == "region" else 1


class MoveConfirmation:
    """One pid's streaks of wanted moves (engine thread only)."""

    def __init__(self, confirm: int) -> None:
        if not 1 <= confirm <= MAX_CONFIRM:
            raise ValueError(f"confirm must be 1..{MAX_CONFIRM}")
        self.confirm = confirm
        self.addr = np.empty(0, np.uint64)  # sorted
        self.direction = np.empty(0, np.int8)
        self.streak = np.empty(0, np.uint8)

    def hold(
        self,
        pages: PidPages,
        hot_threshold: int,
        hot_nodes: Iterable[int],
        cold_nodes: Iterable[int],
    ) -> PidPages:
        """The pages as the policy should see them this cycle: a page whose move has not yet
        been asked for ``confirm`` cycles running gets a count that keeps it where it is
        (``hot_threshold - 1`` on a cold node, ``hot_threshold`` on a hot node)."""
        if self.confirm == 1 or not len(pages):
            return pages
        hot = pages.count >= hot_threshold
        on_hot = np.isin(pages.node, np.fromiter(hot_nodes, np.int64))
        on_cold = np.isin(pages.node, np.fromiter(cold_nodes, np.int64))
        want = np.zeros(len(pages), np.int8)
        want[hot & on_cold] = UP
        want[~hot & on_hot] = DOWN
        moving = np.flatnonzero(want)
        addr, direction = pages.addr[moving], want[moving]
        order = np.argsort(addr, kind="stable")
        moving, addr, direction = moving[order], addr[order], direction[order]
        # a streak goes on where last cycle wanted the same move of the same page
        pos = np.minimum(np.searchsorted(self.addr, addr), max(self.addr.size - 1, 0))
        same = np.zeros(addr.size, bool)
        if self.addr.size:
            same = (self.addr[pos] == addr) & (self.direction[pos] == direction)
        streak = np.ones(addr.size, np.int64)
        streak[same] += self.streak[pos[same]]
        streak = np.minimum(streak, self.confirm)
        self.addr, self.direction, self.streak = addr, direction, streak.astype(np.uint8)
        held = moving[streak < self.confirm]
        if not held.size:
            return pages
        count = pages.count.copy()
        count[held] = np.where(want[held] == UP, hot_threshold - 1, hot_threshold)
        return PidPages(addr=pages.addr, size=pages.size, count=count, node=pages.node)
