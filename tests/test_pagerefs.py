"""Page arrays: accumulation, classification and text, checked against plain-Python references."""

from __future__ import annotations

import numpy as np
import pytest
from etmem_scan import pagerefs as pr
from etmem_scan.pagerefs import PageRefs, PassRefs


def P(addr, typ, weight) -> PassRefs:
    return PassRefs(np.array(addr, np.uint64), np.array(typ, np.uint8), np.array(weight, np.uint8))


def reference_accumulate(passes: list[PassRefs]) -> list[tuple[int, int, int]]:
    acc: dict[int, list[int]] = {}
    for p in passes:
        for a, t, w in zip(p.addr.tolist(), p.type.tolist(), p.weight.tolist(), strict=True):
            if a in acc:
                acc[a][0] += w
            else:
                acc[a] = [w, t]
    return sorted((a, c, t) for a, (c, t) in acc.items())


def rows(r: PageRefs) -> list[tuple[int, int, int]]:
    return list(zip(r.addr.tolist(), r.count.tolist(), r.type.tolist(), strict=True))


def test_accumulate_adds_counts_and_keeps_first_type() -> None:
    p1 = P([0x1000, 0x2000, 0x200000], [0, 0, 1], [1, 0, 3])
    p2 = P([0x200000, 0x1000, 0x3000], [0, 0, 0], [1, 1, 1])  # unsorted; 0x200000 now a PTE
    r = pr.accumulate([p1, p2])
    assert rows(r) == [(0x1000, 2, 0), (0x2000, 0, 0), (0x3000, 1, 0), (0x200000, 4, 1)]
    assert r.addr.dtype == np.uint64 and r.type.dtype == np.uint8 and r.count.dtype == np.uint16


def test_duplicates_inside_one_pass_fold() -> None:
    r = pr.accumulate([P([0x5000, 0x4000, 0x5000], [1, 0, 0], [0, 1, 1])])
    assert rows(r) == [(0x4000, 1, 0), (0x5000, 1, 1)]


def test_accumulate_random_against_reference() -> None:
    rng = np.random.default_rng(7)
    passes = []
    for _ in range(4):
        n = int(rng.integers(0, 400))
        addr = rng.integers(0, 600, n).astype(np.uint64) * np.uint64(4096)
        if rng.random() < 0.5:
            addr = np.unique(addr)
        passes.append(P(addr, rng.integers(0, 3, len(addr)), rng.choice([0, 1, 3], len(addr))))
    assert rows(pr.accumulate(passes)) == reference_accumulate(passes)


def test_same_pages_every_pass() -> None:
    a = np.arange(10, dtype=np.uint64) * np.uint64(4096)
    r = pr.accumulate([P(a, [0] * 10, [1] * 10)] * 3)
    assert r.count.tolist() == [3] * 10


def test_empty_passes() -> None:
    assert len(pr.accumulate([])) == 0
    assert len(pr.accumulate([PassRefs.empty(), PassRefs.empty()])) == 0
    r = pr.accumulate([PassRefs.empty(), P([0x1000], [0], [1]), PassRefs.empty()])
    assert rows(r) == [(0x1000, 1, 0)]


def test_cold_mask() -> None:
    r = pr.accumulate([P([0x1000, 0x2000, 0x3000], [0, 0, 0], [0, 1, 3])])
    assert pr.cold_mask(r, 2).tolist() == [True, True, False]
    assert pr.cold_mask(r, 0).tolist() == [False, False, False]  # T=0: nothing is cold


def test_dram_percent_target() -> None:
    # keep = (1000 + 200) / 100 * 50 = 600 (division first); (1000 - 600) kB / 4 kB = 100 pages
    assert pr.dram_percent_target(1000, 200, 50, 4096) == 100
    # (1099 + 0) / 100 = 10 -> keep 500, not 549.5
    assert pr.dram_percent_target(1099, 0, 50, 4096) == (1099 - 500) * 1024 // 4096
    assert pr.dram_percent_target(100, 900, 50, 4096) == 0  # keep > VmRSS


def test_dram_percent_mask_order() -> None:
    # counts by address: 0x1 ->0, 0x2 ->1, 0x3 ->0, 0x4 ->2, 0x5 ->1
    r = PageRefs(
        np.array([0x1000, 0x2000, 0x3000, 0x4000, 0x5000], np.uint64),
        np.zeros(5, np.uint8),
        np.array([0, 1, 0, 2, 1], np.int32),
    )
    # walk: count 0 (0x3000, 0x1000), then count 1 (0x5000, 0x2000); count 2 is never cold at T=2
    order = [0x3000, 0x1000, 0x5000, 0x2000]
    for target in range(0, 6):
        m = pr.dram_percent_mask(r, 2, target)
        assert sorted(r.addr[m].tolist()) == sorted(order[:target])
    assert pr.dram_percent_mask(r, 0, 5).sum() == 0


