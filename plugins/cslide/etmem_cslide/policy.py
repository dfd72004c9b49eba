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

The pages come as :class:`NodePages` (runs, a count and a node byte per page: what the cycle
builds) or as :class:`PidPages` rows (tests, small callers). The walk needs only the bytes of
each (count, node) bucket, so one pass over the pages sums them; what each grant takes -- the
bucket's longest address-order prefix that fits -- is found in a second pass, a block at a time.
Nothing of one row per page (no address, size or sort order) is ever built for a whole process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from etmem_sdk.scan import PAGE_SIZE, PageRuns

from .config import MIB, EngineConfig, NodeMem

#: bytes of a page by page type (0 = base page, 1 = PMD, 2 = PUD)
TYPE_SIZE = np.array([PAGE_SIZE, 2 << 20, 1 << 30], dtype=np.int64)
#: pages per step wherever a per-page temporary is needed (addresses: 512 KiB)
BLOCK = 1 << 16


@dataclass(frozen=True, slots=True)
class PidPages:
    """The pages of one pid as rows: parallel arrays, any order.

    ``addr`` uint64 page start, ``size`` int64 bytes, ``count`` int32 accumulated weight,
    ``node`` int32 NUMA node the page is on now (from a move_pages query). 24 bytes a page:
    for tests and small callers; the cycle uses :class:`NodePages`.
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


def where_dtype(nodes: Sequence[int]) -> np.dtype:
    """The per-page node index type for ``nodes``: one byte unless there are 255 or more."""
    return np.dtype(np.uint8 if len(nodes) < 255 else np.uint16)


def absent(dtype: np.dtype) -> int:
    """The node index of a page on none of the nodes (not resident, unmapped, elsewhere)."""
    return int(np.iinfo(dtype).max)


@dataclass(frozen=True, slots=True)
class Held:
    """Moves a confirmation holds back: per page a code (0, or a direction bit and a streak,
    see ``confirm.py``); a page whose streak is below ``confirm`` keeps its node -- its count
    reads ``threshold - 1`` if it wanted up, ``threshold`` if it wanted down."""

    state: np.ndarray
    confirm: int
    threshold: int


#: confirmation codes: direction bits and the streak below them
UP_BIT, DOWN_BIT, STREAK_MASK = 0x40, 0x80, 0x1F


class NodePages:
    """The pages of one pid after a scan, compact: ``runs`` (every page scanned, ascending),
    ``counts`` (one per page, the accumulated weight), ``where`` (one byte per page: index into
    ``nodes`` of the node it is on, or :func:`absent`), and the moves a confirmation ``held``.

    About 3 bytes a page. The row views (``addr``, ``size``, ``count``, ``node``) hold the
    pages on one of ``nodes`` only, as :class:`PidPages` does, and are built on each access.
    """

    __slots__ = ("runs", "counts", "where", "nodes", "held")

    def __init__(
        self,
        runs: PageRuns,
        counts: np.ndarray,
        where: np.ndarray,
        nodes: Sequence[int],
        held: Held | None = None,
    ) -> None:
        self.runs, self.counts, self.where = runs, counts, where
        self.nodes = tuple(nodes)
        self.held = held

    @classmethod
    def empty(cls, nodes: Sequence[int]) -> NodePages:
        """No page."""
        return cls(PageRuns.empty(), np.empty(0, np.uint16), np.empty(0, where_dtype(nodes)), nodes)

    @classmethod
    def from_rows(cls, pages: PidPages, nodes: Sequence[int]) -> tuple[NodePages, np.ndarray]:
        """``pages`` in address order as runs, and the order (row index of each page)."""
        order = np.argsort(pages.addr, kind="stable")
        size = np.asarray(pages.size)[order]
        ptype = np.searchsorted(TYPE_SIZE, size).astype(np.uint8)
        if len(size) and not np.array_equal(TYPE_SIZE[np.minimum(ptype, 2)], size):
            raise ValueError("page sizes must be a base page, 2 MiB or 1 GiB")
        runs = PageRuns.from_addresses(np.asarray(pages.addr, np.uint64)[order], ptype)
        where = _where(pages.node[order], nodes)
        return cls(runs, np.asarray(pages.count)[order], where, nodes), order

    def __len__(self) -> int:
        """Pages on one of the nodes."""
        return int(np.count_nonzero(self.where != absent(self.where.dtype)))

    def with_held(self, held: Held | None) -> NodePages:
        """The same pages with moves held back."""
        return NodePages(self.runs, self.counts, self.where, self.nodes, held)

    def blocks(self, block: int | None = None) -> Iterator[tuple[int, int]]:
        """``(lo, hi)`` page ranges of at most ``block`` (default :data:`BLOCK`) pages, in
        address order."""
        n = len(self.counts)
        block = block or BLOCK
        for lo in range(0, n, block):
            yield lo, min(lo + block, n)

    def effective(self, lo: int, hi: int) -> np.ndarray:
        """Counts (int64) of pages ``lo .. hi-1`` as the policy sees them: held moves applied."""
        c = self.counts[lo:hi].astype(np.int64)
        if self.held is not None:
            h = self.held
            s = h.state[lo:hi]
            streak = s & STREAK_MASK
            held = (streak > 0) & (streak < h.confirm)
            c[held & ((s & UP_BIT) != 0)] = h.threshold - 1
            c[held & ((s & DOWN_BIT) != 0)] = h.threshold
        return c

    def _kept(self) -> np.ndarray:
        return self.where != absent(self.where.dtype)

    @property
    def addr(self) -> np.ndarray:
        """Address (uint64) of every page on one of the nodes."""
        return self.runs.select(self._kept()).addresses() if len(self.counts) else _EMPTY_ADDR

    @property
    def size(self) -> np.ndarray:
        """Bytes (int64) of every page on one of the nodes."""
        return TYPE_SIZE[np.minimum(self.runs.types(), 2)][self._kept()]

    @property
    def count(self) -> np.ndarray:
        """Count (int32, held moves applied) of every page on one of the nodes."""
        return self.effective(0, len(self.counts)).astype(np.int32)[self._kept()]

    @property
    def node(self) -> np.ndarray:
        """Node (int32) of every page on one of the nodes."""
        table = np.array(self.nodes, np.int32)
        return table[self.where[self._kept()].astype(np.intp)]


_EMPTY_ADDR = np.empty(0, np.uint64)


def _where(node: np.ndarray, nodes: Sequence[int]) -> np.ndarray:
    """Node index of each node id (:func:`absent` for one not in ``nodes``, ascending)."""
    table = np.asarray(nodes, np.int64)
    dtype = where_dtype(nodes)
    node = np.asarray(node, np.int64)
    pos = np.searchsorted(table, node)
    ok = pos < len(table)
    ok[ok] = table[pos[ok]] == node[ok]
    return np.where(ok, pos, absent(dtype)).astype(dtype)


def where_of(status: np.ndarray, nodes: Sequence[int]) -> np.ndarray:
    """The ``where`` bytes of a move_pages query's status (negative errno: :func:`absent`)."""
    return _where(status, nodes)


