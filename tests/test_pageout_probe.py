"""The ``probe`` tracker's logic against a simulated kernel: budget, cursor, cool-down, the
check after paging out, vanished pages, swap headroom; and once on the real kernel."""

from __future__ import annotations

import os

import numpy as np
import pytest
from etmem_scan import pageout_probe
from etmem_scan.pageout_probe import ProbeTracker, TokenBucket
from etmem_sdk.testing import spawn_workload, swap_on

PAGE = pageout_probe.PAGE_SIZE
MIB = 1 << 20
BASE = 0x10000000


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Kernel:
    """Pages of one process: present or swapped; ``touch`` brings pages back as a refault."""

    def __init__(self, npages: int, swap_free_kb: int = 4 << 20) -> None:
        self.present = np.arange(npages, dtype=np.uint64) * np.uint64(PAGE) + np.uint64(BASE)
        self.swapped = np.zeros(0, dtype=np.uint64)
        self.pageouts: list[np.ndarray] = []
        self.pinned = np.zeros(0, dtype=np.uint64)  # pages that refuse to leave
        self.swap_free_kb = swap_free_kb
        self.touch_on_pageout = np.zeros(0, dtype=np.uint64)  # come back at once

    def states(self, pid, ranges):
        def within(a):
            keep = np.zeros(a.size, bool)
            for r in ranges:
                lo, hi = (r.start, r.end) if hasattr(r, "start") else r
                keep |= (a >= np.uint64(lo)) & (a < np.uint64(hi))
            return a[keep]

        return within(self.present), within(self.swapped)

    def pageout(self, pidfd, addrs):
        self.pageouts.append(addrs.copy())
        go = addrs[~np.isin(addrs, self.pinned)]
        go = go[np.isin(go, self.present)]
        self.present = np.setdiff1d(self.present, go)
        self.swapped = np.union1d(self.swapped, go)
        self.swap_free_kb -= go.size * PAGE // 1024
        self.touch(self.touch_on_pageout)
        return int(addrs.size) * PAGE

    def touch(self, addrs):
        back = np.intersect1d(self.swapped, np.asarray(addrs, np.uint64))
        self.swapped = np.setdiff1d(self.swapped, back)
        self.present = np.union1d(self.present, back)

    def unmap(self, addrs):
        self.present = np.setdiff1d(self.present, addrs)
        self.swapped = np.setdiff1d(self.swapped, addrs)

    def meminfo(self):
        return {"SwapTotal": 8 << 20, "SwapFree": self.swap_free_kb}


class Vma:
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end


#: one VMA holding every page a test kernel has (more than one piece of state)
VMAS = [Vma(BASE, BASE + (1 << 30))]


def page(i) -> np.uint64:
    return np.uint64(BASE + i * PAGE)


def make(kernel, clock, rate_mib=1.0, **kw) -> ProbeTracker:
    return ProbeTracker(
        1234,
        rate_mib=rate_mib,
        clock=clock,
        pageout=kernel.pageout,
        page_states=kernel.states,
        meminfo=kernel.meminfo,
        pidfd=-1,
        **kw,
    )


def weights(refs) -> dict[int, int]:
    return dict(zip(refs.addr.tolist(), refs.weight.tolist(), strict=True))


def test_token_bucket_rate_burst_and_refund():
    clock = Clock()
    b = TokenBucket(100, burst_s=2, clock=clock)
    assert b.take(1000) == 100  # starts with one second's worth
    assert b.take(10) == 0
    clock.t += 10
    assert b.take(1000) == 200  # refilled up to the burst, no further
    b.give_back(50)
    assert b.take(1000) == 50
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_first_pass_pages_out_one_budget_and_reports_the_rest_hot():
    k, clock = Kernel(1024), Clock()
    t = make(k, clock, rate_mib=1)  # 1 MiB = 256 pages per second
    refs = t.scan_pass(VMAS)
    (out,) = k.pageouts
    assert out.size == 256 and (out == k.swapped).all()
    # probed pages are not resident, so not reported; every other page counts as hot
    assert refs.addr.size == 1024 - 256 and (refs.weight == 1).all()
    assert not np.isin(refs.addr, out).any()
    assert t.counters() == {
        "probe_pages": 256,
        "probe_returned": 0,
        "probe_stuck": 0,
        "probe_idle": 0,
        "probe_bytes_out": 256 * PAGE,
    }
    # no time passed: the bucket is empty, nothing more is probed
    t.scan_pass(VMAS)
    assert len(k.pageouts) == 1


