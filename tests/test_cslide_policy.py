"""cslide's pure placement policy: the original's own test expectations (its policy_001..003),
plus the book-keeping rules and our real-size accounting."""

from __future__ import annotations

import numpy as np
import pytest
from etmem_cslide.config import HUGE_2M, MIB, EngineConfig, NodeMem, NodePair
from etmem_cslide.policy import PidPages, cold_bytes_on, plan_moves

HOT, COLD = 0, 1
POOL = 10000  # hugepages per node, as the original's test reserves
BASE = 0x7F0000000000


def cfg(quota=1024, reserve=0, threshold=1, loop=3, pairs=((HOT, COLD),)):
    return EngineConfig(
        pairs=tuple(NodePair(i, h, c) for i, (h, c) in enumerate(pairs)),
        nodes=tuple(sorted(n for p in pairs for n in p)),
        hot_threshold=threshold,
        mig_quota=quota,
        hot_reserve=reserve,
        loop=loop,
        interval=1,
        sleep=1,
    )


def region(start_page, n, count, node, size=HUGE_2M):
    """n pages of ``size`` from page index start_page, all with ``count`` and on ``node``."""
    return (
        BASE + np.arange(start_page, start_page + n, dtype=np.uint64) * np.uint64(size),
        np.full(n, size, np.int64),
        np.full(n, count, np.int32),
        np.full(n, node, np.int32),
    )


def pid_pages(*regions):
    cols = list(zip(*regions, strict=True))
    return PidPages(*(np.concatenate(c) for c in cols))


def mem(pages, hot_free=None, cold_free=None, pool=POOL):
    """Node pools of ``pool`` hugepages each; free = pool minus the pages on the node unless
    overridden (in pages)."""
    out = {}
    for node, override in ((HOT, hot_free), (COLD, cold_free)):
        used = sum(int(p.size[p.node == node].sum()) for p in pages)
        free = pool * HUGE_2M - used if override is None else override * HUGE_2M
        out[node] = NodeMem(total=pool * HUGE_2M, free=free)
    return out


def counts(plan, pid=0, pair=0):
    m = plan.moves[pid][pair]
    return len(m.hot_addrs()), len(m.cold_addrs())


# --- policy_001: move hot pages ---------------------------------------------------------------


def test_unlimited_hot_move_moves_all_10_hot_pages():
    pages = [pid_pages(region(0, 10, 3, COLD))]
    plan = plan_moves(pages, mem(pages), cfg())
    assert counts(plan) == (10, 0)
    assert plan.moves[0][0].hot_bytes == 10 * HUGE_2M


def test_hot_move_ignores_hot_reserve():
    pages = [pid_pages(region(0, 10, 3, COLD))]
    plan = plan_moves(pages, mem(pages), cfg(reserve=POOL * 2))  # reserve = whole hot node
    assert counts(plan) == (10, 0)


def test_hot_move_quota_2mib_moves_1_page():
    pages = [pid_pages(region(0, 5, 3, COLD), region(5, 5, 2, COLD))]
    plan = plan_moves(pages, mem(pages), cfg(quota=2))
    assert counts(plan) == (1, 0)
    # the hottest bucket goes first
    assert plan.moves[0][0].hot_addrs()[0] == BASE


def test_hot_free_4_pages_with_4_cold_pages_on_hot_node_promotes_8_and_demotes_4():
    pages = [pid_pages(region(0, 10, 3, COLD), region(100, 4, 0, HOT))]
    plan = plan_moves(pages, mem(pages, hot_free=4), cfg())
    assert counts(plan) == (8, 4)
    b = plan.budgets[0]
    assert b.cold_replaced == 4 * HUGE_2M  # promotion displaced 4 cold pages
    assert b.free == 0


def test_cold_node_free_1_page_limits_promotion_to_5():
    pages = [pid_pages(region(0, 10, 3, COLD), region(100, 4, 0, HOT))]
    plan = plan_moves(pages, mem(pages, hot_free=4, cold_free=1), cfg())
    assert counts(plan)[0] == 5


# --- policy_002: prefetch ---------------------------------------------------------------------


def test_unlimited_prefetch_moves_all_10_pages():
    pages = [pid_pages(region(0, 10, 0, COLD))]
    plan = plan_moves(pages, mem(pages), cfg())
    assert counts(plan) == (10, 0)
    assert plan.budgets[0].prefetch_used == 10 * HUGE_2M


def test_prefetch_limited_by_reserve_moves_1_page():
    pages = [pid_pages(region(0, 10, 0, COLD))]
    m = mem(pages)
    reserve = m[HOT].free // MIB - 2  # leaves room for exactly one 2 MiB page
    plan = plan_moves(pages, m, cfg(reserve=reserve))
    assert counts(plan) == (1, 0)


def test_prefetch_after_quota_spent_by_hot_move_moves_nothing_more():
    pages = [pid_pages(region(0, 5, 0, COLD), region(5, 5, 1, COLD))]
    plan = plan_moves(pages, mem(pages), cfg(quota=2))
    assert counts(plan) == (1, 0)
    assert plan.moves[0][0].hot_addrs()[0] == BASE + 5 * HUGE_2M  # the hot one, not a prefetch


