"""cslide's page path in blocks (runs, a node byte per page, 64 Ki pages at a time) decides
exactly what the row-per-page path did: the plan, the confirmation and the hugetlb fold are
checked against the row implementations they replaced (kept here as references) on processes
large enough to cross many blocks -- pages spanning block ends, 2 MiB pages among 4 KiB
ones, several VMAs, two pairs of nodes, pages on no node, two pids."""

from __future__ import annotations

import numpy as np
import pytest
from etmem_cslide import cycle as cy
from etmem_cslide import policy as po
from etmem_cslide.config import HUGE_2M, MIB, EngineConfig, NodeMem, NodePair
from etmem_cslide.confirm import MoveConfirmation
from etmem_cslide.policy import NodePages, PidPages, plan_moves
from etmem_sdk.scan import PageRuns

NODES = (0, 1, 2, 3)
PAIRS = ((0, 2), (1, 3))  # hot, cold
PAGE = 4096


# --- the row implementations the blocks replaced (as of 36bfc72) ------------------------------


class RowBuckets:
    def __init__(self, pages: PidPages, max_count: int) -> None:
        count = np.clip(pages.count.astype(np.int64), 0, max_count)
        node = pages.node.astype(np.int64)
        order = np.lexsort((pages.addr, node, count))
        self.addr = pages.addr[order]
        self.key = count[order] * (1 << 20) + node[order]
        self.csum = np.concatenate(([0], np.cumsum(pages.size[order].astype(np.int64))))

    def span(self, count, node):
        k = count * (1 << 20) + node
        return int(np.searchsorted(self.key, k, "left")), int(np.searchsorted(self.key, k, "right"))

    def bytes_in(self, lo, hi):
        return int(self.csum[hi] - self.csum[lo])

    def prefix(self, lo, hi, budget):
        limit = self.csum[lo] + budget
        return lo + int(np.searchsorted(self.csum[lo + 1 : hi + 1], limit, "right"))


