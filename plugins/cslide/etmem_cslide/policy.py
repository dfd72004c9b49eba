"""cslide's placement policy: which pages go to the hot node and which to the cold node.

A pure function of the pages (address, real size, access count, current node, per pid), the node
pools (total/free bytes) and the engine settings — no kernel, no clock — so it is tested directly.

It reproduces the original's flow control (C ``cslide_filter_pfs``) phase by phase, per node pair:

* A, promote: buckets ``loop*3`` down to ``hot_threshold``; hot pages on the cold node move up.
  Budget: the quota if it is below the hot node's free space, else free + half of the rest
  (each displaced cold page costs a move down too), never more than free + the cold node's free,
  nor more than free + the cold memory sitting on the hot node.
* B, prefetch: buckets ``hot_threshold-1`` down to 0; pages on the cold node move up while the
  hot node keeps ``reserve`` free and quota remains.
* C, demote: buckets 0 up to ``hot_threshold-1``; pages on the hot node move down within
  ``min(quota, reserve - free)`` (bounded by the cold node's free space) plus what A displaced.

Within a bucket a pid's pages on one node are taken in address order as the longest prefix that
fits the remaining budget. The walk goes bucket -> pid -> pair and stops when every pair's budget
is spent. Book-keeping charges what a budget *granted* (as the original), not what fitted.
Every size is the page's real size; the original's statistics count 2 MiB per entry, which
skews the "cold memory on the hot node" bound of phase A for anything but 2 MiB pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .config import MIB, EngineConfig, NodeMem


@dataclass(frozen=True, slots=True)
class PidPages:
    """The pages of one pid after a scan: parallel arrays, any order.

    ``addr`` uint64 page start, ``size`` int64 bytes, ``count`` int32 accumulated weight,
    ``node`` int32 NUMA node the page is on now (from a move_pages query).
    """

    addr: np.ndarray
    size: np.ndarray
    count: np.ndarray
    node: np.ndarray

    @classmethod
    def empty(cls) -> PidPages:
        return cls(
            np.empty(0, np.uint64),
            np.empty(0, np.int64),
            np.empty(0, np.int32),
            np.empty(0, np.int32),
        )

    def __len__(self) -> int:
        return len(self.addr)


@dataclass(slots=True)
class Moves:
    """What to move for one pid and one pair: addresses to the hot node and to the cold node."""

    hot: list[np.ndarray] = field(default_factory=list)
    cold: list[np.ndarray] = field(default_factory=list)
    hot_bytes: int = 0
    cold_bytes: int = 0

    def hot_addrs(self) -> np.ndarray:
        return np.concatenate(self.hot) if self.hot else np.empty(0, np.uint64)

    def cold_addrs(self) -> np.ndarray:
        return np.concatenate(self.cold) if self.cold else np.empty(0, np.uint64)


@dataclass(slots=True)
class PairBudget:
    """Flow-control state of one pair (C ``struct node_ctrl``), in bytes."""

    free: int  # free on the hot node
    cold_free: int  # free on the cold node
    cold: int  # cold memory on the hot node (all pids)
    quota: int
    reserve: int
    cold_replaced: int = 0
    hot_cap: int = 0
    hot_used: int = 0
    prefetch_cap: int = 0
    prefetch_used: int = 0
    cold_cap: int = 0
    cold_used: int = 0


@dataclass(slots=True)
class Plan:
    """The policy's answer: ``moves[pid_index][pair_index]`` and the budgets it used."""

    moves: list[list[Moves]]
    budgets: list[PairBudget]


class _Buckets:
    """One pid's pages grouped by (count, node) in address order, with running sizes."""

    def __init__(self, pages: PidPages, max_count: int) -> None:
        count = np.clip(pages.count.astype(np.int64), 0, max_count)
        node = pages.node.astype(np.int64)
        order = np.lexsort((pages.addr, node, count))
        self.addr = pages.addr[order]
        self.size = pages.size[order].astype(np.int64)
        self.key = count[order] * (1 << 20) + node[order]
        self.csum = np.concatenate(([0], np.cumsum(self.size)))

    def span(self, count: int, node: int) -> tuple[int, int]:
        k = count * (1 << 20) + node
        return (
            int(np.searchsorted(self.key, k, "left")),
            int(np.searchsorted(self.key, k, "right")),
        )

    def bytes_in(self, lo: int, hi: int) -> int:
        return int(self.csum[hi] - self.csum[lo])

    def prefix(self, lo: int, hi: int, budget: int) -> int:
        """End index of the longest prefix of ``[lo, hi)`` whose sizes sum to <= budget."""
        limit = self.csum[lo] + budget
        return lo + int(np.searchsorted(self.csum[lo + 1 : hi + 1], limit, "right"))