def test_hex_digits() -> None:
    a = np.array([0, 1, 15, 16, 255, 256, 0x7F0000000000, 2**64 - 1], np.uint64)
    assert pr.hex_digits(a).tolist() == [len(f"{x:x}") for x in a.tolist()]


@pytest.mark.parametrize("seed", range(3))
def test_format_cold_matches_printf(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 65, 3000)
    a = np.array([int(rng.integers(0, 2**63)) >> (63 - min(b, 63)) for b in bits], np.uint64)
    a[:5] = [0, 1, 2**64 - 1, 0x7F0000000000, 0x400000]
    want = "".join(f"0x{x:x}\n" for x in sorted(a.tolist(), reverse=True)).encode()
    assert pr.format_cold(a) == want
    assert pr.format_cold(a, chunk=17) == want  # chunk boundaries do not matter


def test_format_cold_orders() -> None:
    a = np.arange(5, dtype=np.uint64) * np.uint64(4096) + np.uint64(0x7F0000000000)
    want = "".join(f"0x{x:x}\n" for x in reversed(a.tolist())).encode()
    assert pr.format_cold(a) == want  # ascending in
    assert pr.format_cold(a[::-1]) == want  # descending in
    assert pr.format_cold(np.empty(0, np.uint64)) == b""


def test_format_refs() -> None:
    r = PageRefs(
        np.array([0, 0x10, 0x7F0000001000, 2**64 - 1], np.uint64),
        np.array([0, 1, 2, 0], np.uint8),
        np.array([0, 12, 360, 2**31 - 1], np.int32),
    )
    cols = zip(r.addr.tolist(), r.count.tolist(), r.type.tolist(), strict=True)
    want = "".join(f"0x{a:x} {c} {t}\n" for a, c, t in cols)
    assert pr.format_refs(r).decode() == want
    assert pr.format_refs(PageRefs.empty()) == b""


def test_format_refs_one_digit_counts_match_printf() -> None:
    rng = np.random.default_rng(5)
    a = np.unique(
        rng.integers(0, 2**63, 500, dtype=np.uint64) >> rng.integers(0, 63, 500).astype(np.uint64)
    )
    r = PageRefs(
        a, rng.integers(0, 3, len(a)).astype(np.uint8), rng.integers(0, 10, len(a)).astype(np.int32)
    )
    cols = zip(r.addr.tolist(), r.count.tolist(), r.type.tolist(), strict=True)
    assert pr.format_refs(r).decode() == "".join(f"0x{x:x} {c} {t}\n" for x, c, t in cols)


# --- the compact representation: runs of pages + a small counter per page -----------------------


def test_runs_round_trip_addresses_and_types() -> None:
    rng = np.random.default_rng(3)
    pte = np.unique(rng.integers(0, 5000, 1500)).astype(np.uint64) * np.uint64(4096)
    pmd = np.uint64(1 << 30) + np.arange(0, 40, 3, dtype=np.uint64) * np.uint64(2 << 20)
    addr = np.r_[pte, pmd]
    ptype = np.r_[np.zeros(len(pte), np.uint8), np.ones(len(pmd), np.uint8)]
    runs = pr.PageRuns.from_addresses(addr, ptype, 4096)
    assert len(runs) == len(addr)
    assert len(runs.start) < len(addr)  # neighbours share a run
    assert runs.addresses().tolist() == addr.tolist()
    assert runs.types().tolist() == ptype.tolist()
    assert runs.addresses(100, 250).tolist() == addr[100:250].tolist()
    chunks = list(runs.chunks(97, descending=True))
    assert np.concatenate([a for a, _ in chunks]).tolist() == addr[::-1].tolist()
    assert np.concatenate([t for _, t in chunks]).tolist() == ptype[::-1].tolist()


def test_contiguous_memory_is_one_run_and_two_bytes_a_page() -> None:
    n = 100_000
    a = np.uint64(0x7F0000000000) + np.arange(n, dtype=np.uint64) * np.uint64(4096)
    r = pr.accumulate([P(a, [0] * n, [1] * n)] * 3)
    assert len(r.runs.start) == 1 and r.count.nbytes == 2 * n
    assert r.count.tolist() == [3] * n


def test_select_matches_the_mask() -> None:
    rng = np.random.default_rng(5)
    addr = np.unique(rng.integers(0, 3000, 2000)).astype(np.uint64) * np.uint64(4096)
    runs = pr.PageRuns.from_addresses(addr, np.zeros(len(addr), np.uint8), 4096)
    for _ in range(5):
        mask = rng.random(len(addr)) < rng.random()
        picked = runs.select(mask)
        assert picked.addresses().tolist() == addr[mask].tolist()
        assert (picked.npages > 0).all()
    assert len(runs.select(np.zeros(len(addr), bool))) == 0
    assert runs.select(np.ones(len(addr), bool)).addresses().tolist() == addr.tolist()
    with pytest.raises(ValueError, match="mask of 3 entries"):
        runs.select(np.ones(3, bool))


