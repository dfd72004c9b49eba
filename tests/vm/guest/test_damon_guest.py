"""The damon tracker on a live process: creates, uses and removes its own kdamond."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from etmem_scan import procfs
from etmem_scan.trackers import DamonTracker
from fixtures_kernel import spawn_workload

KDAMONDS = Path("/sys/kernel/mm/damon/admin/kdamonds")


def _weight_in(refs, rng: tuple[int, int]) -> float:
    addr = np.asarray(refs.addr)
    inside = (addr >= rng[0]) & (addr < rng[1])
    assert inside.any(), "no resident page in the range"
    return float(np.asarray(refs.weight)[inside].mean())


def test_damon_tracker_sees_the_hot_mapping_and_cleans_up():
    assert (KDAMONDS / "nr_kdamonds").read_text().strip() == "0"
    with spawn_workload(hot_mib=8, cold_mib=32, period=0.01) as w:
        vmas = procfs.read_vmas(w.pid)
        tracker = DamonTracker(w.pid, sample_us=5_000, aggr_us=100_000, min_nr_regions=100)
        seen = []
        try:
            assert (KDAMONDS / "nr_kdamonds").read_text().strip() == "1"
            assert (KDAMONDS / "0/state").read_text().strip() == "on"
            # DAMON reports only its last aggregation window, and its regions keep splitting
            # and merging (slowly under TCG), so one pass may miss the hot mapping: poll.
            for _ in range(15):
                time.sleep(1)
                refs = tracker.scan_pass(vmas)
                seen.append((_weight_in(refs, w.hot), _weight_in(refs, w.cold)))
                if seen[-1][0] > 0.8:
                    break
        finally:
            tracker.close()
        # Under TCG the share DAMON sees varies a lot from run to run (0.2 .. 1.0 within seconds)
        assert max(hot for hot, _ in seen) > 0.3, seen  # the hot mapping is seen...
        assert max(cold for _, cold in seen) < 0.2, seen  # ...and the cold one never is
    # its own kdamond is gone again
    assert (KDAMONDS / "nr_kdamonds").read_text().strip() == "0"
