"""slide end to end with tracker=damon on a workload whose hot and cold pages share ONE mapping.

Hot and cold 2 MiB runs alternate inside a single anonymous VMA, so a per-mapping tracker
(``refs``) sees it all as hot; DAMON's regions separate runs this big.  The cold runs must leave
RAM (zram swap), the hot ones stay.  ``tracker=damon`` is forced by the task key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from etmem_scan import pagemap
from etmemd_proc import EtmemdProc, wait_for
from test_slide_e2e import showstats, slide_config

WORKLOAD = Path(__file__).with_name("interleaved_workload.py")
TOTAL_MIB, RUN_KIB = 64, 2048  # 16 hot and 16 cold runs of 2 MiB, alternating
PAGE = os.sysconf("SC_PAGE_SIZE")
DEADLINE = 120.0


@pytest.fixture
def interleaved(zram_swap) -> Iterator[tuple[int, list, list]]:
    """The workload: (pid, hot runs, cold runs) as address ranges; killed before swapoff."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD), str(TOTAL_MIB), str(RUN_KIB), "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        runs = [(lo, lo + info["run"]) for lo in range(info["start"], info["end"], info["run"])]
        yield proc.pid, runs[0::2], runs[1::2]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def resident(pid: int, ranges: list) -> float:
    pages = sum((hi - lo) // PAGE for lo, hi in ranges)
    return len(pagemap.present_pages(pid, ranges)) / pages


def test_cold_runs_inside_one_mapping_leave_ram_and_hot_runs_stay(interleaved, tmp_path):
    pid, hot, cold = interleaved
    assert resident(pid, cold) == 1.0 and resident(pid, hot) == 1.0
    d = EtmemdProc(tmp_path)
    try:
        cfg = slide_config("damon", pid, task_keys="tracker=damon\n")
        # three passes a cycle; cold = seen in fewer than two of them
        cfg = cfg.replace("loop=1\n", "loop=3\n").replace("T=1\n", "T=2\n")
        d.add("damon", cfg)
        d.etmem("project", "start", "-n", "damon")
        ok = wait_for(lambda: resident(pid, cold) <= 0.2, DEADLINE, step=1)
        assert ok, f"cold runs {resident(pid, cold):.0%} resident\n{d.logtext()}"
        assert resident(pid, hot) >= 0.95, f"hot runs {resident(pid, hot):.0%} resident"
        stats = showstats(d, "damon")
        cold_kb = len(cold) * RUN_KIB
        # hot pages written out and faulted back would show up here
        assert stats["swapped_kb"] <= cold_kb * 1.25, stats
        assert stats["errors"] == 0, d.logtext()
        doc = json.loads(d.etmem("project", "show", "-n", "damon", "--json").stdout)
        assert doc[0]["engines"][0]["tasks"][0]["stats"]["tracker"] == "damon"
        d.etmem("project", "stop", "-n", "damon")
    finally:
        d.stop()


# -- every fourth page hot, the test bed's DEFAULT tracker (issue 12's interleave target) -------

PAGE_MIB = 16  # 1024 hot and 3072 cold pages in one VMA


@pytest.fixture
def page_interleaved(zram_swap) -> Iterator[tuple[int, list, list]]:
    """One mapping whose every fourth page is written every 50 ms: (pid, hot, cold) page ranges."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD), str(PAGE_MIB), str(PAGE // 1024), "4"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        pages = [(lo, lo + PAGE) for lo in range(info["start"], info["end"], PAGE)]
        yield proc.pid, pages[0::4], [p for i, p in enumerate(pages) if i % 4]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_default_tracker_splits_a_page_interleave_in_three_cycles(page_interleaved, tmp_path):
    from etmem_sdk import scan

    pid, hot, cold = page_interleaved
    # DAMON is usable here, but its regions cannot split a 1-in-4 page interleave: with swap on
    # the default for swap is the page-exact probe (docs/trackers.md "Default for swap")
    assert scan.choose_tracker() == "probe"
    d = EtmemdProc(tmp_path)
    try:
        d.add("pages", slide_config("pages", pid))
        d.etmem("project", "start", "-n", "pages")
        # every poll runs the etmem client, seconds of CPU under TCG that etmemd then lacks
        assert wait_for(lambda: showstats(d, "pages")["cycles"] >= 3, DEADLINE, step=3), d.logtext()

        def split() -> bool:
            # hot pages the latest pass probed are written again within 50 ms (slower under TCG)
            return 1 - resident(pid, cold) >= 0.95 and 1 - resident(pid, hot) <= 0.01

        ok = wait_for(split, 10.0, step=0.5)
        got = (1 - resident(pid, cold), 1 - resident(pid, hot))
        assert ok, f"cold out, hot out = {got}; {showstats(d, 'pages')}"
        out = d.etmem("engine", "showstats", "-n", "pages", "-e", "slide").stdout
        assert "tracker: probe" in out, out
        d.etmem("project", "stop", "-n", "pages")
    finally:
        d.stop()
