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
need other sizes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parent / "helpers"
SWAP_DIR = Path(os.environ.get("ETMEM_TEST_SWAP_DIR", "/var/tmp"))


def _fs_type(path: Path) -> str:
    best, fstype = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, typ = line.split()[:3]
            if str(path).startswith(mnt) and len(mnt) > len(best):
                best, fstype = mnt, typ
    return fstype


@contextlib.contextmanager
def swap_on(size_mib: int = 256, directory: Path = SWAP_DIR) -> Iterator[Path]:
    """Create, mkswap and swapon a swap file; swapoff and delete it on exit."""
    device = os.environ.get("ETMEM_TEST_SWAP_DEVICE")
    if device:
        # The QEMU test bed has no disk: its zram device is already the swap (tests/vm/guest).
        yield Path(device)
        return
    if os.geteuid() != 0:
        pytest.skip("swap tests need root")
    if _fs_type(directory) in ("tmpfs", "ramfs", ""):
        pytest.fail(f"{directory} is not on a disk filesystem; set ETMEM_TEST_SWAP_DIR")
    path = directory / f"etmem-test-swap-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    on = False
    try:
        subprocess.run(["fallocate", "-l", f"{size_mib}M", str(path)], check=True)
        path.chmod(0o600)
        subprocess.run(["mkswap", str(path)], check=True, capture_output=True)
        subprocess.run(["swapon", str(path)], check=True)
        on = True
        yield path
    finally:
        if on:
            subprocess.run(["swapoff", str(path)], check=False)
        path.unlink(missing_ok=True)


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
