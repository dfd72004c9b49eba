"""move_pages between two real NUMA nodes through etmem_scan's migrate actuator."""

from __future__ import annotations

import numpy as np
from etmem_scan.actuators import Migrate, query_nodes
from etmem_sdk.testing import spawn_workload

PAGE = 4096


def _pages(rng: tuple[int, int]) -> np.ndarray:
    return np.arange(rng[0], rng[1], PAGE, dtype=np.uint64)


def test_migrate_moves_a_live_mapping_between_nodes_and_back():
    with spawn_workload(hot_mib=4, cold_mib=16) as w:
        cold = _pages(w.cold)
        before = query_nodes(w.pid, cold)
        assert set(before.tolist()) <= {0, 1}
        for node in (1, 0):
            status = Migrate(node).apply(w.pid, cold)
            assert (status == node).all(), np.unique(status)
            assert (query_nodes(w.pid, cold) == node).all()
        assert w.proc.poll() is None  # the workload kept running
