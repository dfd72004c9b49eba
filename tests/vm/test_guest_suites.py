"""Real-kernel tests that need what the development VM lacks, run inside the test bed.

Booting and importing numpy under TCG costs tens of seconds and the suite has a budget, so every
module of tests/vm/guest/ runs in ONE boot, with 4 NUMA nodes: cslide needs two node pairs for
the original's example config, and the others need at least two nodes. A failure shows the
guest's pytest output, which names the failing test.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vm

GUEST_MODULES = (
    "test_network_guest.py",
    "test_sysinfo_guest.py",
    "test_migrate_guest.py",
    "test_damon_guest.py",
    "test_slide_damon_guest.py",
    "test_damon_engine_guest.py",
    "test_psi_guest.py",
    "test_cslide_guest.py",
    "test_cslide_seed_guest.py",
)


def test_every_guest_module_in_one_four_node_boot(guest_pytest):
    out = guest_pytest(*GUEST_MODULES, nodes=4, timeout=1500)
    assert " passed" in out and "skipped" not in out and " failed" not in out, out
