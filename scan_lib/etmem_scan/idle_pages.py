"""The ``idle_pages`` tracker: openEuler's ``/proc/PID/idle_pages`` read a VMA at a time.

The file answers a ``read()`` at a virtual address with the byte stream :mod:`.idle_stream`
decodes; ioctls on it choose what the kernel reports (the scan flags below).
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from .idle_stream import Runs, decode_runs, expand
from .machine import PAGE_SIZE
from .pagerefs import PassRefs
from .tracker_interface import ScanError, Tracker, VmaRange

# ioctl numbers: _IOW(0x66, nr, unsigned int) on x86_64 / arm64
IDLE_SCAN_ADD_FLAGS = 0x40046600
IDLE_SCAN_REMOVE_FLAGS = 0x40046601
VMA_SCAN_ADD_FLAGS = 0x40046602
VMA_SCAN_REMOVE_FLAGS = 0x40046603

SCAN_AS_HUGE = 0x01000000  # report KVM guest memory per 2 MiB
SCAN_IGN_HOST = 0x02000000  # report host pages as idle
VMA_SCAN_FLAG = 0x1000  # only VMAs marked with madvise(..., 203)
ALL_SCAN_FLAGS = SCAN_AS_HUGE | SCAN_IGN_HOST | VMA_SCAN_FLAG

# etmemd's minimum read buffer: the kernel refuses less than 19 bytes
IDLE_BUF_MIN = 20


def read_size(start: int, end: int, page_size: int = PAGE_SIZE) -> int:
    """etmemd's buffer for ``[start, end)``: one byte per 8 pages, at least 20 bytes."""
    return max(((end - start) >> 3) // page_size, IDLE_BUF_MIN)


class IdlePagesIO(Protocol):
    """What the tracker needs from an open idle_pages file (tests pass a fake)."""

    def add_flags(self, request: int, flags: int) -> None: ...
    def read_at(self, pos: int, count: int) -> bytes: ...
    def close(self) -> None: ...


IoctlFn = Callable[[int, int, bytes], object]


class IdlePagesFile:
    """``/proc/PID/idle_pages`` opened read-only; reads at a virtual address via ``lseek``.

    ``ioctl=None`` skips the flag ioctls.  In a fake tree the file is a regular file holding
    one captured stream: its content answers the first read after open, later reads get
    nothing (a regular file cannot seek to a user address).
    """

    def __init__(self, path: Path | str, ioctl: IoctlFn | None = fcntl.ioctl) -> None:
        self.path = Path(path)
        self._ioctl = ioctl
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._recorded: bool | None = stat.S_ISREG(os.fstat(self.fd).st_mode) or None

    def add_flags(self, request: int, flags: int) -> None:
        """OR ``flags`` into the file's scan flags (IDLE_SCAN_ADD_FLAGS / VMA_SCAN_ADD_FLAGS)."""
        if self._ioctl is not None:
            self._ioctl(self.fd, request, struct.pack("I", flags))

    def read_at(self, pos: int, count: int) -> bytes:
        """One ``read()`` of at most ``count`` bytes describing pages from address ``pos``."""
        if self._recorded is not None:
            first, self._recorded = self._recorded, False
            return os.pread(self.fd, count, 0) if first else b""
        os.lseek(self.fd, pos, os.SEEK_SET)
        return os.read(self.fd, count)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class IdlePagesTracker(Tracker):
    """Access bits from openEuler's etmem_scan module, one pass per :meth:`scan_pass`.

    Per pass the file is opened afresh (as etmemd does) and the scan flags are set by ioctl.
    Each VMA is read from ``max(vma.start, last_walk_end)`` with etmemd's buffer size, but -- unlike
    etmemd, which reads once and silently loses the rest (etmemd_scan.c) -- reads continue from the
    last decoded address until the VMA end is covered or the kernel returns nothing more.
    """

    name = "idle_pages"
    capability = "tracker.idle_pages"

    def __init__(
        self,
        pid: int,
        proc_root: Path | str = "/proc",
        *,
        flags: int = 0,
        vma_flags: int = 0,
        page_size: int = PAGE_SIZE,
        ioctl: IoctlFn | None = fcntl.ioctl,
        opener: Callable[[Path], IdlePagesIO] | None = None,
        sys_root: Path | str = "/sys",
    ) -> None:
        """``flags``: sent with IDLE_SCAN_ADD_FLAGS (SCAN_AS_HUGE, SCAN_IGN_HOST, VMA_SCAN_FLAG)
        when non-zero; ``vma_flags``: sent with VMA_SCAN_ADD_FLAGS (the slide engine's
        ``swap_flag=yes`` sends VMA_SCAN_FLAG).  ``ioctl=None`` skips both; ``opener`` replaces
        the file (tests).  ``sys_root`` is accepted for :func:`trackers.make_tracker` only."""
        for what, value in (("flags", flags), ("vma_flags", vma_flags)):
            if value & ~ALL_SCAN_FLAGS:
                raise ValueError(f"unknown idle_pages scan {what} 0x{value:x}")
        self.pid = pid
        self.path = Path(proc_root) / str(pid) / "idle_pages"
        self.flags = flags & ALL_SCAN_FLAGS
        self.vma_flags = vma_flags
        self.page_size = page_size
        self._open = opener or (lambda p: IdlePagesFile(p, ioctl))
        self.reads: list[tuple[int, int, int]] = []  # (pos, count, returned) of the last pass

    def scan_pass(self, vmas: Sequence[VmaRange]) -> PassRefs:
        """One sample of every VMA; raises :class:`ScanError` if the pass fails."""
        return expand(self.scan_runs(vmas), self.page_size)

    def scan_runs(self, vmas: Sequence[VmaRange]) -> Runs:
        """Like :meth:`scan_pass` but run-length (what the fast pipeline consumes)."""
        try:
            f = self._open(self.path)
        except OSError as e:
            raise ScanError(f"open {self.path}: {e.strerror}") from e
        self.reads = []
        parts: list[Runs] = []
        try:
            if self.flags:
                f.add_flags(IDLE_SCAN_ADD_FLAGS, self.flags)
            if self.vma_flags:
                f.add_flags(VMA_SCAN_ADD_FLAGS, self.vma_flags)
            last_walk_end = 0
            for vma in vmas:
                if last_walk_end > vma.end:
                    continue
                pos = max(vma.start, last_walk_end)
                while pos < vma.end:
                    count = read_size(pos, vma.end, self.page_size)
                    data = f.read_at(pos, count)
                    self.reads.append((pos, count, len(data)))
                    if not data:
                        break
                    runs = decode_runs(data, self.page_size)
                    parts.append(runs)
                    last_walk_end = runs.end
                    if runs.end <= pos:  # no progress: nothing more the kernel will tell
                        break
                    pos = runs.end
        except OSError as e:
            raise ScanError(f"read {self.path}: {e.strerror}") from e
        finally:
            f.close()
        return Runs.concat(parts)
