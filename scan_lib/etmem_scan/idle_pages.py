"""openEuler's ``/proc/PID/idle_pages``: the byte-stream decoder and the ``idle_pages`` tracker.

Stream format (reference §8.4): ``0xA0`` + 8-byte big-endian address sets the current address;
any other byte is ``type << 4 | n``: ``n`` pages of that type from the current address, which
then advances by ``n`` pages of the type's size.  Types 0-2 are accessed (weight 1), 3-4 dirty
(weight 3), 5-6 idle (weight 0), 7 a PMD whose PTEs are all idle, 8-9 holes (advance only).

The decoder works on whole arrays: it finds the real SET_HVA commands, gives every record byte
its address with one cumulative sum per stream, and expands records to pages with ``repeat``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import stat
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .pagerefs import (
    ADDR_DTYPE,
    PMD,
    PTE,
    PUD,
    TYPE_DTYPE,
    PageRefs,
    PassRefs,
    cold_mask,
    descending,
    format_hex_lines,
    format_refs,
    merge,
)
from .tracker import ScanError, Tracker, VmaRange

log = logging.getLogger(__name__)

PAGE_SIZE = os.sysconf("SC_PAGESIZE")

# ioctl numbers: _IOW(0x66, nr, unsigned int) on x86_64 / arm64
IDLE_SCAN_ADD_FLAGS = 0x40046600
IDLE_SCAN_REMOVE_FLAGS = 0x40046601
VMA_SCAN_ADD_FLAGS = 0x40046602
VMA_SCAN_REMOVE_FLAGS = 0x40046603

SCAN_AS_HUGE = 0x01000000  # report KVM guest memory per 2 MiB
SCAN_IGN_HOST = 0x02000000  # report host pages as idle
VMA_SCAN_FLAG = 0x1000  # only VMAs marked with madvise(..., 203)
ALL_SCAN_FLAGS = SCAN_AS_HUGE | SCAN_IGN_HOST | VMA_SCAN_FLAG

SET_HVA = 0xA0
PMD_IDLE_PTES = 7
# etmemd's minimum read buffer: the kernel refuses less than 19 bytes
IDLE_BUF_MIN = 20

# per idle_pages type 0..9: page type of the entries, and the size class the address advances by
_ENTRY_TYPE = np.array([PTE, PMD, PUD, PTE, PMD, PTE, PMD, PTE, PTE, PMD], dtype=TYPE_DTYPE)
_STEP_TYPE = np.array([PTE, PMD, PUD, PTE, PMD, PTE, PMD, PMD, PTE, PMD], dtype=TYPE_DTYPE)
_WEIGHT = np.array([1, 1, 1, 3, 3, 0, 0, 0, 0, 0], dtype=np.uint8)


class StreamError(ScanError):
    """The idle_pages stream is one the original rejects (the whole pass fails)."""


def page_sizes(page_size: int = PAGE_SIZE) -> np.ndarray:
    """PTE, PMD and PUD sizes for a base page size (4 KiB -> 4 KiB / 2 MiB / 1 GiB).

    A page-table page holds ``page_size / 8`` entries, so each level multiplies by that.
    """
    shift = page_size.bit_length() - 1
    return np.array(
        [1 << shift, 1 << ((shift - 3) * 2 + 3), 1 << ((shift - 3) * 3 + 3)], dtype=ADDR_DTYPE
    )


@dataclass(frozen=True, slots=True)
class Runs:
    """Decoded records of one read, run-length: ``npages`` entries of ``type`` from ``start``.

    ``end`` is the address after the last record (C's ``last_walk_end``; 0 if none was set).
    """

    start: np.ndarray  # uint64
    npages: np.ndarray  # int64
    type: np.ndarray  # uint8 page type (0 PTE, 1 PMD, 2 PUD)
    weight: np.ndarray  # uint8
    end: int

    def __len__(self) -> int:
        return len(self.start)

    @staticmethod
    def concat(parts: Sequence[Runs]) -> Runs:
        """All runs of ``parts`` in order; ``end`` of the last part."""
        if not parts:
            return _EMPTY_RUNS
        if len(parts) == 1:
            return parts[0]
        return Runs(
            np.concatenate([p.start for p in parts]),
            np.concatenate([p.npages for p in parts]),
            np.concatenate([p.type for p in parts]),
            np.concatenate([p.weight for p in parts]),
            parts[-1].end,
        )


_EMPTY_RUNS = Runs(
    np.empty(0, ADDR_DTYPE),
    np.empty(0, np.int64),
    np.empty(0, TYPE_DTYPE),
    np.empty(0, np.uint8),
    0,
)


def _set_hva_positions(b: np.ndarray) -> np.ndarray:
    """Offsets of the real SET_HVA commands (a 0xA0 inside another one's address is data)."""
    cand = np.flatnonzero(b == SET_HVA)
    if len(cand) < 2:
        return cand
    real = np.r_[True, np.diff(cand) > 8]  # nothing within 8 bytes before: cannot be payload
    for i in np.flatnonzero(~real):  # rare: clusters of 0xA0 bytes
        j = i - 1
        while not real[j]:
            j -= 1
        real[i] = cand[i] - cand[j] > 8
    return cand[real]


def decode_runs(buf: bytes | np.ndarray, page_size: int = PAGE_SIZE) -> Runs:
    """Decode one ``read()`` of idle_pages into runs of page entries.

    Follows etmemd: a SET_HVA with fewer than 8 address bytes left ends the stream; a record
    while the address is 0 (none set yet, or SET_HVA 0) is an error; records whose address is
    not aligned to their page size are skipped (the address still advances); PMD_IDLE_PTES
    becomes ``n * pmd/pte`` idle base pages -- the real ratio, not C's fixed 512 (§13.23).
    Raises :class:`StreamError` for streams the original rejects and for record types that
    do not exist (10 with a count, 11-15; C reads past its tables on those).
    """
    b = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, bytes | bytearray) else buf
    sizes = page_sizes(page_size)
    hva_pos = _set_hva_positions(b)
    cut = len(b)
    trunc = np.flatnonzero(hva_pos + 8 >= len(b))
    if len(trunc):  # an incomplete SET_HVA stops decoding there
        cut = int(hva_pos[trunc[0]])
        hva_pos = hva_pos[: trunc[0]]
    payload = np.ones(cut, dtype=bool)
    if len(hva_pos):
        payload[(hva_pos[:, None] + np.arange(9)).ravel()] = False
    rec = np.flatnonzero(payload)
    hva = np.empty(0, dtype=ADDR_DTYPE)
    if len(hva_pos):
        hva = (
            np.ascontiguousarray(b[hva_pos[:, None] + np.arange(1, 9)])
            .view(">u8")
            .ravel()
            .astype(ADDR_DTYPE)
        )
    if len(rec) == 0:
        return dataclasses.replace(_EMPTY_RUNS, end=int(hva[-1]) if len(hva) else 0)

    v = b[rec]
    t = v >> 4
    n = (v & 15).astype(ADDR_DTYPE)
    bad = t >= 10
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise StreamError(f"unknown idle_pages record 0x{int(v[i]):02x} at byte {int(rec[i])}")
    step = n * sizes[_STEP_TYPE[t]]
    excl = np.cumsum(step) - step  # wraps modulo 2**64 like C's u_int64_t
    seg = np.searchsorted(hva_pos, rec) - 1  # -1: before any SET_HVA
    base = np.r_[np.uint64(0), hva].astype(ADDR_DTYPE)
    seg_first = np.searchsorted(seg, np.arange(-1, len(hva_pos)))  # first record per segment
    seg_first_excl = np.r_[excl, np.uint64(0)][seg_first]
    addr = base[seg + 1] + (excl - seg_first_excl[seg + 1])
    zero = addr == 0
    if zero.any():
        i = int(np.flatnonzero(zero)[0])
        raise StreamError(f"idle_pages record at byte {int(rec[i])} before any address")
    if len(hva_pos) and hva_pos[-1] > rec[-1]:
        end = int(hva[-1])
    else:
        end = int(addr[-1] + step[-1])

    keep = (t <= PMD_IDLE_PTES) & (n > 0)
    etype = _ENTRY_TYPE[t]
    unaligned = keep & ((addr & (sizes[etype] - np.uint64(1))) != 0)
    if unaligned.any():
        i = np.flatnonzero(unaligned)
        log.warning(
            "idle_pages: ignored %d record(s) not aligned to their page size, first at 0x%x",
            len(i),
            int(addr[i[0]]),
        )
        keep &= ~unaligned
    npages = n.astype(np.int64)
    npages[t == PMD_IDLE_PTES] *= int(sizes[PMD] // sizes[PTE])
    return Runs(addr[keep], npages[keep], etype[keep], _WEIGHT[t[keep]], end)


def expand(runs: Runs, page_size: int = PAGE_SIZE) -> PassRefs:
    """One row per page entry of ``runs`` (``repeat`` + ramp, no per-page Python)."""
    total = int(runs.npages.sum()) if len(runs) else 0
    if total == 0:
        return PassRefs.empty()
    sizes = page_sizes(page_size)
    first = np.cumsum(runs.npages) - runs.npages
    addr = np.arange(total, dtype=ADDR_DTYPE)
    addr -= np.repeat(first.astype(ADDR_DTYPE), runs.npages)
    if np.all(runs.type == runs.type[0]):
        addr *= sizes[runs.type[0]]
    else:
        addr *= np.repeat(sizes[runs.type], runs.npages)
    addr += np.repeat(runs.start, runs.npages)
    return PassRefs(addr, np.repeat(runs.type, runs.npages), np.repeat(runs.weight, runs.npages))


def decode(buf: bytes | np.ndarray, page_size: int = PAGE_SIZE) -> PassRefs:
    """Decode one stream straight to page entries (see :func:`decode_runs`)."""
    return expand(decode_runs(buf, page_size), page_size)


def read_size(start: int, end: int, page_size: int = PAGE_SIZE) -> int:
    """etmemd's buffer for ``[start, end)``: one byte per 8 pages, at least 20 bytes."""
    return max(((end - start) >> 3) // page_size, IDLE_BUF_MIN)


# ---------------------------------------------------------------------------------------------
# the file


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
    etmemd, which reads once and silently loses the rest (§13.22) -- reads continue from the
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


# ---------------------------------------------------------------------------------------------
# captured streams (``etmem scan --decode``): one stream per pass


def _decode_pass(i: int, stream: bytes, page_size: int) -> Runs:
    try:
        return decode_runs(stream, page_size)
    except StreamError as e:
        e.pass_index = i  # type: ignore[attr-defined]  # which file, for the message
        raise


def decode_passes(streams: Sequence[bytes], page_size: int = PAGE_SIZE) -> PageRefs:
    """Accumulate captured streams, one per pass, into a :class:`PageRefs`.

    Raises :class:`StreamError` (with ``pass_index``) if any pass is one the original rejects:
    as in etmemd, one bad pass discards the whole result.
    """
    refs = PageRefs.empty()
    for i, s in enumerate(streams):
        refs = merge(refs, expand(_decode_pass(i, s, page_size), page_size))
    return refs


def refs_text(streams: Sequence[bytes], page_size: int = PAGE_SIZE) -> bytes:
    """``0x<addr> <count> <type>`` lines of the accumulated passes, by address."""
    return format_refs(decode_passes(streams, page_size))


def cold_text_chunks(
    streams: Sequence[bytes], threshold: int, page_size: int = PAGE_SIZE, chunk: int = 1 << 18
) -> Iterator[bytes]:
    """The ``swap_pages`` text of the accumulated passes (``count < threshold``), in pieces."""
    refs = decode_passes(streams, page_size)
    cold = descending(refs.addr[cold_mask(refs, threshold)])
    del refs
    for i in range(0, len(cold), chunk):
        yield format_hex_lines(cold[i : i + chunk]).tobytes()
