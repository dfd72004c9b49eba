"""The ``probe`` tracker: per-page access sight on kernels that have swap but no access bits.

Each pass pages out (``process_madvise(MADV_PAGEOUT)``) a budgeted sample of the resident
anonymous pages of the VMAs it is given, and the next pass reads their present bits: a page the
process touched meanwhile has come back (refaulted, a minor fault from the swap cache) and is
accessed; a page still in swap is idle -- and already where slide wants it. So the signal costs
swap writes and refaults, nothing else; this module keeps that cost bounded and safe:

* a **budget** in bytes per second (a :class:`TokenBucket`, shareable by every tracker of one
  task so a ``type=name`` task with many children cannot multiply it);
* a **cursor** that walks the address space round-robin, so the whole heap is probed over time;
* a **cool-down** for pages found hot (``cooldown`` seconds, doubled each time a page is found
  hot again, capped at 64 times it), so hot pages are not paged out again and again; each
  page's cool-down is stretched by a random factor (``jitter``: 0.5..1.5 by default), so pages
  found hot together do not all come due together and get re-probed in one wave;
* a **re-probe share**: of each pass's budget at most ``rehot_share`` (25 % by default) goes
  to pages found hot before whose cool-down has run out; the rest goes first to pages never
  found hot (new, or left alone since they would not leave); a share one side cannot use goes
  to the other. Each side has its own round-robin cursor;
* **verification** right after the pageout: only pages that actually left RAM are in flight
  (swap full, mlocked, shared or otherwise unreclaimable pages stay and are never judged);
* **swap headroom**: it never probes more than ``SwapFree`` minus a reserve;
* a **cap** the caller sets per pass (:meth:`ProbeTracker.limit_moves`): slide gives 0 when
  ``T=0`` and the ``dram_percent`` target otherwise.

State is kept per page, by address, and survives passes for as long as the tracker is open --
slide keeps one per target pid. It lives in dense arrays per piece (a VMA's part of one aligned
block of 64 Ki pages), allocated only where pages are resident or in swap: one byte a page
(state and times found hot), and two more (the end of a rest, 16-bit ticks) once a page of the
piece rests. Pagemap is read a piece at a time into booleans and the pass is returned as runs
plus a weight byte per page: no per-page Python and no per-page addresses, so the tracker and
the pass it returns need 2 to 4 bytes per page.

A pass returns every resident page of the VMAs: weight 1 for pages found back (and, since an
unknown page must count as hot, for every page not judged), weight 0 for pages judged idle in
this pass (they are in swap). Pages paged out by this pass are not resident, so not reported.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple

import numpy as np

from . import pagemap
from .actuators import MADV_PAGEOUT, merge_ranges, process_madvise
from .errors import TargetGone
from .pagerefs import PTE, PageRuns, PassRefs
from .procfs import read_meminfo
from .tracker_interface import Tracker, VmaRange

__all__ = [
    "DEFAULT_COOLDOWN",
    "DEFAULT_JITTER",
    "DEFAULT_REHOT_SHARE",
    "DEFAULT_RATE_MIB",
    "KnownPages",
    "ProbeTracker",
    "TokenBucket",
]

PAGE_SIZE = pagemap.PAGE_SIZE
_SHIFT = np.uint64(pagemap.PAGE_SHIFT)

#: Default budget: MiB paged out per second by probing (per task).
DEFAULT_RATE_MIB = 32
#: Default cool-down (seconds) of a page found hot; doubles each time, up to 64 times this.
DEFAULT_COOLDOWN = 60
COOLDOWN_DOUBLINGS = 6  # so the longest cool-down is 64 x the base
#: Default share of a pass's budget that may re-probe pages found hot before.
DEFAULT_REHOT_SHARE = 0.25
#: Default spread of a cool-down: its length times a uniform factor in 1 -/+ this.
DEFAULT_JITTER = 0.5
#: Swap kept free: at least this many bytes, or this fraction of SwapTotal if larger.
SWAP_RESERVE_MIN = 16 << 20
SWAP_RESERVE_FRACTION = 0.05

# per-page states
IN_FLIGHT = 1  # paged out by the last pass, to be judged by the next one
IDLE = 2  # judged idle; in swap
HOT = 3  # came back; on cool-down until ``until``
STUCK = 4  # would not leave RAM when probed; not probed again before ``until``


class TokenBucket:
    """Bytes per second with a burst of ``burst_s`` seconds; thread-safe, so one bucket can be
    shared by the trackers of every pid of a task. Starts with one second's worth."""

    def __init__(
        self,
        rate_bytes: float,
        *,
        burst_s: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_bytes <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate_bytes)
        self.capacity = self.rate * burst_s
        self.clock = clock
        self._tokens = min(self.rate, self.capacity)
        self._at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self, want: int) -> int:
        """Take up to ``want`` bytes; returns what was granted (0 when empty)."""
        with self._lock:
            self._refill()
            got = int(max(0.0, min(float(want), self._tokens)))
            self._tokens -= got
            return got

    def give_back(self, unused: int) -> None:
        """Return granted bytes that were not spent (pages that would not leave, fewer
        candidates than granted)."""
        with self._lock:
            self._tokens = min(self.capacity, self._tokens + max(0, unused))


