"""slide end to end with zram as the swap device (the guest has no disk).

The flagship host test runs again here, unchanged, against zram instead of a swap file; the other
slide e2e cases gain nothing from a second kernel and cost minutes under TCG.
"""

from __future__ import annotations

import pytest
from test_slide_e2e import rig, test_cold_mapping_swapped_hot_stays  # noqa: F401


@pytest.fixture(autouse=True)
def _zram(zram_swap):
    yield
