"""Actuators: move a process's pages somewhere else.

- ``pageout`` / ``cold``: ``process_madvise(2)`` with ``MADV_PAGEOUT`` / ``MADV_COLD`` through a
  pidfd.  Adjacent pages are merged into ranges, at most ``IOV_MAX`` ranges go into one call, and
  partial returns (the kernel handles at most 2 GiB − 4 KiB per call, and stops at the first range
  it cannot advise) are continued.
- ``migrate``: ``move_pages(2)``, query mode (where is each page) and move mode, in batches, with
  the per-page status as a numpy array.
- ``swap_pages``: openEuler's ``/proc/PID/swap_pages`` (in :mod:`etmem_scan.swap_pages`).

Every actuator has the same shape: ``apply(pid, addrs, sizes)``.
"""

from __future__ import annotations

import ctypes
import errno
import os

import numpy as np

from . import swap_pages
from .actuator_interface import Actuator, ActuatorError
from .errors import TargetGone
from .machine import PAGE_SIZE, syscall_number
from .names import ACTUATORS
from .procfs import read_meminfo

__all__ = [
    "ACTUATORS",
    "IOV_MAX",
    "MADV_COLD",
    "MADV_PAGEOUT",
    "MPOL_MF_MOVE",
    "MPOL_MF_MOVE_ALL",
    "MOVE_PAGES_BATCH",
    "Actuator",
    "ActuatorError",
    "Madvise",
    "Migrate",
    "NoSwap",
    "make_actuator",
    "merge_ranges",
    "move_pages",
    "process_madvise",
    "query_nodes",
]

MADV_COLD = 20
MADV_PAGEOUT = 21
MPOL_MF_MOVE = 1 << 1
MPOL_MF_MOVE_ALL = 1 << 2
IOV_MAX = 1024
MOVE_PAGES_BATCH = 65536  # pages per move_pages call, as the original's BATCHSIZE

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class NoSwap(ActuatorError):
    """Anonymous pageout was asked for while no swap is configured."""


def _call(name: str, *args: int) -> int:
    """Issue syscall ``name``; raises :class:`~etmem_scan.machine.UnknownArchitecture` where its
    number is not known, ``OSError`` when it fails."""
    ret = _syscall(ctypes.c_long(syscall_number(name)), *(ctypes.c_long(a) for a in args))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return ret


def merge_ranges(addrs: np.ndarray, sizes: int | np.ndarray = PAGE_SIZE) -> np.ndarray:
    """Merge pages (or ranges) into sorted, non-overlapping ``[start, length]`` rows (uint64).

    ``addrs`` need not be sorted; ``sizes`` is one size for all or one per address.  Adjacent
    and overlapping ranges become one.
    """
    addrs = np.asarray(addrs, dtype=np.uint64)
    if addrs.size == 0:
        return np.zeros((0, 2), dtype=np.uint64)
    sizes_arr = np.broadcast_to(np.asarray(sizes, dtype=np.uint64), addrs.shape)
    if addrs.size > 1 and not (addrs[1:] >= addrs[:-1]).all():
        order = np.argsort(addrs, kind="stable")
        starts, ends = addrs[order], addrs[order] + sizes_arr[order]
    else:  # cold lists come address-sorted: skip the sort
        starts, ends = addrs, addrs + sizes_arr
    reach = np.maximum.accumulate(ends)
    # a new range begins where a page starts beyond everything before it
    new = np.empty(starts.size, dtype=bool)
    new[0] = True
    new[1:] = starts[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], starts.size) - 1
    out = np.empty((first.size, 2), dtype=np.uint64)
    out[:, 0] = starts[first]
    out[:, 1] = reach[last] - starts[first]
    return out


def process_madvise(pidfd: int, ranges: np.ndarray, advice: int) -> int:
    """Apply ``advice`` to every ``[start, length]`` row of ``ranges`` in the process behind
    ``pidfd``.  Returns the bytes advised.

    Calls carry at most IOV_MAX rows; a partial return resumes after the advised bytes; a range
    the kernel refuses (unmapped meanwhile: ENOMEM/EFAULT/EINVAL) is skipped, not fatal.
    Raises :class:`TargetGone` when the process has exited.
    """
    iov = np.ascontiguousarray(ranges, dtype=np.uint64).copy()
    done = 0
    i = 0
    einval = 0
    while i < len(iov):
        n = min(IOV_MAX, len(iov) - i)
        ptr = iov.ctypes.data + i * 16
        try:
            got = _call("process_madvise", pidfd, ptr, n, advice, 0)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise TargetGone("process exited during process_madvise") from e
            if e.errno in (errno.ENOMEM, errno.EFAULT, errno.EINVAL):
                einval += e.errno == errno.EINVAL
                i += 1  # the first range of this call was refused: skip it
                continue
            raise ActuatorError(f"process_madvise: {e.strerror}") from e
        done += got
        # consume `got` bytes from the iovecs of this call
        lens = iov[i : i + n, 1]
        cum = np.cumsum(lens, dtype=np.uint64)
        full = int(np.searchsorted(cum, np.uint64(got), side="right"))
        consumed_before = int(cum[full - 1]) if full else 0
        i += full
        if full < n and got > consumed_before:
            part = got - consumed_before
            iov[i, 0] += np.uint64(part)
            iov[i, 1] -= np.uint64(part)
        elif full < n and got == 0:
            i += 1  # no progress on this range: never spin on it
    if done == 0 and len(iov) and einval == len(iov):
        # every range refused as invalid: the advice itself is what the kernel rejects
        raise ActuatorError(f"process_madvise: advice {advice} refused (EINVAL) for every range")
    return done


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(int(pid))
    except ProcessLookupError as e:
        raise TargetGone(f"process {pid} is gone") from e