# --- policy_003: demote cold pages ------------------------------------------------------------


def test_unlimited_cold_move_demotes_all_10_pages():
    pages = [pid_pages(region(0, 10, 0, HOT))]
    plan = plan_moves(pages, mem(pages), cfg(reserve=POOL * 2))
    assert counts(plan) == (0, 10)


def test_cold_move_quota_2mib_demotes_1_page():
    pages = [pid_pages(region(0, 5, 0, HOT), region(5, 5, 1, HOT))]
    plan = plan_moves(pages, mem(pages), cfg(quota=2, reserve=POOL * 2))
    assert counts(plan) == (0, 1)


def test_cold_demotion_limited_by_cold_node_free():
    pages = [pid_pages(region(0, 10, 0, HOT))]
    plan = plan_moves(pages, mem(pages, cold_free=4), cfg(reserve=POOL * 2))
    assert counts(plan) == (0, 4)


def test_no_demotion_while_hot_node_has_more_than_reserve_free():
    pages = [pid_pages(region(0, 10, 0, HOT))]
    plan = plan_moves(pages, mem(pages), cfg(reserve=0))
    assert counts(plan) == (0, 0)


# --- beyond the original's tests --------------------------------------------------------------


def test_pages_already_in_place_are_left_alone():
    pages = [pid_pages(region(0, 10, 3, HOT), region(10, 10, 0, COLD))]
    plan = plan_moves(pages, mem(pages), cfg(reserve=POOL * 2))
    assert counts(plan) == (0, 0)


def test_threshold_zero_makes_everything_hot():
    pages = [pid_pages(region(0, 4, 0, COLD), region(4, 4, 0, HOT))]
    plan = plan_moves(pages, mem(pages), cfg(threshold=0, reserve=POOL * 2))
    assert counts(plan) == (4, 0)


def test_clamped_threshold_makes_everything_cold():
    pages = [pid_pages(region(0, 4, 9, HOT), region(4, 4, 9, COLD))]
    plan = plan_moves(pages, mem(pages), cfg(threshold=10, reserve=POOL * 2))
    assert counts(plan) == (0, 4)


def test_real_page_sizes_base_pages_are_not_counted_as_2mib():
    # The hot node is full; 8 cold 4 KiB pages sit on it, 100 hot 4 KiB pages wait on the cold
    # node. Promotion may only displace what is cold on the hot node: 32 KiB = 8 pages. (The
    # original counted every entry as 2 MiB, 16 MiB here, and promoted all 100 into a full node.)
    pages = [pid_pages(region(0, 8, 0, HOT, size=4096), region(8, 100, 3, COLD, size=4096))]
    m = {HOT: NodeMem(1 << 30, 0), COLD: NodeMem(1 << 30, 1 << 29)}
    assert cold_bytes_on(pages, HOT, 1) == 8 * 4096
    plan = plan_moves(pages, m, cfg())
    assert counts(plan) == (8, 8)
    assert plan.moves[0][0].hot_bytes == 8 * 4096


def test_base_pages_fill_a_quota_by_their_real_size():
    pages = [pid_pages(region(0, 600, 0, HOT, size=4096))]
    m = {HOT: NodeMem(1 << 30, 0), COLD: NodeMem(1 << 30, 1 << 30)}
    plan = plan_moves(pages, m, cfg(quota=2, reserve=4))
    assert counts(plan) == (0, 512)
    assert plan.moves[0][0].cold_bytes == 2 * MIB


def test_budget_is_per_pair_and_shared_by_pids():
    pairs = ((0, 2), (1, 3))
    a = pid_pages(region(0, 3, 3, 2), region(3, 3, 3, 3))
    b = pid_pages(region(10, 3, 3, 2))
    m = {n: NodeMem(POOL * HUGE_2M, POOL * HUGE_2M // 2) for n in range(4)}
    plan = plan_moves([a, b], m, cfg(quota=8, pairs=pairs))
    # pair 0 (hot 0 <- cold 2): 4 pages of quota, first pid takes 3, second pid 1
    assert len(plan.moves[0][0].hot_addrs()) == 3
    assert len(plan.moves[1][0].hot_addrs()) == 1
    # pair 1 (hot 1 <- cold 3): its own 4-page quota, only the first pid has pages there
    assert len(plan.moves[0][1].hot_addrs()) == 3
    assert len(plan.moves[1][1].hot_addrs()) == 0


def test_within_a_bucket_the_prefix_is_in_address_order():
    pages = [pid_pages(region(7, 1, 3, COLD), region(2, 1, 3, COLD), region(5, 1, 3, COLD))]
    plan = plan_moves(pages, mem(pages), cfg(quota=4))
    assert list(plan.moves[0][0].hot_addrs()) == [BASE + 2 * HUGE_2M, BASE + 5 * HUGE_2M]


@pytest.mark.parametrize("quota", [0, 1])
def test_quota_smaller_than_a_page_moves_nothing(quota):
    pages = [pid_pages(region(0, 10, 3, COLD))]
    plan = plan_moves(pages, mem(pages), cfg(quota=quota))
    assert counts(plan) == (0, 0)
