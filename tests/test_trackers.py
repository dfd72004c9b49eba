"""Trackers: refs on a live child; page_idle on fake /proc and /sys trees (damon: test_damon.py)."""

from __future__ import annotations

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