class Madvise(Actuator):
    """``process_madvise`` with one advice: ``pageout`` (MADV_PAGEOUT) or ``cold`` (MADV_COLD).

    ``apply`` returns the bytes the kernel accepted.  Pageout refuses (:class:`NoSwap`) when
    ``SwapTotal`` is 0: the kernel would accept the call and reclaim no anonymous page.
    """

    def __init__(
        self,
        advice: int = MADV_PAGEOUT,
        *,
        proc_root: str | os.PathLike[str] = "/proc",
        require_swap: bool = True,
    ) -> None:
        self.advice = advice
        self.name = "pageout" if advice == MADV_PAGEOUT else "cold"
        self.proc_root = proc_root
        self.require_swap = require_swap and advice == MADV_PAGEOUT

    def apply(self, pid: int, addrs: np.ndarray, sizes: int | np.ndarray = PAGE_SIZE) -> int:
        if self.require_swap and read_meminfo(self.proc_root).get("SwapTotal", 0) == 0:
            raise NoSwap(
                "pageout: no swap is configured (SwapTotal is 0), so the kernel would "
                "keep every anonymous page; set up swap or zram first"
            )
        ranges = merge_ranges(addrs, sizes)
        fd = _pidfd(pid)
        try:
            return process_madvise(fd, ranges, self.advice)
        finally:
            os.close(fd)


def move_pages(
    pid: int,
    addrs: np.ndarray,
    nodes: int | np.ndarray | None = None,
    flags: int = MPOL_MF_MOVE,
    batch: int = MOVE_PAGES_BATCH,
) -> np.ndarray:
    """``move_pages(2)`` over ``addrs`` in batches; returns the int32 status of each page.

    With ``nodes=None`` nothing moves and the status is each page's node (or ``-ENOENT`` not
    present, ``-EFAULT`` unmapped, ...).  Otherwise each page is moved to its node and the
    status is the node it is on afterwards or a negative errno.  Raises :class:`TargetGone`
    when the process has exited, :class:`ActuatorError` for a node that is not online.
    """
    pages = np.ascontiguousarray(addrs, dtype=np.uint64)
    status = np.full(pages.size, -errno.EINVAL, dtype=np.int32)
    node_arr = None
    if nodes is not None:
        node_arr = np.ascontiguousarray(np.broadcast_to(np.asarray(nodes, np.int32), pages.shape))
    for lo in range(0, pages.size, batch):
        hi = min(lo + batch, pages.size)
        nptr = 0 if node_arr is None else node_arr.ctypes.data + lo * 4
        try:
            _call(
                "move_pages",
                int(pid),
                hi - lo,
                pages.ctypes.data + lo * 8,
                nptr,
                status.ctypes.data + lo * 4,
                flags if node_arr is not None else 0,
            )
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise TargetGone(f"process {pid} is gone (move_pages)") from e
            if e.errno == errno.ENODEV:
                raise ActuatorError("move_pages: a target node is not online") from e
            raise ActuatorError(f"move_pages: {e.strerror}") from e
    return status


def query_nodes(pid: int, addrs: np.ndarray, batch: int = MOVE_PAGES_BATCH) -> np.ndarray:
    """Which NUMA node each page of ``addrs`` is on (negative errno where it is not resident)."""
    return move_pages(pid, addrs, None, 0, batch)


class Migrate(Actuator):
    """``move_pages`` to ``node`` (``MPOL_MF_MOVE``, or ``MPOL_MF_MOVE_ALL`` with ``move_all``).

    ``apply`` returns the per-page status array (node after the move, or negative errno).
    """

    name = "migrate"

    def __init__(self, node: int = 0, *, move_all: bool = False, batch: int = MOVE_PAGES_BATCH):
        self.node = node
        self.flags = MPOL_MF_MOVE_ALL if move_all else MPOL_MF_MOVE
        self.batch = batch

    def apply(self, pid: int, addrs: np.ndarray, sizes: int | np.ndarray = PAGE_SIZE) -> np.ndarray:
        # A huge page moves whole when its first address is named, so sizes are not needed.
        return move_pages(pid, addrs, self.node, self.flags, self.batch)


def make_actuator(
    name: str,
    *,
    proc_root: str | os.PathLike[str] = "/proc",
    sys_root: str | os.PathLike[str] = "/sys",
    **kw,
) -> Actuator:
    """Build the actuator called ``name`` (one of :data:`ACTUATORS`).

    ``pageout``/``cold`` accept ``require_swap``; ``migrate`` accepts ``node``, ``move_all``,
    ``batch``; ``swap_pages`` takes its own keywords (see :mod:`etmem_scan.swap_pages`).
    """
    if name == "pageout":
        return Madvise(MADV_PAGEOUT, proc_root=proc_root, **kw)
    if name == "cold":
        return Madvise(MADV_COLD, proc_root=proc_root, **kw)
    if name == "migrate":
        return Migrate(**kw)
    if name == "swap_pages":
        return swap_pages.make(proc_root=proc_root, sys_root=sys_root, **kw)
    raise ValueError(f"unknown actuator {name!r}; choose one of {', '.join(ACTUATORS)}")