def as_node_pages(pages: PidPages | NodePages, nodes: Sequence[int]) -> NodePages:
    """``pages`` as :class:`NodePages` (rows are sorted into runs)."""
    if isinstance(pages, NodePages):
        return pages
    return NodePages.from_rows(pages, nodes)[0]


def bucket_bytes(pages: NodePages, low: int, top: int, held: bool = True) -> np.ndarray:
    """Bytes per (count, node): ``out[c - low, i]`` sums the pages on ``nodes[i]`` whose count,
    clipped to ``low .. top``, is ``c`` (held moves applied unless ``held`` is false)."""
    k = len(pages.nodes)
    nb = top - low + 1
    out = np.zeros(nb * k, np.int64)
    if not k:
        return out.reshape(nb, k)
    gone = absent(pages.where.dtype)
    src = pages if held else pages.with_held(None)
    for lo, hi in pages.blocks():
        c = np.clip(src.effective(lo, hi), low, top) - low
        w = pages.where[lo:hi]
        keep = w != gone
        key = (c * k + w)[keep]
        types = pages.runs.types(lo, hi)[keep]
        for t in np.unique(types).tolist():
            out += np.bincount(key[types == t], minlength=nb * k) * TYPE_SIZE[min(t, 2)]
    return out.reshape(nb, k)