def _grant(cap: int, used: int, cost: int) -> tuple[int, int, bool]:
    """C ``cap_cost``: returns (granted, new_used, exhausted)."""
    if cost < cap - used:
        return cost, used + cost, False
    return cap - used, cap, True


def cold_bytes_on(pages: Sequence[PidPages], node: int, hot_threshold: int) -> int:
    """Bytes of pages with ``count < hot_threshold`` on ``node``, over all pids."""
    return int(sum(p.size[(p.node == node) & (p.count < hot_threshold)].sum() for p in pages))


def plan_moves(pages: Sequence[PidPages], mem: dict[int, NodeMem], cfg: EngineConfig) -> Plan:
    """Decide the moves of one cycle (phases A, B, C) for every pid and pair."""
    t = cfg.hot_threshold
    buckets = [_Buckets(p, cfg.max_count) for p in pages]
    moves = [[Moves() for _ in cfg.pairs] for _ in pages]
    budgets = [
        PairBudget(
            free=mem[pair.hot].free,
            cold_free=mem[pair.cold].free,
            cold=cold_bytes_on(pages, pair.hot, t),
            quota=cfg.mig_quota * MIB,
            reserve=cfg.hot_reserve * MIB,
        )
        for pair in cfg.pairs
    ]

    # Phase A: promote hot pages.
    for b in budgets:
        if b.quota < b.free:
            can = b.quota
        else:
            can = min(b.free + (b.quota - b.free) // 2, b.free + b.cold_free)
        b.hot_cap = min(can, b.cold + b.free)
    _walk(buckets, moves, cfg, budgets, range(cfg.max_count, t - 1, -1), "hot")

    # Book-keeping after A, then phase B: prefetch within the reserve.
    for b in budgets:
        moved = b.hot_used
        if moved > b.free:
            b.cold_replaced += moved - b.free
            b.quota -= b.free + 2 * (moved - b.free)
            b.cold_free += b.free
            b.free = 0
        else:
            b.free -= moved
            b.quota -= moved
            b.cold_free += moved
        b.prefetch_cap = min(b.free - b.reserve, b.quota) if b.free > b.reserve else 0
    _walk(buckets, moves, cfg, budgets, range(t - 1, -1, -1), "prefetch")

    # Book-keeping after B, then phase C: demote cold pages.
    for b in budgets:
        b.free -= b.prefetch_used
        b.quota -= b.prefetch_used
        b.cold_free += b.prefetch_used
        can = min(b.quota, b.reserve - b.free, b.cold_free)
        b.cold_cap = max(can, 0) + b.cold_replaced
    _walk(buckets, moves, cfg, budgets, range(0, t), "cold")
    return Plan(moves=moves, budgets=budgets)


_PHASE = {  # phase -> (cap field, used field, source node is the pair's ..., destination list)
    "hot": ("hot_cap", "hot_used", "cold", "hot"),
    "prefetch": ("prefetch_cap", "prefetch_used", "cold", "hot"),
    "cold": ("cold_cap", "cold_used", "hot", "cold"),
}


def _walk(buckets, moves, cfg, budgets, counts, phase) -> None:
    cap_f, used_f, src_role, dst = _PHASE[phase]
    # A pair whose budget is zero or spent is done; the phase ends when every pair is.
    done = [getattr(b, cap_f) <= 0 for b in budgets]
    if all(done):
        return
    for c in counts:
        for pid_i, bk in enumerate(buckets):
            for pair in cfg.pairs:
                b = budgets[pair.index]
                cap, used = getattr(b, cap_f), getattr(b, used_f)
                if used < cap:
                    lo, hi = bk.span(c, getattr(pair, src_role))
                    granted, used, spent = _grant(cap, used, bk.bytes_in(lo, hi))
                    setattr(b, used_f, used)
                    end = bk.prefix(lo, hi, granted)
                    if end > lo:
                        m = moves[pid_i][pair.index]
                        getattr(m, dst).append(bk.addr[lo:end])
                        size = bk.bytes_in(lo, end)
                        if dst == "hot":
                            m.hot_bytes += size
                        else:
                            m.cold_bytes += size
                    if spent:
                        done[pair.index] = True
                if all(done):
                    return