def _default_pageout(pidfd: int, addrs: np.ndarray) -> int:
    return process_madvise(pidfd, merge_ranges(addrs, PAGE_SIZE), MADV_PAGEOUT)


# One byte per page of state: bits 0-2 the state, 3-5 the times found hot (the cool-down
# doubles at most COOLDOWN_DOUBLINGS times, so counting to 7 loses nothing), and two bits that
# hold this pass's snapshot only (set while judging, cleared when the pass is reported).
_STATE = 0x07
_LEVEL_SHIFT = 3
_LEVEL = 0x38
_LEVEL_MAX = 7
_PRESENT = 0x40  # resident when this pass read pagemap
_JUDGED = 0x80  # judged idle by this pass
_KEEP = _STATE | _LEVEL
# A piece is a VMA's part of one aligned block of this many pages: a VMA that grows or shrinks
# changes only its first and last piece (the others keep their arrays as they are), and a
# sparse VMA costs nothing where it has no page.
_BLOCK_PAGES = 1 << 16
# ``until`` is 16 bits of ticks, compared modulo 2**16: every cool-down must stay shorter
# than half the range (see _tick_for).
_UNTIL_SPAN = 1 << 15
_BATCH_PAGES = 1 << 16  # pages paged out (and checked) per call at most, give or take a piece


def _tick_for(cooldown: float, jitter: float) -> int:
    """Seconds per tick of ``until``: 1 unless the longest cool-down would not fit in 15 bits
    (cool-downs above ~340 s: they are then rounded up to the tick)."""
    longest = cooldown * (1 << COOLDOWN_DOUBLINGS) * (1.0 + jitter) + cooldown + 2
    return max(1, math.ceil(longest / (_UNTIL_SPAN - 1000)))


class KnownPages(NamedTuple):
    """The tracker's view of every page it knows (ascending ``addr``): ``state`` (0 known but
    neither in flight, idle nor resting; else IN_FLIGHT, IDLE, HOT, STUCK), ``level`` (times
    found hot, counted to 7) and ``until`` (end of a HOT/STUCK page's rest, in ticks since the
    tracker was opened; 0 for the others)."""

    addr: np.ndarray
    state: np.ndarray
    level: np.ndarray
    until: np.ndarray


class _Piece:
    """State of one piece (see ``_BLOCK_PAGES``): ``st`` one byte a page, ``until`` 16-bit
    ticks (allocated with the piece's first rest: until then a piece costs one byte a page);
    and this pass's candidate counts, so the round robin can skip whole pieces."""

    __slots__ = ("again", "fresh", "n", "reported", "st", "start", "until")

    def __init__(self, start: int, n: int) -> None:
        self.start, self.n = start, n
        self.st = np.zeros(n, np.uint8)
        self.until: np.ndarray | None = None
        self.fresh = self.again = self.reported = 0

    def rests(self) -> np.ndarray:
        """``until``, allocated if it was not."""
        if self.until is None:
            self.until = np.zeros(self.n, np.uint16)
        return self.until

    @property
    def end(self) -> int:
        return self.start + self.n * PAGE_SIZE