def row_plan(pages: list[PidPages], mem, cfg):
    """(moves[pid][pair] = (hot addrs, cold addrs, hot bytes, cold bytes), budgets)."""
    t = cfg.hot_threshold
    buckets = [RowBuckets(p, cfg.max_count) for p in pages]
    moves = [[[[], [], 0, 0] for _ in cfg.pairs] for _ in pages]
    budgets = [
        po.PairBudget(
            free=mem[pr.hot].free,
            cold_free=mem[pr.cold].free,
            cold=int(sum(p.size[(p.node == pr.hot) & (p.count < t)].sum() for p in pages)),
            quota=cfg.mig_quota * MIB,
            reserve=cfg.hot_reserve * MIB,
        )
        for pr in cfg.pairs
    ]

    def walk(counts, cap_f, used_f, src, dst):
        done = [getattr(b, cap_f) <= 0 for b in budgets]
        if all(done):
            return
        for c in counts:
            for i, bk in enumerate(buckets):
                for pr in cfg.pairs:
                    b = budgets[pr.index]
                    cap, used = getattr(b, cap_f), getattr(b, used_f)
                    if used < cap:
                        lo, hi = bk.span(c, getattr(pr, src))
                        granted, used, spent = po._grant(cap, used, bk.bytes_in(lo, hi))
                        setattr(b, used_f, used)
                        end = bk.prefix(lo, hi, granted)
                        if end > lo:
                            m = moves[i][pr.index]
                            m[dst].append(bk.addr[lo:end])
                            m[dst + 2] += bk.bytes_in(lo, end)
                        if spent:
                            done[pr.index] = True
                    if all(done):
                        return

    for b in budgets:
        can = (
            b.quota
            if b.quota < b.free
            else min(b.free + (b.quota - b.free) // 2, b.free + b.cold_free)
        )
        b.hot_cap = min(can, b.cold + b.free)
    walk(range(cfg.max_count, t - 1, -1), "hot_cap", "hot_used", "cold", 0)
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
    walk(range(t - 1, -1, -1), "prefetch_cap", "prefetch_used", "cold", 0)
    for b in budgets:
        b.free -= b.prefetch_used
        b.quota -= b.prefetch_used
        b.cold_free += b.prefetch_used
        b.cold_cap = max(min(b.quota, b.reserve - b.free, b.cold_free), 0) + b.cold_replaced
    walk(range(0, t), "cold_cap", "cold_used", "hot", 1)
    return moves, budgets


class RowConfirmation:
    """Streaks by address, as ``MoveConfirmation`` kept them."""

    def __init__(self, confirm):
        self.confirm = confirm
        self.addr = np.empty(0, np.uint64)
        self.direction = np.empty(0, np.int8)
        self.streak = np.empty(0, np.uint8)

    def hold(self, pages, t, hot_nodes, cold_nodes):
        if self.confirm == 1 or not len(pages):
            return pages
        hot = pages.count >= t
        want = np.zeros(len(pages), np.int8)
        want[hot & np.isin(pages.node, cold_nodes)] = 1
        want[~hot & np.isin(pages.node, hot_nodes)] = -1
        moving = np.flatnonzero(want)
        addr, direction = pages.addr[moving], want[moving]
        order = np.argsort(addr, kind="stable")
        moving, addr, direction = moving[order], addr[order], direction[order]
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
        count[held] = np.where(want[held] == 1, t - 1, t)
        return PidPages(addr=pages.addr, size=pages.size, count=count, node=pages.node)


# --- a large-ish fake process ---------------------------------------------------------------


def process(rng, vmas=3, pages_per_vma=70_000, huge_every=9, base=0x7F0000000000):
    """Runs over ``vmas`` VMAs of 4 KiB pages with a 2 MiB page every ``huge_every`` runs,
    gaps between runs; counts 0..9 and nodes in runs too, 3 % on no node (``-2``)."""
    start, npages, ptype, step = [], [], [], []
    at = base
    for _ in range(vmas):
        left = pages_per_vma
        i = 0
        while left > 0:
            if i % huge_every == huge_every - 1:
                at = -(-at // HUGE_2M) * HUGE_2M
                start.append(at), npages.append(1), ptype.append(1), step.append(HUGE_2M)
                at += HUGE_2M
                left -= 1
            else:
                n = int(min(left, rng.integers(1, 5000)))
                start.append(at), npages.append(n), ptype.append(0), step.append(PAGE)
                at += n * PAGE + PAGE * int(rng.integers(0, 3))
                left -= n
            i += 1
        at += 1 << 30
    runs = PageRuns.coalesce(
        np.array(start, np.uint64), np.array(npages), np.array(ptype), np.array(step, np.uint64)
    )
    n = len(runs)
    count = np.repeat(rng.integers(0, 10, n // 50 + 1), 50)[:n].astype(np.uint16)
    count ^= (rng.random(n) < 0.02).astype(np.uint16)  # some single pages off their stretch
    node = np.repeat(rng.choice(NODES, n // 300 + 1), 300)[:n].astype(np.int64)
    node[rng.random(n) < 0.03] = -2
    return runs, count, node


def rows(runs, count, node) -> PidPages:
    keep = node >= 0
    size = po.TYPE_SIZE[runs.types()]
    return PidPages(
        runs.addresses()[keep],
        size[keep],
        count[keep].astype(np.int32),
        node[keep].astype(np.int32),
    )


def compact(runs, count, node) -> NodePages:
    return NodePages(runs, count, po.where_of(node, NODES), NODES)


def config(quota, reserve, threshold=3, loop=3):
    return EngineConfig(
        pairs=tuple(NodePair(i, h, c) for i, (h, c) in enumerate(PAIRS)),
        nodes=NODES,
        hot_threshold=threshold,
        mig_quota=quota,
        hot_reserve=reserve,
        loop=loop,
        interval=1,
        sleep=1,
    )


def node_mem(free_mib):
    return {n: NodeMem(64 << 30, f << 20) for n, f in zip(NODES, free_mib, strict=True)}


@pytest.fixture(params=[1 << 16, 4093], ids=["64Ki-blocks", "odd-blocks"])
def block(request, monkeypatch):
    monkeypatch.setattr(po, "BLOCK", request.param)
    monkeypatch.setattr(cy, "MOVE_BATCH", request.param)
    return request.param


CASES = {  # quota MiB, reserve MiB, free MiB per node, hot threshold
    "promote-and-displace": (300, 600, (200, 100, 5000, 5000), 3),
    "prefetch": (400, 100, (3000, 3000, 5000, 5000), 9),
    "demote": (250, 4000, (50, 80, 40, 5000), 2),
    "everything": (1 << 20, 1 << 20, (1 << 20,) * 4, 3),
    "threshold-0": (100, 0, (500, 500, 500, 500), 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_plan_in_blocks_moves_what_the_rows_moved(case, block):
    quota, reserve, free, threshold = CASES[case]
    rng = np.random.default_rng(len(case))
    procs = [process(rng), process(rng, vmas=2, pages_per_vma=40_000, base=0x5F0000000000)]
    cfg, mem = config(quota, reserve, threshold), node_mem(free)
    want_moves, want_budgets = row_plan([rows(*p) for p in procs], mem, cfg)
    plan = plan_moves([compact(*p) for p in procs], mem, cfg)
    assert plan.budgets == want_budgets
    moved = 0
    for pid, pairs in enumerate(want_moves):
        for pair, (hot, cold, hot_bytes, cold_bytes) in enumerate(pairs):
            m = plan.moves[pid][pair]
            for got, want in ((m.hot_addrs(), hot), (m.cold_addrs(), cold)):
                want = np.concatenate(want) if want else np.empty(0, np.uint64)
                assert np.array_equal(got, want), (pid, pair)
                moved += len(want)
                batches = list(m.batches(m.hot if want is hot else m.cold, 1000))
                assert all(len(b) == 1000 for b in batches[:-1])
            assert (m.hot_bytes, m.cold_bytes) == (hot_bytes, cold_bytes)
    assert moved > 1000  # the case moves something across many blocks


def test_rows_and_runs_give_the_same_plan_and_statistics(block):
    rng = np.random.default_rng(7)
    p = process(rng, vmas=2, pages_per_vma=30_000)
    cfg, mem = config(300, 600, 2), node_mem((200, 100, 5000, 5000))
    a, b = plan_moves([rows(*p)], mem, cfg), plan_moves([compact(*p)], mem, cfg)
    assert a.budgets == b.budgets
    assert all(
        np.array_equal(x.hot_addrs(), y.hot_addrs())
        and np.array_equal(x.cold_addrs(), y.cold_addrs())
        for x, y in zip(a.moves[0], b.moves[0], strict=True)
    )
    for t in (0, 1, 5, 10):
        assert cy.node_pages_kb(compact(*p), NODES, t) == cy.node_pages_kb(rows(*p), NODES, t)


def test_confirmation_in_blocks_holds_what_the_rows_held(block):
    rng = np.random.default_rng(11)
    runs, count, node = process(rng, vmas=2, pages_per_vma=60_000)
    conf, ref = MoveConfirmation(3), RowConfirmation(3)
    hot, cold = [h for h, _ in PAIRS], [c for _, c in PAIRS]
    holds = 0
    for cycle in range(5):
        if cycle == 2:  # another page set: a VMA's pages go, others come
            runs, count, node = process(rng, vmas=2, pages_per_vma=60_000)
        else:  # some pages change their count or node
            flip = rng.random(len(count)) < 0.05
            count = np.where(flip, rng.integers(0, 10, len(count)), count).astype(np.uint16)
        held = conf.hold(compact(runs, count, node), 3, hot, cold)
        want = ref.hold(rows(runs, count, node), 3, hot, cold)
        assert np.array_equal(held.count, want.count), cycle
        holds += int(np.count_nonzero(held.count != rows(runs, count, node).count))
        assert np.array_equal(conf.addr, ref.addr), cycle
    assert holds > 1000


def test_hugetlb_fold_in_blocks_is_the_whole_fold(block):
    rng = np.random.default_rng(5)
    # 4 KiB parts of 2 MiB pages (a region tracker's view), some pages whole, gaps
    addr, ptype = [], []
    for i in range(400):
        at = 0x7F0000000000 + i * HUGE_2M
        if i % 7 == 3:
            addr.append(at), ptype.append(1)
        elif i % 11 != 5:
            n = int(rng.integers(1, 513))
            addr.extend(at + PAGE * np.arange(512 - n, 512)), ptype.extend([0] * n)
    runs = PageRuns.from_addresses(np.array(addr, np.uint64), np.array(ptype, np.uint8))
    count = rng.integers(0, 4, len(runs)).astype(np.uint16)
    got_runs, got_count = cy.fold_huge_runs(runs, count, block=1000)
    a, t, c = cy.fold_hugepages(runs.addresses(), runs.types(), count)
    assert np.array_equal(got_runs.addresses(), a)
    assert np.array_equal(got_runs.types(), t)
    assert np.array_equal(got_count, c)


@pytest.mark.parametrize("block_pages", [100, 256, 257, 1 << 16])
def test_a_page_that_does_not_fit_ends_the_prefix_in_later_blocks_too(block_pages, monkeypatch):
    monkeypatch.setattr(po, "BLOCK", block_pages)
    # one bucket (hot, on the cold node 2) in address order: 256 base pages (1 MiB), a 2 MiB
    # page, 1000 base pages; a 2 MiB quota takes the first MiB and stops at the huge page
    base = 0x7F0000000000
    runs = PageRuns(
        np.array([base, base + HUGE_2M, base + 2 * HUGE_2M], np.uint64),
        np.array([256, 1, 1000]),
        np.array([0, 1, 0], np.uint8),
        np.array([PAGE, HUGE_2M, PAGE], np.uint64),
    )
    count = np.full(len(runs), 9, np.uint16)
    node = np.full(len(runs), 2, np.int64)
    cfg, mem = config(2, 0), node_mem((5000, 5000, 5000, 5000))
    plan = plan_moves([compact(runs, count, node)], mem, cfg)
    want, _ = row_plan([rows(runs, count, node)], mem, cfg)
    assert np.array_equal(plan.moves[0][0].hot_addrs(), np.concatenate(want[0][0][0]))
    assert len(plan.moves[0][0].hot_addrs()) == 256
