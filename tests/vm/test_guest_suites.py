"""Real-kernel tests that need what the development VM lacks, run inside the test bed.

Each module of tests/vm/guest/ runs in one boot, so a boot's cost is shared by its assertions.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vm


def test_sysinfo_in_the_guest(guest_pytest):
    guest_pytest("test_sysinfo_guest.py")


def test_migrate_between_real_nodes(guest_pytest):
    guest_pytest("test_migrate_guest.py")


def test_damon_tracker_on_a_live_process(guest_pytest):
    guest_pytest("test_damon_guest.py")


def test_slide_with_zram_swap(guest_pytest):
    guest_pytest("test_slide_zram_guest.py", timeout=900)
