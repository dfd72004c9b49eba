"""Move confirmation (etmem_cslide/confirm.py): a page moves only after ``confirm`` cycles in a
row asked for the same move, so a region tracker's one-cycle flips do not move pages back and
forth."""

from __future__ import annotations

import numpy as np
import pytest
from etmem_cslide.confirm import MoveConfirmation, default_confirm
from etmem_cslide.policy import PidPages

T = 2  # hot_threshold
HOT, COLD = 0, 1  # nodes of the one pair
PAGE = 4096


def pages(counts: list[int], nodes: list[int]) -> PidPages:
    n = len(counts)
    return PidPages(
        addr=np.arange(n, dtype=np.uint64) * np.uint64(PAGE) + np.uint64(1 << 30),
        size=np.full(n, PAGE, np.int64),
        count=np.array(counts, np.int32),
        node=np.array(nodes, np.int32),
    )


def held(conf: MoveConfirmation, p: PidPages) -> list[int]:
    """The counts the policy gets for ``p`` this cycle."""
    return conf.hold(p, T, [HOT], [COLD]).count.tolist()


def test_a_move_waits_until_asked_for_in_confirm_cycles_running():
    conf = MoveConfirmation(2)
    # page 0 hot on the cold node (wants up), page 1 cold on the hot node (wants down),
    # pages 2 and 3 where they belong
    p = pages([3, 0, 3, 0], [COLD, HOT, HOT, COLD])
    assert held(conf, p) == [T - 1, T, 3, 0]  # first cycle: both moves held
    assert held(conf, p) == [3, 0, 3, 0]  # second cycle running: both go


def test_a_one_cycle_flip_never_moves_a_page():
    conf = MoveConfirmation(2)
    settled = pages([3, 0], [HOT, COLD])
    flipped = pages([0, 3], [HOT, COLD])  # one cycle reads the hot page cold and vice versa
    for _ in range(3):
        assert held(conf, settled) == [3, 0]
        assert held(conf, flipped) == [T, T - 1]  # held where they are


def test_a_streak_restarts_when_a_cycle_asks_otherwise():
    conf = MoveConfirmation(3)
    want_up, stay = pages([3], [COLD]), pages([0], [COLD])
    assert held(conf, want_up) == [T - 1]
    assert held(conf, want_up) == [T - 1]
    assert held(conf, stay) == [0]  # the streak is gone
    assert held(conf, want_up) == [T - 1]
    assert held(conf, want_up) == [T - 1]
    assert held(conf, want_up) == [3]  # third in a row


def test_a_page_that_stays_unmoved_for_lack_of_quota_keeps_its_confirmation():
    conf = MoveConfirmation(2)
    p = pages([3], [COLD])
    held(conf, p)
    for _ in range(3):  # confirmed; the policy may not have had room to move it yet
        assert held(conf, p) == [3]


def test_streaks_follow_addresses_not_positions():
    conf = MoveConfirmation(2)
    a = pages([3, 0], [COLD, COLD])
    held(conf, a)
    # the next cycle lists the pages in another order: page 0 is still confirmed
    b = PidPages(a.addr[::-1].copy(), a.size, a.count[::-1].copy(), a.node[::-1].copy())
    assert conf.hold(b, T, [HOT], [COLD]).count.tolist() == [0, 3]


def test_confirm_1_holds_nothing_and_remembers_nothing():
    conf = MoveConfirmation(1)
    p = pages([3, 0], [COLD, HOT])
    assert conf.hold(p, T, [HOT], [COLD]) is p
    assert conf.addr.size == 0


def test_only_pages_that_want_a_move_are_remembered():
    conf = MoveConfirmation(2)
    held(conf, pages([3] * 10 + [0] * 10, [HOT] * 10 + [COLD] * 9 + [HOT]))
    assert conf.addr.size == 1


@pytest.mark.parametrize("bad", [0, 17])
def test_confirm_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="confirm"):
        MoveConfirmation(bad)


def test_ordinary_memory_seen_by_regions_confirms_twice_and_the_rest_once():
    assert default_confirm("damon", "normal") == 2
    assert [default_confirm(t, "normal") for t in ("idle_pages", "page_idle", "refs")] == [1] * 3
    # hugetlb: as the original, whatever the tracker
    assert [default_confirm(t, "hugetlb") for t in ("damon", "idle_pages")] == [1, 1]
