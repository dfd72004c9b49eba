import numpy as np
import pytest
from etmem_scan.pagesets import lookup, member, sorted_set


@pytest.mark.parametrize(
    "addrs",
    [
        [],
        [0x1000],
        [0x1000, 0x2000, 0x3000],
        [0x3000, 0x1000, 0x2000],
        [0x1000, 0x1000, 0x2000, 0x2000, 0x2000],
        [0x5000, 0x1000, 0x5000, 0x0, 0x1000],
    ],
)
def test_sorted_set_matches_unique(addrs):
    a = np.array(addrs, dtype=np.uint64)
    got = sorted_set(a)
    assert got.dtype == np.uint64
    assert got.tolist() == sorted(set(addrs))


def test_sorted_set_keeps_an_ascending_array_as_it_is():
    a = np.arange(0, 1 << 24, 4096, dtype=np.uint64)
    assert np.shares_memory(sorted_set(a), a)


def test_sorted_set_on_random_pages():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 1 << 20, 200_000).astype(np.uint64) << np.uint64(12)
    assert np.array_equal(sorted_set(a), np.unique(a))


def test_member_and_lookup():
    s = sorted_set(np.array([0x3000, 0x1000], dtype=np.uint64))
    v = np.array([0x1000, 0x2000, 0x3000, 0x4000], dtype=np.uint64)
    assert member(s, v).tolist() == [True, False, True, False]
    idx, hit = lookup(s, v)
    assert idx[hit].tolist() == [0, 1]
    assert member(s[:0], v).tolist() == [False] * 4
