"""The reclaim controller, as the original's documentation describes it (pure; no I/O).

Per cgroup and round: if the memory pressure seen (``max(some avg10, some avg60)``) is at or
above ``pressure``, nothing is reclaimed, and after every second such round in a row the
cgroup's rate drops by :data:`RATE_STEP` (not below ``reclaim_rate_min``). Otherwise the
controller reclaims ``(usage - floor) * rate`` bytes, at most ``reclaim_max_bytes``, in whole
pages; after every fifth fully successful round in a row the rate rises by :data:`RATE_STEP`
(not above ``reclaim_rate_max``). Unlike the original, the size uses this adaptive rate and the
real byte counts (etmemd_psi_fb.c compared the pointers, not the values).
"""

from __future__ import annotations

from dataclasses import dataclass

from etmem_sdk.cgroup import MemoryState, Pressure

from .config import PsiTaskConfig

#: How much the adaptive rate moves at a time.
RATE_STEP = 0.01
#: Rounds in a row under high pressure before the rate drops.
HIGH_ROUNDS_TO_SLOW = 2
#: Fully successful reclaim rounds in a row before the rate rises.
GOOD_ROUNDS_TO_SPEED = 5
PAGE = 4096


def pressure_seen(some: Pressure) -> float:
    """The pressure the controller compares with ``pressure``: the larger of the 10 s and 60 s
    averages, so a short calm after a stall does not start reclaim again at once."""
    return max(some.avg10, some.avg60)


def reclaim_floor(mem: MemoryState, cfg: PsiTaskConfig) -> int:
    """Bytes the cgroup keeps whatever the pressure: the largest of ``limit_min_bytes`` plus
    what cannot be reclaimed (not on an LRU, or anonymous with no swap to go to),
    ``memory.min``, ``memory.low`` and ``limit_min_ratio`` of the limit (none when unlimited)."""
    reclaimable = mem.file_lru + min(mem.anon_lru, mem.swap_room)
    unreclaimable = max(0, mem.usage - reclaimable)
    by_limit = int(mem.limit * cfg.limit_min_ratio) if mem.limit is not None else 0
    return max(cfg.limit_min_bytes + unreclaimable, mem.min, mem.low, by_limit)


def reclaim_size(mem: MemoryState, floor: int, rate: float, cfg: PsiTaskConfig) -> int:
    """Bytes to ask of ``memory.reclaim`` this round: the rate's share of what lies above the
    floor, at most ``reclaim_max_bytes``, rounded down to whole pages (0: nothing to do)."""
    above = mem.usage - floor
    if above <= 0:
        return 0
    size = min(int(above * rate), cfg.reclaim_max_bytes)
    return size // PAGE * PAGE


@dataclass
class CgroupControl:
    """One cgroup's controller state and counters (kept across rounds)."""

    rate: float
    inode: int = 0
    high_rounds: int = 0
    good_rounds: int = 0
    rounds: int = 0
    paused_rounds: int = 0
    reclaim_rounds: int = 0
    bytes_reclaimed: int = 0
    pressure: float = 0.0
    usage: int = 0
    floor: int = 0
    last_request: int = 0
    state: str = "new"
    errors: int = 0
    last_error: str = ""

    def pressure_high(self, cfg: PsiTaskConfig) -> None:
        """A round whose pressure was at or above the threshold: no reclaim, maybe slow down."""
        self.paused_rounds += 1
        self.good_rounds = 0
        self.high_rounds += 1
        if self.high_rounds >= HIGH_ROUNDS_TO_SLOW:
            self.high_rounds = 0
            self.rate = max(cfg.reclaim_rate_min, round(self.rate - RATE_STEP, 6))
        self.state = "pressure high"

    def reclaimed(self, cfg: PsiTaskConfig, freed: int, complete: bool) -> None:
        """A reclaim round: ``freed`` bytes left the cgroup; ``complete`` if the kernel found
        all that was asked (only those rounds speed the rate up)."""
        self.reclaim_rounds += 1
        self.bytes_reclaimed += freed
        self.high_rounds = 0
        self.good_rounds = self.good_rounds + 1 if complete else 0
        if self.good_rounds >= GOOD_ROUNDS_TO_SPEED:
            self.good_rounds = 0
            self.rate = min(cfg.reclaim_rate_max, round(self.rate + RATE_STEP, 6))
        self.state = "reclaiming" if complete else "reclaim short"

    def as_stats(self) -> dict[str, object]:
        """JSON-able view for ``task.stats`` and showstats."""
        return {
            "pressure": self.pressure,
            "rate": self.rate,
            "usage": self.usage,
            "floor": self.floor,
            "last_request": self.last_request,
            "bytes_reclaimed": self.bytes_reclaimed,
            "rounds": self.rounds,
            "reclaim_rounds": self.reclaim_rounds,
            "paused_rounds": self.paused_rounds,
            "state": self.state,
            "errors": self.errors,
            "last_error": self.last_error,
        }
