"""Real-kernel fixtures shared by the scan, actuator and engine tests.

Use them from a test module with ``from fixtures_kernel import swapfile, workload  # noqa: F401``
(tests/ is on sys.path under pytest's rootdir conftest) or ``pytest_plugins``.

- ``swapfile``: a swap file switched on for the test (ext4 under /var/tmp, never tmpfs), switched
  off and deleted afterwards even on failure.  Yields its path.
- ``workload``: a child process (``etmem_sdk._workload``) with a hot mapping it keeps touching
  and a cold one it filled once; yields a :class:`Workload` (pid, hot/cold ranges); killed in
  teardown.
- ``swapped_workload``: both, in the order that makes teardown cheap: the workload is killed
  *before* swapoff (otherwise swapoff reads every swapped page back in).

``spawn_workload(...)`` / ``swap_on(...)`` are the context managers behind them, for tests that
need other sizes; both are the SDK's (``etmem_sdk.testing``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# The one swap-file helper and the one workload live in the SDK; re-exported for the tests.
from etmem_sdk.testing import Workload, spawn_workload, swap_on  # noqa: F401


@pytest.fixture
def swapfile() -> Iterator[Path]:
    with swap_on() as path:
        yield path


@pytest.fixture
def workload() -> Iterator[Workload]:
    with spawn_workload() as w:
        yield w


@pytest.fixture
def swapped_workload() -> Iterator[Workload]:
    """A workload running while a test swap file is on; killed before the swapoff."""
    with swap_on() as _path, spawn_workload() as w:
        yield w
