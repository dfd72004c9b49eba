"""Sets of page addresses as sorted, duplicate-free uint64 arrays.

``np.unique`` is the obvious tool but the wrong one here: since numpy 2.3 it goes through a hash
set first (tens of bytes per element: hundreds of MiB for a 64 GiB process) and then sorts what
it found, while the addresses the kernel hands us are almost always ascending already.  These
helpers check that in one pass and only sort when they must.
"""

from __future__ import annotations

import numpy as np


def sorted_set(addrs: np.ndarray) -> np.ndarray:
    """``addrs`` as an ascending uint64 array without repeats (a view when it already is one)."""
    a = np.asarray(addrs, dtype=np.uint64).ravel()
    if a.size < 2:
        return a
    if not (a[1:] >= a[:-1]).all():
        a = np.sort(a)
    new = a[1:] != a[:-1]
    if new.all():
        return a
    return a[np.concatenate(([True], new))]


def lookup(sorted_addrs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(idx, hit)``: where each of ``values`` sits in ``sorted_addrs`` (a :func:`sorted_set`)
    and whether it is there (``idx`` is only meaningful where ``hit``)."""
    if sorted_addrs.size == 0 or values.size == 0:
        return np.zeros(values.size, dtype=np.intp), np.zeros(values.size, dtype=bool)
    idx = np.searchsorted(sorted_addrs, values)
    idx[idx == sorted_addrs.size] = 0
    return idx, sorted_addrs[idx] == values


def member(sorted_addrs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Boolean mask: which of ``values`` are in ``sorted_addrs`` (a :func:`sorted_set`)."""
    return lookup(sorted_addrs, values)[1]