@dataclass(slots=True)
class Moves:
    """What to move for one pid and one pair: pages to the hot node and to the cold node, as
    runs, one piece per grant in the order the walk made them."""

    hot: list[PageRuns] = field(default_factory=list)
    cold: list[PageRuns] = field(default_factory=list)
    hot_bytes: int = 0
    cold_bytes: int = 0

    def hot_addrs(self) -> np.ndarray:
        """Every address to move to the hot node (uint64, in move order)."""
        return _addrs(self.hot)

    def cold_addrs(self) -> np.ndarray:
        """Every address to move to the cold node (uint64, in move order)."""
        return _addrs(self.cold)

    @staticmethod
    def batches(pieces: Iterable[PageRuns], n: int) -> Iterator[np.ndarray]:
        """The addresses of ``pieces`` in move order, ``n`` at a time (the last batch less)."""
        buf: list[np.ndarray] = []
        have = 0
        for r in pieces:
            total, lo = len(r), 0
            while lo < total:
                take = min(n - have, total - lo)
                buf.append(r.addresses(lo, lo + take))
                have, lo = have + take, lo + take
                if have == n:
                    yield buf[0] if len(buf) == 1 else np.concatenate(buf)
                    buf, have = [], 0
        if buf:
            yield buf[0] if len(buf) == 1 else np.concatenate(buf)


def _addrs(pieces: list[PageRuns]) -> np.ndarray:
    if not pieces:
        return np.empty(0, np.uint64)
    return np.concatenate([r.addresses() for r in pieces])


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
    """One pid's bytes per (count, node) bucket, counts clipped to ``0 .. max_count``, and the
    bytes with a count below the hot threshold on each node (held moves applied)."""

    def __init__(self, pages: NodePages, max_count: int, hot_threshold: int) -> None:
        self.pages = pages
        self.index = {n: i for i, n in enumerate(pages.nodes)}
        # one pass: counts from -1 (a held page below threshold 0) up to both limits
        top = max(max_count, hot_threshold)
        raw = bucket_bytes(pages, -1, top)
        self.cold = raw[: max(hot_threshold + 1, 0)].sum(axis=0)
        b = raw[1 : max_count + 2].copy()
        b[0] += raw[0]
        b[-1] += raw[max_count + 2 :].sum(axis=0)
        self.bytes = b

    def bytes_in(self, count: int, node: int) -> int:
        i = self.index.get(node)
        return 0 if i is None else int(self.bytes[count, i])

    def cold_on(self, node: int) -> int:
        i = self.index.get(node)
        return 0 if i is None else int(self.cold[i])


def _grant(cap: int, used: int, cost: int) -> tuple[int, int, bool]:
    """C ``cap_cost``: returns (granted, new_used, exhausted)."""
    if cost < cap - used:
        return cost, used + cost, False
    return cap - used, cap, True


def cold_bytes_on(pages: Sequence[PidPages | NodePages], node: int, hot_threshold: int) -> int:
    """Bytes of pages with ``count < hot_threshold`` on ``node``, over all pids."""
    return int(sum(p.size[(p.node == node) & (p.count < hot_threshold)].sum() for p in pages))


@dataclass(slots=True)
class _Grant:
    """What one step of the walk granted: the longest address-order prefix of the pid's bucket
    (``count``, ``node``) that fits ``budget`` goes to ``dst`` of pair ``pair``."""

    count: int
    node: int
    budget: int
    pair: int
    dst: str
    pieces: list[PageRuns] = field(default_factory=list)
    taken: int = 0
    open: bool = True


