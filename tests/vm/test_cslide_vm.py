"""cslide on real NUMA nodes: boots the QEMU test bed with 2 and 4 nodes and runs
tests/vm/guest/test_cslide_guest.py inside — hugepages on every node, a workload whose hot half
is touched and cold half is not, both first placed on the wrong node; once with hugetlb pages
(DAMON as the tracker) and once with ordinary pages (``memory=normal``, the probe's tracker)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vm


@pytest.mark.parametrize("nodes", [2, 4])
def test_cslide_places_hot_and_cold_pages(guest_pytest, nodes):
    out = guest_pytest("test_cslide_guest.py", nodes=nodes, timeout=900)
    assert "2 passed" in out  # hugetlb and normal
