"""Move confirmation: a page moves only after ``confirm`` cycles in a row asked for the same move.

The policy moves a page as soon as one cycle's count says it is on the wrong node, which is
right for a tracker that sees each page (the original's ``idle_pages``). A region tracker
(DAMON) gives a 4 KiB page its region's verdict, and regions split and merge from window to
window: in the test bed a hot half of a workload read as cold for one cycle now and then, and
cslide moved it down and straight back up, a quota each way. Holding a page until the same
verdict comes ``confirm`` cycles running filters out such one-cycle flips; with ``confirm=1``
nothing is held and nothing is remembered.

The state is one byte per page scanned (0, or the wanted direction and the streak), kept beside
the pages' runs and lined up with the next cycle's pages by address (``scan.carry_runs``);
only pages that want a move have a non-zero byte.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from etmem_sdk.scan import GRANULARITY, PageRuns, carry_runs

from .config import MAX_CONFIRM, NORMAL
from .policy import DOWN_BIT, STREAK_MASK, UP_BIT, Held, NodePages, PidPages

__all__ = ["MoveConfirmation", "default_confirm"]


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
        self.runs = PageRuns.empty()  # the pages the state is about
        self.state = np.empty(0, np.uint8)  # per page: 0, or direction bit | streak

    @property
    def addr(self) -> np.ndarray:
        """Addresses (uint64, ascending) of the pages remembered as wanting a move."""
        if not len(self.state):
            return np.empty(0, np.uint64)
        return self.runs.select(self.state != 0).addresses()

    def hold(
        self,
        pages: PidPages | NodePages,
        hot_threshold: int,
        hot_nodes: Iterable[int],
        cold_nodes: Iterable[int],
    ) -> PidPages | NodePages:
        """The pages as the policy should see them this cycle: a page whose move has not yet
        been asked for ``confirm`` cycles running gets a count that keeps it where it is
        (``hot_threshold - 1`` on a cold node, ``hot_threshold`` on a hot node)."""
        if self.confirm == 1 or not len(pages):
            return pages
        hot_nodes, cold_nodes = list(hot_nodes), list(cold_nodes)
        if isinstance(pages, PidPages):
            return self._hold_rows(pages, hot_threshold, hot_nodes, cold_nodes)
        return self._hold(pages, hot_threshold, hot_nodes, cold_nodes)

    def _hold(
        self, pages: NodePages, hot_threshold: int, hot_nodes: list[int], cold_nodes: list[int]
    ) -> NodePages:
        index = {n: i for i, n in enumerate(pages.nodes)}
        on_hot = np.array([index[n] for n in hot_nodes if n in index], np.int64)
        on_cold = np.array([index[n] for n in cold_nodes if n in index], np.int64)
        # last cycle's codes on this cycle's pages (the same array when the pages are the same)
        prev = carry_runs(self.runs, self.state, pages.runs)
        state = np.empty(len(pages.counts), np.uint8)
        held = False
        for lo, hi in pages.blocks():
            hot = pages.counts[lo:hi] >= hot_threshold
            w = pages.where[lo:hi]
            want = np.where(hot & np.isin(w, on_cold), UP_BIT, 0).astype(np.uint8)
            want[~hot & np.isin(w, on_hot)] = DOWN_BIT
            # a streak goes on where last cycle wanted the same move of the same page
            before = prev[lo:hi]
            same = (want != 0) & ((before & (UP_BIT | DOWN_BIT)) == want)
            streak = np.where(same, (before & STREAK_MASK) + 1, 1)
            np.minimum(streak, self.confirm, out=streak)
            state[lo:hi] = np.where(want != 0, want | streak, 0)
            held = held or bool(((want != 0) & (streak < self.confirm)).any())
        del prev
        self.runs, self.state = pages.runs, state
        if not held:
            return pages
        return pages.with_held(Held(state, self.confirm, hot_threshold))

    def _hold_rows(
        self, pages: PidPages, hot_threshold: int, hot_nodes: list[int], cold_nodes: list[int]
    ) -> PidPages:
        """:meth:`hold` for rows in any order: the same, through the pages sorted into runs."""
        nodes = np.unique(np.asarray(pages.node, np.int64)).tolist()
        compact, order = NodePages.from_rows(pages, nodes)
        held = self._hold(compact, hot_threshold, hot_nodes, cold_nodes)
        if held is compact:
            return pages
        count = pages.count.copy()
        count[order] = held.effective(0, len(order))
        return PidPages(addr=pages.addr, size=pages.size, count=count, node=pages.node)
