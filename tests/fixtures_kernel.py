"""Real-kernel fixtures shared by the scan, actuator and engine tests.

Use them from a test module with ``from fixtures_kernel import swapfile, workload  # noqa: F401``
(tests/ is on sys.path under pytest's rootdir conftest) or ``pytest_plugins``.

- ``swapfile``: a swap file switched on for the test (ext4 under /var/tmp, never tmpfs), switched
  off and deleted afterwards even on failure.  Yields its path.
- ``workload``: a child process (tests/helpers/workload.py) with a hot mapping it keeps touching
  and a cold one it filled once; yields a :class:`Workload` (pid, hot/cold ranges); killed in
  teardown.
- ``swapped_workload``: both, in the order that makes teardown cheap: the workload is killed
  *before* swapoff (otherwise swapoff reads every swapped page back in).

``spawn_workload(...)`` / ``swap_on(...)`` are the context managers behind them, for tests that
need other sizes; ``swap_on`` is the SDK's (``etmem_sdk.testing``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from etmem_sdk.testing import swap_on  # the one swap-file helper; re-exported here

HELPERS = Path(__file__).resolve().parent / "helpers"


@dataclass
class Workload:
    """A running tests/helpers/workload.py child."""

    proc: subprocess.Popen
    hot: tuple[int, int]
    cold: tuple[int, int]
    extra: dict[str, tuple[int, int]]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def spawn_workload(
    hot_mib: int = 8, cold_mib: int = 32, period: float = 0.05, file: str | None = None
) -> Iterator[Workload]:
    """Start the workload child and wait for its JSON line; kill it on exit."""
    cmd = [sys.executable, str(HELPERS / "workload.py"), "--hot-mib", str(hot_mib),
           "--cold-mib", str(cold_mib), "--period", str(period)]  # fmt: skip
    if file:
        cmd += ["--file", file]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            raise RuntimeError(f"workload exited early ({proc.wait()})")
        info = json.loads(line)
        w = Workload(
            proc,
            tuple(info["hot"]),
            tuple(info["cold"]),
            {k: tuple(v) for k, v in info["extra"].items()},
        )
        yield w
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


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