def test_cold_runs_are_the_cold_pages() -> None:
    a = np.arange(64, dtype=np.uint64) * np.uint64(4096)
    w1 = (np.arange(64) % 4 == 0).astype(np.uint8)
    w2 = (np.arange(64) % 8 == 0).astype(np.uint8) * 3
    r = pr.accumulate([P(a, [0] * 64, w1), P(a, [0] * 64, w2)])
    cold = pr.cold_runs(r, 2)
    assert cold.addresses().tolist() == r.addr[pr.cold_mask(r, 2)].tolist()


def test_counts_saturate_instead_of_wrapping() -> None:
    big = np.array([pr.COUNT_MAX - 1, pr.COUNT_MAX, 5], dtype=pr.COUNT_DTYPE)
    out = pr.add_saturating(big, np.array([3, 3, 3], np.uint8))
    assert out.tolist() == [pr.COUNT_MAX, pr.COUNT_MAX, 8] and out.dtype == pr.COUNT_DTYPE
    refs = PageRefs(np.array([0x1000], np.uint64), np.array([0], np.uint8), np.array([70000]))
    assert refs.count.tolist() == [pr.COUNT_MAX]  # a hot page never comes back as cold
    for _ in range(3):
        refs = pr.merge(refs, P([0x1000], [0], [3]))
    assert refs.count.tolist() == [pr.COUNT_MAX]
    # duplicate rows of one pass fold into one weight, capped at the weight's top
    p = P([0x2000] * 100, [0] * 100, [3] * 100)
    assert len(p) == 1 and p.weight.tolist() == [pr.WEIGHT_MAX]


def test_merge_of_different_page_sets_stays_run_level(monkeypatch) -> None:
    rng = np.random.default_rng(11)

    def no_page_level(*_a):
        raise AssertionError("pages of one size must merge as runs")

    monkeypatch.setattr(pr, "_merge_pages", no_page_level)
    passes = []
    for _ in range(4):
        lo, hi = sorted(rng.integers(0, 4000, 2))
        a = np.arange(lo, hi + 1, dtype=np.uint64)
        a = a[rng.random(len(a)) < 0.7] * np.uint64(4096)
        passes.append(P(a, [0] * len(a), rng.choice([0, 1, 3], len(a))))
    assert rows(pr.accumulate(passes)) == reference_accumulate(passes)


def test_merge_of_overlapping_page_sizes_is_exact() -> None:
    # a 2 MiB page seen first, then its 4 KiB pages (split between passes): page-level merge
    p1 = P([0x200000], [1], [1])
    p2 = P(np.arange(0x200000, 0x210000, 0x1000), [0] * 16, [1] * 16)
    assert rows(pr.accumulate([p1, p2])) == reference_accumulate([p1, p2])
    assert rows(pr.accumulate([p2, p1])) == reference_accumulate([p2, p1])


def test_merge_leaves_its_inputs_alone() -> None:
    a = np.arange(8, dtype=np.uint64) * np.uint64(4096)
    r1 = pr.accumulate([P(a, [0] * 8, [1] * 8)])
    r2 = pr.merge(r1, P(a, [0] * 8, [1] * 8))
    assert r1.count.tolist() == [1] * 8 and r2.count.tolist() == [2] * 8


def _random_runs(rng, n: int) -> pr.PageRuns:
    """Ascending pages of 4 KiB and 2 MiB, with gaps, as runs."""
    addr, types, at = [], [], 1 << 30
    for _ in range(n):
        t = int(rng.random() < 0.2)
        size = 4096 if t == 0 else 2 << 20
        at = -(-at // size) * size + size * int(rng.integers(0, 3))
        addr.append(at)
        types.append(t)
        at += size
    return pr.PageRuns.from_addresses(np.array(addr, np.uint64), np.array(types, np.uint8))


def test_index_of_counts_the_pages_below_each_address() -> None:
    runs = _random_runs(np.random.default_rng(3), 300)
    addrs = runs.addresses()
    probes = np.concatenate([addrs, addrs + np.uint64(1), addrs - np.uint64(1), [0, 2**63]])
    probes = probes.astype(np.uint64)
    assert runs.index_of(probes).tolist() == np.searchsorted(addrs, probes).tolist()
    assert pr.PageRuns.empty().index_of(np.array([5], np.uint64)).tolist() == [0]


@pytest.mark.parametrize("chunk", [1, 7, 1 << 16])
def test_carry_runs_matches_carry_by_address(chunk: int) -> None:
    from etmem_sdk import scan

    rng = np.random.default_rng(chunk)
    old, new = _random_runs(rng, 400), _random_runs(rng, 500)
    values = rng.integers(1, 200, len(old)).astype(np.uint8)
    want = scan.carry(old.addresses(), values, new.addresses(), fill=0)
    got = pr.carry_runs(old, values, new, chunk=chunk)
    assert got.dtype == np.uint8 and got.tolist() == want.tolist()
    assert pr.carry_runs(old, values, old) is values  # the same pages: nothing is built
    assert pr.carry_runs(pr.PageRuns.empty(), values[:0], new, fill=9).tolist() == [9] * len(new)
