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

State is kept per page in numpy arrays sorted by address (no per-page Python), and survives
passes for as long as the tracker is open -- slide keeps one per target pid.

A pass returns every resident page of the VMAs: weight 1 for pages found back (and, since an
unknown page must count as hot, for every page not judged), weight 0 for pages judged idle in
this pass (they are in swap). Pages paged out by this pass are not resident, so not reported.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from . import pagemap
from .actuators import MADV_PAGEOUT, merge_ranges, process_madvise
from .errors import TargetGone
from .pagerefs import PTE, PassRefs
from .pagesets import lookup, member, sorted_set
from .procfs import read_meminfo
from .tracker_interface import Tracker, VmaRange

__all__ = [
    "DEFAULT_COOLDOWN",
    "DEFAULT_JITTER",
    "DEFAULT_REHOT_SHARE",
    "DEFAULT_RATE_MIB",
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


def _round_robin(cand: np.ndarray, cursor: int, n: int) -> tuple[np.ndarray, int]:
    """The first ``n`` of ``cand`` (sorted) from address ``cursor`` on, wrapping to the start;
    and the cursor after them (unchanged when ``n`` is 0)."""
    if n <= 0 or cand.size == 0:
        return cand[:0], cursor
    first = int(np.searchsorted(cand, np.uint64(cursor)))
    order = np.concatenate((cand[first:], cand[:first]))[:n]
    return order, int(order[-1]) + PAGE_SIZE


class ProbeTracker(Tracker):
    """Page-out-and-watch-refaults (see module docs).

    ``rate_mib`` / ``bucket``: the budget (a given bucket wins: share one per task);
    ``cooldown``: seconds a page found hot is left alone (doubling, at most 64 times that);
    ``jitter``: each cool-down is that length times a uniform factor in ``1 -/+ jitter``, drawn
    from a generator seeded with ``seed`` (``None``: fresh entropy), so a run is repeatable;
    ``rehot_share``: at most this share of a pass's budget re-probes pages found hot before,
    unless pages never found hot cannot use it.
    ``pageout(pidfd, addrs) -> bytes``, ``page_states(pid, vmas) -> (present, swapped)``,
    ``meminfo() -> dict`` and ``clock`` are injectable for tests; the defaults are the real
    kernel under ``proc_root``.
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
        # VMAs or (start, end) pairs, as pagemap.page_states takes them
        page_states: Callable[[int, Sequence[object]], tuple[np.ndarray, np.ndarray]] | None = None,
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
        self._states = page_states or (lambda p, vmas: pagemap.page_states(p, vmas, self.proc_root))
        self._meminfo = meminfo or (lambda: read_meminfo(self.proc_root))
        self._limit: int | None = None
        self._swap_total = 0
        self.cursor = 0  # round robin through the pages never found hot
        self.rehot_cursor = 0  # ... and through those found hot before
        # per-page state, sorted by address
        self.addr = np.zeros(0, dtype=np.uint64)
        self.state = np.zeros(0, dtype=np.uint8)
        self.level = np.zeros(0, dtype=np.uint8)  # times found hot
        self.until = np.zeros(0, dtype=np.int32)  # end of cool-down (seconds since _epoch)
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

    # -- one pass ------------------------------------------------------------------------------

    def scan_pass(self, vmas: Sequence[VmaRange]) -> PassRefs:
        now = self._now()
        info = self._meminfo()
        present, swapped = self._states(self.pid, vmas)
        present = sorted_set(present)
        swapped = sorted_set(swapped)
        # A swap area switched off reads its pages back in: those returns say nothing about
        # accesses, so after a drop in SwapTotal returning pages are forgotten, not made hot.
        swap_total = info.get("SwapTotal", 0)
        swapoff = swap_total < self._swap_total
        self._swap_total = swap_total
        idle_now = self._judge(now, present, swapped, swapoff=swapoff)
        probed = self._probe(now, present, info)
        keep = present[~member(probed, present)]
        addr = np.concatenate((keep, idle_now))
        weight = np.concatenate(
            (np.ones(keep.size, dtype=np.uint8), np.zeros(idle_now.size, dtype=np.uint8))
        )
        return PassRefs(addr, np.full(addr.size, PTE, np.uint8), weight)

    def _now(self) -> int:
        """Whole seconds since the tracker was opened (cool-downs fit in 32 bits)."""
        return int(self.clock() - self._epoch)

    def _judge(
        self, now: int, present: np.ndarray, swapped: np.ndarray, *, swapoff: bool = False
    ) -> np.ndarray:
        """Update the state from this pass's present/swapped pages; returns the addresses
        judged idle by this pass (probed last pass and still in swap)."""
        if self.addr.size == 0:
            return np.zeros(0, dtype=np.uint64)
        is_present = member(present, self.addr)
        is_swapped = member(swapped, self.addr)
        st = self.state
        flight = st == IN_FLIGHT
        idle_now = flight & is_swapped & ~is_present
        # came back after the probe, or a later refault of an idle page: hot, on a cool-down
        # that doubles each time the page is found hot again
        back = (flight | (st == IDLE)) & is_present
        if swapoff:
            is_present = is_present & ~back  # forget them (dropped below): unknown again
            is_swapped = is_swapped & ~back
            back[:] = False
        self.returned_pages += int(back.sum())
        self.idle_pages += int(idle_now.sum())
        lvl = np.minimum(self.level[back].astype(np.int64), COOLDOWN_DOUBLINGS)
        # Pages found hot in the same sweep would otherwise all come due in the same second
        # and the budget would page the whole hot set out again at once (a burst of major
        # faults); a per-page random stretch spreads their expiries over the cool-down.
        stretch = self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter, lvl.size)
        self.until[back] = now + (self.cooldown * np.exp2(lvl) * stretch).astype(np.int64)
        self.level[back] = np.minimum(self.level[back].astype(np.int64) + 1, 255)
        st[back] = HOT
        st[idle_now] = IDLE
        judged = self.addr[idle_now]
        # neither present nor in swap: unmapped, or its VMA is no longer given -- forget it
        alive = is_present | is_swapped
        if not alive.all():
            self.addr, self.state = self.addr[alive], self.state[alive]
            self.level, self.until = self.level[alive], self.until[alive]
        return judged

    @staticmethod
    def _swap_room(info: dict[str, int]) -> int:
        total = info.get("SwapTotal", 0) * 1024
        free = info.get("SwapFree", 0) * 1024
        reserve = max(SWAP_RESERVE_MIN, int(total * SWAP_RESERVE_FRACTION))
        return max(0, free - reserve)

    def _probe(self, now: int, present: np.ndarray, info: dict[str, int]) -> np.ndarray:
        """Page out a budgeted slice of the probe-able present pages from the cursor on;
        returns the addresses that actually left (sorted)."""
        empty = np.zeros(0, dtype=np.uint64)
        cap = self._limit
        if present.size == 0 or (cap is not None and cap < PAGE_SIZE):
            return empty
        # not probe-able: pages on cool-down (HOT or STUCK until later)
        idx, known = lookup(self.addr, present)
        resting = np.zeros(present.size, dtype=bool)
        was_hot = np.zeros(present.size, dtype=bool)
        if known.any():
            k = idx[known]
            resting[known] = (self.until[k] > now) & (
                (self.state[k] == HOT) | (self.state[k] == STUCK)
            )
            was_hot[known] = self.level[k] > 0
        cand = present[~resting]
        if cand.size == 0:
            return empty
        want = cand.size * PAGE_SIZE
        if cap is not None:
            want = min(want, cap)
        want = min(want, self._swap_room(info))
        if want < PAGE_SIZE:
            return empty
        granted = self.bucket.take(want)
        n = granted // PAGE_SIZE
        if n == 0:
            self.bucket.give_back(granted)
            return empty
        # Pages found hot before are likely still hot: paging many of them out at once is a
        # burst of major faults, so they get at most a share of the budget, unless nothing
        # else wants it (and pages never found hot get the share re-probing cannot use).
        rehot = was_hot[~resting]
        fresh, again = cand[~rehot], cand[rehot]
        n_again = min(again.size, max(int(n * self.rehot_share), n - fresh.size))
        n_fresh = min(fresh.size, n - n_again)
        pick_fresh, self.cursor = _round_robin(fresh, self.cursor, n_fresh)
        pick_again, self.rehot_cursor = _round_robin(again, self.rehot_cursor, n_again)
        chosen = np.sort(np.concatenate((pick_fresh, pick_again)))
        n = chosen.size
        self._pageout(self._pidfd, chosen)
        # verify: only what left RAM is in flight
        runs = merge_ranges(chosen, PAGE_SIZE)
        still, _ = self._states(self.pid, [(int(a), int(a + n)) for a, n in runs])
        stayed = member(sorted_set(still), chosen)
        left = chosen[~stayed]
        stuck = chosen[stayed]
        self.bucket.give_back(int(stuck.size) * PAGE_SIZE + granted - n * PAGE_SIZE)
        self.probed_pages += int(left.size)
        self.stuck_pages += int(stuck.size)
        self._set(left, IN_FLIGHT, now)
        self._set(stuck, STUCK, now + int(self.cooldown))
        return left

    def _set(self, addrs: np.ndarray, state: int, until: int) -> None:
        """Put ``addrs`` (sorted, unique) into ``state``, inserting unknown pages."""
        if addrs.size == 0:
            return
        pos, hit = lookup(self.addr, addrs)
        if hit.any():
            pos = pos[hit]
            self.state[pos] = state
            if state == STUCK:
                self.until[pos] = until
        new = addrs[~hit]
        if new.size:
            addr = np.concatenate((self.addr, new))
            order = np.argsort(addr, kind="stable")
            self.addr = addr[order]
            self.state = np.concatenate((self.state, np.full(new.size, state, np.uint8)))[order]
            self.level = np.concatenate((self.level, np.zeros(new.size, np.uint8)))[order]
            self.until = np.concatenate((self.until, np.full(new.size, until, dtype=np.int32)))[
                order
            ]

    def close(self) -> None:
        if self._own_fd and self._pidfd >= 0:
            os.close(self._pidfd)
        self._pidfd = -1