def test_next_pass_judges_come_back_hot_and_still_out_idle():
    k, clock = Kernel(512), Clock()
    t = make(k, clock, rate_mib=1)
    t.limit_moves(256 * PAGE)
    t.scan_pass(VMAS)
    probed = k.pageouts[0]
    k.touch(probed[:10])  # the process read ten of them
    t.limit_moves(0)  # judge only
    clock.t += 1
    refs = t.scan_pass(VMAS)
    w = weights(refs)
    assert all(w[int(a)] == 1 for a in probed[:10])
    assert all(w[int(a)] == 0 for a in probed[10:])  # idle: in swap, reported cold
    assert t.counters()["probe_returned"] == 10 and t.counters()["probe_idle"] == 246


def test_round_robin_cursor_covers_the_whole_mapping():
    k, clock = Kernel(1000), Clock()
    t = make(k, clock, rate_mib=1)
    seen = np.zeros(0, np.uint64)
    for _ in range(4):
        t.scan_pass(VMAS)
        seen = np.union1d(seen, k.pageouts[-1])
        k.touch(k.pageouts[-1])  # everything comes back: all hot, each once
        clock.t += 1
    assert seen.size == 1000  # 256 per pass: 4 passes cover 1000 pages once
    sizes = [p.size for p in k.pageouts]
    assert sizes[:3] == [256, 256, 256]


def _probe_times_of_a_hot_page(t, k, clock, passes, step):
    """Run ``passes`` passes ``step`` seconds apart, page 0 touched after each (always hot):
    the clock times of the passes that paged something out."""
    times = []
    for _ in range(passes):
        n = len(k.pageouts)
        t.scan_pass(VMAS)
        if len(k.pageouts) > n:
            times.append(clock.t)
        k.touch([page(0)])
        clock.t += step
    return times


def test_cool_down_doubles_each_time_a_page_is_found_hot():
    k, clock = Kernel(1), Clock()
    t = make(k, clock, rate_mib=100, cooldown=10, jitter=0)
    times = _probe_times_of_a_hot_page(t, k, clock, passes=200, step=1)
    gaps = np.diff(times).tolist()
    # probed, judged hot one pass later, then left alone 10, 20, 40, 80 s (plus that pass)
    assert gaps[:4] == [11, 21, 41, 81]


def test_cool_down_is_capped():
    k, clock = Kernel(1), Clock()
    t = make(k, clock, rate_mib=100, cooldown=1, jitter=0)
    times = _probe_times_of_a_hot_page(t, k, clock, passes=400, step=1)
    assert max(np.diff(times)) == 64 + 1


