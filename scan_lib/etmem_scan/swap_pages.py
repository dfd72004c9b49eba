"""openEuler's ``/proc/PID/swap_pages`` (etmem_swap module): write cold pages, steer swapcache.

The kernel (fs/proc/etmem_swap.c) parses every ``write()`` on its own (``0x%lx`` lines) and
reclaims the batch at the end of it.  The original (etmemd_migrate.c) fed 200-line batches
through a stdio buffer, so a ``write()`` could end in the middle of an address; here every
``write()`` carries whole lines -- one batch of at most ``batch`` lines.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .actuator_interface import Actuator, ActuatorError
from .errors import TargetGone
from .machine import PAGE_SIZE
from .pagerefs import descending, format_hex_lines, hex_digits

# ioctl numbers: _IOW(0x77, nr, unsigned int)
RECLAIM_SWAPCACHE_OFF = 0x40047700
RECLAIM_SWAPCACHE_ON = 0x40047701
SET_SWAPCACHE_WMARK = 0x40047702

SWAP_LIMIT = 200  # addresses per batch, as the original

IoctlFn = Callable[[int, int, bytes], object]
WriteFn = Callable[[int, bytes | memoryview], int]


def swap_pages_path(pid: int, proc_root: str | os.PathLike[str] = "/proc") -> Path:
    return Path(proc_root) / str(pid) / "swap_pages"


def _open(pid: int, proc_root: str | os.PathLike[str]) -> int:
    path = swap_pages_path(pid, proc_root)
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)  # C opens it "r+"
    except FileNotFoundError as e:
        if not path.parent.exists():
            raise TargetGone(f"process {pid} is gone") from e
        raise ActuatorError(f"{path}: missing (is the etmem_swap module loaded?)") from e
    except OSError as e:
        raise ActuatorError(f"open {path}: {e.strerror}") from e


def batches(text: bytes | np.ndarray, line_ends: np.ndarray, batch: int) -> Iterator[memoryview]:
    """Slices of ``text`` holding ``batch`` whole lines each (``line_ends``: offset after each)."""
    view = memoryview(text).cast("B") if not isinstance(text, np.ndarray) else text.data
    cuts = np.r_[0, line_ends[batch - 1 :: batch], line_ends[-1:]] if len(line_ends) else [0]
    cuts = np.unique(cuts)
    for s, e in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
        yield view[s:e]


def cold_text(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``swap_pages`` text for ``addrs`` (descending) and the offset after each line."""
    a = descending(addrs)
    text = format_hex_lines(a)
    return text, np.cumsum(hex_digits(a).astype(np.int64) + 3)


def write_batches(
    fd: int, text: np.ndarray | bytes, line_ends: np.ndarray, batch: int = SWAP_LIMIT,
    write: WriteFn = os.write,
) -> int:  # fmt: skip
    """Write ``text`` with whole lines in every ``write()``; return the bytes written.

    A short write that stops at a line end is continued; one that stops inside a line cannot
    be repaired (the kernel has parsed half an address) and is an error.
    """
    total = 0
    for chunk in batches(text, line_ends, batch):
        while len(chunk):
            try:
                n = write(fd, chunk)
            except ProcessLookupError as e:  # ESRCH: the mm is gone
                raise TargetGone(f"swap_pages: target process gone ({e.strerror})") from e
            except OSError as e:
                if e.errno == errno.ESRCH:
                    raise TargetGone("swap_pages: target process gone") from e
                raise ActuatorError(f"write swap_pages: {e.strerror}") from e
            total += n
            if n < len(chunk) and chunk[n - 1] != 0x0A:
                raise ActuatorError(f"swap_pages accepted {n} of {len(chunk)} bytes mid-line")
            chunk = chunk[n:]
    return total


class SwapPages(Actuator):
    """Reclaim cold pages through ``/proc/PID/swap_pages``: ``apply(pid, addrs)``.

    ``sizes`` is ignored (the kernel finds each page from its address).  An empty list does
    not open the file, as in the original.
    """

    name = "swap_pages"

    def __init__(
        self,
        proc_root: str | os.PathLike[str] = "/proc",
        *,
        batch: int = SWAP_LIMIT,
        write: WriteFn = os.write,
        sys_root: str | os.PathLike[str] = "/sys",
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1 line")
        self.proc_root = proc_root
        self.batch = batch
        self._write = write

    def apply(self, pid: int, addrs: np.ndarray, sizes: int | np.ndarray = PAGE_SIZE):
        """Write ``addrs`` (page starts) as cold, descending; returns None (nothing to report)."""
        if len(addrs) == 0:
            return None
        text, ends = cold_text(addrs)
        fd = _open(pid, self.proc_root)
        try:
            write_batches(fd, text, ends, self.batch, self._write)
        finally:
            os.close(fd)
        return None


def make(
    proc_root: str | os.PathLike[str] = "/proc", sys_root: str | os.PathLike[str] = "/sys", **kw
) -> SwapPages:
    """The ``swap_pages`` actuator (for :func:`etmem_scan.actuators.make_actuator`)."""
    return SwapPages(proc_root, sys_root=sys_root, **kw)


def _swap_ioctl(
    pid: int, request: int, arg: int, proc_root: str | os.PathLike[str], ioctl: IoctlFn | None
) -> None:
    fd = _open(pid, proc_root)
    try:
        if ioctl is not None:
            ioctl(fd, request, struct.pack("I", arg))
    except OSError as e:
        raise ActuatorError(f"swap_pages ioctl 0x{request:x}: {e.strerror}") from e
    finally:
        os.close(fd)


def wmark_arg(low: int, high: int) -> int:
    """SET_SWAPCACHE_WMARK's argument: low % in bits 0-7, high % in bits 8-15."""
    if not 0 <= low <= high <= 100:
        raise ValueError(f"swapcache watermarks need 0 <= low <= high <= 100 (got {low}, {high})")
    return (low & 0xFF) | ((high << 8) & 0xFF00)


def set_swapcache_wmark(
    pid: int, low: int, high: int, *, proc_root: str | os.PathLike[str] = "/proc",
    ioctl: IoctlFn | None = fcntl.ioctl,
) -> None:  # fmt: skip
    """Hand the swapcache watermarks (percent of RAM) to the kernel."""
    _swap_ioctl(pid, SET_SWAPCACHE_WMARK, wmark_arg(low, high), proc_root, ioctl)


def reclaim_swapcache_on(
    pid: int, *, proc_root: str | os.PathLike[str] = "/proc", ioctl: IoctlFn | None = fcntl.ioctl
) -> None:
    """Wake the kernel's swapcache reclaim (down to the low watermark when above the high)."""
    _swap_ioctl(pid, RECLAIM_SWAPCACHE_ON, 0, proc_root, ioctl)


def reclaim_swapcache_off(
    pid: int, *, proc_root: str | os.PathLike[str] = "/proc", ioctl: IoctlFn | None = fcntl.ioctl
) -> None:
    """Stop the kernel's swapcache reclaim (the original never sends this)."""
    _swap_ioctl(pid, RECLAIM_SWAPCACHE_OFF, 0, proc_root, ioctl)
