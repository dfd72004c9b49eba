"""Shared fixtures: paths to the golden data and the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Recorded from the original etmem and kept in the repository (tests/golden/README.md), so a clone
# in any folder runs the suite.
GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(scope="session")
def golden() -> Path:
    """The folder of golden data recorded from the original etmem."""
    if not GOLDEN.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN}")
    return GOLDEN
