"""The age policy on a live child (etmem_sdk.testing's etmem_workload / etmem_swapped_workload).

Ticks are paced a little apart so the child touches its hot mapping between two cycles (it does
so every 50 ms); nothing here measures time.
"""

from __future__ import annotations

import os
import time

import pytest
from etmem_plugin_age import engine as age
from etmem_sdk import scan

PAGES_PER_MIB = (1 << 20) // scan.PAGE_SIZE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting on another process needs root")


def paced_ticks(h, n: int) -> None:
    for _ in range(n):
        time.sleep(0.5)
        h.tick()


def test_cold_advice_reaches_the_cold_mapping_only(etmem_engine, etmem_workload):
    w = etmem_workload
    h = etmem_engine(age, name="age")
    h.add(tasks=[{"value": w.pid, "idle_cycles": 2, "max_mib": 1024, "actuator": "cold"}])
    h.start()
    # cycle 1 sees the fill of the cold mapping, cycles 2 and 3 find it idle
    paced_ticks(h, 3)
    stats = h.task().stats
    assert stats["tracker"] == scan.choose_tracker(purpose="cold") and stats["actuator"] == "cold"
    assert stats["errors"] == 0, stats["last_error"]
    assert stats["paged_out_pages"] >= 32 * PAGES_PER_MIB
    pid_state = h.task().pids[0].params
    hot = (pid_state.addr >= w.hot[0]) & (pid_state.addr < w.hot[1])
    assert hot.sum() == 8 * PAGES_PER_MIB and (pid_state.age[hot] == 0).all()


@pytest.mark.swap
def test_pageout_moves_the_cold_mapping_to_swap(etmem_engine, etmem_swapped_workload):
    w = etmem_swapped_workload
    assert w.resident("cold") == 32 * PAGES_PER_MIB
    h = etmem_engine(age, name="age")
    h.add(tasks=[{"value": w.pid, "idle_cycles": 2, "max_mib": 1024, "actuator": "pageout"}])
    h.start()
    paced_ticks(h, 3)
    assert h.task().stats["errors"] == 0, h.task().stats["last_error"]
    assert w.resident("cold") < 32 * PAGES_PER_MIB // 10
    assert w.resident("hot") == 8 * PAGES_PER_MIB
    assert w.status()["VmSwap"] >= 30 * 1024
