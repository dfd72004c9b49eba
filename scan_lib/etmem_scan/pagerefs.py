"""Page references as numpy arrays: per-pass samples, accumulated counts, cold lists."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Page types, as the C ``enum page_type``.
PTE, PMD, PUD = 0, 1, 2


@dataclass(frozen=True, slots=True)
class PassRefs:
    """One scan pass: ``addr`` uint64, ``type`` uint8 (0 PTE / 1 PMD / 2 PUD), ``weight`` uint8."""

    addr: np.ndarray
    type: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.addr)


@dataclass(frozen=True, slots=True)
class PageRefs:
    """Accumulated references, sorted by ``addr`` (unique): ``addr`` uint64, ``type`` uint8,
    ``count`` int32 (sum of the pass weights)."""

    addr: np.ndarray
    type: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return len(self.addr)
