"""Trackers: refs on a live child; page_idle on fake /proc and /sys trees (damon: test_damon.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from etmem_scan.pagemap import PAGE_SIZE
from etmem_scan.procfs import read_vmas
from etmem_scan.tracker_interface import Tracker
from etmem_scan.trackers import (
    TRACKERS,
    PageIdleTracker,
    RefsTracker,
    TrackerUnavailable,
    make_tracker,
)
from etmem_sdk import TargetGone
from etmem_sdk.testing import spawn_workload

PID = 4242
PRESENT = 1 << 63


# ---------------------------------------------------------------- refs, for real


def _weights_of(refs, lo: int, hi: int) -> np.ndarray:
    m = (refs.addr >= lo) & (refs.addr < hi)
    return refs.weight[m]


def test_refs_finds_exactly_the_vma_the_workload_keeps_touching():
    with spawn_workload(hot_mib=4, cold_mib=8, period=0.02) as w:
        vmas = read_vmas(w.pid)
        with make_tracker("refs", w.pid) as t:
            assert isinstance(t, RefsTracker)
            first = t.scan_pass(vmas)  # since forever: the cold fill counts too
            assert _weights_of(first, *w.cold).all()
            time.sleep(0.2)
            refs = t.scan_pass(vmas)
        hot, cold = _weights_of(refs, *w.hot), _weights_of(refs, *w.cold)
        assert len(hot) == (w.hot[1] - w.hot[0]) // PAGE_SIZE
        assert len(cold) == (w.cold[1] - w.cold[0]) // PAGE_SIZE
        assert hot.all() and not cold.any()
        # the VMAs whose pages were accessed: the hot one, never the cold one
        touched = {(v.start, v.end) for v in vmas if _weights_of(refs, v.start, v.end).any()}
        assert w.hot in touched and w.cold not in touched
        assert refs.addr.dtype == np.uint64 and refs.type.dtype == np.uint8
        assert (refs.type == 0).all()


def test_refs_on_a_vanished_process_is_target_gone():
    with spawn_workload(hot_mib=1, cold_mib=1) as w:
        vmas = read_vmas(w.pid)
        t = RefsTracker(w.pid)
        w.kill()
        with pytest.raises(TargetGone):
            t.scan_pass(vmas)


# ---------------------------------------------------------------- fake /proc/PID/pagemap


def fake_pagemap(root: Path, pages: dict[int, int]) -> Path:
    """A sparse pagemap file: ``pages`` maps a virtual address to its PFN (present)."""
    d = root / "proc" / str(PID)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "pagemap", "wb") as f:
        for addr, pfn in pages.items():
            f.seek(addr // PAGE_SIZE * 8)
            f.write(np.array([PRESENT | pfn], dtype=np.uint64).tobytes())
    (d / "stat").write_text(f"{PID} (fake) S\n")
    return root / "proc"


class V:
    def __init__(self, start: int, end: int):
        self.start, self.end = start, end


BASE = 0x7F0000000000


# ---------------------------------------------------------------- page_idle, fake


def fake_bitmap(root: Path, nwords: int = 4096) -> Path:
    p = root / "sys/kernel/mm/page_idle/bitmap"
    p.parent.mkdir(parents=True)
    p.write_bytes(bytes(nwords * 8))
    return root / "sys"


def bitmap_bits(sys_root: Path) -> np.ndarray:
    raw = np.frombuffer((sys_root / "kernel/mm/page_idle/bitmap").read_bytes(), np.uint64)
    return np.unpackbits(raw.view(np.uint8), bitorder="little")


def test_page_idle_reports_cleared_bits_as_accessed_and_marks_pages_idle(tmp_path):
    # 8 resident pages spread over PFNs in different bitmap words (and a far one: 2 reads)
    pfns = [5, 6, 64, 65, 200, 4000 * 64 + 3, 70, 71]
    pages = {BASE + i * PAGE_SIZE: pfn for i, pfn in enumerate(pfns)}
    proc = fake_pagemap(tmp_path, pages)
    sys_root = fake_bitmap(tmp_path)
    vmas = [V(BASE, BASE + 6 * PAGE_SIZE), V(BASE + 6 * PAGE_SIZE, BASE + 16 * PAGE_SIZE)]
    with make_tracker("page_idle", PID, proc_root=proc, sys_root=sys_root) as t:
        assert isinstance(t, PageIdleTracker)
        first = t.scan_pass(vmas)
        assert first.addr.tolist() == sorted(pages)  # holes at +8..+16 are not reported
        assert first.weight.tolist() == [1] * 8  # nothing was marked idle yet
        bits = bitmap_bits(sys_root)
        assert sorted(np.flatnonzero(bits).tolist()) == sorted(pfns)
        # the "kernel" clears the idle bit of pages 1 and 5 (accessed)
        for pfn in (pfns[1], pfns[5]):
            bits[pfn] = 0
        (sys_root / "kernel/mm/page_idle/bitmap").write_bytes(
            np.packbits(bits, bitorder="little").tobytes()
        )
        second = t.scan_pass(vmas)
        assert second.weight.tolist() == [0, 1, 0, 0, 0, 1, 0, 0]
        assert (second.type == 0).all()


class KernelBitmapTracker(PageIdleTracker):
    """Writes the fake bitmap as the kernel treats the real one: 1 bits set, 0 bits ignored
    (a plain file would lose the bits of an earlier block sharing a word)."""

    def _set_idle(self, words: memoryview, offset: int) -> None:
        old = np.frombuffer(os.pread(self._bitmap, len(words), offset), np.uint64)
        super()._set_idle(memoryview(np.frombuffer(words, np.uint64) | old), offset)


def test_page_idle_pass_is_exact_across_blocks_and_overlapping_vmas(tmp_path):
    # 150,000 pages (three pagemap blocks of 65,536) with holes, PFNs shuffled over the bitmap
    rng = np.random.default_rng(7)
    n = 150_000
    resident = rng.random(n) < 0.7
    resident[[0, 65_535, 65_536, 131_071, 131_072, n - 1]] = True  # pages at block edges
    vaddr = BASE + np.flatnonzero(resident).astype(np.int64) * PAGE_SIZE
    pfns = rng.permutation(4096 * 64 - 1)[: vaddr.size] + 1
    proc = fake_pagemap(tmp_path, dict(zip(vaddr.tolist(), pfns.tolist(), strict=True)))
    sys_root = fake_bitmap(tmp_path)
    end = BASE + n * PAGE_SIZE
    # a VMA split since it was read: the two parts overlap, every page is still reported once
    vmas = [V(BASE + 1000 * PAGE_SIZE, end), V(BASE, BASE + 2000 * PAGE_SIZE)]
    with KernelBitmapTracker(PID, proc_root=proc, sys_root=sys_root) as t:
        t.scan_pass(vmas)
        bits = bitmap_bits(sys_root)
        assert bits.sum() == vaddr.size and bits[pfns].all()
        accessed = rng.random(vaddr.size) < 0.25
        bits[pfns[accessed]] = 0
        (sys_root / "kernel/mm/page_idle/bitmap").write_bytes(
            np.packbits(bits, bitorder="little").tobytes()
        )
        second = t.scan_pass(vmas)
    assert second.addr.tolist() == vaddr.tolist()
    assert second.weight.tolist() == accessed.astype(np.uint8).tolist()
    assert len(second.runs.start) == np.count_nonzero(np.diff(np.r_[0, resident]) == 1)
    assert bitmap_bits(sys_root)[pfns].all()  # all idle again


def test_page_idle_missing_and_hidden_pfns(tmp_path):
    with pytest.raises(TrackerUnavailable, match="CONFIG_IDLE_PAGE_TRACKING"):
        PageIdleTracker(PID, proc_root=tmp_path, sys_root=tmp_path)
    proc = fake_pagemap(tmp_path, {BASE: 0})  # present, PFN hidden
    with PageIdleTracker(PID, proc_root=proc, sys_root=fake_bitmap(tmp_path)) as t:
        with pytest.raises(TrackerUnavailable, match="CAP_SYS_ADMIN"):
            t.scan_pass([V(BASE, BASE + PAGE_SIZE)])


def test_page_idle_is_unavailable_on_this_machine():
    if Path("/sys/kernel/mm/page_idle/bitmap").exists():
        pytest.skip("this kernel has idle page tracking")
    with pytest.raises(TrackerUnavailable):
        make_tracker("page_idle", 1)


# ---------------------------------------------------------------- make_tracker


def test_make_tracker_knows_every_name(tmp_path):
    assert set(TRACKERS) == {"idle_pages", "page_idle", "refs", "damon", "probe"}
    with pytest.raises(ValueError, match="unknown tracker"):
        make_tracker("crystal_ball", 1)
    t = make_tracker("refs", 1, proc_root=tmp_path)
    assert isinstance(t, Tracker) and t.name == "refs"


def test_make_tracker_builds_the_idle_pages_tracker(tmp_path):
    from etmem_scan.idle_pages import IdlePagesTracker

    t = make_tracker("idle_pages", PID, proc_root=tmp_path, sys_root=tmp_path, flags=0x1000)
    assert isinstance(t, IdlePagesTracker) and t.flags == 0x1000


# ---------------------------------------------------------------- refs: a pass as runs


def test_pages_and_weights_builds_runs_equal_to_page_rows(tmp_path):
    from etmem_scan import trackers
    from etmem_scan.pagemap import present_pages, present_runs
    from etmem_scan.pagerefs import PassRefs

    pages = [0, 1, 2, 5, 6, 40, 41, 42, 100, 70000]  # 70000: past one 64 Ki read
    proc = fake_pagemap(tmp_path, {BASE + i * PAGE_SIZE: 1000 + i for i in pages})
    # given out of order, one empty, two touching
    P = PAGE_SIZE
    vmas = [V(BASE + 40 * P, BASE + 80000 * P), V(BASE, BASE + 6 * P),
            V(BASE + 6 * P, BASE + 40 * P), V(BASE - P, BASE - P)]  # fmt: skip
    runs = present_runs(PID, vmas, proc)
    assert [r.tolist() for r in runs[1:3]] == [
        [[BASE, BASE + 3 * PAGE_SIZE], [BASE + 5 * PAGE_SIZE, BASE + 6 * PAGE_SIZE]],
        [[BASE + 6 * PAGE_SIZE, BASE + 7 * PAGE_SIZE]],
    ]
    assert runs[3].shape == (0, 2)
    weight = np.array([1, 0, 1, 1], np.uint8)
    got = trackers._pages_and_weights(PID, vmas, weight, proc)
    rows = [present_pages(PID, [v], proc) for v in vmas]
    want = PassRefs(
        np.concatenate(rows),
        np.zeros(sum(map(len, rows)), np.uint8),
        np.repeat(weight, [len(r) for r in rows]),
    )
    assert got.addr.tolist() == want.addr.tolist() == [BASE + i * PAGE_SIZE for i in pages]
    assert got.weight.tolist() == want.weight.tolist()
    assert len(got.runs.start) == 5  # 0-2, 5-6 (across two VMAs: one run), 40-42, 100, 70000
