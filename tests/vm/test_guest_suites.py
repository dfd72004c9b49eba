"""Real-kernel tests that need what the development VM lacks, run inside the test bed.

Booting and importing numpy under TCG costs tens of seconds, so the guest modules share boots:
one 2-node guest runs the modules below, and a 4-node guest (two node pairs) runs cslide.
A failure shows the guest's pytest output, which names the failing test.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vm

TWO_NODE_MODULES = (
    "test_network_guest.py",
    "test_sysinfo_guest.py",
    "test_migrate_guest.py",
    "test_damon_guest.py",
    "test_slide_damon_guest.py",
    "test_damon_engine_guest.py",
    "test_psi_guest.py",
)
# cslide runs only on 4 nodes: its two node pairs cover what one pair would show


def test_guest_suite_on_two_nodes(guest_pytest):
    out = guest_pytest(*TWO_NODE_MODULES, nodes=2, timeout=1200)
    assert " passed" in out and "skipped" not in out, out


def test_cslide_on_four_nodes(guest_pytest):
    out = guest_pytest("test_cslide_guest.py", "test_cslide_seed_guest.py", nodes=4, timeout=900)
    # hugetlb and normal memory, and the original's example config (it needs 4 nodes)
    assert "3 passed" in out, out
