"""Live processes and swap for policy tests on a real kernel: a workload child with a hot and
a cold mapping, and a swap file switched on for a test (root)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from etmem_scan.machine import PAGE_SIZE

# numpy and the scan facade are imported where they are used: the pytest plugin
# (etmem_sdk.testing) imports this module in every pytest run of an environment that has etmem.
if TYPE_CHECKING:
    import numpy as np


@dataclass
class Workload:
    """A running ``etmem_sdk._workload`` child: ``hot`` and ``cold`` are ``(start, end)``."""

    proc: subprocess.Popen
    hot: tuple[int, int]
    cold: tuple[int, int]
    #: with ``file=``: the ``file_ro``, ``file_rw`` and ``shared`` mappings, as ``(start, end)``
    extra: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: with ``interleave=N``: one mapping (``hot`` == ``cold``) where every Nth page is hot
    interleave: int = 0

    def pages(self, which: str = "cold") -> np.ndarray:
        """Addresses (uint64) of the ``"hot"`` or ``"cold"`` pages -- with ``interleave``, the
        hot ones are every Nth page of the one mapping and the cold ones the rest."""
        import numpy as np

        start, end = getattr(self, which)
        addrs = np.arange(start, end, PAGE_SIZE, dtype=np.uint64)
        if not self.interleave:
            return addrs
        hot = (np.arange(addrs.size) % self.interleave) == 0
        return addrs[hot] if which == "hot" else addrs[~hot]

    def resident_of(self, which: str = "cold") -> int:
        """How many of :meth:`pages` are resident (present bits, per page)."""
        import numpy as np

        from .. import scan

        present = scan.present_pages(self.pid, [getattr(self, which)], proc_root="/proc")
        return int(np.isin(self.pages(which), present).sum())

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def status(self) -> dict[str, int]:
        """Its ``/proc/PID/status`` numbers (``VmRSS``, ``VmSwap`` in kB)."""
        from .. import scan

        return scan.read_status(self.pid, proc_root="/proc")

    def resident(self, which: str = "cold") -> int:
        """Resident pages of the ``"hot"`` or ``"cold"`` mapping."""
        from .. import scan

        return len(scan.present_pages(self.pid, [getattr(self, which)], proc_root="/proc"))

    def kill(self) -> None:
        """SIGKILL it and reap it (idempotent)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def spawn_workload(
    hot_mib: int = 8,
    cold_mib: int = 32,
    period: float = 0.05,
    file: str | None = None,
    *,
    interleave: int = 0,
    size_mib: int = 64,
) -> Iterator[Workload]:
    """Start a workload child (see :mod:`etmem_sdk._workload`); it is killed on exit.

    With ``file``, the child also maps that file privately (read-only and writable) and one
    page of shared anonymous memory, for tests of the "anonymous" rule. With ``interleave=N``
    it holds one ``size_mib`` mapping where every Nth page is hot instead (``hot_mib`` and
    ``cold_mib`` are then unused).
    """
    cmd = [sys.executable, "-m", "etmem_sdk._workload", "--hot-mib", str(hot_mib),
           "--cold-mib", str(cold_mib), "--period", str(period)]  # fmt: skip
    if file:
        cmd += ["--file", file]
    if interleave:
        cmd += ["--interleave", str(interleave), "--size-mib", str(size_mib)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    w: Workload | None = None
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            raise RuntimeError(f"workload exited early (status {proc.wait()})")
        info = json.loads(line)
        extra = {k: tuple(v) for k, v in info.get("extra", {}).items()}
        w = Workload(
            proc, tuple(info["hot"]), tuple(info["cold"]), extra, info.get("interleave", 0)
        )
        yield w
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _fs_type(path: Path) -> str:
    best, fstype = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mnt, typ = line.split()[:3]
            inside = str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) > len(best):
                best, fstype = mnt, typ
    return fstype


@contextlib.contextmanager
def swap_on(
    size_mib: int = 256,
    directory: str | os.PathLike[str] | None = None,
    *,
    priority: int | None = None,
) -> Iterator[Path]:
    """A swap file switched on for the block; switched off and deleted after, even on failure.

    ``priority`` (``swapon -p``, up to 32767): pages go to the highest-priority area first, so a
    test that must not lose its pages to another test's swapoff gives its own file the highest.

    Needs root (skips otherwise) and a disk filesystem (swap files on tmpfs are refused):
    ``directory`` defaults to ``$ETMEM_TEST_SWAP_DIR`` or ``/var/tmp``. With
    ``$ETMEM_TEST_SWAP_DEVICE`` set, that device (already on) is used instead. Kill processes whose
    memory went to this swap *before* leaving the block, or swapoff reads it all back.
    """
    device = os.environ.get("ETMEM_TEST_SWAP_DEVICE")
    if device:
        # A machine without a disk (the QEMU test bed) provides a swap device that is on already.
        yield Path(device)
        return
    if os.geteuid() != 0:
        pytest.skip("a swap file needs root")
    where = Path(directory or os.environ.get("ETMEM_TEST_SWAP_DIR", "/var/tmp"))
    if _fs_type(where) in ("tmpfs", "ramfs", ""):
        pytest.fail(f"{where} is not on a disk filesystem; set ETMEM_TEST_SWAP_DIR")
    path = where / f"etmem-sdk-swap-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    on = False
    try:
        subprocess.run(["fallocate", "-l", f"{size_mib}M", str(path)], check=True)
        path.chmod(0o600)
        subprocess.run(["mkswap", str(path)], check=True, capture_output=True)
        prio = [] if priority is None else ["-p", str(priority)]
        subprocess.run(["swapon", *prio, str(path)], check=True)
        on = True
        yield path
    finally:
        if on:
            subprocess.run(["swapoff", str(path)], check=False)
        path.unlink(missing_ok=True)