def _pieces_of(vmas: Sequence[VmaRange]) -> list[tuple[int, int]]:
    """``(start, npages)`` of the pieces of ``vmas``, ascending, overlaps dropped."""
    block = _BLOCK_PAGES * PAGE_SIZE
    out: list[tuple[int, int]] = []
    reach = 0
    for v in sorted(vmas, key=lambda v: v.start):
        start = max(int(v.start) - int(v.start) % PAGE_SIZE, reach)
        end = int(v.end)
        while start < end:
            stop = min(end, (start // block + 1) * block)
            n = -(-(stop - start) // PAGE_SIZE)
            out.append((start, n))
            start += n * PAGE_SIZE
        reach = max(reach, start)
    return out


def _bits(addrs: np.ndarray, start: int, n: int) -> np.ndarray:
    """Which of the ``n`` pages from ``start`` are in ``addrs`` (a bool per page)."""
    out = np.zeros(n, dtype=bool)
    if addrs.size:
        off = (np.asarray(addrs, np.uint64) - np.uint64(start)) >> _SHIFT
        out[off[off < np.uint64(n)].astype(np.intp)] = True
    return out


def _mask_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, length)`` (int64) of the runs of True in ``mask``."""
    m = np.concatenate(([False], mask, [False])).view(np.int8)
    edges = np.flatnonzero(m[1:] != m[:-1])
    first = edges[0::2]
    return first, edges[1::2] - first


class ProbeTracker(Tracker):
    """Page-out-and-watch-refaults (see module docs).

    ``rate_mib`` / ``bucket``: the budget (a given bucket wins: share one per task);
    ``cooldown``: seconds a page found hot is left alone (doubling, at most 64 times that);
    ``jitter``: each cool-down is that length times a uniform factor in ``1 -/+ jitter``, drawn
    from a generator seeded with ``seed`` (``None``: fresh entropy), so a run is repeatable;
    ``rehot_share``: at most this share of a pass's budget re-probes pages found hot before,
    unless pages never found hot cannot use it.
    ``pageout(pidfd, addrs) -> bytes``, ``page_states(pid, ranges) -> (present, swapped)``
    (addresses within ``ranges``; the tracker asks for at most one piece, 64 Ki pages, at a
    time), ``meminfo() -> dict`` and ``clock`` are injectable for tests; the defaults are the
    real kernel under ``proc_root``.
    """

    name = "probe"
    capability = "tracker.probe"
    moves_memory: ClassVar[bool] = True

    def __init__(
        self,
        pid: int | str,
        *,
        proc_root: str | os.PathLike[str] = "/proc",
        sys_root: str | os.PathLike[str] = "/sys",
        flags: int = 0,
        rate_mib: float = DEFAULT_RATE_MIB,
        cooldown: float = DEFAULT_COOLDOWN,
        jitter: float = DEFAULT_JITTER,
        seed: int | None = None,
        rehot_share: float = DEFAULT_REHOT_SHARE,
        bucket: TokenBucket | None = None,
        clock: Callable[[], float] = time.monotonic,
        pageout: Callable[[int, np.ndarray], int] | None = None,
        page_states: Callable[[int, Sequence[tuple[int, int]]], tuple[np.ndarray, np.ndarray]]
        | None = None,
        meminfo: Callable[[], dict[str, int]] | None = None,
        pidfd: int | None = None,
    ) -> None:
        self.pid = int(pid)
        self.proc_root = proc_root
        self.clock = clock
        self._epoch = clock()
        self.bucket = bucket or TokenBucket(rate_mib * (1 << 20), clock=clock)
        self.cooldown = float(cooldown)
        if not 0.0 <= jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        self.jitter = float(jitter)
        self.rng = np.random.default_rng(seed)
        if not 0.0 <= rehot_share <= 1.0:
            raise ValueError("rehot_share must be in [0, 1]")
        self.rehot_share = float(rehot_share)
        self._pageout = pageout or _default_pageout
        self._pagemap_fd = -1  # the default reader's pagemap, open for one pass
        self._states = page_states or self._read_pagemap
        self._meminfo = meminfo or (lambda: read_meminfo(self.proc_root))
        self._limit: int | None = None
        self._swap_total = 0
        self.cursor = 0  # round robin through the pages never found hot
        self.rehot_cursor = 0  # ... and through those found hot before
        self.tick = _tick_for(self.cooldown, self.jitter)
        # longest rest ever set, in ticks: a pass this long after the last one finds every
        # rest over without comparing (the 16-bit values could have wrapped)
        self._max_rest = -(-int(self.cooldown * (1 << COOLDOWN_DOUBLINGS) * (1 + self.jitter)
                                + self.cooldown + 1) // self.tick) + 1  # fmt: skip
        self._last_tick: int | None = None
        #: the known pages: block number -> pieces of that block with state
        self._blocks: dict[int, list[_Piece]] = {}
        self._pieces: list[_Piece] = []  # this pass's, ascending
        #: counters since the tracker was opened
        self.probed_pages = 0  # verified paged out by probing
        self.returned_pages = 0  # found back (accessed) after a probe or as a refault
        self.stuck_pages = 0  # asked to leave but stayed
        self.idle_pages = 0  # judged idle
        self._own_fd = pidfd is None
        if pidfd is None:
            try:
                pidfd = os.pidfd_open(self.pid)
            except ProcessLookupError as e:
                raise TargetGone(f"process {self.pid} is gone") from e
        self._pidfd = pidfd

    # -- the caller's controls -----------------------------------------------------------------

    def limit_moves(self, max_bytes: int | None) -> None:
        """At most ``max_bytes`` paged out by each following pass (``None``: only the budget)."""
        self._limit = None if max_bytes is None else max(0, int(max_bytes))

    def counters(self) -> dict[str, int]:
        """What probing did since the tracker was opened."""
        return {
            "probe_pages": self.probed_pages,
            "probe_returned": self.returned_pages,
            "probe_stuck": self.stuck_pages,
            "probe_idle": self.idle_pages,
            "probe_bytes_out": self.probed_pages * PAGE_SIZE,
        }

    def known(self) -> KnownPages:
        """Every page the tracker has state for (8+ bytes a page: for tests and debugging)."""
        now_t = self._ticks_now()
        parts: list[tuple[np.ndarray, ...]] = []
        for b in sorted(self._blocks):
            for p in self._blocks[b]:
                st = p.st & _KEEP
                idx = np.flatnonzero(st)
                s = st[idx]
                state = s & _STATE
                u = p.rests()[idx]
                until = now_t + (u - np.uint16(now_t & 0xFFFF)).view(np.int16)
                resting = (state == HOT) | (state == STUCK)
                addr = np.uint64(p.start) + (idx.astype(np.uint64) << _SHIFT)
                parts.append((addr, state, s >> _LEVEL_SHIFT, np.where(resting, until, 0)))
        if not parts:
            e = np.zeros(0, np.uint8)
            return KnownPages(np.zeros(0, np.uint64), e, e, np.zeros(0, np.int64))
        cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
        return KnownPages(cols[0], cols[1], cols[2], cols[3].astype(np.int64))

    # -- one pass ------------------------------------------------------------------------------

    def scan_pass(self, vmas: Sequence[VmaRange]) -> PassRefs:
        now = self._now()
        info = self._meminfo()
        # A swap area switched off reads its pages back in: those returns say nothing about
        # accesses, so after a drop in SwapTotal returning pages are forgotten, not made hot.
        swap_total = info.get("SwapTotal", 0)
        swapoff = swap_total < self._swap_total
        self._swap_total = swap_total
        own_fd = self._states == self._read_pagemap
        if own_fd:
            self._pagemap_fd = pagemap.open_pagemap(self.pid, self.proc_root)
        try:
            self._judge(now, vmas, swapoff=swapoff)
            left = self._probe(now, info)
        finally:
            if own_fd:
                os.close(self._pagemap_fd)
                self._pagemap_fd = -1
        return self._report(left)

    def _read_pagemap(
        self, pid: int, ranges: Sequence[tuple[int, int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        fd = self._pagemap_fd if self._pagemap_fd >= 0 else None
        return pagemap.page_states(pid, ranges, self.proc_root, fd=fd)

    def _now(self) -> int:
        """Whole seconds since the tracker was opened."""
        return int(self.clock() - self._epoch)

    def _ticks_now(self) -> int:
        return self._now() // self.tick

    def _ticks(self, seconds: np.ndarray | int) -> np.ndarray:
        """Ends of rests (seconds since opened) as stored: ticks, rounded up, modulo 2**16."""
        t = -(-np.asarray(seconds, np.int64) // self.tick)
        return (t & 0xFFFF).astype(np.uint16)

    def _judge(self, now: int, vmas: Sequence[VmaRange], *, swapoff: bool) -> None:
        """Read this pass's present/swapped pages piece by piece and update the state: pages
        probed last pass come back hot or are judged idle, idle pages that refaulted are hot,
        pages neither resident nor in swap (unmapped, or their VMA no longer given) are
        forgotten, rests that ran out end. Leaves this pass's pieces in ``self._pieces``."""
        now_t = now // self.tick
        # every rest ends within _max_rest ticks of the pass that set it; past that, the
        # wrapped 16-bit comparison would lie, and none is needed
        all_due = self._last_tick is not None and now_t - self._last_tick >= self._max_rest
        self._last_tick = now_t
        old, self._blocks, self._pieces = self._blocks, {}, []
        try:
            self._judge_pieces(now, now_t, all_due, old, vmas, swapoff=swapoff)
        except BaseException:
            for b, pieces in old.items():  # what this pass did not reach stays known
                self._blocks.setdefault(b, pieces)
            self._pieces = []
            raise

    def _judge_pieces(
        self,
        now: int,
        now_t: int,
        all_due: bool,
        old: dict[int, list[_Piece]],
        vmas: Sequence[VmaRange],
        *,
        swapoff: bool,
    ) -> None:
        now16 = np.uint16(now_t & 0xFFFF)
        for start, n in _pieces_of(vmas):
            prev = self._carry(old, start, n)
            present_a, swapped_a = self._states(self.pid, [(start, start + n * PAGE_SIZE)])
            if present_a.size == 0 and swapped_a.size == 0:
                continue  # nothing here: whatever was known is forgotten
            present = _bits(present_a, start, n)
            swapped = _bits(swapped_a, start, n)
            del present_a, swapped_a
            p = prev or _Piece(start, n)
            st = p.st
            st &= _KEEP  # a pass that failed half-way may have left its snapshot bits
            state = st & _STATE
            resting = (state == HOT) | (state == STUCK)
            if all_due:
                st[resting] &= _LEVEL
            elif resting.any():
                due = resting & ((p.rests() - now16).view(np.int16) <= 0)
                st[due] &= _LEVEL
            flight = state == IN_FLIGHT
            idle_now = flight & swapped & ~present
            # came back after the probe, or a later refault of an idle page: hot, on a
            # cool-down that doubles each time the page is found hot again
            back = (flight | (state == IDLE)) & present
            alive = present | swapped
            if swapoff:
                alive &= ~back  # forgotten: unknown again
                back[:] = False
            nback = int(np.count_nonzero(back))
            self.returned_pages += nback
            self.idle_pages += int(np.count_nonzero(idle_now))
            if nback:
                lvl = ((st[back] & _LEVEL) >> _LEVEL_SHIFT).astype(np.int64)
                # Pages found hot in the same sweep would otherwise all come due in the same
                # second and the budget would page the whole hot set out again at once (a
                # burst of major faults); a per-page random stretch spreads their expiries.
                stretch = self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter, nback)
                rest = self.cooldown * np.exp2(np.minimum(lvl, COOLDOWN_DOUBLINGS)) * stretch
                end_s = now + rest.astype(np.int64)
                p.rests()[back] = self._ticks(end_s)
                # a rest shorter than a tick is over at once (as "until > now" said before)
                hot = np.where(-(-end_s // self.tick) > now_t, HOT, 0).astype(np.uint8)
                st[back] = hot | (np.minimum(lvl + 1, _LEVEL_MAX) << _LEVEL_SHIFT).astype(np.uint8)
            st[idle_now] = (st[idle_now] & _LEVEL) | IDLE | _JUDGED
            st[~alive] = 0
            st[present] |= _PRESENT
            state = st & _STATE
            cand = present & (state != HOT) & (state != STUCK)
            rehot = (st & _LEVEL) != 0
            p.again = int(np.count_nonzero(cand & rehot))
            p.fresh = int(np.count_nonzero(cand)) - p.again
            p.reported = int(np.count_nonzero(present)) + int(np.count_nonzero(idle_now))
            self._pieces.append(p)
            self._blocks.setdefault(start // (_BLOCK_PAGES * PAGE_SIZE), []).append(p)

    @staticmethod
    def _carry(old: dict[int, list[_Piece]], start: int, n: int) -> _Piece | None:
        """Last pass's state for the piece ``start``/``n`` (same block): the piece itself if
        its VMA did not change there, else a new one with the pages that stayed copied."""
        prev = old.get(start // (_BLOCK_PAGES * PAGE_SIZE))
        if not prev:
            return None
        end = start + n * PAGE_SIZE
        for p in prev:
            if p.start == start and p.n == n:
                return p
        new = None
        for p in prev:
            lo, hi = max(p.start, start), min(p.end, end)
            if lo >= hi:
                continue
            if new is None:
                new = _Piece(start, n)
            a, b = (lo - start) // PAGE_SIZE, (hi - start) // PAGE_SIZE
            c = (lo - p.start) // PAGE_SIZE
            new.st[a:b] = p.st[c : c + b - a]
            if p.until is not None:
                new.rests()[a:b] = p.until[c : c + b - a]
        return new

    @staticmethod
    def _swap_room(info: dict[str, int]) -> int:
        total = info.get("SwapTotal", 0) * 1024
        free = info.get("SwapFree", 0) * 1024
        reserve = max(SWAP_RESERVE_MIN, int(total * SWAP_RESERVE_FRACTION))
        return max(0, free - reserve)

    def _probe(self, now: int, info: dict[str, int]) -> int:
        """Page out a budgeted slice of the probe-able present pages from the cursor on;
        returns how many actually left."""
        cap = self._limit
        if not self._pieces or (cap is not None and cap < PAGE_SIZE):
            return 0
        # probe-able: present and not resting (HOT or STUCK until later)
        n_fresh_all = sum(p.fresh for p in self._pieces)
        n_again_all = sum(p.again for p in self._pieces)
        ncand = n_fresh_all + n_again_all
        if ncand == 0:
            return 0
        want = ncand * PAGE_SIZE
        if cap is not None:
            want = min(want, cap)
        want = min(want, self._swap_room(info))
        if want < PAGE_SIZE:
            return 0
        granted = self.bucket.take(want)
        n = granted // PAGE_SIZE
        if n == 0:
            self.bucket.give_back(granted)
            return 0
        # Pages found hot before are likely still hot: paging many of them out at once is a
        # burst of major faults, so they get at most a share of the budget, unless nothing
        # else wants it (and pages never found hot get the share re-probing cannot use).
        n_again = min(n_again_all, max(int(n * self.rehot_share), n - n_fresh_all))
        n_fresh = min(n_fresh_all, n - n_again)
        fresh, self.cursor = self._round_robin(False, self.cursor, n_fresh)
        again, self.rehot_cursor = self._round_robin(True, self.rehot_cursor, n_again)
        # paged out and checked a batch at a time, in address order: a large budget costs
        # a few bytes per page it moves, not 40
        stuck_until = self._ticks(now + int(self.cooldown))
        left = stuck = 0
        batch: list[tuple[_Piece, np.ndarray]] = []
        size = 0
        empty = np.zeros(0, np.int64)
        for i in sorted(fresh.keys() | again.keys()):
            off = np.sort(np.concatenate((fresh.pop(i, empty), again.pop(i, empty))))
            batch.append((self._pieces[i], off))
            size += off.size
            if size >= _BATCH_PAGES:
                nl, ns = self._page_out(batch, stuck_until)
                left, stuck, batch, size = left + nl, stuck + ns, [], 0
        if batch:
            nl, ns = self._page_out(batch, stuck_until)
            left, stuck = left + nl, stuck + ns
        self.bucket.give_back(stuck * PAGE_SIZE + granted - (left + stuck) * PAGE_SIZE)
        self.probed_pages += left
        self.stuck_pages += stuck
        return left

    def _page_out(
        self, batch: list[tuple[_Piece, np.ndarray]], stuck_until: np.ndarray
    ) -> tuple[int, int]:
        """Page out the pages ``batch`` names (piece, sorted page offsets), check which left
        RAM (only those are in flight; the others rest as STUCK); returns (left, stuck)."""
        addrs = np.concatenate(
            [np.uint64(p.start) + (off.astype(np.uint64) << _SHIFT) for p, off in batch]
        )
        self._pageout(self._pidfd, addrs)
        left = 0
        for p, off in batch:
            lo, hi = int(off[0]), int(off[-1]) + 1
            still, _ = self._states(
                self.pid, [(p.start + lo * PAGE_SIZE, p.start + hi * PAGE_SIZE)]
            )
            stayed = _bits(still, p.start + lo * PAGE_SIZE, hi - lo)[off - lo]
            st = p.st
            went = off[~stayed]
            st[went] = (st[went] & ~np.uint8(_STATE)) | np.uint8(IN_FLIGHT)
            kept = off[stayed]
            st[kept] = (st[kept] & ~np.uint8(_STATE)) | np.uint8(STUCK)
            if kept.size:
                p.rests()[kept] = stuck_until
            left += went.size
        return left, addrs.size - left

    def _round_robin(self, rehot: bool, cursor: int, n: int) -> tuple[dict[int, np.ndarray], int]:
        """The first ``n`` candidates of one side (found hot before or not) from address
        ``cursor`` on, wrapping to the start, as page offsets per piece (by index); and the
        cursor after them (unchanged when ``n`` is 0)."""
        picks: dict[int, np.ndarray] = {}
        if n <= 0:
            return picks, cursor
        pieces = self._pieces
        first = next((i for i, p in enumerate(pieces) if p.end > cursor), len(pieces))
        spans: list[tuple[int, int, int]] = []
        if first < len(pieces):
            p = pieces[first]
            cut = max(0, -(-(cursor - p.start) // PAGE_SIZE))
            spans.append((first, cut, p.n))
            order = list(range(first + 1, len(pieces))) + list(range(first))
            spans += [(i, 0, pieces[i].n) for i in order]
            if cut:
                spans.append((first, 0, cut))
        else:
            spans = [(i, 0, q.n) for i, q in enumerate(pieces)]
        need, last = n, cursor
        for i, lo, hi in spans:
            p = pieces[i]
            if (p.again if rehot else p.fresh) == 0:
                continue
            st = p.st[lo:hi]
            state = st & _STATE
            cand = ((st & _PRESENT) != 0) & (state != HOT) & (state != STUCK)
            cand &= ((st & _LEVEL) != 0) == rehot
            idx = np.flatnonzero(cand)[:need]
            if idx.size:
                idx += lo
                picks[i] = np.concatenate((picks[i], idx)) if i in picks else idx
                last = p.start + (int(idx[-1]) + 1) * PAGE_SIZE
                need -= idx.size
                if need == 0:
                    break
        return picks, last

    def _report(self, left: int) -> PassRefs:
        """This pass as runs: resident pages not paged out by it (weight 1) and pages judged
        idle by it (weight 0), ascending; ends the pass (its snapshot bits are cleared)."""
        total = sum(p.reported for p in self._pieces) - left
        weight = np.empty(total, np.uint8)  # filled in place: no second copy at the end
        starts, lengths = [], []
        at = 0
        for p in self._pieces:
            st = p.st
            present = (st & _PRESENT) != 0
            report = (present & ((st & _STATE) != IN_FLIGHT)) | ((st & _JUDGED) != 0)
            first, length = _mask_runs(report)
            starts.append(np.uint64(p.start) + (first.astype(np.uint64) << _SHIFT))
            lengths.append(length)
            w = present[report]
            weight[at : at + w.size] = w
            at += w.size
            st &= _KEEP
        self._pieces = []
        if not starts:
            return PassRefs.empty()
        start = np.concatenate(starts)
        npages = np.concatenate(lengths).astype(np.int64)
        runs = PageRuns.coalesce(
            start,
            npages,
            np.full(start.size, PTE, np.uint8),
            np.full(start.size, PAGE_SIZE, np.uint64),
        )
        return PassRefs.from_runs(runs, weight[:at])

    def close(self) -> None:
        if self._own_fd and self._pidfd >= 0:
            os.close(self._pidfd)
        self._pidfd = -1