def plan_moves(
    pages: Sequence[PidPages | NodePages], mem: dict[int, NodeMem], cfg: EngineConfig
) -> Plan:
    """Decide the moves of one cycle (phases A, B, C) for every pid and pair."""
    t = cfg.hot_threshold
    compact = [as_node_pages(p, cfg.nodes) for p in pages]
    buckets = [_Buckets(p, cfg.max_count, t) for p in compact]
    grants: list[list[_Grant]] = [[] for _ in compact]
    budgets = [
        PairBudget(
            free=mem[pair.hot].free,
            cold_free=mem[pair.cold].free,
            cold=sum(bk.cold_on(pair.hot) for bk in buckets),
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
    _walk(buckets, grants, cfg, budgets, range(cfg.max_count, t - 1, -1), "hot")

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
    _walk(buckets, grants, cfg, budgets, range(t - 1, -1, -1), "prefetch")

    # Book-keeping after B, then phase C: demote cold pages.
    for b in budgets:
        b.free -= b.prefetch_used
        b.quota -= b.prefetch_used
        b.cold_free += b.prefetch_used
        can = min(b.quota, b.reserve - b.free, b.cold_free)
        b.cold_cap = max(can, 0) + b.cold_replaced
    _walk(buckets, grants, cfg, budgets, range(0, t), "cold")

    moves = [[Moves() for _ in cfg.pairs] for _ in compact]
    for pid_i, (p, pid_grants) in enumerate(zip(compact, grants, strict=True)):
        _take(p, pid_grants, cfg.max_count)
        for g in pid_grants:
            if g.taken:
                m = moves[pid_i][g.pair]
                piece = join_runs(g.pieces)
                if g.dst == "hot":
                    m.hot.append(piece)
                    m.hot_bytes += g.taken
                else:
                    m.cold.append(piece)
                    m.cold_bytes += g.taken
    return Plan(moves=moves, budgets=budgets)


_PHASE = {  # phase -> (cap field, used field, source node is the pair's ..., destination list)
    "hot": ("hot_cap", "hot_used", "cold", "hot"),
    "prefetch": ("prefetch_cap", "prefetch_used", "cold", "hot"),
    "cold": ("cold_cap", "cold_used", "hot", "cold"),
}


def _walk(buckets, grants, cfg, budgets, counts, phase) -> None:
    """Charge the budgets bucket by bucket and note each grant; the pages come later (only
    the bucket totals decide: book-keeping charges what was granted, not what fitted)."""
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
                    node = getattr(pair, src_role)
                    granted, used, spent = _grant(cap, used, bk.bytes_in(c, node))
                    setattr(b, used_f, used)
                    if granted > 0:
                        grants[pid_i].append(_Grant(c, node, granted, pair.index, dst))
                    if spent:
                        done[pair.index] = True
                if all(done):
                    return


def _take(pages: NodePages, grants: list[_Grant], max_count: int) -> None:
    """Find the pages of every grant in one pass over ``pages``: each takes, in address order,
    pages of its bucket while they fit what is left of its budget, and stops at the first that
    does not (the longest prefix that fits, as the original)."""
    if not grants:
        return
    k = len(pages.nodes)
    index = {n: i for i, n in enumerate(pages.nodes)}
    keys = [(g, g.count * k + index[g.node]) for g in grants if g.node in index]
    gone = absent(pages.where.dtype)
    for lo, hi in pages.blocks():
        if not any(g.open for g, _ in keys):
            return
        w = pages.where[lo:hi]
        key = np.clip(pages.effective(lo, hi), 0, max_count) * k + w
        key[w == gone] = -1
        rows: tuple[np.ndarray, np.ndarray] | None = None  # built for the first grant here
        for g, want in keys:
            if not g.open:
                continue
            sel = np.flatnonzero(key == want)
            if not len(sel):
                continue
            if rows is None:
                rows = pages.runs.types(lo, hi), pages.runs.addresses(lo, hi)
            types, addrs = rows
            size = np.cumsum(TYPE_SIZE[np.minimum(types[sel], 2)])
            n = int(np.searchsorted(size, g.budget - g.taken, "right"))
            if n:
                g.pieces.append(PageRuns.from_addresses(addrs[sel[:n]], types[sel[:n]]))
                g.taken += int(size[n - 1])
            if n < len(sel):
                g.open = False


def join_runs(pieces: Sequence[PageRuns]) -> PageRuns:
    """Pieces in address order (each after the one before) as one set of runs."""
    if not pieces:
        return PageRuns.empty()
    if len(pieces) == 1:
        return pieces[0]
    fields = ("start", "npages", "type", "step")
    return PageRuns.coalesce(*(np.concatenate([getattr(r, f) for r in pieces]) for f in fields))