def _reprobe_times(t, k, clock, npages, seconds):
    """Probe every page once, have them all come back, then step 1 s at a time: the second
    (after the one they were found hot in) at which each page is paged out again."""
    t.scan_pass(VMAS)
    k.touch(k.swapped.copy())
    clock.t += 1
    t.scan_pass(VMAS)  # all judged hot in this same pass
    again = np.full(npages, -1)
    for s in range(1, seconds):
        clock.t += 1
        n = len(k.pageouts)
        t.scan_pass(VMAS)
        for out in k.pageouts[n:]:
            i = ((out - np.uint64(BASE)) // np.uint64(PAGE)).astype(np.intp)
            again[i[again[i] < 0]] = s  # the first time only
        k.touch(k.swapped.copy())
    return again


def test_pages_found_hot_together_come_due_spread_over_the_cool_down():
    npages, cooldown = 2000, 40
    k, clock = Kernel(npages), Clock()
    t = make(k, clock, rate_mib=1000, cooldown=cooldown, seed=7)
    again = _reprobe_times(t, k, clock, npages, 2 * cooldown)
    assert (again > 0).all()  # every page came due within 1.5 x the cool-down
    # spread over 0.5x..1.5x the cool-down, not one wave: no second re-probes more than a
    # few per cent of them (uniform over 40 s is 2.5 % a second)
    assert again.min() >= cooldown // 2 and again.max() <= cooldown * 3 // 2 + 1
    assert again.max() - again.min() >= cooldown * 8 // 10
    assert np.bincount(again).max() <= npages // 20


def test_cool_down_jitter_is_repeatable_with_a_seed():
    def run(seed):
        k, clock = Kernel(500), Clock()
        t = make(k, clock, rate_mib=1000, cooldown=60, seed=seed)
        t.scan_pass(VMAS)
        k.touch(k.swapped.copy())
        clock.t += 1
        t.scan_pass(VMAS)
        return t.known().until

    assert (run(3) == run(3)).all()
    assert (run(3) != run(4)).any()
    with pytest.raises(ValueError):
        make(Kernel(1), Clock(), jitter=1.0)


def _hot_then_due(npages, nhot):
    """A tracker whose first ``nhot`` pages were found hot and whose cool-downs are over, the
    other pages never probed; its cursor back at the start, where the hot pages are."""
    k, clock = Kernel(npages), Clock()
    t = make(k, clock, rate_mib=1, cooldown=10, jitter=0)
    t.limit_moves(nhot * PAGE)
    t.scan_pass(VMAS)
    k.touch(k.swapped.copy())
    t.limit_moves(0)
    clock.t += 1
    t.scan_pass(VMAS)  # judged hot
    assert (t.known().level[:nhot] == 1).all()
    clock.t += 30  # cool-downs over, bucket full (4 s = 1024 pages)
    t.cursor = BASE
    t.limit_moves(None)
    return k, clock, t


def test_pages_found_hot_before_get_at_most_a_quarter_of_a_pass():
    k, clock, t = _hot_then_due(2048, 256)
    t.limit_moves(400 * PAGE)
    t.scan_pass(VMAS)
    out = k.pageouts[-1]
    again = out < page(256)
    # the cursor stands on the hot pages, yet only 100 of 400 go to them; 300 never-probed
    assert out.size == 400 and again.sum() == 100
    # the next pass takes the following hot pages, not the same ones again
    clock.t += 1
    k.touch(k.swapped.copy())
    t.limit_moves(400 * PAGE)
    t.scan_pass(VMAS)
    nxt = k.pageouts[-1]
    assert (nxt < page(256)).sum() == 100
    assert not np.isin(nxt[nxt < page(256)], out[again]).any()


def test_a_share_one_side_cannot_use_goes_to_the_other():
    # few never-probed pages: the hot ones get the rest of the budget
    k, clock, t = _hot_then_due(300, 256)
    t.limit_moves(256 * PAGE)
    t.scan_pass(VMAS)
    out = k.pageouts[-1]
    assert out.size == 256 and (out >= page(256)).sum() == 44
    # few pages found hot before: never-probed pages get the rest
    k, clock, t = _hot_then_due(2048, 10)
    t.limit_moves(400 * PAGE)
    t.scan_pass(VMAS)
    out = k.pageouts[-1]
    assert out.size == 400 and (out < page(10)).sum() == 10
    with pytest.raises(ValueError):
        make(Kernel(1), Clock(), rehot_share=1.5)


def test_a_page_that_did_not_leave_is_not_judged_and_rests():
    k, clock = Kernel(8), Clock()
    k.pinned = np.array([page(1), page(2)], np.uint64)  # locked, shared, swap full ...
    t = make(k, clock, rate_mib=100, cooldown=30)
    refs = t.scan_pass(VMAS)
    w = weights(refs)
    assert w == {int(page(1)): 1, int(page(2)): 1}  # still resident: unknown, so hot
    assert t.counters()["probe_stuck"] == 2 and t.counters()["probe_pages"] == 6
    clock.t += 1
    refs = t.scan_pass(VMAS)
    w = weights(refs)
    # the six that left are idle now; the two that stayed are neither in flight nor "came back"
    assert t.counters()["probe_returned"] == 0 and t.counters()["probe_idle"] == 6
    assert w[int(page(1))] == 1 and w[int(page(2))] == 1
    assert len(k.pageouts) == 1  # the pinned pages rest for the cool-down, not probed again


def test_refault_of_an_idle_page_makes_it_hot_with_a_cool_down():
    k, clock = Kernel(4), Clock()
    t = make(k, clock, rate_mib=100, cooldown=50)
    t.scan_pass(VMAS)
    clock.t += 1
    t.scan_pass(VMAS)  # all four judged idle
    assert t.counters()["probe_idle"] == 4
    clock.t += 5
    k.touch([page(3)])  # a refault much later
    refs = t.scan_pass(VMAS)
    assert weights(refs) == {int(page(3)): 1}
    assert t.counters()["probe_returned"] == 1
    assert len(k.pageouts) == 1  # page 3 is on its cool-down


def test_vanished_pages_leave_the_state():
    k, clock = Kernel(16), Clock()
    t = make(k, clock, rate_mib=100)
    t.scan_pass(VMAS)
    assert t.known().addr.size == 16
    k.unmap(np.array([page(i) for i in range(8)], np.uint64))
    clock.t += 1
    t.scan_pass(VMAS)
    addr = t.known().addr
    assert addr.size == 8 and (addr >= page(8)).all()


def test_swap_headroom_is_never_used():
    k, clock = Kernel(100_000), Clock()
    total = k.meminfo()["SwapTotal"] * 1024
    reserve = max(pageout_probe.SWAP_RESERVE_MIN, int(total * pageout_probe.SWAP_RESERVE_FRACTION))
    reserve_kb = -(-reserve // 1024)
    k.swap_free_kb = reserve_kb + 40  # room for 10 pages above the reserve
    t = make(k, clock, rate_mib=1000)
    t.scan_pass(VMAS)
    assert k.pageouts[0].size == 10
    clock.t += 1
    t.scan_pass(VMAS)
    assert len(k.pageouts) == 1  # full up to the reserve: nothing more


def test_caller_cap_and_shared_bucket():
    k, clock = Kernel(1000), Clock()
    t = make(k, clock, rate_mib=100)
    t.limit_moves(3 * PAGE)
    t.scan_pass(VMAS)
    assert k.pageouts[0].size == 3
    # two pids of one task share one budget: together they get one second's worth
    bucket = TokenBucket(1 * MIB, clock=clock)
    k1, k2 = Kernel(1000), Kernel(1000)
    a, b = make(k1, clock, bucket=bucket), make(k2, clock, bucket=bucket)
    a.scan_pass(VMAS)
    b.scan_pass(VMAS)
    assert k1.pageouts[0].size + sum(p.size for p in k2.pageouts) == 256


def test_pages_that_came_back_before_the_check_are_not_in_flight():
    k, clock = Kernel(8), Clock()
    k.touch_on_pageout = np.array([page(0)], np.uint64)  # written again at once
    t = make(k, clock, rate_mib=100)
    t.scan_pass(VMAS)
    assert t.counters()["probe_stuck"] == 1 and t.counters()["probe_pages"] == 7


@pytest.mark.root
@pytest.mark.swap
def test_real_kernel_interleaved_pages():
    if os.geteuid() != 0:
        pytest.skip("needs root (swap, process_madvise on another process)")
    from etmem_sdk import scan

    with swap_on(128, priority=32767), spawn_workload(interleave=4, size_mib=16, period=0.02) as w:
        try:
            with ProbeTracker(w.pid, rate_mib=64) as t:
                vmas = [v for v in scan.read_vmas(w.pid) if v.start == w.cold[0]]
                t.scan_pass(vmas)
                import time

                time.sleep(0.3)
                refs = t.scan_pass(vmas)
            idle = refs.addr[refs.weight == 0]
            cold, hot = w.pages("cold"), w.pages("hot")
            assert np.isin(idle, cold).all(), "a hot page was judged idle"
            assert np.isin(cold, idle).mean() >= 0.95
            time.sleep(0.1)
            assert w.resident_of("hot") == hot.size
            assert w.resident_of("cold") <= cold.size // 20
        finally:
            w.kill()


def test_a_swapoff_reading_pages_back_does_not_make_them_hot():
    k, clock = Kernel(8), Clock()
    t = make(k, clock, rate_mib=100)
    t.scan_pass(VMAS)  # all 8 out
    clock.t += 1
    t.scan_pass(VMAS)  # judged idle
    total = {"SwapTotal": 8 << 20}

    def smaller():
        return {"SwapTotal": total["SwapTotal"], "SwapFree": k.swap_free_kb}

    t._meminfo = smaller
    total["SwapTotal"] = 4 << 20  # someone switched a swap area off ...
    k.touch(k.swapped.copy())  # ... and it read every page back in
    clock.t += 1
    t.scan_pass(VMAS)
    assert t.counters()["probe_returned"] == 0
    # forgotten, not on a cool-down: the next budget probes them again
    assert len(k.pageouts) == 2 and k.pageouts[1].size == 8


# -- the state layout: dense per piece of a VMA, by address, 16-bit rests ----------------------

BLOCK = pageout_probe._BLOCK_PAGES


def _probe_all_then_hot(k, clock, t, vmas, hot=None):
    """Probe every page, bring ``hot`` (all: None) back, judge: ``hot`` rest, the others
    are idle."""
    t.scan_pass(vmas)
    k.touch(k.swapped.copy() if hot is None else hot)
    clock.t += 1
    t.scan_pass(vmas)


def test_a_vma_that_grows_shrinks_or_moves_keeps_the_pages_that_stayed():
    k, clock = Kernel(64), Clock()
    t = make(k, clock, rate_mib=100, cooldown=100, jitter=0)
    _probe_all_then_hot(k, clock, t, [Vma(BASE, BASE + 64 * PAGE)], [page(i) for i in range(8)])
    before = t.known()
    assert (before.state[:8] == pageout_probe.HOT).all()
    assert (before.state[8:] == pageout_probe.IDLE).all()
    # the VMA now starts 4 pages later and reaches further (new pages there): pages 4.. keep
    # their state, pages 0..3 are outside every VMA and forgotten
    k.present = np.union1d(k.present, [page(64), page(65)])
    clock.t += 1
    t.limit_moves(0)
    t.scan_pass([Vma(int(page(4)), int(page(80)))])
    after = t.known()
    assert after.addr.tolist() == before.addr[4:].tolist()
    assert after.state.tolist() == before.state[4:].tolist()
    assert after.until.tolist() == before.until[4:].tolist()
    # pages 4..7 still rest: a budget now probes only the two new pages
    t.limit_moves(None)
    clock.t += 10
    t.scan_pass([Vma(int(page(4)), int(page(80)))])
    assert k.pageouts[-1].tolist() == [int(page(64)), int(page(65))]


def test_state_of_a_vma_that_is_no_longer_given_is_dropped():
    k, clock = Kernel(32), Clock()
    t = make(k, clock, rate_mib=100)
    a, b = Vma(BASE, int(page(16))), Vma(int(page(16)), int(page(32)))
    t.scan_pass([a, b])
    assert t.known().addr.size == 32
    clock.t += 1
    t.scan_pass([b])
    assert t.known().addr.tolist() == [int(page(i)) for i in range(16, 32)]
    # given again later, its pages are new: probed as never seen (still in swap: not resident)
    clock.t += 1
    t.scan_pass([a, b])
    assert t.known().addr.size == 16


def test_a_vma_across_blocks_is_walked_round_robin_across_its_pieces():
    n = 2 * BLOCK + 100
    k, clock = Kernel(0), Clock()
    start = BASE + BLOCK * PAGE - 50 * PAGE  # crosses two block boundaries
    k.present = np.arange(n, dtype=np.uint64) * np.uint64(PAGE) + np.uint64(start)
    vmas = [Vma(start, start + n * PAGE)]
    t = make(k, clock, rate_mib=1000, jitter=0)
    t.limit_moves(BLOCK * PAGE)
    seen = []
    for _ in range(3):
        before = len(k.pageouts)
        t.scan_pass(vmas)
        seen.append(np.concatenate(k.pageouts[before:]))
        clock.t += 1
    allp = np.concatenate(seen)
    assert allp.size == n  # the third pass finds only the 100 pages not probed yet
    assert np.unique(allp).size == n  # every page once before any twice (round robin)
    assert (np.diff(seen[0].astype(np.int64)) == PAGE).all()  # one piece into the next
    assert max(p.size for p in k.pageouts) <= pageout_probe._BATCH_PAGES


def test_rests_survive_the_16_bit_tick_wrap():
    # passes every 1000 s for longer than 2**16 ticks: a page found hot rests exactly as long
    # as its cool-down each time, whatever the wrap
    k, clock = Kernel(1), Clock()
    t = make(k, clock, rate_mib=100, cooldown=300, jitter=0)
    assert t.tick == 1
    outs = _probe_times_of_a_hot_page(t, k, clock, passes=200, step=1000)
    assert clock.t - 1000 > (1 << 16) * t.tick
    gaps = np.diff(outs).tolist()
    # probed, judged hot next pass, rests 3000 * 2**level s (capped at 64x), then due
    want = [1000 + 1000 * -(-300 * 2**i // 1000) for i in range(7)]
    assert gaps[:7] == want
    assert set(gaps[7:]) == {want[-1]}


def test_a_long_gap_between_passes_ends_every_rest():
    k, clock = Kernel(16), Clock()
    t = make(k, clock, rate_mib=100, cooldown=60, jitter=0)
    _probe_all_then_hot(k, clock, t, VMAS)
    assert (t.known().state == pageout_probe.HOT).all()
    # 40,000 s later: the 16-bit ends, read modulo 2**16, could look far in the future
    clock.t += 40_000
    t.scan_pass(VMAS)
    assert k.pageouts[-1].size == 16  # all due, all probed again
    clock.t += (1 << 16) + 5  # a full wrap: a rest set now is still a rest after it?
    k.touch(k.swapped.copy())
    t.scan_pass(VMAS)  # found hot again: rest 120 s
    clock.t += 60
    t.scan_pass(VMAS)
    assert len(k.pageouts) == 2


def test_long_cool_downs_use_coarser_ticks_and_fit():
    t = make(Kernel(1), Clock(), cooldown=86400)
    assert t.tick > 1
    assert t._max_rest < 1 << 15
    assert make(Kernel(1), Clock(), cooldown=300).tick == 1
    # a day's cool-down, rounded up to its tick, not shortened
    k, clock = Kernel(1), Clock()
    t = make(k, clock, rate_mib=100, cooldown=86400, jitter=0)
    _probe_all_then_hot(k, clock, t, VMAS, [page(0)])
    clock.t += 86399
    t.scan_pass(VMAS)
    assert len(k.pageouts) == 1
    clock.t += t.tick + 1
    t.scan_pass(VMAS)
    assert len(k.pageouts) == 2


def test_state_costs_a_byte_a_page_until_a_page_rests():
    k, clock = Kernel(BLOCK), Clock()
    t = make(k, clock, rate_mib=1)
    t.scan_pass(VMAS)
    (piece,) = t._blocks[BASE // (BLOCK * PAGE)]
    assert piece.st.nbytes == BLOCK and piece.until is None
    k.touch(k.swapped.copy())
    clock.t += 1
    t.scan_pass(VMAS)
    assert piece.until is not None and piece.until.dtype == np.uint16
